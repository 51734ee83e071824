"""A corpus built to be hostile, one job per input format: every good row is answered,
every bad row comes out once with an error of its own kind, unreadable files are named
with the reason, rows in = rows out, and the job ends "completed with errors" (4).

Each generated row carries the error kind it must end up with, so the assertions
compare the job's output with what the generator meant, row by row, not with numbers
copied from an earlier run.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from operators.schema import error_kind
from pipelines import exit_codes
from pipelines.batch_job import run_job
from routing.core.config import parse_config
from routing.core.storage import UTF8_BOM

pytestmark = pytest.mark.ray

# Far above every row count below: each stage sees the whole input as one batch.
HUGE_BATCH = 100_000
LONG = 100_000  # characters, far beyond any max_seq_len
N_GOOD = 2_000


@dataclass
class Line:
    """One input line and what the job must make of it."""

    raw: bytes
    kind: Optional[str]  # expected error kind; None = answered
    fragment: str = ""  # must appear in the row's error
    id: Optional[str] = None


def _json(obj: object) -> bytes:
    return json.dumps(obj, ensure_ascii=False).encode()


def _context(i: int) -> str:
    return f"Item {i} is kept in hall {i % 7} of the museum, beside the north door."


def _long_context() -> str:
    sentence = "The observatory on the ridge was finished in 1890 after a decade of work. "
    return (sentence * (LONG // len(sentence) + 1))[:LONG]


def jsonl_corpus() -> tuple[list[Line], list[Line], dict[str, str]]:
    """(lines of a big file, lines of a small second file, recorded answers)."""
    big = [Line(_json({"id": f"g{i}", "question": f"Where is item {i}?", "context": _context(i)}), None, id=f"g{i}") for i in range(N_GOOD)]
    big += [
        # Good, if unusual: an integer id, text outside the BMP, a line separator and
        # control characters inside strings (a reader that split lines on them would
        # cut this row in two).
        Line(_json({"id": 424242, "question": "Qué? 🚀 où\u2028is\x1citem?", "context": "Ünïcode \u2029 context 𝔘."}), None, id="424242"),
        # Far beyond max_seq_len: the context is windowed and answered by the HF reader,
        Line(_json({"id": "long-context", "question": "When was the observatory finished?", "context": _long_context()}), None, id="long-context"),
        # ... but a question that alone overflows the window cannot be answered at all.
        Line(_json({"id": "long-question", "question": "why " * (LONG // 4), "context": "A short context."}), "expert_error", "leaves no room for context", id="long-question"),
        # Answerable rows the replay expert has no recording for.
        Line(_json({"id": "unrecorded", "question": "Where?", "context": "Here."}), "expert_error", "no recorded prediction", id="unrecorded"),
        # Missing, null, empty and non-string fields.
        Line(_json({"question": "Where?", "context": "c"}), "invalid_row", "id is missing"),
        Line(_json({"id": None, "question": "Where?", "context": "c"}), "invalid_row", "id is missing"),
        Line(_json({"id": "  ", "question": "Where?", "context": "c"}), "invalid_row", "id is empty"),
        Line(_json({"id": 1.5, "question": "Where?", "context": "c"}), "invalid_row", "id is not a string (float)"),
        Line(_json({"id": True, "question": "Where?", "context": "c"}), "invalid_row", "id is not a string (bool)"),
        Line(_json({"id": ["x"], "question": "Where?", "context": "c"}), "invalid_row", "id is not a string (list)"),
        Line(_json({"id": "b1", "context": "c"}), "invalid_row", "question is missing"),
        Line(_json({"id": "b2", "question": None, "context": "c"}), "invalid_row", "question is missing"),
        Line(_json({"id": "b3", "question": "", "context": "c"}), "invalid_row", "question is empty"),
        Line(_json({"id": "b4", "question": 42, "context": "c"}), "invalid_row", "question is not a string (int)"),
        Line(_json({"id": "b5", "question": {"text": "Where?"}, "context": "c"}), "invalid_row", "question is not a string (dict)"),
        Line(_json({"id": "b6", "question": "Where?"}), "invalid_row", "context is missing"),
        Line(_json({"id": "b7", "question": "Where?", "context": " \n\t "}), "invalid_row", "context is empty"),
        Line(_json({"id": "b8", "question": "Where?", "context": ["a", "b"]}), "invalid_row", "context is not a string (list)"),
        Line(_json({"question": None, "context": 7}), "invalid_row", "id is missing; question is missing; context is not a string (int)"),
        # Valid JSON, but a lone surrogate: no UTF-8 encoding exists for it.
        Line(b'{"id": "b9", "question": "Where \\ud800?", "context": "c"}', "invalid_row", "question is not valid UTF-8"),
        # Lines that are no JSON object at all.
        Line(b'{"id": "b10", "question": "caf\xe9 \xff\xfe", "context": "c"}', "invalid_input", "not valid UTF-8"),
        Line(b"\xc3\x28\xa0\xa1", "invalid_input", "not valid UTF-8"),
        Line(b'{"id": "b11", "question": "trunc', "invalid_input", "not valid JSON"),
        Line(b"[1, 2, 3]", "invalid_input", "JSON list, not an object"),
        Line(b'"just a string"', "invalid_input", "JSON str, not an object"),
        Line(b'{"id": ' + b"7" * 5000 + b', "question": "q", "context": "c"}', "invalid_input", "not valid JSON"),
        Line(b"[" * 50_000, "invalid_input", "not valid JSON"),
        # Duplicates of answered ids: exactly one row per id is answered.
        Line(_json({"id": "g0", "question": "Again?", "context": "c"}), "duplicate_id", "appeared earlier", id="g0"),
        Line(_json({"id": "g1", "question": "Again?", "context": "c"}), "duplicate_id", "appeared earlier", id="g1"),
        Line(_json({"id": "g1", "question": "And again?", "context": "c"}), "duplicate_id", "appeared earlier", id="g1"),
    ]
    small = [
        Line(_json({"id": f"s{i}", "question": f"Where is item {i}?", "context": _context(i)}), None, id=f"s{i}") for i in range(5)
    ]
    small.append(Line(_json({"id": "g2", "question": "From another file?", "context": "c"}), "duplicate_id", "appeared earlier", id="g2"))
    # A byte-order mark is skipped only at the very start of a file (b.jsonl starts with
    # one); at the start of any other line it is a character, and that line is no JSON.
    small.append(Line(UTF8_BOM + _json({"id": "s-bom", "question": "Where?", "context": "c"}), "invalid_input", "not valid JSON"))
    recorded = {line.id: f"hall {i % 7}" for i, line in enumerate(big + small) if line.id and line.id not in ("unrecorded",)}
    return big, small, recorded


def _replay(name: str, predictions: Path) -> dict:
    return {"name": name, "kind": "replay", "predictions": str(predictions), "cost": {"usd_per_item": 0.001}}


def _check_rows(rows: list[dict], expected: dict[str, Line]) -> None:
    """Every output row against the line it came from (matched by `source`)."""
    assert sorted(r["source"] for r in rows) == sorted(expected)  # each line exactly once
    by_id: dict[str, list[dict]] = {}
    for r in rows:
        line = expected[r["source"]]
        if line.id is not None:
            assert r["id"] == line.id
            by_id.setdefault(line.id, []).append(r)
        if line.kind == "duplicate_id":
            continue  # which copy counts as "first" depends on arrival order: checked per id below
        assert error_kind(r["error"]) == line.kind, (r["source"], r["error"])
        if line.kind is None:
            assert r["answer"] is not None and r["expert"] is not None and r["id"] == line.id
        else:
            assert line.fragment in r["error"], (line.fragment, r["error"])
            assert r["answer"] is None
            assert r["error"].split(":", 1)[1].strip()  # a detail after the kind, never the bare kind
        if line.kind in ("invalid_row", "invalid_input"):
            assert r["expert"] is None and r["cost_usd"] == 0  # never reached an expert
    for rid, group in by_id.items():
        kinds = sorted(error_kind(r["error"]) or "answered" for r in group)
        n_expected = sum(1 for line in expected.values() if line.id == rid)
        assert len(group) == n_expected
        if n_expected > 1:
            assert kinds == ["answered"] + ["duplicate_id"] * (n_expected - 1), (rid, kinds)


def test_jsonl_corpus_with_every_kind_of_bad_row(local_ray, tmp_path, tiny_qa_model):
    big, small, recorded = jsonl_corpus()
    src = tmp_path / "in"
    src.mkdir()
    # Blank lines are not rows (as in every JSON-lines reader), and must not shift the
    # line numbers in `source`.
    (src / "a.jsonl").write_bytes(b"\n".join(line.raw for line in big[:10]) + b"\n\n  \n" + b"\n".join(line.raw for line in big[10:]) + b"\n")
    # b.jsonl as a Windows tool writes it: a UTF-8 byte-order mark, then CRLF lines. Its
    # first row must be answered and keep line number 1.
    (src / "b.jsonl").write_bytes(UTF8_BOM + b"\r\n".join(line.raw for line in small))
    (tmp_path / "recorded.json").write_text(json.dumps(recorded))
    expected = {f"{src / 'a.jsonl'}:{n}": line for n, line in zip(list(range(1, 11)) + list(range(13, 13 + len(big) - 10)), big)}
    expected.update({f"{src / 'b.jsonl'}:{n}": line for n, line in enumerate(small, start=1)})

    cfg = parse_config(
        {
            "input": {"path": str(src), "format": "jsonl"},
            "output": {"path": str(tmp_path / "out")},
            "experts": [
                _replay("rec", tmp_path / "recorded.json"),
                {"name": "reader", "kind": "hf-extractive-qa", "model": tiny_qa_model, "max_seq_len": 256, "doc_stride": 64,
                 "batch_size": 32, "resources": {"num_cpus": 0.5}},
            ],
            "router": {
                "kind": "rule",
                "rules": [{"expert": "reader", "min_question_chars": 10_000}, {"expert": "reader", "min_context_chars": 10_000}],
                "default": "rec",
            },
            "execution": {"batch_size": HUGE_BATCH},
        }
    )
    summary = run_job(cfg, progress=False)
    rows = pq.read_table(tmp_path / "out").to_pylist()

    assert summary.rows_in == summary.rows_out == len(rows) == len(expected) and summary.rows_match
    assert summary.exit_code == exit_codes.COMPLETED_WITH_ERRORS and summary.status == "completed with errors"
    _check_rows(rows, expected)
    want = Counter(line.kind for line in expected.values() if line.kind)
    assert summary.errors_by_kind == dict(want)
    assert summary.rows_with_errors == sum(want.values())
    assert summary.rows_answered == len(expected) - sum(want.values())
    assert summary.unreadable_files == {}

    by_id = {r["id"]: r for r in rows if r["id"] and r["error"] is None}
    for rid, answer in recorded.items():
        if rid in by_id and by_id[rid]["expert"] == "rec":
            assert by_id[rid]["answer"] == answer
    # The 100k-character context went through the reader, window by window.
    long_row = by_id["long-context"]
    assert long_row["expert"] == "reader" and long_row["answer"] and long_row["answer"] in _long_context()
    assert long_row["input_tokens"] > 10_000  # every window's tokens, not just the first one
    # Text survives exactly, whatever it contains.
    assert by_id["424242"]["question"] == "Qué? 🚀 où\u2028is\x1citem?"
    assert summary.experts["reader"].rows == 2 and summary.experts["reader"].errors == 1


def _parquet_bytes(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    return sink.getvalue().to_pybytes()


def _invalid_utf8_strings(values: list[bytes]) -> pa.Array:
    """A string array holding bytes that are not UTF-8, as a writer that skips
    validation could leave them (pa.array would refuse to build it)."""
    offsets = np.cumsum([0] + [len(v) for v in values]).astype(np.int32)
    return pa.Array.from_buffers(pa.string(), len(values), [None, pa.py_buffer(offsets.tobytes()), pa.py_buffer(b"".join(values))])


def test_parquet_corpus_with_unreadable_and_mistyped_files(local_ray, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    good = pa.table({"id": [f"p{i}" for i in range(300)], "question": [f"Where is item {i}?" for i in range(300)],
                     "context": [_context(i) for i in range(300)]})
    pq.write_table(good, src / "part-0.parquet")
    nulls = pa.table({
        "id": ["n0", "n1", None, "n3", "n4", "p5"],
        "question": ["Where?", None, "Where?", "", "Where?", "Again?"],
        "context": ["c", "c", "c", "c", None, "c"],
    })
    pq.write_table(nulls, src / "part-1.parquet")
    # Integers where text belongs, and an integer id column (ids coerce, text does not).
    pq.write_table(pa.table({"id": [7, 8], "question": [1, 2], "context": ["c", "c"]}), src / "part-2.parquet")
    pq.write_table(
        pa.table({"id": ["u0", "u1"], "question": _invalid_utf8_strings([b"fine?", b"caf\xe9\xff?"]), "context": ["c", "c"]}),
        src / "part-3.parquet",
    )
    (src / "part-4.parquet").write_bytes(_parquet_bytes(good)[:300])  # truncated: no footer
    (src / "part-5.parquet").write_bytes(b"PAR1 this is not parquet at all")
    pq.write_table(pa.table({"qid": ["x"], "text": ["y"]}), src / "part-6.parquet")  # lacks the mapped columns
    recorded = {f"p{i}": f"hall {i % 7}" for i in range(300)} | {"n0": "a", "u0": "b", "7": "c", "8": "d"}
    (tmp_path / "recorded.json").write_text(json.dumps(recorded))

    cfg = parse_config(
        {
            "input": {"path": str(src), "format": "parquet"},
            "output": {"path": str(tmp_path / "out")},
            "experts": [_replay("rec", tmp_path / "recorded.json")],
            "router": {"kind": "fixed", "expert": "rec"},
            "execution": {"batch_size": HUGE_BATCH},
        }
    )
    summary = run_job(cfg, progress=False)
    rows = pq.read_table(tmp_path / "out").to_pylist()

    assert summary.rows_in == summary.rows_out == len(rows) == 300 + 6 + 2 + 2 and summary.rows_match
    assert summary.exit_code == exit_codes.COMPLETED_WITH_ERRORS
    unreadable = summary.unreadable_files
    assert sorted(unreadable) == [str(src / f"part-{i}.parquet") for i in (4, 5, 6)]
    assert unreadable[str(src / "part-4.parquet")].startswith("not a readable Parquet file")
    assert unreadable[str(src / "part-5.parquet")].startswith("not a readable Parquet file")
    assert "lacks column(s)" in unreadable[str(src / "part-6.parquet")]

    p5 = sorted(error_kind(r["error"]) or "answered" for r in rows if r["id"] == "p5")
    assert p5 == ["answered", "duplicate_id"]  # which file's copy comes first is up to the scheduler
    errors = {r["id"] or r["source"]: r["error"] for r in rows if r["id"] != "p5"}
    assert "question is missing" in errors["n1"] and "question is empty" in errors["n3"] and "context is missing" in errors["n4"]
    assert any("id is missing" in (e or "") for e in errors.values())
    assert "question is not a string (int)" in errors["7"] and "question is not a string (int)" in errors["8"]
    assert "question is not valid UTF-8" in errors["u1"] and errors["u0"] is None
    assert summary.errors_by_kind == {"invalid_row": 7, "duplicate_id": 1}
    answered = {r["id"]: r["answer"] for r in rows if r["error"] is None}
    assert answered == {k: v for k, v in recorded.items() if k not in ("7", "8")}


def test_squad_corpus_with_malformed_documents(local_ray, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    contexts = ["Rollo ruled Normandy from 911.", "The Seine flows through Paris."]
    doc = {
        "version": "v2.0",
        "data": [
            {"title": "a", "paragraphs": [
                {"context": contexts[0], "qas": [{"id": f"q{i}", "question": f"Who ruled {i}?"} for i in range(150)]},
                {"context": contexts[1], "qas": [
                    {"id": "q-no-question"},
                    {"id": ["not", "a", "string"], "question": "What flows?"},
                    {"id": "q0", "question": "Duplicate?"},
                    "not a qa object",
                ]},
                {"context": "A paragraph without questions"},
                {"context": None, "qas": [{"id": "q-null-context", "question": "What?"}]},
            ]},
            {"title": "no paragraphs here"},
            "not an article",
        ],
    }
    (src / "good.json").write_bytes(UTF8_BOM + json.dumps(doc).encode())  # saved by a Windows tool
    (src / "truncated.json").write_text(json.dumps(doc)[:500])
    (src / "not-squad.json").write_text(json.dumps({"version": "1.1", "articles": []}))
    (src / "binary.json").write_bytes(b"\x89PNG\r\n\x1a\n\x00\xff")
    recorded = {f"q{i}": "Rollo" for i in range(150)}
    (tmp_path / "recorded.json").write_text(json.dumps(recorded))

    cfg = parse_config(
        {
            "input": {"path": str(src), "format": "squad"},
            "output": {"path": str(tmp_path / "out")},
            "experts": [_replay("rec", tmp_path / "recorded.json")],
            "router": {"kind": "fixed", "expert": "rec"},
            "execution": {"batch_size": HUGE_BATCH},
        }
    )
    summary = run_job(cfg, progress=False)
    rows = pq.read_table(tmp_path / "out").to_pylist()

    n_rows = 150 + 4 + 1 + 1 + 1 + 1  # qas, the paragraph without qas, null context, two bad articles
    assert summary.rows_in == summary.rows_out == len(rows) == n_rows and summary.rows_match
    assert summary.exit_code == exit_codes.COMPLETED_WITH_ERRORS
    unreadable = summary.unreadable_files
    assert sorted(unreadable) == sorted(str(src / n) for n in ("truncated.json", "not-squad.json", "binary.json"))
    assert unreadable[str(src / "truncated.json")].startswith("not valid SQuAD JSON")
    assert unreadable[str(src / "binary.json")].startswith("not valid SQuAD JSON")
    assert "expected an object with a 'data' list" in unreadable[str(src / "not-squad.json")]
    assert summary.errors_by_kind == {"invalid_row": 4, "invalid_input": 3, "duplicate_id": 1}
    by_source = {r["source"].split("#", 1)[1]: r for r in rows}
    assert "question is missing" in by_source["data[0].paragraphs[1].qas[0]"]["error"]
    assert "id is not a string (list)" in by_source["data[0].paragraphs[1].qas[1]"]["error"]
    assert by_source["data[0].paragraphs[1].qas[2]"]["error"].startswith("duplicate_id:")
    assert "no 'qas' list" in by_source["data[0].paragraphs[2]"]["error"]
    assert "context is missing" in by_source["data[0].paragraphs[3].qas[0]"]["error"]
    assert "no 'paragraphs' list" in by_source["data[1]"]["error"] and "no 'paragraphs' list" in by_source["data[2]"]["error"]
    assert {r["id"]: r["answer"] for r in rows if r["error"] is None} == recorded

"""Input parsing and row checks: every line becomes a row, bad ones with a reason."""

import json

import pyarrow as pa
from hypothesis import given
from hypothesis import strategies as st

from operators.read_input import UnreadableFile, normalize_table, parse_jsonl, parse_squad
from operators.schema import WORK_SCHEMA
from routing.core.config import ColumnMapping
from routing.core.storage import UTF8_BOM, strip_bom
from routing.answers.validation import DuplicateIdTracker, check_row

import pytest


def test_check_row_reports_each_field():
    assert check_row("a", "q?", "ctx").error is None
    assert check_row(7, "q?", "ctx").id == "7"  # integer ids are fine
    err = check_row(None, "", 5).error
    assert err.startswith("invalid_row:")
    assert "id is missing" in err and "question is empty" in err and "context is not a string (int)" in err
    assert "id is not a string (bool)" in check_row(True, "q", "c").error


@given(st.one_of(st.none(), st.integers(), st.text(), st.floats(), st.lists(st.text())),
       st.one_of(st.none(), st.integers(), st.text(), st.dictionaries(st.text(), st.text())),
       st.one_of(st.none(), st.text(), st.booleans()))
def test_check_row_never_raises_and_flags_exactly_the_unusable(i, q, c):
    r = check_row(i, q, c)
    usable = (
        (isinstance(i, str) and i.strip() or (isinstance(i, int) and not isinstance(i, bool)))
        and isinstance(q, str) and q.strip()
        and isinstance(c, str) and c.strip()
    )
    assert (r.error is None) == bool(usable)


def test_duplicate_tracker():
    t = DuplicateIdTracker()
    assert t.check("a") is None and t.check("b") is None
    assert t.check("a").startswith("duplicate_id:")
    assert t.check(None) is None and len(t) == 2


def test_jsonl_bad_lines_become_error_rows():
    lines = [
        json.dumps({"id": "1", "question": "q", "context": "c"}).encode(),
        b"",
        b"\xff\xfe not utf8",
        b"{not json",
        b"[1, 2]",
        json.dumps({"id": "2", "question": None, "context": "c"}).encode(),
    ]
    rows = parse_jsonl(b"\n".join(lines), "f.jsonl", ColumnMapping(), "run")
    assert len(rows) == 5  # the blank line is not a row
    errors = [r["error"] for r in rows]
    assert errors[0] is None
    assert "not valid UTF-8" in errors[1] and "f.jsonl:3" == rows[1]["source"]
    assert "not valid JSON" in errors[2]
    assert "JSON list, not an object" in errors[3]
    assert "question is missing" in errors[4]


def test_a_leading_byte_order_mark_is_not_data():
    good = [json.dumps({"id": str(i), "question": "q", "context": "c"}).encode() for i in range(3)]
    rows = parse_jsonl(UTF8_BOM + b"\r\n".join(good), "f.jsonl", ColumnMapping(), "run")
    assert [r["id"] for r in rows] == ["0", "1", "2"] and all(r["error"] is None for r in rows)
    assert [r["source"] for r in rows] == ["f.jsonl:1", "f.jsonl:2", "f.jsonl:3"]
    # Anywhere else it is a character: the line that starts with one is no JSON.
    rows = parse_jsonl(b"\n".join([good[0], UTF8_BOM + good[1]]), "f.jsonl", ColumnMapping(), "run")
    assert rows[0]["error"] is None and "line 2 is not valid JSON" in rows[1]["error"]
    # ... and inside a string it stays part of the text.
    inner = json.dumps({"id": "x", "question": "\ufeffq", "context": "c"}, ensure_ascii=False).encode()
    assert parse_jsonl(UTF8_BOM + inner, "f.jsonl", ColumnMapping(), "run")[0]["question"] == "\ufeffq"
    doc = {"data": [{"title": "t", "paragraphs": [{"context": "ctx", "qas": [{"id": "x", "question": "q"}]}]}]}
    assert [r["id"] for r in parse_squad(UTF8_BOM + json.dumps(doc).encode(), "s.json", "run")] == ["x"]
    assert strip_bom(UTF8_BOM + UTF8_BOM + b"a") == UTF8_BOM + b"a"  # one mark, not every one


def test_gold_and_replay_files_with_a_byte_order_mark(tmp_path):
    """`score --gold`, the report and the router tools read SQuAD and replay files too."""
    from routing.replay.data import load_replay
    from routing.answers.squad import load_squad

    doc = {"data": [{"title": "t", "paragraphs": [{"context": "ctx", "qas": [{"id": "x", "question": "q", "answers": [{"text": "ctx", "answer_start": 0}]}]}]}]}
    (tmp_path / "questions.json").write_bytes(UTF8_BOM + json.dumps(doc).encode())
    assert [q.id for q in load_squad(tmp_path / "questions.json")] == ["x"]
    (tmp_path / "predictions").mkdir()
    (tmp_path / "predictions" / "a.json").write_bytes(UTF8_BOM + json.dumps({"x": "ctx"}).encode())
    (tmp_path / "costs.json").write_bytes(UTF8_BOM + json.dumps({"unit": "relative", "experts": {"a": {"cost": 1.0}}}).encode())
    assert load_replay(tmp_path).expert_names == ("a",)


def test_squad_parsing_and_malformed_documents():
    doc = {"data": [{"title": "t", "paragraphs": [{"context": "ctx", "qas": [{"id": "x", "question": "q"}, "junk"]}]}, 5]}
    rows = parse_squad(json.dumps(doc).encode(), "s.json", "run")
    assert [r["id"] for r in rows] == ["x", None, None]
    assert rows[0]["error"] is None and rows[0]["context"] == "ctx"
    assert "id is missing" in rows[1]["error"]
    assert "no 'paragraphs' list" in rows[2]["error"]
    with pytest.raises(UnreadableFile):
        parse_squad(b'{"data": [', "s.json", "run")
    with pytest.raises(UnreadableFile):
        parse_squad(b'{"version": "1"}', "s.json", "run")


def test_parquet_batches_with_mapped_and_mistyped_columns():
    table = pa.table({"qid": [1, 2], "q": ["what?", "who?"], "passage": ["a", None], "path": ["p", "p"]})
    out = normalize_table(table, ColumnMapping(id="qid", question="q", context="passage"), "run")
    assert out.schema == WORK_SCHEMA
    assert out.column("id").to_pylist() == ["1", "2"]
    assert out.column("error").to_pylist()[0] is None
    assert "context is missing" in out.column("error").to_pylist()[1]
    ints = pa.table({"id": ["a"], "question": [3], "context": ["c"]})
    assert "question is not a string (int)" in normalize_table(ints, ColumnMapping(), "run").column("error")[0].as_py()

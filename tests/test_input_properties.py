"""Properties of the input checks on arbitrary values and bytes: nothing raises,
every line is a row, and every row can become Arrow (a value Arrow refuses used to
fail its whole read task, and the job with it)."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pyarrow as pa
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from operators.read_input import UnreadableFile, normalize_table, parse_jsonl, parse_squad
from operators.schema import WORK_SCHEMA, error_kind, rows_to_table
from routing.core.config import ColumnMapping
from routing.answers.validation import check_row

KINDS = {"invalid_row", "invalid_input"}

# Any JSON value, plus the strings JSON can carry and UTF-8 cannot (lone surrogates).
text_with_surrogates = st.text(
    alphabet=st.one_of(
        st.characters(exclude_categories=()),
        st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF, exclude_categories=()),  # lone surrogates
    )
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | text_with_surrogates,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)


def _encodable(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _usable_text(v: Any) -> bool:
    return isinstance(v, str) and bool(v.strip()) and _encodable(v)


def _usable_id(v: Any) -> bool:
    if isinstance(v, bool):
        return False
    if isinstance(v, int):
        return True
    return _usable_text(v)


@settings(max_examples=300, deadline=None)
@given(json_values, json_values, json_values)
@example(None, None, None)
@example("a\ud800", "q", "c")
@example(10**50, "\udfff", " ")
def test_check_row_flags_exactly_the_unusable_and_names_each_field(i: Any, q: Any, c: Any) -> None:
    r = check_row(i, q, c)
    usable = _usable_id(i) and _usable_text(q) and _usable_text(c)
    assert (r.error is None) == usable
    if r.error is not None:
        assert error_kind(r.error) == "invalid_row"
        # One problem per bad field, each naming its field, in id/question/context order.
        named = [f for f, ok in (("id", _usable_id(i)), ("question", _usable_text(q)), ("context", _usable_text(c))) if not ok]
        problems = r.error.split(":", 1)[1].split(";")
        assert [p.strip().split(" ", 1)[0] for p in problems] == named
    else:
        assert r.id == str(i) and r.question == q and r.context == c
    # Whatever check_row lets through, Arrow can hold.
    rows_to_table([{"id": r.id, "question": r.question, "context": r.context, "error": r.error}])


def _lines(data: bytes) -> list[bytes]:
    # A byte-order mark at the very start of a file is not data (issue 16): a file of
    # nothing else has no rows; one anywhere else is text and stays.
    body = data[3:] if data.startswith(b"\xef\xbb\xbf") else data
    return [line for line in body.splitlines() if line.strip()]


def _assert_rows_well_formed(rows: list[dict], data: bytes, path: str) -> None:
    lines = _lines(data)
    assert len(rows) == len(lines)  # every non-blank line is exactly one row
    table = rows_to_table(rows)  # never fails: the read task cannot crash on any input
    assert table.schema == WORK_SCHEMA and table.num_rows == len(rows)
    for row in rows:
        assert row["source"].startswith(path + ":")
        if row["error"] is None:
            assert _usable_id(row["id"]) and _usable_text(row["question"]) and _usable_text(row["context"])
        else:
            assert error_kind(row["error"]) in KINDS
            assert row["answer"] is None and row["expert"] is None


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=400))
@example(b"\xef\xbb\xbf")
@example(b"\xef\xbb\xbf\n\xef\xbb\xbf{}")
def test_parse_jsonl_on_random_bytes(data: bytes) -> None:
    rows = parse_jsonl(data, "f.jsonl", ColumnMapping(), "run")
    _assert_rows_well_formed(rows, data, "f.jsonl")


record = st.fixed_dictionaries(
    {"id": json_values, "question": json_values, "context": json_values},
    optional={"extra": json_values},
)
line_piece = st.one_of(
    record.map(lambda d: json.dumps(d).encode()),  # escapes: \\ud800 and friends stay ASCII
    record.map(lambda d: json.dumps(d, ensure_ascii=False).encode("utf-8", "surrogatepass")),  # raw, even invalid UTF-8
    st.binary(max_size=40),
    st.sampled_from([b"", b"  ", b"[1]", b"null", b"{", b"\xff", b"[" * 5000, b'{"id": ' + b"9" * 4400 + b"}"]),
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(line_piece, max_size=8), st.sampled_from([b"\n", b"\r\n", b"\r"]))
def test_parse_jsonl_on_json_like_lines(pieces: list[bytes], sep: bytes) -> None:
    data = sep.join(p.replace(b"\n", b" ").replace(b"\r", b" ") for p in pieces)
    rows = parse_jsonl(data, "f.jsonl", ColumnMapping(), "run")
    _assert_rows_well_formed(rows, data, "f.jsonl")
    # `source` points at the physical line the row came from.
    body = data[3:] if data.startswith(b"\xef\xbb\xbf") else data
    numbered = [n for n, line in enumerate(body.splitlines(), start=1) if line.strip()]
    assert [int(r["source"].rsplit(":", 1)[1]) for r in rows] == numbered


good_text = st.text(min_size=1).filter(lambda s: bool(s.strip()) and _encodable(s))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.one_of(good_text, st.integers()), good_text, good_text), min_size=1, max_size=6), st.booleans())
def test_jsonl_round_trip_keeps_text_exactly(records: list[tuple[Any, str, str]], ascii_only: bool) -> None:
    """Text with line separators (U+2028, \\x1c, \\x85) inside strings is one row, not
    several, and comes back character for character."""
    data = b"\n".join(json.dumps({"id": i, "question": q, "context": c}, ensure_ascii=ascii_only).encode() for i, q, c in records)
    rows = parse_jsonl(data, "f.jsonl", ColumnMapping(), "run")
    assert [(r["id"], r["question"], r["context"], r["error"]) for r in rows] == [(str(i), q, c, None) for i, q, c in records]


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.binary(max_size=300), json_values.map(lambda v: json.dumps(v).encode())))
@example(b"[" * 5000)
@example(b'{"data": [' + b"9" * 4400 + b"]}")
def test_parse_squad_on_arbitrary_documents(data: bytes) -> None:
    """Either the whole file is unreadable (named in the summary), or it is rows."""
    try:
        rows = parse_squad(data, "s.json", "run")
    except UnreadableFile as exc:
        assert str(exc).startswith(("not valid SQuAD JSON", "not SQuAD JSON"))
        return
    table = rows_to_table(rows)
    assert table.schema == WORK_SCHEMA
    assert all(r["error"] is None or error_kind(r["error"]) in KINDS for r in rows)


squad_qa = st.one_of(st.fixed_dictionaries({}, optional={"id": json_values, "question": json_values}), json_values)
squad_doc = st.fixed_dictionaries(
    {"data": st.lists(st.one_of(json_values, st.fixed_dictionaries({}, optional={"paragraphs": st.one_of(json_values, st.lists(
        st.one_of(json_values, st.fixed_dictionaries({}, optional={"context": json_values, "qas": st.one_of(json_values, st.lists(squad_qa, max_size=3))})),
        max_size=3))})), max_size=3)}
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(squad_doc)
@example({"data": [{"paragraphs": [{"context": "c\ud800", "qas": [{"id": "x\udfff", "question": "q"}, 5]}]}]})
def test_squad_structure_never_loses_a_question(doc: dict) -> None:
    """Every qas entry is a row; every paragraph or article without questions is one
    error row; nothing else appears."""
    rows = parse_squad(json.dumps(doc).encode(), "s.json", "run")
    expected = 0
    for article in doc["data"]:
        paragraphs = article.get("paragraphs") if isinstance(article, dict) else None
        if not isinstance(paragraphs, list):
            expected += 1
            continue
        for p in paragraphs:
            qas = p.get("qas") if isinstance(p, dict) else None
            expected += len(qas) if isinstance(qas, list) else 1
    assert len(rows) == expected
    rows_to_table(rows)


arrow_column = st.one_of(
    st.lists(st.one_of(st.none(), text_with_surrogates.filter(_encodable)), min_size=3, max_size=3).map(lambda v: pa.array(v, pa.string())),
    st.lists(st.one_of(st.none(), st.integers(-(2**63), 2**63 - 1)), min_size=3, max_size=3).map(lambda v: pa.array(v, pa.int64())),
    st.lists(st.one_of(st.none(), st.floats()), min_size=3, max_size=3).map(lambda v: pa.array(v, pa.float64())),
    st.lists(st.one_of(st.none(), st.binary(max_size=6)), min_size=3, max_size=3).map(
        lambda v: pa.Array.from_buffers(  # strings with arbitrary bytes, as a careless writer leaves them
            pa.string(), 3,
            [pa.py_buffer(np.packbits([x is not None for x in v], bitorder="little").tobytes()),
             pa.py_buffer(np.cumsum([0] + [len(x or b"") for x in v]).astype(np.int32).tobytes()),
             pa.py_buffer(b"".join(x or b"" for x in v))],
            null_count=sum(x is None for x in v),
        )
    ),
    st.just(pa.nulls(3)),
)


@settings(max_examples=200, deadline=None)
@given(arrow_column, arrow_column, arrow_column)
def test_normalize_table_on_any_column_types(ids: pa.Array, questions: pa.Array, contexts: pa.Array) -> None:
    table = pa.table({"id": ids, "question": questions, "context": contexts})
    out = normalize_table(table, ColumnMapping(), "run")
    assert out.schema == WORK_SCHEMA and out.num_rows == 3
    for row in out.to_pylist():
        if row["error"] is None:
            assert _usable_id(row["id"]) and _usable_text(row["question"]) and _usable_text(row["context"])
        else:
            assert error_kind(row["error"]) == "invalid_row"
    # A number, a null column or bytes is never taken for a question.
    if not pa.types.is_string(questions.type):
        assert all(e is not None for e in out.column("error").to_pylist())

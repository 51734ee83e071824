"""Turn raw input (JSONL bytes, SQuAD JSON bytes, Parquet batches) into work rows.

Parsing happens per file inside Ray tasks, never in the driver, so the corpus is never
held in one place. Anything that cannot become a row with a question and a context
still becomes a row, with an error, unless the whole file is unreadable, in which case
the file is reported (with the reason) to the run ledger.
"""

from __future__ import annotations

import json
from typing import Any, Optional

import pyarrow as pa

from operators.schema import WORK_SCHEMA, empty_row, rows_to_table
from routing.core.config import ColumnMapping
from routing.core.storage import strip_bom
from routing.answers.validation import INVALID_INPUT, check_row


# What `json.loads` raises besides JSONDecodeError on hostile input: ValueError for an
# integer beyond Python's 4300-digit limit, UnicodeDecodeError for bytes that are not
# UTF-8, RecursionError for arrays nested some thousand levels deep. Each would
# otherwise fail the whole read task, and the job with it.
_JSON_FAILURES = (ValueError, RecursionError)


def _row(values: dict, columns: ColumnMapping, source: str, run_id: str) -> dict:
    checked = check_row(values.get(columns.id), values.get(columns.question), values.get(columns.context))
    return empty_row(
        id=checked.id,
        question=checked.question,
        context=checked.context,
        error=checked.error,
        source=source,
        run_id=run_id,
    )


def parse_jsonl(data: bytes, path: str, columns: ColumnMapping, run_id: str) -> list[dict]:
    rows = []
    for line_no, raw in enumerate(strip_bom(data).splitlines(), start=1):
        if not raw.strip():
            continue  # blank lines are not rows, in JSONL as in every JSON-lines reader
        source = f"{path}:{line_no}"
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            rows.append(empty_row(source=source, run_id=run_id, error=f"{INVALID_INPUT}: line {line_no} is not valid UTF-8 ({exc.reason} at byte {exc.start})"))
            continue
        try:
            obj = json.loads(text)
        except _JSON_FAILURES as exc:
            reason = exc.msg if isinstance(exc, json.JSONDecodeError) else f"{type(exc).__name__}: {exc}"
            rows.append(empty_row(source=source, run_id=run_id, error=f"{INVALID_INPUT}: line {line_no} is not valid JSON ({reason[:200]})"))
            continue
        if not isinstance(obj, dict):
            rows.append(empty_row(source=source, run_id=run_id, error=f"{INVALID_INPUT}: line {line_no} is a JSON {type(obj).__name__}, not an object"))
            continue
        rows.append(_row(obj, columns, source, run_id))
    return rows


class UnreadableFile(ValueError):
    """A whole file that yields no rows at all; reported by name in the summary."""


def parse_squad(data: bytes, path: str, run_id: str) -> list[dict]:
    """Rows from a SQuAD v1.1/v2.0 document. Columns are fixed by the format."""
    try:
        doc = json.loads(strip_bom(data))
    except _JSON_FAILURES as exc:
        raise UnreadableFile(f"not valid SQuAD JSON: {type(exc).__name__}: {str(exc)[:200]}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("data"), list):
        raise UnreadableFile("not SQuAD JSON: expected an object with a 'data' list")
    rows = []
    for a_idx, article in enumerate(doc["data"]):
        paragraphs = article.get("paragraphs") if isinstance(article, dict) else None
        if not isinstance(paragraphs, list):
            rows.append(empty_row(source=f"{path}#data[{a_idx}]", run_id=run_id, error=f"{INVALID_INPUT}: data[{a_idx}] has no 'paragraphs' list"))
            continue
        for p_idx, paragraph in enumerate(paragraphs):
            where = f"{path}#data[{a_idx}].paragraphs[{p_idx}]"
            qas = paragraph.get("qas") if isinstance(paragraph, dict) else None
            if not isinstance(qas, list):
                rows.append(empty_row(source=where, run_id=run_id, error=f"{INVALID_INPUT}: {where.split('#')[1]} has no 'qas' list"))
                continue
            context = paragraph.get("context")
            for q_idx, qa in enumerate(qas):
                qa = qa if isinstance(qa, dict) else {}
                rows.append(
                    _row(
                        {"id": qa.get("id"), "question": qa.get("question"), "context": context},
                        ColumnMapping(),
                        f"{where}.qas[{q_idx}]",
                        run_id,
                    )
                )
    return rows


def _column_values(column: pa.ChunkedArray) -> list[Any]:
    """A column as Python values, surviving string columns with invalid UTF-8.

    Parquet writers need not validate UTF-8, and Arrow does not check it on read, so
    `to_pylist` can fail on one bad value and take the whole batch with it. Such a
    column is read as bytes instead, decoded with `surrogateescape`, and `check_row`
    then flags exactly the rows whose values are not valid text.
    """
    try:
        return column.to_pylist()
    except UnicodeDecodeError:
        binary = pa.large_binary() if pa.types.is_large_string(column.type) else pa.binary()
        return [None if v is None else v.decode("utf-8", "surrogateescape") for v in column.cast(binary).to_pylist()]


def normalize_table(table: pa.Table, columns: ColumnMapping, run_id: str, path_column: Optional[str] = "path") -> pa.Table:
    """Parquet batches: rename the mapped columns and check every row.

    Values go through Python objects because a column of the wrong type (integers in
    `question`, say) must become per-row errors, not a failed cast."""
    names = set(table.column_names)

    def col(name: str) -> list[Any]:
        return _column_values(table.column(name)) if name in names else [None] * table.num_rows

    ids, questions, contexts = col(columns.id), col(columns.question), col(columns.context)
    paths = col(path_column) if path_column and path_column in names else [None] * table.num_rows
    rows = [
        _row(
            {columns.id: i, columns.question: q, columns.context: c},
            columns,
            p or "",
            run_id,
        )
        for i, q, c, p in zip(ids, questions, contexts, paths)
    ]
    return rows_to_table(rows) if rows else WORK_SCHEMA.empty_table()

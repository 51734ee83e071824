"""Row checks: decide whether an input row can be answered, and say why not.

A bad row is never dropped: it travels to the output with `answer = null` and an
error that names the field and the problem, so "rows in = rows out" always holds and
a user can find every row that needs attention.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

INVALID_ROW = "invalid_row"
DUPLICATE_ID = "duplicate_id"
INVALID_INPUT = "invalid_input"


@dataclass(frozen=True)
class CheckedRow:
    id: Optional[str]
    question: Optional[str]
    context: Optional[str]
    error: Optional[str]


def _describe(value: Any) -> str:
    return type(value).__name__


def _unencodable_at(text: str) -> Optional[int]:
    """Index of the first character UTF-8 cannot encode (an unpaired surrogate), or None.

    Such strings are legal Python and legal JSON (`"\\ud800"`), and a Parquet string
    column with invalid bytes decodes to them too (see `operators.read_input`), but
    Arrow refuses them: one of them used to fail its whole read task, and the job with
    it. Checked here so it costs only its own row.
    """
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return exc.start
    return None


def _as_id(value: Any) -> tuple[Optional[str], Optional[str]]:
    if value is None:
        return None, "id is missing"
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        return None, f"id is not a string ({_describe(value)})"
    text = str(value)
    if not text.strip():
        return None, "id is empty"
    bad = _unencodable_at(text)
    if bad is not None:
        return None, f"id is not valid UTF-8 text (undecodable byte or unpaired surrogate at character {bad})"
    return text, None


def _as_text(name: str, value: Any) -> tuple[Optional[str], Optional[str]]:
    if value is None:
        return None, f"{name} is missing"
    if not isinstance(value, str):
        return None, f"{name} is not a string ({_describe(value)})"
    bad = _unencodable_at(value)
    if bad is not None:
        # The value is dropped, not kept: Arrow (and so the output) cannot hold it.
        return None, f"{name} is not valid UTF-8 text (undecodable byte or unpaired surrogate at character {bad})"
    if not value.strip():
        return value, f"{name} is empty"
    return value, None


def check_row(id_value: Any, question: Any, context: Any) -> CheckedRow:
    """Coerce what can be coerced (integer ids become strings) and report the first
    problem of each field, all of them in one message."""
    rid, id_err = _as_id(id_value)
    q, q_err = _as_text("question", question)
    c, c_err = _as_text("context", context)
    problems = [e for e in (id_err, q_err, c_err) if e]
    error = f"{INVALID_ROW}: {'; '.join(problems)}" if problems else None
    return CheckedRow(id=rid, question=q, context=c, error=error)


class DuplicateIdTracker:
    """Remembers ids already seen in this run; the first row with an id is answered,
    later rows with the same id get an error (answering both would make the output
    ambiguous for anyone joining on id)."""

    def __init__(self) -> None:
        self._seen: set[str] = set()

    def check(self, row_id: Optional[str]) -> Optional[str]:
        if row_id is None:
            return None
        if row_id in self._seen:
            return f"{DUPLICATE_ID}: id {row_id!r} appeared earlier in the input; only its first row is answered"
        self._seen.add(row_id)
        return None

    def __len__(self) -> int:
        return len(self._seen)

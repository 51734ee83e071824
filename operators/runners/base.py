"""What every expert runner returns, so the expert stage and the cost ledger treat all
kinds of expert alike (extractive readers, replayed predictions, generative models)."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Optional, Protocol, Sequence


@dataclass
class RunnerOutput:
    """One entry per input row, in input order.

    `answers[i]` is None exactly when `errors[i]` says why the runner could not answer
    that row; an empty string is a real answer ("no answer" in SQuAD 2.0 terms).
    """

    answers: list[Optional[str]]
    scores: list[Optional[float]]
    input_tokens: list[int]
    output_tokens: list[int]
    errors: list[Optional[str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.errors:
            self.errors = [None] * len(self.answers)
        n = len(self.answers)
        for name in ("scores", "input_tokens", "output_tokens", "errors"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"RunnerOutput.{name} has {len(getattr(self, name))} entries, expected {n}")


def unusable_reason(question: object, context: object) -> Optional[str]:
    """Why a runner cannot answer this row, or None. Written "kind: detail" like every
    row error, so the summary counts it by kind; the stage's row checks catch these
    earlier in a job, but runners also serve the online endpoint and benchmarks."""
    if not isinstance(question, str) or not question.strip():
        return "invalid_row: question is missing or empty"
    if not isinstance(context, str) or not context.strip():
        return "invalid_row: context is missing or empty"
    return None


def check_batch_lengths(ids: Sequence[object], questions: Sequence[object], contexts: Sequence[object]) -> int:
    """The batch's row count; a caller that passes ragged columns has a bug, not bad data."""
    n = len(ids)
    if not (len(questions) == len(contexts) == n):
        raise ValueError(f"ids, questions and contexts differ in length ({n}, {len(questions)}, {len(contexts)})")
    return n


class PassLog:
    """How full each forward pass (or request wave) of a runner was: (held, capacity).

    A runner appends one entry per pass it runs (`held` rows or windows against the
    `capacity` its `batch_size` allows); the expert stage drains the log after each call
    and writes the figures into the rows it answered, so the run summary can report
    each expert's mean batch fill from the output alone (pipelines/summary.py). Why it
    matters: on a GPU a pass of 6 windows costs about what a pass of 64 does, so an
    expert whose passes are a tenth full runs at a tenth of its throughput.

    Locked because a call abandoned by `execution.batch_timeout_s` may still be running
    in its thread when the next call starts; its passes then land in a later drain,
    which is still a true count of passes the actor ran.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._passes: list[tuple[int, int]] = []

    def record(self, held: int, capacity: int) -> None:
        with self._lock:
            self._passes.append((int(held), max(1, int(capacity))))

    def record_chunks(self, n: int, capacity: int) -> None:
        """`n` items run `capacity` at a time: full passes, then one with the rest."""
        for lo in range(0, n, max(1, capacity)):
            self.record(min(capacity, n - lo), capacity)

    def drain(self) -> list[tuple[int, int]]:
        with self._lock:
            out, self._passes = self._passes, []
        return out


class ExpertRunner(Protocol):
    """An expert that answers a batch of questions. Built once per actor (model loading
    is expensive), then called once per batch."""

    def answer(
        self, ids: Sequence[str], questions: Sequence[str], contexts: Sequence[str]
    ) -> RunnerOutput: ...

"""What every expert runner returns, so the expert stage and the cost ledger treat all
kinds of expert alike (extractive readers, replayed predictions, generative models)."""

from __future__ import annotations

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


class ExpertRunner(Protocol):
    """An expert that answers a batch of questions. Built once per actor (model loading
    is expensive), then called once per batch."""

    def answer(
        self, ids: Sequence[str], questions: Sequence[str], contexts: Sequence[str]
    ) -> RunnerOutput: ...

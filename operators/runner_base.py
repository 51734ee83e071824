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


class ExpertRunner(Protocol):
    """An expert that answers a batch of questions. Built once per actor (model loading
    is expensive), then called once per batch."""

    def answer(
        self, ids: Sequence[str], questions: Sequence[str], contexts: Sequence[str]
    ) -> RunnerOutput: ...

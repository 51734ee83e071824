"""The replay expert: answers from predictions a real system recorded earlier.

It lets routing be developed and measured on real expert behaviour (the SQuAD
leaderboard systems in data/squad_replay) without running those models.
"""

from __future__ import annotations

import json
from typing import Sequence

from operators.runners.base import PassLog, RunnerOutput
from routing.core.config import ReplayExpert
from routing.core.storage import read_bytes


def _word_count(text: str) -> int:
    # Replayed systems left no tokenizer behind; whitespace words are a stable,
    # documented stand-in so that per-token prices still mean something.
    return len(text.split())


class ReplayRunner:
    def __init__(self, spec: ReplayExpert) -> None:
        self.spec = spec
        # A lookup has no forward pass; chunks of batch_size rows stand in for one, so
        # fill means the same (rows held per call against batch_size) for every kind.
        self.passes = PassLog()
        try:
            data = json.loads(read_bytes(spec.predictions))
        except (OSError, ValueError) as exc:
            raise ValueError(
                f"experts.{spec.name}.predictions: cannot load {spec.predictions!r}: {exc}"
            ) from None
        if not isinstance(data, dict):
            raise ValueError(
                f"experts.{spec.name}.predictions: expected a JSON object {{id: answer}}, got {type(data).__name__}"
            )
        self.predictions = {str(k): ("" if v is None else str(v)) for k, v in data.items()}

    def answer(
        self, ids: Sequence[str], questions: Sequence[str], contexts: Sequence[str]
    ) -> RunnerOutput:
        answers, errors, tin, tout = [], [], [], []
        for qid, question, context in zip(ids, questions, contexts):
            tin.append(_word_count(question or "") + _word_count(context or ""))
            if qid in self.predictions:
                answer = self.predictions[qid]
                answers.append(answer)
                errors.append(None)
                tout.append(_word_count(answer))
            else:
                answers.append(None)
                errors.append(f"expert_error: {self.spec.name} has no recorded prediction for id {qid!r}")
                tout.append(0)
        self.passes.record_chunks(len(answers), self.spec.batch_size)
        return RunnerOutput(
            answers=answers, scores=[None] * len(answers), input_tokens=tin, output_tokens=tout, errors=errors
        )

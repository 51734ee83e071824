"""The agreement cascade's decision rule, and the plan the batch job runs it with.

What a worker needs at run time and nothing more: the agreement test between answers,
the stop / give-up rule after each stage (`cascade_decide` offline over recorded
answers, `CascadePlan` one stage at a time in the batch job, both on the same two
steps), and `CascadeStep`, what a row does next. Fitting a family of configurations on
replay data lives in `routing/cascades/agreement.py`, which imports this module; this
module never imports it, so the expert actors do not load the fitting code.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import numpy as np

from routing.answers.squad import token_f1
from routing.core.config import CascadeRouter


def answer_agreement(a: Optional[str], b: Optional[str]) -> float:
    """Normalised agreement of two answers in [0, 1] (token F1; empty == empty).

    None means "no recorded answer" and agrees with nothing: missing evidence must not
    look like two experts abstaining together.
    """
    if a is None or b is None:
        return 0.0
    return token_f1(a, b)


def pairwise_agreement(answers: Sequence[Sequence[Optional[str]]], experts: Sequence[int]) -> dict[tuple[int, int], np.ndarray]:
    """{(a, b): (n,) agreement} for every pair a < b of the given expert indices."""
    out = {}
    for a, b in itertools.combinations(sorted(set(experts)), 2):
        out[(a, b)] = np.array([answer_agreement(row[a], row[b]) for row in answers], dtype=np.float64)
    return out


def _agreement_test(agreement: dict[tuple[int, int], np.ndarray], tau: float, n: int) -> Callable[[int, int], np.ndarray]:
    """`agrees(a, b)`: (n,) whether experts a and b agree at >= tau; an expert agrees with itself."""

    def agrees(a: int, b: int) -> np.ndarray:
        if a == b:
            return np.ones(n, dtype=bool)
        return agreement[(min(a, b), max(a, b))] >= tau

    return agrees


def _strongest_answer(
    agrees: Callable[[int, int], np.ndarray], answered: Sequence[int], quality: np.ndarray, n: int
) -> tuple[np.ndarray, np.ndarray]:
    """(support, expert) per question of the best-supported answer among `answered`.

    An answer's support is the number of answered experts (itself included) agreeing
    with it. The group's answer is given by its best member, so groups are compared by
    size first and then by the quality of that member; `expert` is that member. Ties in
    quality go to the expert answered first.
    """
    best_support = np.zeros(n, dtype=np.int64)
    best_expert = np.full(n, -1, dtype=np.int64)
    best_quality = np.full(n, -np.inf)
    for a in answered:
        backers = [agrees(a, e) for e in answered]
        support = np.sum(backers, axis=0)
        group_quality = np.full(n, -np.inf)
        group_best = np.full(n, -1, dtype=np.int64)
        for e, backs in zip(answered, backers):
            better = backs & (quality[e] > group_quality)
            group_quality[better] = quality[e]
            group_best[better] = e
        wins = (support > best_support) | ((support == best_support) & (group_quality > best_quality))
        best_support = np.where(wins, support, best_support)
        best_expert = np.where(wins, group_best, best_expert)
        best_quality = np.where(wins, group_quality, best_quality)
    return best_support, best_expert


def _after_stage(support: np.ndarray, quorum: int, remaining: int) -> tuple[np.ndarray, np.ndarray]:
    """(stop, give_up) per question: the best answer has its quorum, or it cannot reach
    it even if all `remaining` stages agreed with it (then only the final expert helps)."""
    stop = support >= quorum
    return stop, ~stop & (support + remaining < quorum)


def _check_quorum(quorum: int) -> None:
    if quorum < 2:
        raise ValueError("quorum must be at least 2: one expert cannot agree with itself")


def cascade_decide(
    agreement: dict[tuple[int, int], np.ndarray],
    stages: Sequence[int],
    final: int,
    quality: np.ndarray,
    costs: np.ndarray,
    tau: float,
    n: int,
    quorum: int = 2,
) -> tuple[np.ndarray, np.ndarray]:
    """(chosen expert, cost paid) per question for one configuration; see module doc.

    After each stage, every answer so far gets a *support*: the number of answered
    stages (itself included) that agree with it at >= `tau`. Once some answer has
    `quorum` supporters the question stops there, answered by the best expert (by
    training quality) among the supporters of the best-supported answer. Once no answer
    can reach `quorum` even if every remaining stage agreed with it, the question goes to
    the final expert at once, without paying for the stages it would no longer need.
    `CascadePlan.next_steps` takes the same decision one stage at a time, for the batch job.
    """
    _check_quorum(quorum)
    choice = np.full(n, final, dtype=np.int64)
    paid = np.zeros(n)
    open_ = np.ones(n, dtype=bool)
    agrees = _agreement_test(agreement, tau, n)
    for t, s in enumerate(stages):
        paid[open_] += costs[s]
        support, best = _strongest_answer(agrees, stages[: t + 1], quality, n)
        stop, give_up = _after_stage(support, quorum, len(stages) - t - 1)
        stop &= open_
        give_up &= open_
        choice[stop] = best[stop]
        paid[give_up] += costs[final]
        open_ &= ~(stop | give_up)
    paid[open_] += costs[final]
    return choice, paid


def describe_cascade(stages: Sequence[str], final: str, tau: float, quorum: int) -> str:
    """One line per configuration, as bench-router prints it: `a>b>c>final @tau=0.8 quorum=3`
    (the quorum only when it is not the default 2)."""
    need = "" if quorum == 2 else f" quorum={quorum}"
    return f"{'>'.join([*stages, final])} @tau={tau:g}{need}"


@dataclass(frozen=True)
class CascadeStep:
    """What one question does after a stage expert answered it.

    `done`: the cascade stops, and the row's answer is the trail's answer at
    `answer_from`, given by stage expert `expert`. Otherwise `expert` is the one to ask
    next: the next stage, or the final expert when no answer can reach the quorum.
    """

    expert: str
    done: bool
    answer_from: Optional[int] = None


class CascadePlan:
    """One cascade configuration by expert names, decided one stage at a time.

    The batch job cannot run `cascade_decide` over a whole corpus: each expert stage
    sees a row once, with only the answers of the stages before it. So the plan takes
    a row's trail (the answers of stages[:k], None where a stage gave none) and says
    what happens next, by the very same rule (`_strongest_answer`, `_after_stage`).
    It is also the router of a `kind: cascade` config: every question starts at the
    first stage.
    """

    def __init__(
        self,
        stages: Sequence[str],
        final: str,
        tau: float,
        quorum: int = 2,
        quality: Optional[dict[str, float]] = None,
    ) -> None:
        _check_quorum(quorum)
        if len(stages) < 2 or len(set(stages)) != len(stages) or final in stages:
            raise ValueError("a cascade needs at least two distinct stage experts, none of them the final one")
        if quorum > len(stages):
            raise ValueError(f"quorum ({quorum}) cannot exceed the number of stages ({len(stages)})")
        self.stages = tuple(stages)
        self.final = final
        self.tau = float(tau)
        self.quorum = int(quorum)
        # Default tie-break: later stages are the better experts (cheapest first).
        self.quality = np.array(
            [quality[s] for s in self.stages] if quality else np.arange(len(self.stages)), dtype=np.float64
        )
        self.expert_names = [*self.stages, final]

    @classmethod
    def from_spec(cls, spec: CascadeRouter) -> "CascadePlan":
        return cls(spec.stages, spec.final, spec.agreement, spec.quorum, spec.quality)

    def route(self, questions: Sequence[str], contexts: Sequence[str]) -> list[str]:
        """Every question starts with the first stage."""
        return [self.stages[0]] * len(questions)

    def next_steps(self, trails: Sequence[Sequence[Optional[str]]]) -> list[CascadeStep]:
        """The next step of each row, from its trail (answers of stages[:k], 1 <= k <= len(stages))."""
        out: list[Optional[CascadeStep]] = [None] * len(trails)
        by_length: dict[int, list[int]] = {}
        for i, trail in enumerate(trails):
            if not 1 <= len(trail) <= len(self.stages):
                raise ValueError(f"a cascade trail holds 1 to {len(self.stages)} answers, got {len(trail)}")
            by_length.setdefault(len(trail), []).append(i)
        for k, rows in by_length.items():
            m = len(rows)
            answered = list(range(k))
            agreement = pairwise_agreement([trails[i] for i in rows], answered)
            support, best = _strongest_answer(_agreement_test(agreement, self.tau, m), answered, self.quality, m)
            stop, give_up = _after_stage(support, self.quorum, len(self.stages) - k)
            for j, i in enumerate(rows):
                if stop[j]:
                    out[i] = CascadeStep(self.stages[best[j]], True, int(best[j]))
                elif give_up[j]:
                    out[i] = CascadeStep(self.final, False)
                else:
                    out[i] = CascadeStep(self.stages[k], False)
        return out  # type: ignore[return-value]

    def next_step(self, trail: Sequence[Optional[str]]) -> CascadeStep:
        return self.next_steps([trail])[0]

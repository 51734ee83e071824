"""Agreement cascade: ask cheap experts first, pay for the expensive one only on doubt.

A pre-answer router must guess difficulty from the question alone. A cascade looks at
*answers*: when two independent cheap readers return the same span, that span is very
likely right (their errors are far from perfectly correlated), and when they disagree
the question is probably hard. The signal is normalised answer agreement — the official
SQuAD token F1 between the two answers (1 for identical normalised spans, and 1 when
both say "no answer").

One configuration (stages, tau): run the stage experts one by one, cheapest first.
After each new answer, if it agrees (>= tau) with any earlier stage's answer, stop and
return the answer of the better expert (by training F1) among those that agree. If no
pair ever agrees, run the final expert and return its answer. Cost per question is the
sum of the experts actually run. The configuration with no stages is "final expert only".

Which configurations, and why a family: which cheap experts make good stages, and how
strict tau should be, depends on the budget — a cheap three-stage chain wins at low
cost but caps quality (two weak readers sometimes agree on the same wrong span), a
stronger pair reaches higher F1 at higher cost. `fit` evaluates every subset of
2..max_stages experts cheaper than the final one, at every tau of a coarse grid, on the
training questions and keeps the cost/F1 Pareto front of those cheaper than running the
final expert alone, ordered by training cost, and closes it with "final expert only".
That family plays the role the lambda grid plays for a pre-answer router: one knob from
cheap to dear. The final expert is the best on training F1 (ties to the cheaper).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from routing.evaluation import CurvePoint, best_single_index, curve_point
from routing.replay_data import ReplaySet
from routing.squad import token_f1

DEFAULT_TAUS: tuple[float, ...] = tuple(float(t) for t in np.round(np.linspace(0.0, 1.0, 11), 3))


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


def cascade_decide(
    agreement: dict[tuple[int, int], np.ndarray],
    stages: Sequence[int],
    final: int,
    quality: np.ndarray,
    costs: np.ndarray,
    tau: float,
    n: int,
) -> tuple[np.ndarray, np.ndarray]:
    """(chosen expert, cost paid) per question for one configuration; see module doc."""
    choice = np.full(n, final, dtype=np.int64)
    paid = np.zeros(n)
    open_ = np.ones(n, dtype=bool)
    for t, s in enumerate(stages):
        paid[open_] += costs[s]
        if t == 0:
            continue
        best_q = np.full(n, -np.inf)
        best_e = np.full(n, -1, dtype=np.int64)
        for earlier in stages[:t]:
            agree = open_ & (agreement[(min(s, earlier), max(s, earlier))] >= tau)
            for e in (s, earlier):
                better = agree & (quality[e] > best_q)
                best_q[better] = quality[e]
                best_e[better] = e
        stop = best_e >= 0
        choice[stop] = best_e[stop]
        open_ &= ~stop
    paid[open_] += costs[final]
    return choice, paid


@dataclass(frozen=True)
class CascadeConfig:
    stages: tuple[int, ...]  # () = run the final expert only
    tau: float
    train_cost: float
    train_f1: float


class AgreementCascade:
    """Cheap-experts-first cascade escalating on answer disagreement (estimator API).

    `stages` fixes the stage experts (by name) instead of searching; `final` fixes the
    expert to escalate to.
    """

    def __init__(
        self,
        stages: Optional[Sequence[str]] = None,
        final: Optional[str] = None,
        max_stages: int = 3,
        taus: Sequence[float] = DEFAULT_TAUS,
    ) -> None:
        self.stages = stages
        self.final = final
        self.max_stages = max_stages
        self.taus = taus

    def fit(self, replay: ReplaySet) -> "AgreementCascade":
        names = list(replay.expert_names)
        f1 = np.nan_to_num(replay.f1, nan=0.0)
        costs = replay.costs
        n = replay.n_questions
        self.expert_names_ = tuple(names)
        self.costs_ = costs.copy()
        self.quality_ = f1.mean(axis=0)
        self.final_ = names.index(self.final) if self.final else best_single_index(self.quality_, costs)
        if self.stages is not None:
            fixed = tuple(sorted((names.index(s) for s in self.stages), key=lambda j: (costs[j], j)))
            if len(fixed) < 2 or self.final_ in fixed:
                raise ValueError("a cascade needs at least two stage experts, none of them the final one")
            subsets = [fixed]
        else:
            cheaper = [j for j in range(len(names)) if costs[j] < costs[self.final_] and j != self.final_]
            if len(cheaper) < 2:
                raise ValueError("need at least two experts cheaper than the final one to build a cascade")
            subsets = [
                tuple(sorted(sub, key=lambda j: (costs[j], j)))
                for size in range(2, min(self.max_stages, len(cheaper)) + 1)
                for sub in itertools.combinations(cheaper, size)
            ]
        agreement = pairwise_agreement(replay.answers, sorted({j for sub in subsets for j in sub}))
        rows = np.arange(n)
        candidates = [CascadeConfig((), 1.0, float(costs[self.final_]), float(self.quality_[self.final_]))]
        for sub in subsets:
            for tau in self.taus:
                choice, paid = cascade_decide(agreement, sub, self.final_, self.quality_, costs, float(tau), n)
                candidates.append(CascadeConfig(sub, float(tau), float(paid.mean()), float(f1[rows, choice].mean())))
        # Pareto front: by cost, keep a configuration only if it beats every cheaper one.
        final_only, staged = candidates[0], candidates[1:]
        staged.sort(key=lambda c: (c.train_cost, -c.train_f1, len(c.stages), -c.tau))
        front: list[CascadeConfig] = []
        for c in staged:
            if c.train_cost < final_only.train_cost and (not front or c.train_f1 > front[-1].train_f1 + 1e-12):
                front.append(c)
        # "Final expert only" always closes the family, even when some staged
        # configuration beat it on the training questions: it is the one setting whose
        # quality is known without estimation, so the dear end of the knob (and the
        # fallback of an accuracy guarantee) is never worse than the reference.
        self.configs_ = tuple(front) + (final_only,)
        return self

    def _check_fitted(self) -> None:
        if not hasattr(self, "configs_"):
            raise RuntimeError("AgreementCascade is not fitted; call fit first")

    def describe(self, index: int) -> str:
        c = self.configs_[index]
        if not c.stages:
            return f"{self.expert_names_[self.final_]} only"
        chain = ">".join(self.expert_names_[j] for j in c.stages)
        return f"{chain}>{self.expert_names_[self.final_]} @tau={c.tau:g}"

    def decide(self, answers: Sequence[Sequence[Optional[str]]], index: int) -> tuple[np.ndarray, np.ndarray]:
        """(chosen expert, cost paid) per question for configuration `index`, from recorded answers."""
        self._check_fitted()
        c = self.configs_[index]
        agreement = pairwise_agreement(answers, c.stages)
        return cascade_decide(agreement, c.stages, self.final_, self.quality_, self.costs_, c.tau, len(answers))

    def settings(self, replay: ReplaySet) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(m, n) chosen expert, F1 and cost per configuration (cheap to dear) and question."""
        self._check_fitted()
        if tuple(replay.expert_names) != self.expert_names_:
            raise ValueError("replay set has different experts than the cascade was fitted on")
        used = sorted({j for c in self.configs_ for j in c.stages})
        agreement = pairwise_agreement(replay.answers, used)
        f1 = np.nan_to_num(replay.f1, nan=0.0)
        rows = np.arange(replay.n_questions)
        choices, f1s, paids = [], [], []
        for c in self.configs_:
            choice, paid = cascade_decide(agreement, c.stages, self.final_, self.quality_, self.costs_, c.tau, replay.n_questions)
            choices.append(choice)
            f1s.append(f1[rows, choice])
            paids.append(paid)
        return np.stack(choices), np.stack(f1s), np.stack(paids)

    def sweep(self, replay: ReplaySet) -> list[CurvePoint]:
        """The cost/F1 curve over the fitted configurations on a scored replay set."""
        choices, _, paids = self.settings(replay)
        f1 = np.nan_to_num(replay.f1, nan=0.0)
        em = np.nan_to_num(replay.em, nan=0.0)
        names = list(replay.expert_names)
        return [
            curve_point(choices[i], f1, em, replay.costs, names, float(i), paid=paids[i], label=self.describe(i))
            for i in range(len(self.configs_))
        ]

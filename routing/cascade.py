"""Agreement cascade: ask cheap experts first, pay for the expensive one only on doubt.

A pre-answer router must guess difficulty from the question alone. A cascade looks at
*answers*: when two independent cheap readers return the same span, that span is very
likely right (their errors are far from perfectly correlated), and when they disagree
the question is probably hard. The signal is normalised answer agreement — the official
SQuAD token F1 between the two answers (1 for identical normalised spans, and 1 when
both say "no answer").

Policy with threshold tau: run the stage experts one by one, cheapest first. After each
new answer, if it agrees (>= tau) with any earlier stage's answer, stop and return the
answer of the better expert (by training F1) among those that agree. If no pair ever
agrees, run the final expert and return its answer. Cost per question is the sum of
the experts actually run. tau sweeps the cost/F1 curve: tau = 0 always stops after two
stages, higher tau escalates more.

`fit` chooses the final expert (best training F1, ties to the cheaper) and, unless
given, which cheaper experts form the stages: every subset of 2..max_stages of them is
scored on the training questions with the same headline figures the benchmark reports
(savings at best-minus-one-point plus gap closed), and the best is kept.
"""

from __future__ import annotations

import itertools
from typing import Optional, Sequence

import numpy as np

from routing.evaluation import CurvePoint, best_single_index, curve_point, headline, oracle
from routing.replay_data import ReplaySet
from routing.squad import token_f1

DEFAULT_TAUS: tuple[float, ...] = tuple(float(t) for t in np.round(np.linspace(0.0, 1.0, 21), 3))


def answer_agreement(a: Optional[str], b: Optional[str]) -> float:
    """Normalised agreement of two answers in [0, 1] (token F1; empty == empty)."""
    return token_f1(a or "", b or "")


def pairwise_agreement(answers: Sequence[Sequence[Optional[str]]], experts: Sequence[int]) -> dict[tuple[int, int], np.ndarray]:
    """{(a, b): (n,) agreement} for every pair a < b of the given expert indices."""
    out = {}
    for a, b in itertools.combinations(sorted(experts), 2):
        out[(a, b)] = np.array([answer_agreement(row[a], row[b]) for row in answers])
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
    """(chosen expert, cost paid) per question for one threshold; see module doc."""
    choice = np.full(n, -1, dtype=np.int64)
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
    choice[open_] = final
    return choice, paid


class AgreementCascade:
    """Cheap-experts-first cascade escalating on answer disagreement (estimator API)."""

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
        em = np.nan_to_num(replay.em, nan=0.0)
        costs = replay.costs
        self.expert_names_ = tuple(names)
        self.quality_ = f1.mean(axis=0)
        self.final_ = names.index(self.final) if self.final else best_single_index(self.quality_, costs)
        if self.stages is not None:
            self.stages_ = tuple(sorted((names.index(s) for s in self.stages), key=lambda j: (costs[j], j)))
            if len(self.stages_) < 2 or self.final_ in self.stages_:
                raise ValueError("a cascade needs at least two stage experts, none of them the final one")
            self.search_ = ()
            return self
        cheaper = [j for j in range(len(names)) if costs[j] < costs[self.final_] and j != self.final_]
        if len(cheaper) < 2:
            raise ValueError("need at least two experts cheaper than the final one to build a cascade")
        agreement = pairwise_agreement(replay.answers, cheaper)
        best_ref = {"name": names[self.final_], "f1": float(self.quality_[self.final_]), "cost": float(costs[self.final_])}
        orc = oracle(f1, em, costs)
        results = []
        for size in range(2, min(self.max_stages, len(cheaper)) + 1):
            for subset in itertools.combinations(cheaper, size):
                stages = tuple(sorted(subset, key=lambda j: (costs[j], j)))
                curve = self._curve(agreement, stages, f1, em, costs, names)
                h = headline(curve, best_ref, orc)
                score = (h["savings_vs_best"] if h["savings_vs_best"] is not None else -1.0) + (
                    h["gap_closed"] if h["gap_closed"] is not None else -1.0
                )
                results.append((score, -float(costs[list(stages)].sum()), stages))
        results.sort(key=lambda r: (r[0], r[1]), reverse=True)
        self.stages_ = results[0][2]
        self.search_ = tuple((tuple(names[j] for j in st), sc) for sc, _, st in results[:10])
        return self

    def _curve(self, agreement, stages, f1, em, costs, names) -> list[CurvePoint]:
        n = f1.shape[0]
        points = []
        for tau in self.taus:
            choice, paid = cascade_decide(agreement, stages, self.final_, self.quality_, costs, tau, n)
            points.append(curve_point(choice, f1, em, costs, names, tau, paid=paid))
        return points

    def _check_fitted(self) -> None:
        if not hasattr(self, "stages_"):
            raise RuntimeError("AgreementCascade is not fitted; call fit first")

    def decide(self, answers: Sequence[Sequence[Optional[str]]], costs: np.ndarray, tau: float) -> tuple[np.ndarray, np.ndarray]:
        """(chosen expert, cost paid) per question from the recorded answers [question][expert]."""
        self._check_fitted()
        agreement = pairwise_agreement(answers, self.stages_)
        return cascade_decide(agreement, self.stages_, self.final_, self.quality_, np.asarray(costs), tau, len(answers))

    def sweep(self, replay: ReplaySet) -> list[CurvePoint]:
        """The cost/F1 curve over `taus` on a scored replay set with the same experts."""
        self._check_fitted()
        if tuple(replay.expert_names) != self.expert_names_:
            raise ValueError("replay set has different experts than the cascade was fitted on")
        agreement = pairwise_agreement(replay.answers, self.stages_)
        f1 = np.nan_to_num(replay.f1, nan=0.0)
        em = np.nan_to_num(replay.em, nan=0.0)
        return self._curve(agreement, self.stages_, f1, em, replay.costs, list(replay.expert_names))

    def settings_f1(self, replay: ReplaySet, taus: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
        """(len(taus), n) F1 and cost paid per threshold and question, for calibration."""
        self._check_fitted()
        agreement = pairwise_agreement(replay.answers, self.stages_)
        f1 = np.nan_to_num(replay.f1, nan=0.0)
        rows = np.arange(replay.n_questions)
        out_f1, out_cost = [], []
        for tau in taus:
            choice, paid = cascade_decide(agreement, self.stages_, self.final_, self.quality_, replay.costs, tau, replay.n_questions)
            out_f1.append(f1[rows, choice])
            out_cost.append(paid)
        return np.stack(out_f1), np.stack(out_cost)

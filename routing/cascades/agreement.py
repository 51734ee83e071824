"""Agreement cascade: ask cheap experts first, pay for the expensive one only on doubt.

A pre-answer router must guess difficulty from the question alone. A cascade looks at
*answers*: when two independent cheap readers return the same span, that span is very
likely right (their errors are far from perfectly correlated), and when they disagree
the question is probably hard. The signal is normalised answer agreement — the official
SQuAD token F1 between the two answers (1 for identical normalised spans, and 1 when
both say "no answer").

One configuration (stages, tau, quorum): run the stage experts one by one, cheapest
first. After each new answer, count for every answer so far how many stages agree with
it (>= tau); once some answer has `quorum` supporters, stop and return the answer of the
best expert (by training F1) among them. If no answer can reach the quorum any more, run
the final expert and return its answer. Cost per question is the sum of the experts
actually run. The configuration with no stages is "final expert only".

Quorum 2 ("any two agree") is the cheap end. A quorum of every stage (unanimity) is the
careful end, and the one that can beat the final expert: a span that several different
cheap readers all return is sometimes right where the strongest expert is wrong. In the
cross-validation over the shared articles (issue 3's notes), adding unanimity and a
fourth stage raised the share of the oracle gap closed at no more than the final
expert's cost from 0 / 14.0 / 0 % to 4.5 / 16.5 / 3.5 %. The fit searches both.

Which configurations, and why a family: which cheap experts make good stages, and how
strict tau should be, depends on the budget — a cheap three-stage chain wins at low
cost but caps quality (two weak readers sometimes agree on the same wrong span), a
stronger pair reaches higher F1 at higher cost. `fit` evaluates every subset of
2..max_stages experts cheaper than the final one, at every tau of a coarse grid and both
quorums, on the training questions and keeps the cost/F1 Pareto front of those cheaper than running the
final expert alone, ordered by training cost, and closes it with "final expert only".
That family plays the role the lambda grid plays for a pre-answer router: one knob from
cheap to dear. The final expert is the best on training F1 (ties to the cheaper).

Offline, `cascade_decide` decides for all questions at once from recorded answers. The
batch job (`router: {kind: cascade}`) sees each answer only as its expert gives it, so
`CascadePlan` takes the same decision one stage at a time; both are built on the same
two steps (`_strongest_answer`, `_after_stage`), so they cannot drift apart.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import numpy as np

from routing.core.config import CascadeRouter
from routing.replay.metrics import CurvePoint, best_single_index, curve_point
from routing.replay.data import ReplaySet
from routing.answers.squad import token_f1

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


@dataclass(frozen=True)
class CascadeConfig:
    stages: tuple[int, ...]  # () = run the final expert only
    tau: float
    train_cost: float
    train_f1: float
    quorum: int = 2


class AgreementCascade:
    """Cheap-experts-first cascade escalating on answer disagreement (estimator API).

    `stages` fixes the stage experts (by name) instead of searching; `final` fixes the
    expert to escalate to.
    """

    def __init__(
        self,
        stages: Optional[Sequence[str]] = None,
        final: Optional[str] = None,
        max_stages: int = 4,
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
                for quorum in sorted({2, len(sub)}):
                    choice, paid = cascade_decide(agreement, sub, self.final_, self.quality_, costs, float(tau), n, quorum)
                    candidates.append(CascadeConfig(sub, float(tau), float(paid.mean()), float(f1[rows, choice].mean()), quorum))
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
        return describe_cascade([self.expert_names_[j] for j in c.stages], self.expert_names_[self.final_], c.tau, c.quorum)

    def pick(self, tolerance: float = 0.01) -> int:
        """The configuration to run: the cheapest whose training F1 is within
        `tolerance` of the final expert alone (which always qualifies), chosen on the
        training questions only."""
        self._check_fitted()
        target = self.configs_[-1].train_f1 - tolerance - 1e-12
        return min(
            (i for i, c in enumerate(self.configs_) if c.train_f1 >= target),
            key=lambda i: (self.configs_[i].train_cost, i),
        )

    def router_fields(self, index: int) -> Optional[dict]:
        """Configuration `index` as the `router:` fields of a batch job (`kind: cascade`),
        with the fitted quality numbers, so the job decides exactly as evaluated here;
        None for "final expert only", which is `kind: fixed`."""
        self._check_fitted()
        c = self.configs_[index]
        if not c.stages:
            return None
        names = self.expert_names_
        return {
            "kind": "cascade",
            "stages": [names[j] for j in c.stages],
            "final": names[self.final_],
            "agreement": c.tau,
            "quorum": c.quorum,
            "quality": {names[j]: float(self.quality_[j]) for j in c.stages},
        }

    def decide(self, answers: Sequence[Sequence[Optional[str]]], index: int) -> tuple[np.ndarray, np.ndarray]:
        """(chosen expert, cost paid) per question for configuration `index`, from recorded answers."""
        self._check_fitted()
        c = self.configs_[index]
        agreement = pairwise_agreement(answers, c.stages)
        return cascade_decide(agreement, c.stages, self.final_, self.quality_, self.costs_, c.tau, len(answers), c.quorum)

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
            choice, paid = cascade_decide(agreement, c.stages, self.final_, self.quality_, self.costs_, c.tau, replay.n_questions, c.quorum)
            choices.append(choice)
            f1s.append(f1[rows, choice])
            paids.append(paid)
        return np.stack(choices), np.stack(f1s), np.stack(paids)

    def sweep(self, replay: ReplaySet, settings: Optional[tuple[np.ndarray, np.ndarray, np.ndarray]] = None) -> list[CurvePoint]:
        """The cost/F1 curve over the fitted configurations on a scored replay set.

        `settings`: what `self.settings(replay)` returned, for a caller that needs both
        (deciding every configuration on every question is the costly part)."""
        choices, _, paids = settings if settings is not None else self.settings(replay)
        f1 = np.nan_to_num(replay.f1, nan=0.0)
        em = np.nan_to_num(replay.em, nan=0.0)
        names = list(replay.expert_names)
        return [
            curve_point(choices[i], f1, em, replay.costs, names, float(i), paid=paids[i], label=self.describe(i))
            for i in range(len(self.configs_))
        ]

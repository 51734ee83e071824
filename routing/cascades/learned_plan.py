"""The learned cascade's decision rule, and the plan the batch job runs it with.

What a worker needs at run time: the per-step scores of the answers so far (a logistic
model over `answer_features`), the stop rule, `decide_chain` / `decide_thresholds` to
apply it offline to recorded answers, the fitted `LearnedCascadeModel` and
`LearnedCascadePlan`, which takes the same decisions one expert at a time. Fitting,
cross-validation and the choice of threshold live in `routing/cascades/learned.py`,
which imports this module; this module never imports it.

A cascade may also *skip* cheap experts before any answer exists: `SkipGate` scores
each cheap chain position from the question's pre-answer features (the routers'
`RouterFeaturizer`), and a row starts at the first position predicted to score at
least the gate's bar. A skipped position is recorded as "no answer" in the row's
trail, which the step models already read as missing, and it is not paid for.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import numpy as np

from routing.cascades.agreement_plan import CascadeStep
from routing.cascades.answer_features import AnswerStats, answer_stats, candidate_features, n_features


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(z, -40.0, 40.0)))


def step_features(stats: AnswerStats, m: int) -> list[np.ndarray]:
    """The feature matrix of every candidate position after m chain experts."""
    return [candidate_features(stats, m, c) for c in range(m)]


def scores_from_features(features: Sequence[np.ndarray], answered: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """(n, m) predicted F1 per candidate; -inf where the position gave no answer."""
    out = np.full((answered.shape[0], len(features)), -np.inf)
    for c, X in enumerate(features):
        ok = answered[:, c]
        out[ok, c] = _sigmoid(X[ok] @ weights)
    return out


def step_scores(stats: AnswerStats, m: int, weights: np.ndarray) -> np.ndarray:
    """(n, m) predicted F1 of each answer after m chain experts; -inf where there is none."""
    return scores_from_features(step_features(stats, m), stats.answered, weights)


def best_answers(scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(position, score) of each row's best-scoring answer; the score is -inf for a row
    with no answer at all."""
    best = np.argmax(scores, axis=1)
    return best, scores[np.arange(scores.shape[0]), best]


def trusted(top: np.ndarray, theta: np.ndarray | float) -> np.ndarray:
    """The stop rule: a row stops once its best answer's score reaches the threshold."""
    return np.isfinite(top) & (top >= theta)


def without_skipped(stats: AnswerStats, start: Optional[np.ndarray]) -> AnswerStats:
    """The stats as if positions before each row's `start` had not answered: exactly what
    `answer_stats` gives on trails whose first `start` answers are None."""
    if start is None:
        return stats
    skipped = np.arange(stats.width)[None, :] < np.asarray(start)[:, None]  # (n, width)
    pair = skipped[:, :, None] | skipped[:, None, :]
    return AnswerStats(
        agreement=np.where(pair, 0.0, stats.agreement),
        contains=stats.contains & ~pair,
        length=np.where(skipped, 0.0, stats.length),
        empty=stats.empty & ~skipped,
        answered=stats.answered & ~skipped,
    )


@dataclass(frozen=True)
class SkipGate:
    """Which cheap experts a row skips, decided from its question alone.

    `weights[c]` is a logistic model of chain position c's F1 on the question's
    features (the last weight is the bias); a row starts at the first cheap position
    whose predicted F1 reaches `below`, or at the final expert if none does. `below` 0
    skips nothing."""

    weights: np.ndarray  # (chain width - 1, n_question_features + 1)
    below: float

    def predicted_f1(self, X: np.ndarray) -> np.ndarray:
        """(n, cheap positions) predicted F1 of every cheap expert on each question."""
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] + 1 != self.weights.shape[1]:
            raise ValueError(f"the skip gate needs {self.weights.shape[1] - 1} question features per row, got shape {X.shape}")
        return _sigmoid(np.hstack([X, np.ones((len(X), 1))]) @ self.weights.T)

    def start(self, X: np.ndarray) -> np.ndarray:
        """(n,) chain position each row starts at."""
        return start_positions(self.predicted_f1(X), self.below)


def start_positions(predicted: np.ndarray, below: float) -> np.ndarray:
    """First cheap position whose predicted F1 is >= `below`; the final one if none is."""
    stages = predicted.shape[1]
    ok = predicted >= below
    return np.where(ok.any(axis=1), np.argmax(ok, axis=1), stages)


def decide_thresholds(
    scores: Sequence[np.ndarray], step_costs: np.ndarray, thresholds: Sequence[float],
    start: Optional[np.ndarray] = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(T, n) chain position answering and cost paid, per threshold and question.

    `scores[m-1]` is what `step_scores` gives after m experts; `step_costs` the chain's
    costs. A question stops at the first step before the last whose best score is
    >= the threshold, else after the last step, where the best-scoring answer of all is
    returned. A question with no answer at all after the last expert gets position -1.
    The best answer of each step does not depend on the threshold, so every threshold
    is decided at once. `start` (n,) gives each row's first chain position when a skip
    gate sent it further along: the scores must then come from `without_skipped` stats
    (no answer before the start, so no stop there), and the skipped experts are not paid.
    """
    width = len(scores)
    n = scores[0].shape[0]
    rows = np.arange(n)
    best, top = (np.stack(a) for a in zip(*(best_answers(s) for s in scores)))  # (width, n) each
    theta = np.asarray(thresholds, dtype=np.float64)[:, None]
    stop_at = np.full((len(theta), n), width - 1)
    for m in reversed(range(width - 1)):  # the earliest step that trusts an answer wins
        stop_at = np.where(trusted(top[m], theta), m, stop_at)
    choice = np.where(np.isfinite(top[stop_at, rows]), best[stop_at, rows], -1)
    spent = np.cumsum(step_costs)
    paid = spent[stop_at]
    if start is not None:
        start = np.asarray(start)
        paid = paid - np.where(start > 0, spent[np.maximum(start - 1, 0)], 0.0)[None, :]
    return choice, paid


def decide_chain(
    scores: Sequence[np.ndarray], step_costs: np.ndarray, theta: float, start: Optional[np.ndarray] = None
) -> tuple[np.ndarray, np.ndarray]:
    """`decide_thresholds` for one threshold: (position, cost) per question."""
    choice, paid = decide_thresholds(scores, step_costs, [theta], start)
    return choice[0], paid[0]


@dataclass(frozen=True)
class LearnedCascadeModel:
    """A fitted chain: expert names in asking order (the last is the final expert), the
    per-expert costs, one weight vector per step, and (optionally) the skip gate."""

    chain: tuple[str, ...]
    costs: np.ndarray  # (width,)
    weights: tuple[np.ndarray, ...]  # width vectors of n_features(width)
    l2: float
    gate: Optional[SkipGate] = None

    @property
    def width(self) -> int:
        return len(self.chain)

    def scores(self, stats: AnswerStats) -> list[np.ndarray]:
        return [step_scores(stats, m, self.weights[m - 1]) for m in range(1, self.width + 1)]

    def start(self, X: Optional[np.ndarray], n: int) -> Optional[np.ndarray]:
        """Each row's first chain position (None: no gate, every row starts at 0)."""
        if self.gate is None:
            return None
        if X is None:
            raise ValueError("this cascade skips experts by the question's features: give them (X)")
        if len(X) != n:
            raise ValueError(f"{len(X)} feature rows for {n} questions")
        return self.gate.start(X)

    def decide(
        self, trails: Sequence[Sequence[Optional[str]]], theta: float, X: Optional[np.ndarray] = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """From full trails (every chain expert's answer, None where it gave none) and,
        for a gated cascade, the questions' features."""
        start = self.start(X, len(trails))
        stats = without_skipped(answer_stats(trails, self.width), start)
        return decide_chain(self.scores(stats), self.costs, theta, start)


def check_weights(chain: Sequence[str], weights: Sequence[np.ndarray], gate: Optional[SkipGate] = None) -> None:
    """A model's weights must be one finite vector of the right length per chain step,
    and a gate's one finite row per cheap expert with a bar in [0, 1]."""
    d = n_features(len(chain))
    if len(weights) != len(chain):
        raise ValueError(f"a chain of {len(chain)} experts needs {len(chain)} weight vectors, got {len(weights)}")
    for m, w in enumerate(weights, start=1):
        if w.shape != (d,) or not np.all(np.isfinite(w)):
            raise ValueError(f"step {m}: weights must be {d} finite numbers")
    if gate is not None:
        g = gate.weights
        if g.ndim != 2 or g.shape[0] != len(chain) - 1 or g.shape[1] < 2 or not np.all(np.isfinite(g)):
            raise ValueError(f"skip gate: weights must be {len(chain) - 1} finite rows of features + bias")
        if not 0.0 <= gate.below <= 1.0:
            raise ValueError(f"skip gate: the bar must lie in [0, 1], got {gate.below}")


class LearnedCascadePlan:
    """A fitted learned cascade by expert names, decided one expert at a time.

    The batch job's expert stages run along the chain; after each stage answers a row,
    `next_steps` takes the row's trail (the answers of chain[:k], None where an expert
    gave none) and says whether the row stops (and with whose answer) or which expert
    is next, by exactly the rule `decide_chain` applies offline. After the final expert,
    `final_choice` picks among every answer the row paid for.
    """

    def __init__(
        self, model: LearnedCascadeModel, threshold: Optional[float], description: str = "",
        featurize: Optional[Callable[[Sequence[str], Sequence[str]], np.ndarray]] = None,
    ) -> None:
        """`threshold` None: every question goes straight to the final expert, whose
        answer it keeps (what an accuracy target that cannot be certified asks for).
        `featurize(questions, contexts)` gives a gated model its question features (the
        checkpoint's fitted featurizer)."""
        if threshold is not None and not 0.0 <= threshold <= 1.0:
            raise ValueError(f"threshold must lie in [0, 1], got {threshold}")
        check_weights(model.chain, model.weights, model.gate)
        if model.gate is not None and featurize is None:
            raise ValueError("a learned cascade with a skip gate needs the featurizer it was fitted with")
        self.featurize = featurize
        self.model = model
        self.threshold = None if threshold is None else float(threshold)
        self.stages = model.chain[:-1]
        self.final = model.chain[-1]
        self.expert_names = list(model.chain)
        self.description = description

    @property
    def final_only(self) -> bool:
        return self.threshold is None

    def route(self, questions: Sequence[str], contexts: Sequence[str]) -> list[str]:
        """The expert each question starts with: the first of the chain, or the first its
        skip gate keeps (or the final one). A row that starts at position k carries k
        empty answers in its trail (`skipped_trail`)."""
        if self.final_only:
            return [self.final] * len(questions)
        if self.model.gate is None or not len(questions):
            return [self.model.chain[0]] * len(questions)
        assert self.featurize is not None
        start = self.model.start(self.featurize(list(questions), list(contexts)), len(questions))
        return [self.model.chain[int(k)] for k in start]

    def skipped_trail(self, expert: str) -> list[dict]:
        """The trail a row starting at `expert` carries: one empty answer per skipped
        position, so each stage still sees the row after the stages before it."""
        if self.final_only:
            return []
        return [{"answer": None, "score": None}] * self.model.chain.index(expert)

    def _scores(self, trails: Sequence[Sequence[Optional[str]]], k: int) -> np.ndarray:
        stats = answer_stats(trails, self.model.width)
        return step_scores(stats, k, self.model.weights[k - 1])

    def next_steps(self, trails: Sequence[Sequence[Optional[str]]]) -> list[CascadeStep]:
        """The next step of each row after a stage expert (1 <= len(trail) < len(chain))."""
        out: list[Optional[CascadeStep]] = [None] * len(trails)
        by_length: dict[int, list[int]] = {}
        for i, trail in enumerate(trails):
            if not 1 <= len(trail) < self.model.width:
                raise ValueError(f"a learned cascade trail after a stage holds 1 to {self.model.width - 1} answers, got {len(trail)}")
            by_length.setdefault(len(trail), []).append(i)
        for k, rows in by_length.items():
            best, top = best_answers(self._scores([trails[i] for i in rows], k))
            stop = trusted(top, self.threshold)
            for j, i in enumerate(rows):
                if stop[j]:
                    out[i] = CascadeStep(self.model.chain[best[j]], True, int(best[j]))
                else:
                    out[i] = CascadeStep(self.model.chain[k], False)
        return out  # type: ignore[return-value]

    def final_choice(self, trails: Sequence[Sequence[Optional[str]]]) -> list[int]:
        """Per row whose trail is complete (every chain expert asked), the chain position
        whose answer the row returns; the final expert's own when nothing else scores."""
        for trail in trails:
            if len(trail) != self.model.width:
                raise ValueError(f"a complete learned cascade trail holds {self.model.width} answers, got {len(trail)}")
        if not trails:
            return []
        best, top = best_answers(self._scores(trails, self.model.width))
        return [int(b) if np.isfinite(t) else self.model.width - 1 for b, t in zip(best, top)]

    def describe(self) -> str:
        chain = ">".join(self.model.chain)
        how = f"{self.final} only" if self.final_only else f"threshold {self.threshold:g}"
        if self.model.gate is not None and not self.final_only:
            how += f", skips a cheap expert predicted below F1 {self.model.gate.below:.3g}"
        return f"{chain} (learned, {how}" + (f"; {self.description})" if self.description else ")")

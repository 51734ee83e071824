"""Learned cascade: ask experts along a chain, stop when a fitted model trusts an answer.

The agreement cascade (`routing/cascades/agreement.py`) stops on a hand-set rule: some answer has
`quorum` supporters at agreement >= tau. That rule ignores *which* experts agree, how
close their spans are, and whether an answer is a boundary variant of another. Here each
step of the chain has its own small model instead — a logistic regression on the
post-answer features of `routing/cascades/answer_features.py` that predicts the F1 of every
answer paid for so far. After expert m of the chain has answered:

* the row's current answer is the candidate with the highest predicted F1;
* before the last expert, the row stops when that prediction is >= the threshold
  theta, and otherwise asks the next expert of the chain;
* after the last (most expensive) expert, the model picks among *all* the answers the
  row paid for, so a span that the cheap readers agree on can win over the final
  expert's — the one way any router of recorded answers can beat the best expert.

theta is the cost knob, as lambda is for a pre-answer router: 0 stops everything after
the first expert, 1 runs the whole chain. Which chain (which cheap experts, up to
`max_stages` of them before the final one, in cost order), how strongly to regularise
and the threshold are chosen together by grouped cross-validation *inside* the
training set, for what a job runs: the lowest held-out cost within a point of the
final expert's F1. Nothing is tuned on test questions. Given the questions' pre-answer
features (`fit(replay, X)`), the chosen chain may also get a skip gate
(`learned_plan.SkipGate`, chosen in `_fit_gate`) that starts a row past cheap experts
predicted to fail on it; it is kept only where that lowers the held-out cost. (The
featurizer itself is fitted on the whole training set, so the gate's held-out figures
share its scalers and layer choice with the held-out article: a small optimism.)

This is the combination the anchors do not make: SMART and RouteLLM calibrate a
choice between fixed models, the learning-to-defer rejector decides before any expert
answers; the learned cascade learns its deferral decision from the answers themselves.
`LearnedCascadePlan` (`routing/cascades/learned_plan.py`, with the decision rule) takes the same decisions one expert at a time inside the batch job.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import numpy as np

from routing.cascades.answer_features import AnswerStats, answer_stats
from routing.cascades.learned_plan import (
    LearnedCascadeModel,
    SkipGate,
    _sigmoid,
    best_answers,
    decide_thresholds,
    scores_from_features,
    start_positions,
    step_features,
    without_skipped,
)
from routing.replay.metrics import CurvePoint, best_single_index, curve_point
from routing.calibration.policy import choose_setting_for_accuracy, deployed_choice
from routing.replay.data import ReplaySet, grouped_folds

DEFAULT_L2: tuple[float, ...] = (0.3, 1.0, 3.0)
# Shares of the held-out gate predictions (pooled over the cheap positions) below which
# a cheap expert is skipped; 0 -- skip nothing -- is always a candidate.
DEFAULT_SKIP_SHARES: tuple[float, ...] = (0.05, 0.1, 0.2, 0.3, 0.5)


def fit_logistic(X: np.ndarray, y: np.ndarray, l2: float, max_iter: int = 100) -> np.ndarray:
    """Weights of a logistic regression on soft targets y in [0, 1] (cross-entropy plus
    l2 * |w|^2 on every weight but the last, the bias).

    Newton's method with step halving, from zero: the problems here have a few dozen
    features, so each step is one small linear solve, the result is the optimum to
    machine precision, and it is deterministic."""
    if X.ndim != 2 or y.shape != (X.shape[0],):
        raise ValueError("X must be (n, d) and y (n,)")
    if not np.all((y >= 0) & (y <= 1)):
        raise ValueError("targets must lie in [0, 1]")
    d = X.shape[1]
    penal = np.ones(d)
    penal[-1] = 0.0
    ridge = np.diag(2 * l2 * penal) + 1e-9 * np.eye(d)

    def loss(w: np.ndarray) -> float:
        z = X @ w
        return float(np.sum(np.logaddexp(0.0, z) - y * z) + l2 * np.sum(penal * w * w))

    w = np.zeros(d)
    f = loss(w)
    for _ in range(max_iter):
        p = _sigmoid(X @ w)
        grad = X.T @ (p - y) + 2 * l2 * penal * w
        hess = (X.T * (p * (1 - p))) @ X + ridge
        step = np.linalg.solve(hess, grad)
        t = 1.0
        while True:
            w_new = w - t * step
            f_new = loss(w_new)
            if f_new <= f + 1e-12 or t < 1e-6:
                break
            t *= 0.5
        moved = float(np.max(np.abs(w_new - w)))
        w, f = w_new, f_new
        if moved < 1e-10:
            break
    return w


def step_designs(stats: AnswerStats, f1: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """(X, y) per step (after 1, 2, ..., width experts): one row per answered candidate,
    its true F1 as the target; `f1` is (n, width), the chain experts' F1."""
    designs = []
    for m in range(1, stats.width + 1):
        feats = step_features(stats, m)
        X = np.vstack([feats[c][stats.answered[:, c]] for c in range(m)])
        y = np.concatenate([f1[stats.answered[:, c], c] for c in range(m)])
        if len(y) == 0:
            raise ValueError("no answered question to fit a cascade step on")
        designs.append((X, y))
    return designs


def fit_steps(stats: AnswerStats, f1: np.ndarray, l2: float) -> list[np.ndarray]:
    """One weight vector per step, fitted on `step_designs`."""
    return [fit_logistic(X, y, l2) for X, y in step_designs(stats, f1)]


class LearnedCascade:
    """Cascade with a learned stopping and answer-selection rule (estimator API).

    `chain` fixes the experts asked, in order, the last one being the final expert;
    by default the chain and `l2` are chosen by grouped cross-validation on the
    training set among chains of 1..`max_stages` experts cheaper than `final` (default:
    the best expert on training F1, ties to the cheaper) followed by `final`.

    The setting chosen is the one a job would run: the (chain, l2, threshold) whose
    out-of-fold mean F1 on the training questions is within `tolerance` of the final
    expert alone at the lowest out-of-fold mean cost. Scoring chains by the best point
    of each held-out article's own curve instead (as an earlier version did) rewarded
    curves whose good points sat at thresholds that differ from article to article,
    which no single deployed threshold can reach.

    Why the defaults (every cheaper expert a candidate, at most two before the final
    one): on the nine SQuAD articles, leaving one out, five settings were compared --
    Pareto candidates with up to 2 or 3 stages, all candidates with up to 1, 2 or 3.
    All candidates with two stages saved 69.3 % of the best training expert's cost at
    -0.88 F1 points on the unseen article (mean over the folds); the former default
    (Pareto, three stages) 61.3 % at -1.08, all candidates with three stages 74.2 % at
    -1.41. The Pareto filter judged an expert by its mean F1 and so dropped
    `nlnet-single`, whose answers disagree with the other cheap readers' in a useful
    way; a third stage multiplied the chains the inner cross-validation chooses among,
    and its winner was luckier than it was good. These were chosen on those folds, so
    the figures carry that choice's optimism (docs/routing.md gives the table).
    """

    def __init__(
        self,
        chain: Optional[Sequence[str]] = None,
        final: Optional[str] = None,
        max_stages: int = 2,
        l2: Sequence[float] = DEFAULT_L2,
        n_thresholds: int = 101,
        tolerance: float = 0.01,
        margin_se: float = 0.0,
        candidates: str = "all",
        skip_shares: Sequence[float] = DEFAULT_SKIP_SHARES,
        gate_l2: float = 1.0,
        seed: int = 0,
        log: Callable[[str], None] = lambda _: None,
    ) -> None:
        self.chain = chain
        self.final = final
        self.max_stages = max_stages
        self.l2 = l2
        self.n_thresholds = n_thresholds
        self.tolerance = tolerance
        self.margin_se = margin_se
        self.candidates = candidates
        self.skip_shares = skip_shares
        self.gate_l2 = gate_l2
        self.seed = seed
        self.log = log

    # -- fitting ---------------------------------------------------------------------
    def _chains(self, names: list[str], costs: np.ndarray, final: int, mean_f1: np.ndarray) -> list[tuple[int, ...]]:
        if self.chain is not None:
            unknown = [c for c in self.chain if c not in names]
            if unknown:
                raise ValueError(f"chain names expert(s) {unknown} that the replay data does not have (it has {names})")
            idx = tuple(names.index(c) for c in self.chain)
            if len(set(idx)) != len(idx) or len(idx) < 2:
                raise ValueError("a learned cascade chain needs at least two distinct experts")
            return [idx]
        cheaper = [j for j in range(len(names)) if costs[j] < costs[final] and j != final]
        if self.candidates == "pareto":
            # Only experts that no cheaper (or equally cheap) one beats on training F1:
            # a smaller search, but it drops experts that are weaker on average and
            # still useful as a second opinion (see the class docstring).
            cheaper = [j for j in cheaper if not any(
                k != j and costs[k] <= costs[j] and mean_f1[k] > mean_f1[j] for k in range(len(names)) if k != final)]
        elif self.candidates != "all":
            raise ValueError(f"candidates must be 'pareto' or 'all', got {self.candidates!r}")
        if not cheaper:
            raise ValueError("need at least one expert cheaper than the final one to build a cascade")
        return [
            tuple(sorted(sub, key=lambda j: (costs[j], j))) + (final,)
            for size in range(1, min(self.max_stages, len(cheaper)) + 1)
            for sub in itertools.combinations(cheaper, size)
        ]

    def fit(self, replay: ReplaySet, X: Optional[np.ndarray] = None) -> "LearnedCascade":
        """Fit on a replay set; `X` (n, d), the questions' pre-answer features, lets the
        cascade skip cheap experts by the question (see `_fit_gate`)."""
        if X is not None and (np.ndim(X) != 2 or len(X) != replay.n_questions):
            raise ValueError(f"X must hold one feature row per question ({replay.n_questions}), got shape {np.shape(X)}")
        if any(not 0 < q < 1 for q in self.skip_shares):
            raise ValueError("skip_shares must lie strictly between 0 and 1")
        if self.max_stages < 1:
            raise ValueError("max_stages must be at least 1")
        if not self.l2 or any(v < 0 for v in self.l2):
            raise ValueError("l2 must be a non-empty list of non-negative numbers")
        if not 0 <= self.tolerance < 1:
            raise ValueError("tolerance must lie in [0, 1)")
        names = list(replay.expert_names)
        costs = replay.costs
        f1 = np.nan_to_num(replay.f1, nan=0.0)
        final = names.index(self.final) if self.final else best_single_index(f1.mean(axis=0), costs)
        chains = self._chains(names, costs, final, f1.mean(axis=0))
        stats = answer_stats(replay.answers, len(names))  # every expert; chains take slices
        n = replay.n_questions
        folds = grouped_folds(replay, self.seed)
        reference = float(f1[:, final].mean())
        # Every setting's out-of-fold outcomes: each question is decided by a model that
        # never saw its article (folds partition the questions). Only the best setting's
        # outcomes are kept: they are what a job's budget or accuracy target is chosen from.
        best: Optional[tuple] = None
        n_settings = 0
        for chain in chains:
            cols = list(chain)
            for l2, scores in self._out_of_fold_scores(chain, stats, f1, folds, n).items():
                thresholds = threshold_grid(scores, self.n_thresholds)
                of1, ocost = _outcomes(scores, costs[cols], f1[:, cols], thresholds)
                t, rank = deployed_choice(of1, ocost, f1[:, final], self.tolerance, self.margin_se)
                n_settings += 1
                if best is None or rank < best[0]:
                    best = (rank, chain, l2, thresholds, of1, ocost, t)
        assert best is not None
        _, chain, l2, self.thresholds_, self.oof_f1_, self.oof_cost_, pick = best
        gate_weights, self.skip_below_, self.skip_share_ = None, 0.0, 0.0
        if X is not None and self.skip_shares:
            found = self._fit_gate(chain, l2, stats, f1, costs, final, folds, np.asarray(X, dtype=np.float64), best[0])
            if found is not None:
                gate_weights, self.skip_below_, self.skip_share_, self.thresholds_, self.oof_f1_, self.oof_cost_, pick = found
        self.reference_f1_ = f1[:, final].copy()
        self.train_curve_ = _mean_curve((self.oof_f1_, self.oof_cost_), np.arange(n))
        cost, f = self.train_curve_[pick]
        self.cv_score_ = 1.0 - cost / float(costs[final]) if f >= reference - self.tolerance - 1e-12 else -1.0
        self.log(f"learned cascade: {n_settings} (chain, l2) setting(s) scored out of fold; chose "
                 f"{'>'.join(names[j] for j in chain)} l2={l2:g} @threshold={self.thresholds_[pick]:.3f}: "
                 f"held-out cost {cost:.3g} ({self.cv_score_:.1%} below {names[final]}), F1 {f:.4f} vs {reference:.4f}")
        if gate_weights is not None:
            self.log(f"learned cascade: skips a cheap expert predicted below F1 {self.skip_below_:.3f} "
                     f"({self.skip_share_:.1%} of training rows skip the first, out of fold)")
        self.expert_names_ = tuple(names)
        model = self._fit_model(chain, l2, stats, f1, costs, names, np.arange(n))
        if gate_weights is not None:
            model = LearnedCascadeModel(model.chain, model.costs, model.weights, model.l2, SkipGate(gate_weights, self.skip_below_))
        self.model_ = model
        return self

    def _fit_gate(self, chain, l2, stats, f1, costs, final, folds, X, rank_without) -> Optional[tuple]:
        """The skip gate for the chosen chain, or None when skipping does not pay.

        One logistic model per cheap position predicts that expert's F1 from the
        question's features; its out-of-fold predictions decide, for every bar in the
        grid (the `skip_shares` quantiles of those predictions), where each training row
        would start; the step models -- fitted on full trails, as the job's are -- then
        score the answers the row would have, and `deployed_choice` ranks each bar's
        cheapest threshold within tolerance. The gate is kept only if some bar beats
        skipping nothing, so a question signal too weak to pay costs nothing. The chain
        is chosen first, without the gate: searching chains and bars together would
        multiply the settings the inner cross-validation picks its luckiest from."""
        cols = list(chain)
        stages = len(chain) - 1
        n = len(X)
        X1 = np.hstack([X, np.ones((n, 1))])
        oof = np.zeros((n, stages))
        for fit_rows, val_rows in folds:
            for c in range(stages):
                w = fit_logistic(X1[fit_rows], f1[fit_rows, cols[c]], self.gate_l2)
                oof[val_rows, c] = _sigmoid(X1[val_rows] @ w)
        best = None
        models = _fold_models(chain, stats, f1, folds, (l2,))  # the step models do not depend on the bar
        for below in np.unique(np.quantile(oof, self.skip_shares)):
            start = start_positions(oof, float(below))
            scores = _held_out_scores(chain, stats, folds, models, n, start)[l2]
            thresholds = threshold_grid(scores, self.n_thresholds)
            of1, ocost = _outcomes(scores, costs[cols], f1[:, cols], thresholds, start)
            t, rank = deployed_choice(of1, ocost, f1[:, final], self.tolerance, self.margin_se)
            if rank < rank_without and (best is None or rank < best[0]):
                best = (rank, float(below), float(np.mean(start > 0)), thresholds, of1, ocost, t)
        if best is None:
            return None
        weights = np.stack([fit_logistic(X1, f1[:, cols[c]], self.gate_l2) for c in range(stages)])
        return (weights, *best[1:])

    @staticmethod
    def _fit_model(chain, l2, stats, f1, costs, names, rows) -> LearnedCascadeModel:
        s = _slice(stats, chain, rows)
        weights = fit_steps(s, f1[np.ix_(rows, list(chain))], l2)
        return LearnedCascadeModel(tuple(names[j] for j in chain), costs[list(chain)].astype(np.float64), tuple(weights), float(l2))

    def _out_of_fold_scores(self, chain, stats, f1, folds, n) -> dict[float, list[np.ndarray]]:
        """Per l2, every step's out-of-fold predicted F1 of each candidate, (n, m) for step m."""
        return _held_out_scores(chain, stats, folds, _fold_models(chain, stats, f1, folds, self.l2), n)

    # -- using -----------------------------------------------------------------------
    def _check_fitted(self) -> None:
        if not hasattr(self, "model_"):
            raise RuntimeError("LearnedCascade is not fitted; call fit first")

    def describe(self, theta: Optional[float] = None) -> str:
        self._check_fitted()
        gate = self.model_.gate
        skip = "" if gate is None else f", skip below F1 {gate.below:.3g}"
        s = ">".join(self.model_.chain) + f" (learned, l2={self.model_.l2:g}{skip})"
        return s if theta is None else s + f" @threshold={theta:.2f}"

    def pick(self, tolerance: Optional[float] = None) -> int:
        """Index of the threshold to run: the cheapest whose held-out training F1 is within
        `tolerance` (default: the constructor's) of the final expert alone, or the
        best-scoring one if none is."""
        self._check_fitted()
        tol = self.tolerance if tolerance is None else tolerance
        return deployed_choice(self.oof_f1_, self.oof_cost_, self.reference_f1_, tol, self.margin_se)[0]

    def trails(self, replay: ReplaySet) -> list[list[Optional[str]]]:
        idx = [replay.expert_names.index(c) for c in self.model_.chain]
        return [[row[j] for j in idx] for row in replay.answers]

    def settings(self, replay: ReplaySet, X: Optional[np.ndarray] = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(T, n) answering expert (index into the replay's experts), its F1, and the cost
        paid, per threshold (ascending: cheap to dear) and question; `X`: the questions'
        features, which a cascade with a skip gate needs."""
        self._check_fitted()
        if tuple(replay.expert_names) != self.expert_names_:
            raise ValueError("replay set has different experts than the cascade was fitted on")
        idx = np.array([replay.expert_names.index(c) for c in self.model_.chain])
        start = self.model_.start(X, replay.n_questions)
        scores = self.model_.scores(without_skipped(answer_stats(self.trails(replay), self.model_.width), start))
        f1 = np.nan_to_num(replay.f1, nan=0.0)
        pos, paid = decide_thresholds(scores, self.model_.costs, self.thresholds_, start)
        # No answer at all (every chain expert failed): charged as the final expert's.
        chosen = np.where(pos >= 0, idx[np.maximum(pos, 0)], idx[-1])
        return chosen, f1[np.arange(replay.n_questions)[None, :], chosen], paid

    def sweep(
        self, replay: ReplaySet, settings: Optional[tuple[np.ndarray, np.ndarray, np.ndarray]] = None,
        X: Optional[np.ndarray] = None,
    ) -> list[CurvePoint]:
        choices, _, paids = settings if settings is not None else self.settings(replay, X)
        f1 = np.nan_to_num(replay.f1, nan=0.0)
        em = np.nan_to_num(replay.em, nan=0.0)
        names = list(replay.expert_names)
        return [
            curve_point(choices[i], f1, em, replay.costs, names, float(t), paid=paids[i], label=self.describe(float(t)))
            for i, t in enumerate(self.thresholds_)
        ]


def _fold_models(chain, stats: AnswerStats, f1: np.ndarray, folds, l2s: Sequence[float]) -> list[dict[float, list[np.ndarray]]]:
    """Per fold, per l2, the step models fitted on the fold's fitting rows (full trails).
    The designs of a fold do not depend on l2, so they are built once."""
    cols = list(chain)
    out = []
    for fit_rows, _ in folds:
        designs = step_designs(_slice(stats, chain, fit_rows), f1[np.ix_(fit_rows, cols)])
        out.append({l2: [fit_logistic(X, y, l2) for X, y in designs] for l2 in l2s})
    return out


def _held_out_scores(chain, stats: AnswerStats, folds, models, n: int, start: Optional[np.ndarray] = None) -> dict[float, list[np.ndarray]]:
    """Per l2, every step's held-out predicted F1 of each candidate, (n, m) for step m, from
    `_fold_models`; `start` (n,): held-out rows see only the answers from their start on."""
    width = len(chain)
    out = {l2: [np.full((n, m), -np.inf) for m in range(1, width + 1)] for l2 in models[0]}
    for (_, val_rows), fold in zip(folds, models):
        val = without_skipped(_slice(stats, chain, val_rows), None if start is None else start[val_rows])
        features = [step_features(val, m) for m in range(1, width + 1)]
        for l2, weights in fold.items():
            for m, (feats, w) in enumerate(zip(features, weights)):
                out[l2][m][val_rows] = scores_from_features(feats, val.answered, w)
    return out


def _outcomes(
    scores: Sequence[np.ndarray], step_costs: np.ndarray, f1_chain: np.ndarray, thresholds: np.ndarray,
    start: Optional[np.ndarray] = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(T, n) F1 and cost per threshold and question (no answer at all scores 0)."""
    choice, paid = decide_thresholds(scores, step_costs, thresholds, start)
    rows = np.arange(f1_chain.shape[0])
    return np.where(choice >= 0, f1_chain[rows, np.maximum(choice, 0)], 0.0), paid


def threshold_grid(scores: Sequence[np.ndarray], n_thresholds: int) -> np.ndarray:
    """Thresholds at quantiles of the scores that the stop rule compares with them.

    A fitted step model's scores bunch up (most rows where two readers agree score
    about the same), so an even grid over [0, 1] left the cost jumping by half the final
    expert's price between neighbouring thresholds, and the cheapest threshold within a
    point of the final expert was often far dearer than needed. Quantiles of each row's
    best score at every stop decision (the steps before the last) put the thresholds
    where rows actually change their decision; 0 (stop after the first expert) and 1
    (run the whole chain) are always included."""
    tops = [best_answers(s)[1] for s in scores[:-1]]
    pooled = np.concatenate([t[np.isfinite(t)] for t in tops]) if tops else np.zeros(0)
    qs = np.quantile(pooled, np.linspace(0.0, 1.0, max(n_thresholds - 2, 2))) if pooled.size else np.zeros(0)
    return np.unique(np.clip(np.concatenate([[0.0, 1.0], qs]), 0.0, 1.0))


def _mean_curve(outcomes: tuple[np.ndarray, np.ndarray], rows: np.ndarray) -> list[tuple[float, float]]:
    """(mean cost, mean F1) per threshold over some questions' outcomes."""
    f1, cost = outcomes
    return [(float(c), float(f)) for c, f in zip(cost[:, rows].mean(axis=1), f1[:, rows].mean(axis=1))]


def _slice(stats: AnswerStats, chain: Sequence[int], rows: Optional[np.ndarray]) -> AnswerStats:
    """The stats of a chain's experts (in chain order) on some questions."""
    r = slice(None) if rows is None else rows
    c = list(chain)
    return AnswerStats(
        agreement=stats.agreement[r][:, c][:, :, c],
        contains=stats.contains[r][:, c][:, :, c],
        length=stats.length[r][:, c],
        empty=stats.empty[r][:, c],
        answered=stats.answered[r][:, c],
    )


@dataclass(frozen=True)
class ThresholdChoice:
    """The threshold a job runs at, and why; None: every question to the final expert."""

    threshold: Optional[float]
    description: str


def choose_threshold(
    thresholds: np.ndarray,
    cal_f1: np.ndarray,
    cal_cost: np.ndarray,
    reference_f1: np.ndarray,
    *,
    budget_per_item: Optional[float] = None,
    accuracy_target: Optional[float] = None,
    confidence: float = 0.95,
    seed: int = 0,
) -> ThresholdChoice:
    """A threshold for a budget per question or an accuracy target, from held-out outcomes.

    `cal_f1` / `cal_cost` are (T, n): what each threshold got on n calibration questions
    (a checkpoint keeps the training set's out-of-fold outcomes); `reference_f1` is the
    final expert's F1 there. Cost does not fall as the threshold rises (a higher bar
    stops fewer questions at every step), so thresholds from 1 down are the dearest-first
    order in which the accuracy target is tested, exactly as for lambda (see
    `routing.calibration.policy.choose_setting_for_accuracy`): a target no threshold certifies sends
    every question to the final expert. A budget takes the best held-out F1 among the
    thresholds whose held-out mean cost fits, or the cheapest one when none does.
    """
    if (budget_per_item is None) == (accuracy_target is None):
        raise ValueError("give exactly one of budget_per_item and accuracy_target")
    mean_f1, mean_cost = cal_f1.mean(axis=1), cal_cost.mean(axis=1)
    if budget_per_item is not None:
        if budget_per_item <= 0:
            raise ValueError("budget_per_item must be positive")
        fits = [t for t in range(len(thresholds)) if mean_cost[t] <= budget_per_item + 1e-12]
        if not fits:
            t = int(np.argmin(mean_cost))
            return ThresholdChoice(float(thresholds[t]), f"budget {budget_per_item:g} is below every threshold's "
                                   f"held-out cost; the cheapest ({mean_cost[t]:.4g} per question) runs")
        t = max(fits, key=lambda i: (mean_f1[i], -mean_cost[i]))
        return ThresholdChoice(float(thresholds[t]), f"budget {budget_per_item:g}: held-out cost {mean_cost[t]:.4g}, F1 {mean_f1[t]:.4f}")
    order = np.argsort(-np.asarray(thresholds), kind="stable")  # dearest first
    choice = choose_setting_for_accuracy(cal_f1[order], reference_f1, accuracy_target, confidence, seed=seed)
    if choice.index < 0:
        return ThresholdChoice(None, f"accuracy {accuracy_target:g} @ {confidence:g} not certified on "
                                     f"{len(reference_f1)} held-out questions: every question goes to the final expert")
    t = int(order[choice.index])
    return ThresholdChoice(float(thresholds[t]), f"accuracy {accuracy_target:g} @ {confidence:g}: lower bound "
                                                 f"{choice.lower_bounds[choice.index]:.4f} >= {accuracy_target:g}")

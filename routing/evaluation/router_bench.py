"""The router benchmark: fit on one replay set, judge on another, report like for like.

Everything learned — features, layer choice, router weights, the cascade's
configurations, the choice of "best router" — comes from the training set only. The test
set is used to draw each method's cost/F1 curve and, for the accuracy guarantee, as the
population that calibration questions are sampled from (see `guarantee_check`).

Methods compared:
* pre-answer routers (`l2d`, `trunk` and the `knn` baseline) under the lambda policy,
  restricted to the experts on the training cost/quality hull;
* the agreement cascade and the learned cascade (post-answer: they pay for every expert
  they ask; `routing/cascades/agreement.py`, `routing/cascades/learned.py`);
* baselines: always-cheapest, always-best (best training expert), best fixed expert per
  lambda (`best-fixed`), the cost-matched random mix along the training hull, and k-NN.

"Best router" is chosen among the learned methods (l2d, trunk and both cascades) by grouped
cross-validation *inside* the training set (leave one article out when it has several),
on the same headline figures the report uses — never by test results.

Read the headline figures for what they are: each is read off a method's test curve
(the best point of a 20-60 point family that meets the condition), the usual way to
compare trade-off curves, not the outcome of an operating point fixed in advance. The
guarantee rows are the calibrated, fixed-in-advance part of the report.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np

from routing.cascades.agreement import AgreementCascade
from routing.replay.metrics import (
    CurvePoint,
    best_single,
    best_single_index,
    curve_point,
    expert_summary,
    curve_figures,
    oracle,
    random_mix_curve,
    selection_score,
    upper_hull,
)
from routing.features.featurizer import RouterFeaturizer
from routing.cascades.learned import LearnedCascade
from routing.calibration.policy import choose_setting_for_accuracy, deployed_choice, lambda_grid, lambda_settings, sweep
from routing.replay.data import ReplaySet, grouped_folds, load_scored_replay
from routing.routers.registry import make_router

PRE_ANSWER = ("l2d", "trunk")
LEARNED = ("l2d", "trunk", "cascade", "learned-cascade")
CASCADES = ("cascade", "learned-cascade")


@dataclass(frozen=True)
class BenchSettings:
    encoder: Optional[str] = None
    max_length: int = 128
    routers: tuple[str, ...] = PRE_ANSWER
    include_cascade: bool = True
    seed: int = 0
    covered_only: bool = True
    cache_dir: Optional[str] = None
    targets: tuple[float, ...] = (0.90, 0.95, 0.98)
    confidence: float = 0.95
    splits: int = 200
    calibration_fraction: float = 0.5
    inner_cv: bool = True
    # The learned cascade may skip cheap experts by the question's features (the same
    # featurizer as the pre-answer routers'); it keeps a gate only where that pays.
    cascade_skip: bool = True
    router_params: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass
class MethodResult:
    name: str
    kind: str  # "router", "cascade" or "baseline"
    curve: list[CurvePoint]
    # Per setting (dearest first) F1 and cost per test question, for the guarantee check.
    settings_f1: Optional[np.ndarray] = None
    settings_cost: Optional[np.ndarray] = None
    # The one setting to run in a batch job, where the method has one (the cascade).
    setting: Optional[dict[str, Any]] = None


def hull_mask(replay: ReplaySet) -> np.ndarray:
    mask = np.zeros(replay.n_experts, dtype=bool)
    mask[upper_hull(replay.costs, np.nan_to_num(replay.f1, nan=0.0).mean(axis=0))] = True
    return mask


def _featurize(train: ReplaySet, others: Sequence[ReplaySet], s: BenchSettings) -> tuple[np.ndarray, list[np.ndarray], RouterFeaturizer]:
    fz = RouterFeaturizer(encoder=s.encoder, max_length=s.max_length, cache_dir=s.cache_dir)
    X_train = fz.fit_transform(train.question_texts, train.contexts, train.f1)
    return X_train, [fz.transform(o.question_texts, o.contexts) for o in others], fz


def _pre_answer(
    name: str, kind: str, X_train: np.ndarray, train: ReplaySet, X_test: np.ndarray, test: ReplaySet,
    allowed: Optional[np.ndarray], s: BenchSettings,
) -> MethodResult:
    params = dict(s.router_params.get(kind, {}))
    if kind in PRE_ANSWER:
        params.setdefault("seed", s.seed)
    router = make_router(kind, **params).fit(X_train, train.f1, train.costs)
    loss = router.predict_loss(X_test)
    lams = lambda_grid(loss, test.costs, allowed=allowed)
    f1 = np.nan_to_num(test.f1, nan=0.0)
    em = np.nan_to_num(test.em, nan=0.0)
    curve = sweep(loss, test.costs, lams, f1, em, list(test.expert_names), allowed=allowed)
    sf1, scost = lambda_settings(loss, test.costs, f1, lams, allowed)
    return MethodResult(name, "router" if kind in PRE_ANSWER else "baseline", curve, sf1, scost)


def _cascade(train: ReplaySet, test: ReplaySet) -> MethodResult:
    cascade = AgreementCascade().fit(train)
    settings = cascade.settings(test)
    _, sf1, scost = settings
    curve = cascade.sweep(test, settings)
    pick = cascade.pick()
    c = cascade.configs_[pick]
    setting = {
        "label": cascade.describe(pick),
        "chosen_by": (f"cheapest on train within {cascade.slack_:g} of the final expert alone, the slack chosen by "
                      "grouped cross-validation for 1 F1 point out of fold"),
        # Out of fold, as the learned cascade's are, so the two compare like with like.
        "train_cost": cascade.cv_cost_,
        "train_f1": cascade.cv_f1_,
        "in_sample_cost": c.train_cost,
        "in_sample_f1": c.train_f1,
        "test_cost": curve[pick].cost,
        "test_f1": curve[pick].f1,
        "router": cascade.router_fields(pick),
    }
    # Configurations are stored cheap -> dear; the guarantee tests dearest first.
    return MethodResult("cascade", "cascade", curve, sf1[::-1], scost[::-1], setting)


def _learned_cascade(
    train: ReplaySet, test: ReplaySet, s: BenchSettings, X_train: Optional[np.ndarray], X_test: Optional[np.ndarray]
) -> MethodResult:
    params = dict(s.router_params.get("learned-cascade", {}))
    params.setdefault("seed", s.seed)
    lc = LearnedCascade(**params).fit(train, X_train)
    settings = lc.settings(test, X_test)
    _, sf1, scost = settings
    curve = lc.sweep(test, settings)
    gate = lc.model_.gate
    pick = lc.pick()
    theta = float(lc.thresholds_[pick])
    setting = {
        "label": lc.describe(theta),
        "chosen_by": "cheapest threshold whose cross-validated training F1 is within 1 F1 point of the final expert alone",
        "chain": list(lc.model_.chain),
        "l2": lc.model_.l2,
        "threshold": theta,
        "train_cost": lc.train_curve_[pick][0],
        "train_f1": lc.train_curve_[pick][1],
        "test_cost": curve[pick].cost,
        "test_f1": curve[pick].f1,
        "inner_cv_score": lc.cv_score_,
        # The skip gate (None: kept none, skipping did not pay out of fold on train).
        "skip_below": None if gate is None else gate.below,
        "skip_share_train": lc.skip_share_,
        "skip_share_test": 0.0 if gate is None else float(np.mean(gate.start(X_test) > 0)),
    }
    # Thresholds ascend cheap -> dear; the guarantee tests dearest first.
    return MethodResult("learned-cascade", "cascade", curve, sf1[::-1], scost[::-1], setting)


def _fixed_points(train: ReplaySet, test: ReplaySet) -> dict[str, MethodResult]:
    f1 = np.nan_to_num(test.f1, nan=0.0)
    em = np.nan_to_num(test.em, nan=0.0)
    names = list(test.expert_names)
    n = test.n_questions
    cheapest = int(np.argmin(test.costs))
    best = best_single_index(np.nan_to_num(train.f1, nan=0.0).mean(axis=0), train.costs)
    return {
        "always-cheapest": MethodResult(
            "always-cheapest", "baseline",
            [curve_point(np.full(n, cheapest), f1, em, test.costs, names, 0.0, label=names[cheapest])]),
        "always-best": MethodResult(
            "always-best", "baseline", [curve_point(np.full(n, best), f1, em, test.costs, names, 0.0, label=names[best])]),
        "random-mix": MethodResult(
            "random-mix", "baseline",
            random_mix_curve(np.nan_to_num(train.f1, nan=0.0).mean(axis=0), f1, em, test.costs, names)),
    }


def evaluate_methods(
    train: ReplaySet, test: ReplaySet, s: BenchSettings, methods: Sequence[str], features_out: Optional[dict] = None
) -> dict[str, MethodResult]:
    """Fit every requested method on `train` and draw its curve on `test`.

    `features_out`, when given, receives what the featurizer chose (layers and scores).
    """
    out: dict[str, MethodResult] = {}
    pre = [m for m in methods if m in PRE_ANSWER or m in ("knn", "best-fixed")]
    X_train = X_test = None
    if pre or ("learned-cascade" in methods and s.cascade_skip):
        X_train, (X_test,), fz = _featurize(train, [test], s)
        if features_out is not None:
            features_out.update(_features_info(fz))
    if pre:
        allowed = hull_mask(train)
        for m in pre:
            kind = "constant" if m == "best-fixed" else m
            out[m] = _pre_answer(m, kind, X_train, train, X_test, test, None if kind == "constant" else allowed, s)
    if "cascade" in methods:
        out["cascade"] = _cascade(train, test)
    if "learned-cascade" in methods:
        out["learned-cascade"] = _learned_cascade(train, test, s, X_train if s.cascade_skip else None, X_test)
    if any(m in methods for m in ("always-cheapest", "always-best", "random-mix")):
        for name, res in _fixed_points(train, test).items():
            if name in methods:
                out[name] = res
    return out


def _features_info(fz: RouterFeaturizer) -> dict:
    info: dict[str, Any] = {"encoder": fz.encoder, "text_features": fz.use_text, "n_features": fz.n_features_out_}
    if fz.encoder is not None:
        info["layers"] = list(fz.layers_)
    if fz.layer_selection_ is not None:
        info["layer_scores"] = [
            {"layer": x.layer, "fisher": x.fisher, "fisher_chance": x.fisher_chance, "participation_ratio": x.participation_ratio, "score": x.score}
            for x in fz.layer_selection_.scores
        ]
    return info


def choose_best(train: ReplaySet, s: BenchSettings, candidates: Sequence[str], log: Callable[[str], None]) -> tuple[str, dict[str, float]]:
    """Grouped CV inside the training set; returns the best candidate and all CV scores."""
    if not s.inner_cv or len(candidates) == 1:
        return candidates[0], {}
    scores: dict[str, list[float]] = {c: [] for c in candidates}
    for fit_idx, val_idx in grouped_folds(train, s.seed):
        fit, val = train.subset(fit_idx), train.subset(val_idx)
        results = evaluate_methods(fit, val, s, candidates)
        f1v = np.nan_to_num(val.f1, nan=0.0)
        ref = best_single(f1v, val.costs, list(val.expert_names))
        orc = oracle(f1v, np.nan_to_num(val.em, nan=0.0), val.costs)
        for c in candidates:
            scores[c].append(selection_score(curve_figures(results[c].curve, ref, orc)))
    mean = {c: float(np.mean(v)) for c, v in scores.items()}
    log("inner CV (train only): " + ", ".join(f"{c}={v:+.3f}" for c, v in mean.items()))
    return max(candidates, key=lambda c: (mean[c], -candidates.index(c))), mean


def guarantee_check(
    settings_f1: np.ndarray,
    settings_cost: np.ndarray,
    ref_f1: np.ndarray,
    ref_cost: float,
    target: float,
    confidence: float,
    splits: int,
    calibration_fraction: float,
    seed: int,
) -> dict:
    """Repeated random calibration/evaluation splits of the *test* questions.

    Why the test set: the guarantee is a statement about the population the calibration
    questions come from. Calibrating on the training articles and checking on another
    article would test robustness to a shift no finite-sample bound covers; the
    deployable recipe is "label a random sample of the job's own questions, calibrate on
    it, run the rest", and that is what each split does. The router itself stays
    trained on the training set. A split "meets" the target when the realised F1 on its
    evaluation half is at least target x the reference expert's F1 on the same half.
    """
    n = ref_f1.shape[0]
    n_cal = int(round(n * calibration_fraction))
    if not 1 <= n_cal < n:
        raise ValueError("calibration fraction leaves an empty calibration or evaluation set")
    rng = np.random.default_rng(seed)
    met, costs, f1s, fallback = [], [], [], []
    for r in range(splits):
        perm = rng.permutation(n)
        cal, ev = perm[:n_cal], perm[n_cal:]
        choice = choose_setting_for_accuracy(settings_f1[:, cal], ref_f1[cal], target, confidence, seed=seed * 100_003 + r)
        if choice.index < 0:
            f1_ev, cost_ev = float(ref_f1[ev].mean()), ref_cost
            fallback.append(1.0)
        else:
            f1_ev, cost_ev = float(settings_f1[choice.index, ev].mean()), float(settings_cost[choice.index, ev].mean())
            fallback.append(0.0)
        met.append(f1_ev >= target * float(ref_f1[ev].mean()) - 1e-12)
        costs.append(cost_ev)
        f1s.append(f1_ev)
    return {
        "target": target,
        "confidence": confidence,
        "met_share": float(np.mean(met)),
        "mean_cost": float(np.mean(costs)),
        "mean_f1": float(np.mean(f1s)),
        "savings_vs_reference": float(1.0 - np.mean(costs) / ref_cost) if ref_cost > 0 else None,
        "fallback_share": float(np.mean(fallback)),
        "splits": splits,
    }


def deployed_figures(results: dict[str, MethodResult], train: ReplaySet, test: ReplaySet, best: dict) -> Optional[dict]:
    """The setting a job would run, applied once to the test questions.

    Among the methods that come with one setting chosen on the training data (the two
    cascades), the one whose training figures are best by the rule a job uses: the
    lowest training cost within one F1 point of the best training expert, else the
    highest training F1. Both cascades' training figures are out of fold (each
    training article decided by a fit that never saw it): in-sample figures of a setting
    chosen as the cheapest that looked good would favour the method with the most
    settings to choose from. Its test cost and F1 are compared with the best single expert
    on the test questions (`best`, itself chosen with test labels, so the comparison is
    the harder one) and with the best training expert, which is what a job without a
    router would run."""
    train_f1 = np.nan_to_num(train.f1, nan=0.0).mean(axis=0)
    ref = best_single_index(train_f1, train.costs)
    with_setting = {k: r.setting for k, r in results.items() if r.setting is not None}
    if not with_setting:
        return None

    names = sorted(with_setting)
    # The same rule as a learned cascade's own setting, on each method's training means.
    t, _ = deployed_choice(
        np.array([[with_setting[k]["train_f1"]] for k in names]),
        np.array([[with_setting[k]["train_cost"]] for k in names]),
        np.array([float(train_f1[ref])]), tolerance=0.01,
    )
    name = names[t]
    st = with_setting[name]
    test_f1 = np.nan_to_num(test.f1, nan=0.0)
    ref_cost, ref_f1 = float(test.costs[ref]), float(test_f1[:, ref].mean())
    return {
        "router": name,
        "label": st["label"],
        "chosen_by": f"{st['chosen_by']}; router: lowest training cost within 1 F1 point of {train.expert_names[ref]}",
        "test_cost": st["test_cost"],
        "test_f1": st["test_f1"],
        "savings_vs_best": 1.0 - st["test_cost"] / best["cost"] if best["cost"] > 0 else None,
        "f1_vs_best": st["test_f1"] - best["f1"],
        "training_best": train.expert_names[ref],
        "savings_vs_training_best": 1.0 - st["test_cost"] / ref_cost if ref_cost > 0 else None,
        "f1_vs_training_best": st["test_f1"] - ref_f1,
        "others": {k: {"label": v["label"], "test_cost": v["test_cost"], "test_f1": v["test_f1"],
                       "train_cost": v["train_cost"], "train_f1": v["train_f1"]} for k, v in sorted(with_setting.items())},
    }


def _point_dict(p: CurvePoint) -> dict:
    d = {"cost": p.cost, "f1": p.f1, "em": p.em, "mix": p.mix, "param": p.param}
    if p.label:
        d["setting"] = p.label
    return d


def run_router_bench(
    train_dir: str | Path, test_dir: str | Path, settings: BenchSettings = BenchSettings(),
    log: Callable[[str], None] = lambda _: None,
) -> dict:
    """Fit on train_dir, evaluate on test_dir; returns the JSON-able report."""
    s = settings
    train = load_scored_replay(train_dir, covered_only=s.covered_only)
    test = load_scored_replay(test_dir, covered_only=s.covered_only)
    if train.expert_names != test.expert_names or not np.allclose(train.costs, test.costs):
        raise ValueError("train and test must list the same experts at the same costs")
    if train.n_questions < 4 or test.n_questions < 4:
        raise ValueError("train and test need at least four scored questions each")
    names = list(test.expert_names)
    f1 = np.nan_to_num(test.f1, nan=0.0)
    em = np.nan_to_num(test.em, nan=0.0)
    best = best_single(f1, test.costs, names)
    orc = oracle(f1, em, test.costs)
    log(f"train {train.n_questions} questions, test {test.n_questions}; best single {best['name']} "
        f"F1 {best['f1']:.4f} at cost {best['cost']:g}; oracle F1 {orc['f1']:.4f} at cost {orc['cost']:.3f}")

    candidates = [r for r in s.routers if r in PRE_ANSWER] + (list(CASCADES) if s.include_cascade else [])
    if not candidates:
        raise ValueError("no learned router to benchmark")
    methods = candidates + ["knn", "best-fixed", "always-cheapest", "always-best", "random-mix"]
    features: dict[str, Any] = {}
    results = evaluate_methods(train, test, s, methods, features)
    if "layers" in features:
        log(f"encoder layers chosen on train: {features['layers']}")
    best_name, cv_scores = choose_best(train, s, candidates, log)

    routers_out = {}
    for name, res in results.items():
        h = curve_figures(res.curve, best, orc)
        routers_out[name] = {"kind": res.kind, **h, "n_points": len(res.curve)}
        if res.setting is not None:
            routers_out[name]["setting"] = res.setting
        if name in cv_scores:
            routers_out[name]["inner_cv_score"] = cv_scores[name]

    chosen = results[best_name]
    ref_idx = best_single_index(np.nan_to_num(train.f1, nan=0.0).mean(axis=0), train.costs)
    guarantee_rows = [
        guarantee_check(chosen.settings_f1, chosen.settings_cost, f1[:, ref_idx], float(test.costs[ref_idx]),
                        t, s.confidence, s.splits, s.calibration_fraction, s.seed)
        for t in s.targets
    ]
    h_best = curve_figures(chosen.curve, best, orc)
    deployed = deployed_figures(results, train, test, best)
    if deployed is not None:
        log(f"deployed: {deployed['router']} {deployed['label']}: test cost {deployed['test_cost']:.3g} "
            f"({deployed['savings_vs_best']:.1%} below {best['name']}), F1 {deployed['test_f1']:.4f} "
            f"({100 * deployed['f1_vs_best']:+.2f} points)")
    return {
        "train": str(train_dir),
        "test": str(test_dir),
        "n_train": train.n_questions,
        "n_test": test.n_questions,
        "covered_only": s.covered_only,
        "encoder": s.encoder,
        "features": features,
        "experts": expert_summary(f1, em, test.costs, names),
        "best_single": best,
        "oracle": {"f1": orc["f1"], "cost": orc["cost"], "em": orc["em"]},
        "deployed": deployed,
        "best_router": best_name,
        "curve": [_point_dict(p) for p in chosen.curve],
        # Read off the best router's test curve (points chosen with test labels): what
        # the curve can reach, not what a job runs; "deployed" is that.
        "curve_cost_at_best_f1": h_best["cost_at_best_f1"],
        "curve_savings_vs_best": h_best["savings_vs_best"],
        "curve_gap_closed": h_best["gap_closed"],
        "routers": routers_out,
        "guarantee": {
            "router": best_name,
            "reference": names[ref_idx],
            "confidence": s.confidence,
            "calibration": (
                f"{s.splits} random splits of the test questions into calibration ({s.calibration_fraction:.0%}) "
                "and evaluation; router trained on train only; Clopper-Pearson on Bernoulli-randomised "
                "relative-F1 outcomes with fixed-sequence testing over the policy's settings"
            ),
            "rows": guarantee_rows,
        },
    }

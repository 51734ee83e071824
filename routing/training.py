"""Train a router checkpoint from a replay directory (what `train-router` runs).

The directory is split at random into a fit part (features, router weights, the
candidate experts, the reference expert) and a held-out calibration part whose
predicted losses and true F1 go into the checkpoint. The split is random rather than
by article on purpose: calibration must be exchangeable with the questions the policy
will see, and a profile sample of a job is exactly that; the calibration part is never
used for fitting, so the run-time choice of lambda rests on honest held-out outcomes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from routing.routers.checkpoint import RouterCheckpoint
from routing.replay.metrics import best_single_index, upper_hull
from routing.features.featurizer import RouterFeaturizer
from routing.cascades.learned import LearnedCascade
from routing.replay.data import load_scored_replay
from routing.routers.registry import make_router

TRAINABLE = ("l2d", "trunk", "knn")


def train_router_checkpoint(
    profile_dir: str | Path,
    *,
    kind: str = "trunk",
    encoder: Optional[str] = None,
    max_length: int = 128,
    calibration_fraction: float = 0.3,
    seed: int = 0,
    covered_only: bool = True,
    cache_dir: Optional[str] = None,
    router_params: Optional[dict[str, Any]] = None,
) -> RouterCheckpoint:
    if kind not in TRAINABLE:
        raise ValueError(f"router kind must be one of {TRAINABLE}, got {kind!r}")
    if not 0 < calibration_fraction < 1:
        raise ValueError("calibration_fraction must lie strictly between 0 and 1")
    replay = load_scored_replay(profile_dir, covered_only=covered_only)
    n = replay.n_questions
    n_cal = int(round(n * calibration_fraction))
    if n_cal < 2 or n - n_cal < 4:
        raise ValueError(f"{profile_dir}: {n} scored questions are too few to fit and calibrate a router")
    perm = np.random.default_rng(seed).permutation(n)
    fit, cal = replay.subset(np.sort(perm[n_cal:])), replay.subset(np.sort(perm[:n_cal]))

    featurizer = RouterFeaturizer(encoder=encoder, max_length=max_length, cache_dir=cache_dir)
    X_fit = featurizer.fit_transform(fit.question_texts, fit.contexts, fit.f1)
    params = dict(router_params or {})
    if kind in ("l2d", "trunk"):
        params.setdefault("seed", seed)
    router = make_router(kind, **params).fit(X_fit, fit.f1, fit.costs)

    fit_f1 = np.nan_to_num(fit.f1, nan=0.0)
    candidates = np.zeros(replay.n_experts, dtype=bool)
    candidates[upper_hull(fit.costs, fit_f1.mean(axis=0))] = True
    reference = replay.expert_names[best_single_index(fit_f1.mean(axis=0), fit.costs)]
    cal_loss = router.predict_loss(featurizer.transform(cal.question_texts, cal.contexts))
    info = {
        "profile": str(profile_dir),
        "router_kind": kind,
        "n_fit": fit.n_questions,
        "n_calibration": cal.n_questions,
        "covered_only": covered_only,
        "seed": seed,
    }
    if featurizer.layer_selection_ is not None:
        info["layers"] = list(featurizer.layers_)
    return RouterCheckpoint(
        featurizer=featurizer,
        router=router,
        expert_names=replay.expert_names,
        costs=replay.costs.copy(),
        candidates=candidates,
        reference=reference,
        calibration_loss=np.clip(cal_loss, 0.0, 1.0),
        calibration_f1=cal.f1,
        calibration_seed=seed,
        info=info,
    )


def train_learned_cascade(
    profile_dir: str | Path,
    *,
    seed: int = 0,
    covered_only: bool = True,
    encoder: Optional[str] = None,
    max_length: int = 128,
    cache_dir: Optional[str] = None,
    skip: bool = True,
    log: Callable[[str], None] = lambda _: None,
) -> tuple[LearnedCascade, dict[str, Any], Optional[RouterFeaturizer]]:
    """Fit the learned cascade on a whole replay directory: the fitted cascade, the notes
    its checkpoint keeps, and the question featurizer its skip gate uses (None when it
    kept no gate).

    No calibration split: the chain, the regularisation, the skip gate and the default
    threshold are all chosen by cross-validation inside the directory
    (`LearnedCascade.fit`), and the threshold's cross-validated cost and F1 are what
    `info` reports. `skip=False` fits no gate (and needs no encoder at run time)."""
    replay = load_scored_replay(profile_dir, covered_only=covered_only)
    featurizer, X = None, None
    if skip:
        featurizer = RouterFeaturizer(encoder=encoder, max_length=max_length, cache_dir=cache_dir)
        X = featurizer.fit_transform(replay.question_texts, replay.contexts, replay.f1)
    fitted = LearnedCascade(seed=seed, log=log).fit(replay, X)
    if fitted.model_.gate is None:
        featurizer = None
    pick = fitted.pick()
    cost, f1 = fitted.train_curve_[pick]
    info = {
        "profile": str(profile_dir),
        "router_kind": "learned-cascade",
        "n_fit": replay.n_questions,
        "n_calibration": 0,
        "covered_only": covered_only,
        "seed": seed,
        "cv_score": fitted.cv_score_,
        "threshold_cv_cost": cost,
        "threshold_cv_f1": f1,
        "skip_below": fitted.skip_below_ if fitted.model_.gate is not None else None,
        "skip_share_cv": fitted.skip_share_,
    }
    return fitted, info, featurizer

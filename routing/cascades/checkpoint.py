"""Learned-cascade checkpoints: JSON for the chain and settings, safetensors for weights.

Layout of a checkpoint directory (`routebatch train-router --router learned-cascade`):

    router.json          format "routebatch-learned-cascade" v1, the chain of experts (the
                         last one is the final expert), their costs, l2, the threshold
                         grid, the default threshold (chosen on the training set) and
                         training notes
    weights.safetensors  step1 .. stepN: one float64 weight vector per chain step;
                         calibration.f1 / calibration.cost (thresholds x questions): the
                         training questions' out-of-fold outcomes at every threshold, and
                         calibration.reference_f1: the final expert's F1 on them — what a
                         job's budget_per_item or accuracy_target is turned into a
                         threshold with (`routing.cascades.learned.choose_threshold`)

As for pre-answer router checkpoints (`routing/routers/checkpoint.py`), nothing is unpickled:
the JSON's shape and types, the names, and every tensor's name, dtype, shape and values
are checked before anything is built, so a checkpoint from an untrusted path can at
worst be refused. `router.json` says which of the two kinds a directory holds.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Optional

import numpy as np
from safetensors.numpy import save_file

from routing.core.checkpoint_files import (
    CONFIG_FILE, WEIGHTS_FILE, CheckpointError, cost_list, distinct_names, finite_number, read_config_file, read_weights_file,
)
from routing.core.config import LearnedCascadeRouter
from routing.cascades.learned_plan import LearnedCascadeModel, LearnedCascadePlan, check_weights
from routing.cascades.learned import LearnedCascade, choose_threshold

FORMAT = "routebatch-learned-cascade"
VERSION = 1
_KEYS = {"format", "version", "chain", "costs", "l2", "thresholds", "threshold", "info"}
MAX_THRESHOLDS = 10_001


def checkpoint_format(path: str | Path) -> Optional[str]:
    """The `format` a checkpoint directory's router.json declares (None if unreadable)."""
    try:
        data = json.loads((Path(path) / CONFIG_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data.get("format") if isinstance(data, dict) else None


def save_learned_cascade(fitted: LearnedCascade, path: str | Path, *, info: dict[str, Any], overwrite: bool = False) -> Path:
    """Write a fitted LearnedCascade with its `pick()` threshold as the default."""
    fitted._check_fitted()
    path = Path(path)
    if (path / CONFIG_FILE).exists() and not overwrite:
        raise CheckpointError(f"{path}: already holds a checkpoint; pass overwrite=True to replace it")
    path.mkdir(parents=True, exist_ok=True)
    model = fitted.model_
    config = {
        "format": FORMAT,
        "version": VERSION,
        "chain": list(model.chain),
        "costs": [float(c) for c in model.costs],
        "l2": float(model.l2),
        "thresholds": [float(t) for t in fitted.thresholds_],
        "threshold": float(fitted.thresholds_[fitted.pick()]),
        "info": info,
    }
    tensors = {f"step{m}": np.ascontiguousarray(w, dtype=np.float64) for m, w in enumerate(model.weights, start=1)}
    tensors["calibration.f1"] = np.ascontiguousarray(fitted.oof_f1_, dtype=np.float64)
    tensors["calibration.cost"] = np.ascontiguousarray(fitted.oof_cost_, dtype=np.float64)
    tensors["calibration.reference_f1"] = np.ascontiguousarray(fitted.reference_f1_, dtype=np.float64)
    tmp_w, tmp_c = path / (WEIGHTS_FILE + ".tmp"), path / (CONFIG_FILE + ".tmp")
    save_file(tensors, str(tmp_w))
    tmp_c.write_text(json.dumps(config, indent=2, allow_nan=False))
    os.replace(tmp_w, path / WEIGHTS_FILE)
    os.replace(tmp_c, path / CONFIG_FILE)
    return path


def _read_cascade_config(path: Path) -> dict[str, Any]:
    file = path / CONFIG_FILE
    config = read_config_file(path, _KEYS, FORMAT, VERSION)
    chain = config["chain"]
    if not distinct_names(chain, 2, 64):
        raise CheckpointError(f"{file}: chain must be 2-64 distinct expert names of [A-Za-z0-9_.-]")

    if not cost_list(config["costs"], len(chain)):
        raise CheckpointError(f"{file}: costs must be one finite non-negative number per chain expert")
    if not finite_number(config["l2"]) or config["l2"] < 0:
        raise CheckpointError(f"{file}: l2 must be a finite non-negative number")
    grid = config["thresholds"]
    if (
        not isinstance(grid, list) or not 1 <= len(grid) <= MAX_THRESHOLDS
        or not all(finite_number(t) and 0 <= t <= 1 for t in grid) or any(a >= b for a, b in zip(grid, grid[1:]))
    ):
        raise CheckpointError(f"{file}: thresholds must be 1-{MAX_THRESHOLDS} increasing numbers in [0, 1]")
    if not finite_number(config["threshold"]) or not 0 <= config["threshold"] <= 1:
        raise CheckpointError(f"{file}: threshold must be a number in [0, 1]")
    if not isinstance(config["info"], dict):
        raise CheckpointError(f"{file}: info must be a mapping")
    return config


def _read_weights(path: Path, width: int, n_thresholds: int) -> tuple[list[np.ndarray], dict[str, np.ndarray]]:
    """(step weights, calibration arrays), every name, dtype and shape checked."""
    file = path / WEIGHTS_FILE
    tensors = read_weights_file(path)
    steps = {f"step{m}" for m in range(1, width + 1)}
    expected = steps | {f"calibration.{k}" for k in ("f1", "cost", "reference_f1")}
    if set(tensors) != expected:
        raise CheckpointError(f"{file}: expected tensors {sorted(expected)}, got {sorted(tensors)}")
    for key, arr in tensors.items():
        if arr.dtype != np.float64:
            raise CheckpointError(f"{file}: tensor {key!r} has dtype {arr.dtype}, expected float64")
    cal = {k.partition(".")[2]: v for k, v in tensors.items() if k.startswith("calibration.")}
    n = cal["reference_f1"].shape[0] if cal["reference_f1"].ndim == 1 else -1
    if n < 1 or cal["f1"].shape != (n_thresholds, n) or cal["cost"].shape != (n_thresholds, n):
        raise CheckpointError(f"{file}: calibration tensors must be (thresholds, questions) and (questions,)")
    for key, arr in cal.items():
        if not np.all(np.isfinite(arr)) or arr.min() < 0 or (key != "cost" and arr.max() > 1):
            raise CheckpointError(f"{file}: calibration.{key} must hold finite numbers in range")
    return [tensors[f"step{m}"] for m in range(1, width + 1)], cal


def load_learned_cascade(
    path: str | Path,
    threshold: Optional[float] = None,
    *,
    budget_per_item: Optional[float] = None,
    accuracy_target: Optional[float] = None,
    confidence: float = 0.95,
) -> LearnedCascadePlan:
    """The batch job's plan from a checkpoint, at `threshold`, or at the threshold that a
    `budget_per_item` or an `accuracy_target` (at `confidence`) calls for on the
    checkpoint's held-out outcomes; with none of them, at the checkpoint's default."""
    if sum(v is not None for v in (threshold, budget_per_item, accuracy_target)) > 1:
        raise ValueError("choose one of threshold, budget_per_item, accuracy_target")
    path = Path(path)
    config = _read_cascade_config(path)
    weights, cal = _read_weights(path, len(config["chain"]), len(config["thresholds"]))
    try:
        check_weights(config["chain"], weights)
    except ValueError as exc:
        raise CheckpointError(f"{path / WEIGHTS_FILE}: {exc}") from None
    model = LearnedCascadeModel(tuple(config["chain"]), np.array(config["costs"], dtype=np.float64), tuple(weights), float(config["l2"]))
    if budget_per_item is None and accuracy_target is None:
        chosen = config["threshold"] if threshold is None else threshold
        return LearnedCascadePlan(model, chosen, "" if threshold is not None else "the checkpoint's default")
    choice = choose_threshold(
        np.array(config["thresholds"]), cal["f1"], cal["cost"], cal["reference_f1"],
        budget_per_item=budget_per_item, accuracy_target=accuracy_target, confidence=confidence,
    )
    return LearnedCascadePlan(model, choice.threshold, choice.description)


def plan_from_spec(spec: LearnedCascadeRouter) -> LearnedCascadePlan:
    """The plan a `router: {kind: learned-cascade, ...}` section asks for."""
    return load_learned_cascade(
        spec.checkpoint, spec.threshold, budget_per_item=spec.budget_per_item,
        accuracy_target=spec.accuracy_target, confidence=spec.confidence,
    )

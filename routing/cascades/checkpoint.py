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
                         threshold with (`routing.cascades.learned.choose_threshold`);
                         with a skip gate, gate.weights (one row per cheap expert) and
                         featurizer.* (the question featurizer's scalers and PCA)

Version 2 adds `gate` to router.json: null, or the bar below which a cheap expert is
skipped, the featurizer's settings and the content hash of the encoder it was fitted
with; loading refuses an encoder whose files hash differently, since a gate fed another
encoder's activations would skip the wrong rows without any error. Version 1
checkpoints (no gate) still load.

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
from routing.cascades.learned_plan import LearnedCascadeModel, LearnedCascadePlan, SkipGate, check_weights
from routing.cascades.learned import LearnedCascade, choose_threshold
from routing.features.encoder import encoder_identity
from routing.features.featurizer import RouterFeaturizer

FORMAT = "routebatch-learned-cascade"
VERSION = 2
_KEYS_V1 = {"format", "version", "chain", "costs", "l2", "thresholds", "threshold", "info"}
_KEYS = _KEYS_V1 | {"gate"}
MAX_THRESHOLDS = 10_001


def checkpoint_format(path: str | Path) -> Optional[str]:
    """The `format` a checkpoint directory's router.json declares (None if unreadable)."""
    return _declared(Path(path), "format")


def _declared(path: Path, key: str) -> Any:
    """One top-level value of router.json, or None where it cannot be read (the full
    reader, `read_config_file`, says what is wrong)."""
    try:
        data = json.loads((path / CONFIG_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data.get(key) if isinstance(data, dict) else None


def save_learned_cascade(
    fitted: LearnedCascade, path: str | Path, *, info: dict[str, Any], overwrite: bool = False,
    featurizer: Optional[RouterFeaturizer] = None,
) -> Path:
    """Write a fitted LearnedCascade with its `pick()` threshold as the default; a cascade
    with a skip gate needs the fitted `featurizer` that made its question features."""
    fitted._check_fitted()
    gate = fitted.model_.gate
    if gate is not None and featurizer is None:
        raise ValueError("this learned cascade skips experts by question features: pass the featurizer it was fitted with")
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
        "gate": None,
        "info": info,
    }
    tensors = {f"step{m}": np.ascontiguousarray(w, dtype=np.float64) for m, w in enumerate(model.weights, start=1)}
    if gate is not None:
        assert featurizer is not None
        f_config, f_tensors = featurizer.get_state()
        config["gate"] = {
            "below": float(gate.below),
            "featurizer": f_config,
            "encoder_identity": None if featurizer.encoder is None else encoder_identity(featurizer.encoder),
        }
        tensors["gate.weights"] = np.ascontiguousarray(gate.weights, dtype=np.float64)
        # float32 values held exactly in float64: every tensor of this format is float64.
        tensors.update({f"featurizer.{k}": np.asarray(v, dtype=np.float64) for k, v in f_tensors.items()})
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
    if _declared(path, "version") == 1:
        config = read_config_file(path, _KEYS_V1, FORMAT, 1)
        config["gate"] = None
    else:
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
    gate = config["gate"]
    if gate is not None and (
        not isinstance(gate, dict) or set(gate) != {"below", "featurizer", "encoder_identity"}
        or not finite_number(gate["below"]) or not 0 <= gate["below"] <= 1 or not isinstance(gate["featurizer"], dict)
        or not (gate["encoder_identity"] is None or isinstance(gate["encoder_identity"], str))
    ):
        raise CheckpointError(f"{file}: gate must be null or {{below: number in [0, 1], featurizer: mapping, encoder_identity}}")
    return config


def _read_weights(
    path: Path, width: int, n_thresholds: int, gated: bool = False
) -> tuple[list[np.ndarray], dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(step weights, calibration arrays, gate arrays), every name, dtype and shape checked."""
    file = path / WEIGHTS_FILE
    tensors = read_weights_file(path)
    gate = {k: tensors.pop(k) for k in list(tensors) if k == "gate.weights" or k.startswith("featurizer.")}
    if gated != bool(gate) or (gated and "gate.weights" not in gate):
        raise CheckpointError(f"{file}: gate tensors {'missing' if gated else 'present'} where router.json says "
                              f"{'a gate' if gated else 'no gate'}")
    steps = {f"step{m}" for m in range(1, width + 1)}
    expected = steps | {f"calibration.{k}" for k in ("f1", "cost", "reference_f1")}
    if set(tensors) != expected:
        raise CheckpointError(f"{file}: expected tensors {sorted(expected)}, got {sorted(tensors)}")
    for key, arr in (*tensors.items(), *gate.items()):
        if arr.dtype != np.float64:
            raise CheckpointError(f"{file}: tensor {key!r} has dtype {arr.dtype}, expected float64")
    cal = {k.partition(".")[2]: v for k, v in tensors.items() if k.startswith("calibration.")}
    n = cal["reference_f1"].shape[0] if cal["reference_f1"].ndim == 1 else -1
    if n < 1 or cal["f1"].shape != (n_thresholds, n) or cal["cost"].shape != (n_thresholds, n):
        raise CheckpointError(f"{file}: calibration tensors must be (thresholds, questions) and (questions,)")
    for key, arr in cal.items():
        if not np.all(np.isfinite(arr)) or arr.min() < 0 or (key != "cost" and arr.max() > 1):
            raise CheckpointError(f"{file}: calibration.{key} must hold finite numbers in range")
    return [tensors[f"step{m}"] for m in range(1, width + 1)], cal, gate


def _gate(path: Path, config: dict[str, Any], arrays: dict[str, np.ndarray], encoder: Optional[str]) -> tuple[SkipGate, RouterFeaturizer]:
    """The skip gate and its featurizer, the encoder's identity checked against the one
    the gate was fitted with."""
    spec = config["gate"]
    try:
        fz = RouterFeaturizer.from_state(
            spec["featurizer"], {k.partition(".")[2]: v.astype(np.float32) for k, v in arrays.items() if k != "gate.weights"},
            encoder_override=encoder,
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: {exc}") from None
    if fz.encoder is not None:
        found = encoder_identity(fz.encoder)
        if found != spec["encoder_identity"]:
            raise CheckpointError(
                f"{path}: the skip gate was fitted with encoder files hashing to {spec['encoder_identity']}, "
                f"but {fz.encoder} hashes to {found}: give the encoder it was trained with"
            )
    weights = arrays["gate.weights"]
    if weights.ndim != 2 or weights.shape[1] != fz.n_features_out_ + 1:
        raise CheckpointError(f"{path}: gate.weights must have one column per question feature ({fz.n_features_out_}) plus the bias")
    return SkipGate(weights, float(spec["below"])), fz


def load_learned_cascade(
    path: str | Path,
    threshold: Optional[float] = None,
    *,
    budget_per_item: Optional[float] = None,
    accuracy_target: Optional[float] = None,
    confidence: float = 0.95,
    encoder: Optional[str] = None,
) -> LearnedCascadePlan:
    """The batch job's plan from a checkpoint, at `threshold`, or at the threshold that a
    `budget_per_item` or an `accuracy_target` (at `confidence`) calls for on the
    checkpoint's held-out outcomes; with none of them, at the checkpoint's default.
    `encoder` relocates a skip gate's encoder (the same files, found elsewhere)."""
    if sum(v is not None for v in (threshold, budget_per_item, accuracy_target)) > 1:
        raise ValueError("choose one of threshold, budget_per_item, accuracy_target")
    path = Path(path)
    config = _read_cascade_config(path)
    weights, cal, gate_arrays = _read_weights(path, len(config["chain"]), len(config["thresholds"]), config["gate"] is not None)
    gate, fz = _gate(path, config, gate_arrays, encoder) if config["gate"] is not None else (None, None)
    try:
        check_weights(config["chain"], weights, gate)
    except ValueError as exc:
        raise CheckpointError(f"{path / WEIGHTS_FILE}: {exc}") from None
    model = LearnedCascadeModel(
        tuple(config["chain"]), np.array(config["costs"], dtype=np.float64), tuple(weights), float(config["l2"]), gate,
    )
    featurize = None if fz is None else fz.transform
    if budget_per_item is None and accuracy_target is None:
        chosen = config["threshold"] if threshold is None else threshold
        return LearnedCascadePlan(model, chosen, "" if threshold is not None else "the checkpoint's default", featurize)
    choice = choose_threshold(
        np.array(config["thresholds"]), cal["f1"], cal["cost"], cal["reference_f1"],
        budget_per_item=budget_per_item, accuracy_target=accuracy_target, confidence=confidence,
    )
    return LearnedCascadePlan(model, choice.threshold, choice.description, featurize)


def plan_from_spec(spec: LearnedCascadeRouter) -> LearnedCascadePlan:
    """The plan a `router: {kind: learned-cascade, ...}` section asks for."""
    return load_learned_cascade(
        spec.checkpoint, spec.threshold, budget_per_item=spec.budget_per_item,
        accuracy_target=spec.accuracy_target, confidence=spec.confidence,
    )

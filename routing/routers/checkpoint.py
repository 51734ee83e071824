"""Trained router checkpoints: safetensors for arrays, JSON for everything else.

Layout of a checkpoint directory (written by `routebatch train-router`):

    router.json          format/version, expert names and costs, the experts the policy
                         may choose (training hull), the reference expert for accuracy
                         targets, featurizer settings, router kind and parameters,
                         calibration metadata, training notes
    weights.safetensors  featurizer.* (scalers, PCA), router.* (network weights or
                         k-NN memory), calibration.loss / calibration.f1 (the router's
                         predicted losses and the experts' true F1 on held-out
                         calibration questions: everything needed to pick lambda at run
                         time for any budget or accuracy target)

No pickle anywhere: a checkpoint from an untrusted source can at worst be refused.
`load` validates the JSON's shape and types, the names, and every tensor's name, dtype,
shape and values before building anything, and the encoder it names is loaded with
safetensors weights and without remote code.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
from safetensors.numpy import save_file

from routing.core.checkpoint_files import (
    CONFIG_FILE, WEIGHTS_FILE, CheckpointError, cost_list, distinct_names, finite_number, read_config_file, read_weights_file,
)
from routing.features.featurizer import RouterFeaturizer
from routing.calibration.policy import choose_lambda_for_budget, choose_setting_for_accuracy, lambda_grid, lambda_settings, route
from routing.routers.base import BaseRouter
from routing.routers.registry import router_from_state

FORMAT = "routebatch-router"
VERSION = 1
_TOP_KEYS = {"format", "version", "expert_names", "costs", "candidates", "reference", "featurizer", "router", "calibration", "info"}


@dataclass
class RouterCheckpoint:
    """A fitted featurizer + router + calibration table, and the policies built from them."""

    featurizer: RouterFeaturizer
    router: BaseRouter
    expert_names: tuple[str, ...]
    costs: np.ndarray
    candidates: np.ndarray  # (k,) bool: experts the policy may choose
    reference: str
    calibration_loss: np.ndarray  # (n_cal, k) predicted loss on calibration questions
    calibration_f1: np.ndarray  # (n_cal, k) true F1 there
    calibration_seed: int = 0
    info: dict[str, Any] = field(default_factory=dict)

    # -- saving ----------------------------------------------------------------------
    def save(self, path: str | Path, *, overwrite: bool = False) -> Path:
        path = Path(path)
        if (path / CONFIG_FILE).exists() and not overwrite:
            raise CheckpointError(f"{path}: already holds a checkpoint; pass overwrite=True to replace it")
        path.mkdir(parents=True, exist_ok=True)
        f_config, f_tensors = self.featurizer.get_state()
        r_config, r_tensors = self.router.get_state()
        tensors = {f"featurizer.{k}": v for k, v in f_tensors.items()}
        tensors.update({f"router.{k}": v for k, v in r_tensors.items()})
        tensors["calibration.loss"] = self.calibration_loss.astype(np.float32)
        tensors["calibration.f1"] = self.calibration_f1.astype(np.float32)
        config = {
            "format": FORMAT,
            "version": VERSION,
            "expert_names": list(self.expert_names),
            "costs": [float(c) for c in self.costs],
            "candidates": [n for n, ok in zip(self.expert_names, self.candidates) if ok],
            "reference": self.reference,
            "featurizer": f_config,
            "router": r_config,
            "calibration": {"n": int(self.calibration_f1.shape[0]), "seed": int(self.calibration_seed)},
            "info": self.info,
        }
        tmp_w = path / (WEIGHTS_FILE + ".tmp")
        save_file({k: np.ascontiguousarray(v, dtype=np.float32) for k, v in tensors.items()}, str(tmp_w))
        tmp_c = path / (CONFIG_FILE + ".tmp")
        tmp_c.write_text(json.dumps(config, indent=2, allow_nan=False))
        os.replace(tmp_w, path / WEIGHTS_FILE)
        os.replace(tmp_c, path / CONFIG_FILE)
        return path

    # -- loading ---------------------------------------------------------------------
    @classmethod
    def load(
        cls, path: str | Path, *, encoder: Optional[str] = None, cache_dir: Optional[str] = None
    ) -> "RouterCheckpoint":
        """Load and validate; `encoder` relocates the featurizer's encoder (same model, other path)."""
        path = Path(path)
        config = _read_router_config(path)
        tensors = _read_tensors(path)
        names = tuple(config["expert_names"])
        k = len(names)
        groups: dict[str, dict[str, np.ndarray]] = {"featurizer": {}, "router": {}, "calibration": {}}
        for key, value in tensors.items():
            prefix, _, rest = key.partition(".")
            if prefix not in groups or not rest:
                raise CheckpointError(f"{path}: unexpected tensor {key!r}")
            groups[prefix][rest] = value
        if set(groups["calibration"]) != {"loss", "f1"}:
            raise CheckpointError(f"{path}: calibration tensors must be exactly loss and f1")
        cal_loss, cal_f1 = groups["calibration"]["loss"], groups["calibration"]["f1"]
        n_cal = config["calibration"]["n"]
        for name, arr in (("loss", cal_loss), ("f1", cal_f1)):
            if arr.shape != (n_cal, k):
                raise CheckpointError(f"{path}: calibration.{name} has shape {arr.shape}, expected ({n_cal}, {k})")
            if not np.all(np.isfinite(arr)) or arr.min(initial=0.0) < 0 or arr.max(initial=0.0) > 1:
                raise CheckpointError(f"{path}: calibration.{name} must hold values in [0, 1]")
        try:
            featurizer = RouterFeaturizer.from_state(
                config["featurizer"], groups["featurizer"], encoder_override=encoder, cache_dir=cache_dir
            )
            router = router_from_state(config["router"], groups["router"])
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f"{path}: {exc}") from None
        if router.n_experts_ != k:
            raise CheckpointError(f"{path}: router predicts {router.n_experts_} experts, checkpoint names {k}")
        if router.n_features_ != featurizer.n_features_out_:
            raise CheckpointError(
                f"{path}: router expects {router.n_features_} features, featurizer gives {featurizer.n_features_out_}"
            )
        candidates = np.array([n in config["candidates"] for n in names])
        return cls(
            featurizer=featurizer,
            router=router,
            expert_names=names,
            costs=np.array(config["costs"], dtype=np.float64),
            candidates=candidates,
            reference=config["reference"],
            calibration_loss=cal_loss.astype(np.float64),
            calibration_f1=cal_f1.astype(np.float64),
            calibration_seed=config["calibration"]["seed"],
            info=config["info"],
        )

    # -- policies --------------------------------------------------------------------
    def calibration_grid(self) -> np.ndarray:
        return lambda_grid(self.calibration_loss, self.costs, allowed=self.candidates)

    def policy(
        self,
        budget_per_item: Optional[float] = None,
        accuracy_target: Optional[float] = None,
        confidence: float = 0.95,
        lam: Optional[float] = None,
    ) -> "RoutingPolicy":
        """A routing policy for one operating point; give at most one of the three.

        * `lam`: use this cost weight as is;
        * `budget_per_item`: the lambda with the best calibration F1 whose calibration
          mean cost fits the budget;
        * `accuracy_target`: the cheapest lambda whose F1 is, with probability
          `confidence`, at least target x the reference expert's F1 (see
          `routing.calibration.policy`); if none passes, everything goes to the reference expert.
        * none: lambda = 0, the best predicted quality among the candidate experts.
        """
        given = [k for k, v in (("budget_per_item", budget_per_item), ("accuracy_target", accuracy_target), ("lam", lam)) if v is not None]
        if len(given) > 1:
            raise ValueError(f"choose one of budget_per_item, accuracy_target, lam (got {', '.join(given)})")
        if lam is not None:
            if not (math.isfinite(lam) and lam >= 0):
                raise ValueError("lam must be finite and non-negative")
            return RoutingPolicy(self, lam=float(lam), description=f"lambda={lam:g} (given)")
        if budget_per_item is not None:
            choice = choose_lambda_for_budget(
                self.calibration_loss, self.costs, self.calibration_f1, budget_per_item,
                lams=self.calibration_grid(), allowed=self.candidates,
            )
            note = "" if choice.feasible else " (budget below every calibrated setting: cheapest used)"
            return RoutingPolicy(
                self, lam=choice.lam,
                description=f"budget {budget_per_item:g}: lambda={choice.lam:.4g}, calibration cost {choice.cost:.3f}, F1 {choice.f1:.4f}{note}",
            )
        if accuracy_target is not None:
            if not 0 < accuracy_target <= 1 or not 0 < confidence < 1:
                raise ValueError("accuracy_target must lie in (0, 1] and confidence in (0, 1)")
            lams = self.calibration_grid()
            settings_f1, _ = lambda_settings(self.calibration_loss, self.costs, self.calibration_f1, lams, self.candidates)
            ref = self.expert_names.index(self.reference)
            choice = choose_setting_for_accuracy(
                settings_f1, self.calibration_f1[:, ref], accuracy_target, confidence, seed=self.calibration_seed
            )
            if choice.index < 0:
                return RoutingPolicy(
                    self, fixed_expert=ref,
                    description=f"accuracy {accuracy_target:g} @ {confidence:g}: not certifiable on calibration data; "
                                f"every question goes to the reference {self.reference}",
                )
            lam_ = float(lams[choice.index])
            return RoutingPolicy(
                self, lam=lam_,
                description=f"accuracy {accuracy_target:g} @ {confidence:g}: lambda={lam_:.4g} "
                            f"(lower bound {choice.lower_bounds[choice.index]:.4f} >= {choice.threshold:g})",
            )
        return RoutingPolicy(self, lam=0.0, description="lambda=0 (no budget or target given)")


class RoutingPolicy:
    """What the batch job's router actor calls per batch: questions in, expert names out."""

    def __init__(
        self, checkpoint: RouterCheckpoint, *, lam: Optional[float] = None, fixed_expert: Optional[int] = None,
        description: str = "",
    ) -> None:
        if (lam is None) == (fixed_expert is None):
            raise ValueError("a policy needs exactly one of lam and fixed_expert")
        self._ckpt = checkpoint
        self.lam = lam
        self.fixed_expert = fixed_expert
        self.description = description

    @property
    def expert_names(self) -> list[str]:
        return list(self._ckpt.expert_names)

    def route_indices(self, questions: Sequence[str], contexts: Sequence[str]) -> np.ndarray:
        if len(questions) != len(contexts):
            raise ValueError(f"{len(questions)} questions but {len(contexts)} contexts")
        if self.fixed_expert is not None or not questions:
            return np.full(len(questions), self.fixed_expert if self.fixed_expert is not None else 0, dtype=np.int64)
        X = self._ckpt.featurizer.transform(list(questions), list(contexts))
        loss = self._ckpt.router.predict_loss(X)
        assert self.lam is not None
        return route(loss, self._ckpt.costs, self.lam, self._ckpt.candidates)

    def route(self, questions: Sequence[str], contexts: Sequence[str]) -> list[str]:
        names = self._ckpt.expert_names
        return [names[i] for i in self.route_indices(questions, contexts)]

    def scores(self, questions: Sequence[str], contexts: Sequence[str]) -> list[dict[str, float]]:
        """Per question, each expert's predicted loss (1 - expected F1): what `route`
        weighs against lambda x cost. The online endpoint returns it so a caller can see
        why an expert was chosen; it does not take part in the choice itself."""
        if not questions:
            return []
        X = self._ckpt.featurizer.transform(list(questions), list(contexts))
        loss = self._ckpt.router.predict_loss(X)
        names = self._ckpt.expert_names
        return [{n: float(v) for n, v in zip(names, row)} for row in np.asarray(loss, dtype=np.float64)]


# -- validation helpers -----------------------------------------------------------------

def _read_router_config(path: Path) -> dict[str, Any]:
    file = path / CONFIG_FILE
    config = read_config_file(path, _TOP_KEYS, FORMAT, VERSION)
    names = config["expert_names"]
    if not distinct_names(names, 1, 1000):
        raise CheckpointError(f"{file}: expert_names must be 1-1000 distinct names of [A-Za-z0-9_.-]")
    if not cost_list(config["costs"], len(names)):
        raise CheckpointError(f"{file}: costs must be one finite non-negative number per expert")
    cands = config["candidates"]
    if not isinstance(cands, list) or not cands or not all(isinstance(c, str) and c in names for c in cands):
        raise CheckpointError(f"{file}: candidates must be a non-empty list of known expert names")
    if not isinstance(config["reference"], str) or config["reference"] not in names:
        raise CheckpointError(f"{file}: reference must name one of the experts")
    cal = config["calibration"]
    if (
        not isinstance(cal, dict) or set(cal) != {"n", "seed"}
        or not all(isinstance(cal[k], int) and not isinstance(cal[k], bool) for k in ("n", "seed"))
        or not 1 <= cal["n"] <= 10_000_000 or not 0 <= cal["seed"] < 2**63
    ):
        raise CheckpointError(f"{file}: calibration must be {{\"n\": positive int, \"seed\": int}}")
    if not isinstance(config["featurizer"], dict) or not isinstance(config["router"], dict) or not isinstance(config["info"], dict):
        raise CheckpointError(f"{file}: featurizer, router and info must be mappings")
    f = config["featurizer"]
    for key, types in (("encoder", (str, type(None))), ("use_text", bool), ("max_length", int), ("layers", list),
                       ("n_features_out", int), ("pca_components", (int, type(None))), ("text_feature_names", list)):
        if key not in f or not isinstance(f[key], types):
            raise CheckpointError(f"{file}: featurizer.{key} is missing or has the wrong type")
    return config


def _read_tensors(path: Path) -> dict[str, np.ndarray]:
    file = path / WEIGHTS_FILE
    tensors = read_weights_file(path)
    for key, arr in tensors.items():
        if arr.dtype != np.float32:
            raise CheckpointError(f"{file}: tensor {key!r} has dtype {arr.dtype}, expected float32")
        if not np.all(np.isfinite(arr)):
            raise CheckpointError(f"{file}: tensor {key!r} contains non-finite values")
    return tensors

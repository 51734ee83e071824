"""What every router model shares: the estimator contract and its input checks.

A router model is scikit-learn-like: constructor parameters are plain values,
`fit(X, f1, costs)` learns from features X (n, d), the experts' per-question F1 (n, k)
(NaN = the expert has no recorded answer there) and their costs (k,), and
`predict_loss(X)` returns the expected loss 1 - F1 of every expert on every question,
(n, k). Keeping the output an *expected loss* (not a decision) is what lets one trained
model serve every budget: the policy adds lambda * cost and takes the argmin.

`get_state` / `from_state` turn a fitted router into JSON-able settings plus named
float arrays (for safetensors) and back, so checkpoints never need pickle.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

import numpy as np


class BaseRouter(ABC):
    """Base class: subclasses set `kind` and implement the four abstract methods, so a
    router missing one fails when it is constructed, not when a job first calls it."""

    kind: ClassVar[str] = ""

    @abstractmethod
    def fit(self, X: np.ndarray, f1: np.ndarray, costs: np.ndarray) -> "BaseRouter":
        """Learn from the training profile; returns self."""

    @abstractmethod
    def predict_loss(self, X: np.ndarray) -> np.ndarray:
        """Expected loss 1 - F1 of every expert on every row, (n, k)."""

    @abstractmethod
    def get_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """(JSON-able settings, named float arrays) of a fitted router."""

    @classmethod
    @abstractmethod
    def from_state(cls, config: dict[str, Any], tensors: dict[str, np.ndarray]) -> "BaseRouter":
        """The router `get_state` described, fitted."""

    def get_params(self) -> dict[str, Any]:
        """Constructor parameters (scikit-learn convention), used by checkpoints."""
        import inspect

        names = [p for p in inspect.signature(type(self).__init__).parameters if p != "self"]
        return {name: getattr(self, name) for name in names}

    def _check_fitted(self) -> None:
        if not hasattr(self, "n_experts_"):
            raise RuntimeError(f"{type(self).__name__} is not fitted; call fit first")

    def _check_X(self, X: np.ndarray) -> np.ndarray:
        self._check_fitted()
        X = np.asarray(X, dtype=np.float32)
        if X.ndim != 2 or X.shape[1] != self.n_features_:
            raise ValueError(f"X has shape {X.shape}, expected (n, {self.n_features_})")
        return X


def check_fit_inputs(X: np.ndarray, f1: np.ndarray, costs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Validate and convert fit inputs; F1 may be NaN (uncovered) but otherwise in [0, 1]."""
    X = np.asarray(X, dtype=np.float32)
    f1 = np.asarray(f1, dtype=np.float64)
    costs = np.asarray(costs, dtype=np.float64)
    if X.ndim != 2 or f1.ndim != 2 or costs.ndim != 1:
        raise ValueError(f"expected X (n, d), f1 (n, k), costs (k,); got {X.shape}, {f1.shape}, {costs.shape}")
    if X.shape[0] != f1.shape[0] or f1.shape[1] != costs.shape[0]:
        raise ValueError(f"shapes disagree: X {X.shape}, f1 {f1.shape}, costs {costs.shape}")
    if X.shape[0] < 2 or f1.shape[1] < 1:
        raise ValueError("need at least two examples and one expert")
    if not np.all(np.isfinite(X)):
        raise ValueError("X contains non-finite values")
    finite = f1[np.isfinite(f1)]
    if finite.size and (finite.min() < 0 or finite.max() > 1):
        raise ValueError("f1 must lie in [0, 1] (NaN marks an uncovered cell)")
    if not np.all(np.isfinite(costs)) or np.any(costs < 0):
        raise ValueError("costs must be finite and non-negative")
    return X, f1, costs


def check_param_dict(config: dict[str, Any], kind: str, allowed: dict[str, type | tuple[type, ...]]) -> dict[str, Any]:
    """Validate a checkpoint's `params` for a router kind: known keys, expected types."""
    if not isinstance(config, dict) or config.get("kind") != kind:
        raise ValueError(f"router config must be a mapping with kind {kind!r}")
    params = config.get("params")
    if not isinstance(params, dict) or set(params) != set(allowed):
        raise ValueError(f"router {kind}: params must have exactly the keys {sorted(allowed)}")
    for name, types in allowed.items():
        value = params[name]
        if isinstance(value, bool) and bool not in (types if isinstance(types, tuple) else (types,)):
            raise ValueError(f"router {kind}: param {name} has the wrong type")
        if not isinstance(value, types):
            raise ValueError(f"router {kind}: param {name} has the wrong type")
    for key in ("n_features", "n_experts"):
        value = config.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 100_000:
            raise ValueError(f"router {kind}: {key} must be a positive integer")
    return params

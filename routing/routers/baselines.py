"""Baseline router models: the yardsticks a learned router has to beat.

* `ConstantRouter` predicts every expert's mean training loss for every question. Under
  the lambda policy it picks, for each lambda, the single expert with the best
  loss + lambda * cost: "the best fixed expert at this price". At lambda = 0 it is the
  always-best baseline; at large lambda always-cheapest.
* `KNNRouter` predicts an expert's F1 on a question as its mean F1 over the question's
  nearest training neighbours. It has no parameters to learn beyond the memory, so it
  shows how much of a router's gain is just "similar questions are similarly hard".

The cost-matched random mix is not a per-question model; it lives in `routing.replay.metrics`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from routing.routers.base import BaseRouter, check_fit_inputs, check_param_dict


# Query x memory distances the kNN router holds at once (one block of queries); its
# working set is about 25 bytes per entry (distances, masks, tie ranks), so ~50 MB.
_KNN_BLOCK_ENTRIES = 2**21


def _nearest_mask(d2: np.ndarray, k: int) -> np.ndarray:
    """0/1 rows marking each query's k nearest memory rows, ties to the lower index.

    The same set as a stable argsort's first k columns, found with one
    `np.partition` (O(m) per row instead of O(m log m)): everything strictly closer
    than the k-th distance, then as many rows at exactly that distance as are still
    needed, lowest index first. Duplicated questions make such ties common, so the
    rule matters for reproducible checkpoints.
    """
    kth = np.partition(d2, k - 1, axis=1)[:, k - 1 : k]
    closer = d2 < kth
    tied = d2 == kth
    still_needed = k - closer.sum(axis=1, keepdims=True)
    chosen = closer | (tied & (np.cumsum(tied, axis=1, dtype=np.int32) <= still_needed))
    return chosen.astype(np.float64)


class ConstantRouter(BaseRouter):
    kind = "constant"

    def __init__(self) -> None:
        pass

    def fit(self, X: np.ndarray, f1: np.ndarray, costs: np.ndarray) -> "ConstantRouter":
        X, f1, costs = check_fit_inputs(X, f1, costs)
        self.n_features_, self.n_experts_ = X.shape[1], f1.shape[1]
        # An expert never recorded is treated as always wrong: no evidence, no traffic.
        mean_loss = np.nan_to_num(1.0 - np.nanmean(np.where(np.isfinite(f1), f1, np.nan), axis=0), nan=1.0)
        self.mean_loss_ = mean_loss.astype(np.float32).astype(np.float64)  # what a checkpoint stores
        return self

    def predict_loss(self, X: np.ndarray) -> np.ndarray:
        X = self._check_X(X)
        return np.tile(self.mean_loss_, (X.shape[0], 1))

    def get_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        self._check_fitted()
        config = {"kind": self.kind, "params": {}, "n_features": self.n_features_, "n_experts": self.n_experts_}
        return config, {"mean_loss": self.mean_loss_.astype(np.float32)}

    @classmethod
    def from_state(cls, config: dict[str, Any], tensors: dict[str, np.ndarray]) -> "ConstantRouter":
        check_param_dict(config, cls.kind, {})
        obj = cls()
        obj.n_features_, obj.n_experts_ = config["n_features"], config["n_experts"]
        if set(tensors) != {"mean_loss"} or tensors["mean_loss"].shape != (obj.n_experts_,):
            raise ValueError("router constant: expected one tensor mean_loss of shape (n_experts,)")
        obj.mean_loss_ = tensors["mean_loss"].astype(np.float64)
        return obj


class KNNRouter(BaseRouter):
    """Mean F1 of the `n_neighbors` nearest training questions (Euclidean on the features)."""

    kind = "knn"

    def __init__(self, n_neighbors: int = 25) -> None:
        self.n_neighbors = n_neighbors

    def fit(self, X: np.ndarray, f1: np.ndarray, costs: np.ndarray) -> "KNNRouter":
        X, f1, costs = check_fit_inputs(X, f1, costs)
        if self.n_neighbors < 1:
            raise ValueError("n_neighbors must be at least 1")
        self.n_features_, self.n_experts_ = X.shape[1], f1.shape[1]
        col_mean = np.nan_to_num(np.nanmean(np.where(np.isfinite(f1), f1, np.nan), axis=0), nan=0.0)
        self.X_ = X.astype(np.float32)
        self.f1_ = np.where(np.isfinite(f1), f1, col_mean[None, :]).astype(np.float32)
        return self

    def predict_loss(self, X: np.ndarray) -> np.ndarray:
        X = self._check_X(X)
        k = min(self.n_neighbors, self.X_.shape[0])
        memory_sq = (self.X_**2).sum(1)
        f1 = self.f1_.astype(np.float64)
        out = np.empty((X.shape[0], self.n_experts_))
        # Queries in blocks so memory stays bounded whatever the number of queries (one
        # float32 matrix for 5k queries x 20k memory rows is already 400 MB).
        rows = max(1, _KNN_BLOCK_ENTRIES // self.X_.shape[0])
        for start in range(0, X.shape[0], rows):
            chunk = X[start : start + rows]
            # Squared distances via the expansion; clip tiny negatives from rounding.
            d2 = np.maximum((chunk**2).sum(1)[:, None] - 2 * chunk @ self.X_.T + memory_sq[None, :], 0)
            out[start : start + rows] = 1.0 - _nearest_mask(d2, k) @ f1 / k
        return out

    def get_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        self._check_fitted()
        config = {"kind": self.kind, "params": self.get_params(), "n_features": self.n_features_, "n_experts": self.n_experts_}
        return config, {"memory_x": self.X_, "memory_f1": self.f1_}

    @classmethod
    def from_state(cls, config: dict[str, Any], tensors: dict[str, np.ndarray]) -> "KNNRouter":
        params = check_param_dict(config, cls.kind, {"n_neighbors": int})
        if not 1 <= params["n_neighbors"] <= 100_000:
            raise ValueError("router knn: n_neighbors out of range")
        obj = cls(**params)
        obj.n_features_, obj.n_experts_ = config["n_features"], config["n_experts"]
        if set(tensors) != {"memory_x", "memory_f1"}:
            raise ValueError("router knn: expected tensors memory_x and memory_f1")
        mx, mf = tensors["memory_x"], tensors["memory_f1"]
        if mx.ndim != 2 or mx.shape[1] != obj.n_features_ or mf.shape != (mx.shape[0], obj.n_experts_) or mx.shape[0] < 1:
            raise ValueError("router knn: memory shapes do not match n_features / n_experts")
        if not (np.all(np.isfinite(mx)) and np.all(np.isfinite(mf)) and mf.min() >= 0 and mf.max() <= 1):
            raise ValueError("router knn: memory contains invalid values")
        obj.X_, obj.f1_ = mx.astype(np.float32), mf.astype(np.float32)
        return obj

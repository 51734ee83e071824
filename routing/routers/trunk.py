"""Shared-trunk router: one trunk, one small head per expert predicting that expert's F1.

Why a shared trunk: "is this question hard?" is mostly common to all experts (they are
all extractive readers on the same text), so one representation learned from every
expert's labels is better fed than k separate models, each with a few hundred rows.
The heads keep what differs between experts. Targets are the F1 values themselves
(soft labels in [0, 1]) with a binary cross-entropy (or squared error), and cells with
no recorded answer are masked out of the loss rather than counted as failures.
The predicted loss is 1 - sigmoid(head output).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from routing.routers.base import check_fit_inputs
from routing.routers.ensemble import TorchEnsembleRouter
from routing.routers.mlp import build_mlp


class _TrunkNet(nn.Module):
    """Trunk + heads. Expert j's head is row j of `heads` (weights and bias): k separate
    linear heads, stored as one matrix so the forward pass is one matmul, not k."""

    def __init__(self, in_dim: int, hidden: tuple[int, ...], k: int, dropout: float) -> None:
        super().__init__()
        self.trunk = build_mlp(in_dim, hidden, 0, dropout)
        width = hidden[-1] if hidden else in_dim
        self.heads = nn.Linear(width, k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.heads(self.trunk(x))


class SharedTrunkRouter(TorchEnsembleRouter):
    """Shared MLP trunk + per-expert sigmoid heads; a seeded ensemble of `n_models`.

    Regularised hard by default for the same reason as `L2DRouter` (see there); heads
    start at each expert's mean F1 so that shrinkage pulls towards the expert's average
    quality rather than towards F1 = 0.5.
    """

    kind = "trunk"
    net = _TrunkNet
    param_types = {"hidden": list, "loss": str, "epochs": int, "lr": (int, float), "weight_decay": (int, float),
                   "dropout": (int, float), "n_models": int, "seed": int}

    def __init__(
        self,
        hidden: tuple[int, ...] = (16,),
        loss: str = "bce",
        epochs: int = 150,
        lr: float = 3e-3,
        weight_decay: float = 0.5,
        dropout: float = 0.5,
        n_models: int = 3,
        seed: int = 0,
    ) -> None:
        self.hidden = hidden  # as given (scikit-learn convention); read as ints where a model is built
        self.loss = loss
        self.epochs = epochs
        self.lr = lr
        self.weight_decay = weight_decay
        self.dropout = dropout
        self.n_models = n_models
        self.seed = seed

    def fit(self, X: np.ndarray, f1: np.ndarray, costs: np.ndarray) -> "SharedTrunkRouter":
        if self.loss not in ("bce", "mse"):
            raise ValueError(f"loss must be 'bce' or 'mse', got {self.loss!r}")
        X, f1, costs = check_fit_inputs(X, f1, costs)
        self.n_features_, self.n_experts_ = X.shape[1], f1.shape[1]
        mask = torch.as_tensor(np.isfinite(f1), dtype=torch.float32)
        y = torch.as_tensor(np.nan_to_num(f1, nan=0.0), dtype=torch.float32)
        xt = torch.as_tensor(X)
        denom = mask.sum().clamp(min=1.0)
        prior = ((y * mask).sum(0) / mask.sum(0).clamp(min=1.0)).clamp(1e-3, 1 - 1e-3)

        def init(model: _TrunkNet) -> None:
            # Start every head at its expert's mean F1, so regularisation shrinks
            # towards "the average expert quality", not towards F1 = 0.5.
            model.heads.bias.copy_(torch.logit(prior, eps=1e-3))

        def loss(model: _TrunkNet):
            def loss_fn() -> torch.Tensor:
                out = model(xt)
                if self.loss == "bce":
                    per = F.binary_cross_entropy_with_logits(out, y, reduction="none")
                else:
                    per = (torch.sigmoid(out) - y) ** 2
                return (per * mask).sum() / denom
            return loss_fn

        self._fit_ensemble(init, loss)
        return self

    def predict_f1(self, X: np.ndarray) -> np.ndarray:
        X = self._check_X(X)
        with torch.inference_mode():
            xt = torch.as_tensor(X)
            return np.mean([torch.sigmoid(m(xt)).numpy().astype(np.float64) for m in self.models_], axis=0)

    def predict_loss(self, X: np.ndarray) -> np.ndarray:
        return 1.0 - self.predict_f1(X)

    def get_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        return self._ensemble_state({})

    @classmethod
    def from_state(cls, config: dict[str, Any], tensors: dict[str, np.ndarray]) -> "SharedTrunkRouter":
        params = cls._checked_params(config)
        if params["loss"] not in ("bce", "mse"):
            raise ValueError("router trunk: bad loss or n_models")
        obj = cls(**params)
        obj._load_ensemble(config, tensors, set())
        return obj

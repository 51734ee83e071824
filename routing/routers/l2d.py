"""Two-stage learning-to-defer rejector (after Montreuil et al., arXiv 2410.15761).

Two-stage: the experts are fixed and already trained; we only learn the *rejector*
r(x) in R^k that picks which expert answers. Each training example gives every expert
a target cost

    c_j(x) = (1 - F1_j(x)) + beta * cost_j / max(cost),

its answer loss plus its (scaled) consultation price; an expert with no recorded
answer gets loss 1. The surrogate is the comp-sum form used by the two-stage L2D papers
(Mao, Mohri & Zhong's multi-expert deferral, which the EQA paper adapts): each expert's
log-softmax term is weighted by the total cost of the *other* experts,

    Phi(r, x) = sum_j tau_j(x) * (-log softmax_j r(x)),   tau_j = sum_{i != j} c_i(x).

Why this form: tau_j = C(x) - c_j(x) with C = sum_i c_i, so minimising it in
expectation gives softmax_j ∝ E[C - c_j | x], whose argmax is argmin_j E[c_j | x] — the
Bayes-optimal deferral (that is the consistency property the papers prove). It also
has the intuitive gradient: at a uniform softmax, d Phi / d r_j = mean(tau) - tau_j, so
descent raises the logit of the cheapest-and-correct expert most (tested).

Why an extra head: the same identity gives E[c_j | x] = E[C | x] * (1 - (k-1) softmax_j)
because sum_j tau_j = (k-1) C exactly. A second output regresses E[C | x], so the
rejector can report an expected *loss* per expert (c_j minus its known price) like the
other routers, and one trained rejector serves every lambda of the policy: at
lambda = beta the policy's argmin is the rejector's own argmax.
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


def l2d_surrogate(logits: torch.Tensor, target_costs: torch.Tensor) -> torch.Tensor:
    """Mean over examples of sum_j (sum_{i!=j} c_i) * -log softmax_j(logits)."""
    if logits.shape != target_costs.shape or logits.ndim != 2:
        raise ValueError(f"logits {tuple(logits.shape)} and costs {tuple(target_costs.shape)} must both be (n, k)")
    tau = target_costs.sum(dim=1, keepdim=True) - target_costs
    return (tau * -F.log_softmax(logits, dim=1)).sum(dim=1).mean()


def target_costs(f1: np.ndarray, costs: np.ndarray, cost_weight: float) -> np.ndarray:
    """(n, k) deferral costs: loss (1 - F1, 1 where uncovered) + cost_weight * cost / max cost."""
    loss = 1.0 - np.nan_to_num(np.asarray(f1, dtype=np.float64), nan=0.0)
    scale = costs.max() if costs.max() > 0 else 1.0
    return loss + cost_weight * (costs / scale)[None, :]


class _Rejector(nn.Module):
    def __init__(self, in_dim: int, hidden: tuple[int, ...], k: int, dropout: float) -> None:
        super().__init__()
        self.body = build_mlp(in_dim, hidden, 0, dropout)
        width = hidden[-1] if hidden else in_dim
        self.scores = nn.Linear(width, k)
        self.total = nn.Linear(width, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.body(x)
        return self.scores(h), F.softplus(self.total(h)).squeeze(1)


class L2DRouter(TorchEnsembleRouter):
    """Cost-sensitive two-stage L2D rejector; a small seeded ensemble of MLPs.

    `cost_weight` (beta) is the price of the most expensive expert in units of answer
    loss during training; it decides where on the cost/quality curve the rejector
    concentrates its capacity. `n_models` seeds are averaged to tame the variance of a
    few hundred training rows.

    The defaults regularise hard (width 16, dropout 0.5, weight decay 0.5 on weights
    only, 150 full-batch epochs). On the SQuAD replay, article-held-out, a width-64
    net with light decay routed *worse than always using the best expert* even at
    lambda = 0: the per-question signal is weak, and taking an argmin over eight noisy
    estimates picks whichever expert the noise favours.
    """

    kind = "l2d"
    net = _Rejector
    param_types = {"hidden": list, "cost_weight": (int, float), "epochs": int, "lr": (int, float),
                   "weight_decay": (int, float), "dropout": (int, float), "total_weight": (int, float),
                   "n_models": int, "seed": int}

    def __init__(
        self,
        hidden: tuple[int, ...] = (16,),
        cost_weight: float = 0.05,
        epochs: int = 150,
        lr: float = 3e-3,
        weight_decay: float = 0.5,
        dropout: float = 0.5,
        total_weight: float = 1.0,
        n_models: int = 3,
        seed: int = 0,
    ) -> None:
        self.hidden = hidden  # as given (scikit-learn convention); read as ints where a model is built
        self.cost_weight = cost_weight
        self.epochs = epochs
        self.lr = lr
        self.weight_decay = weight_decay
        self.dropout = dropout
        self.total_weight = total_weight
        self.n_models = n_models
        self.seed = seed

    def fit(self, X: np.ndarray, f1: np.ndarray, costs: np.ndarray) -> "L2DRouter":
        X, f1, costs = check_fit_inputs(X, f1, costs)
        self.n_features_, self.n_experts_ = X.shape[1], f1.shape[1]
        # Rounded to float32 like everything a checkpoint stores, so save/load is exact.
        self.cost_scale_ = (costs / (costs.max() if costs.max() > 0 else 1.0)).astype(np.float32).astype(np.float64)
        C = torch.as_tensor(target_costs(f1, costs, self.cost_weight), dtype=torch.float32)
        total = C.sum(dim=1)
        tau_mean = (total[:, None] - C).mean(dim=0)
        xt = torch.as_tensor(X)

        def init(model: _Rejector) -> None:
            # Start at the population answer for an uninformative x: softmax_j ∝
            # mean tau_j and total = mean C. Shrinkage then pulls towards that,
            # i.e. towards "route by average expert quality", not towards uniform.
            model.scores.bias.copy_(torch.log(tau_mean.clamp(min=1e-6)))
            model.total.bias.fill_(float(torch.log(torch.expm1(total.mean().clamp(min=1e-3)))))

        def loss(model: _Rejector):
            def loss_fn() -> torch.Tensor:
                logits, t_hat = model(xt)
                # Normalise by k so the surrogate's scale does not grow with the pool.
                sur = l2d_surrogate(logits, C) / self.n_experts_
                return sur + self.total_weight * F.mse_loss(t_hat, total)
            return loss_fn

        self.loss_traces_ = self._fit_ensemble(init, loss)
        return self

    def decision_scores(self, X: np.ndarray) -> np.ndarray:
        """Mean softmax of the rejectors: the native L2D decision is its argmax."""
        X = self._check_X(X)
        with torch.inference_mode():
            xt = torch.as_tensor(X)
            return np.mean([F.softmax(m(xt)[0], dim=1).numpy() for m in self.models_], axis=0)

    def predict_loss(self, X: np.ndarray) -> np.ndarray:
        """E[1 - F1_j | x] recovered from the rejector's softmax and its total-cost head."""
        X = self._check_X(X)
        k = self.n_experts_
        out = []
        with torch.inference_mode():
            xt = torch.as_tensor(X)
            for model in self.models_:
                logits, total = model(xt)
                p = F.softmax(logits, dim=1).numpy().astype(np.float64)
                c_hat = total.numpy().astype(np.float64)[:, None] * (1.0 - (k - 1) * p)
                out.append(c_hat - self.cost_weight * self.cost_scale_[None, :])
        return np.clip(np.mean(out, axis=0), 0.0, 1.0)

    def get_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        return self._ensemble_state({"cost_scale": self.cost_scale_.astype(np.float32)} if hasattr(self, "cost_scale_") else {})

    @classmethod
    def from_state(cls, config: dict[str, Any], tensors: dict[str, np.ndarray]) -> "L2DRouter":
        obj = cls(**cls._checked_params(config))
        scale = tensors.get("cost_scale")
        if scale is None or scale.shape != (config["n_experts"],):
            raise ValueError("router l2d: cost_scale missing or mis-shaped")
        obj.cost_scale_ = scale.astype(np.float64)
        obj._load_ensemble(config, tensors, {"cost_scale"})
        return obj

"""What the two torch routers (L2D and the shared trunk) share: a seeded ensemble.

Both fit `n_models` small networks on the same full batch, each under its own seed
(seed x 1000 + m) inside a forked torch RNG so fitting never moves the caller's random
state, and both store the ensemble as `m{i}.`-prefixed float32 tensors beside their
plain parameters. Only the network, its start and its loss differ; those stay in the
subclasses.
"""

from __future__ import annotations

from typing import Any, Callable, ClassVar

import numpy as np
import torch
from torch import nn

from routing.routers.base import BaseRouter, check_param_dict
from routing.routers.mlp import load_module_from_numpy, module_to_numpy, train_full_batch

MAX_MODELS = 64


class TorchEnsembleRouter(BaseRouter):
    """Base of the seeded torch ensembles: subclasses set `net` (a module class built as
    net(in_dim, hidden, k, dropout)) and `param_types` (their constructor parameters
    and JSON types, for checkpoint validation)."""

    net: ClassVar[type[nn.Module]]
    param_types: ClassVar[dict[str, type | tuple[type, ...]]]

    def _new_model(self) -> nn.Module:
        return self.net(self.n_features_, tuple(int(h) for h in self.hidden), self.n_experts_, self.dropout)

    def _fit_ensemble(
        self, init: Callable[[nn.Module], None], loss: Callable[[nn.Module], Callable[[], torch.Tensor]]
    ) -> list[list[float]]:
        """Fit `n_models` networks into `models_`; returns each one's loss trace.
        `init(model)` sets its starting weights; `loss(model)` gives its loss closure."""
        self.models_: list[nn.Module] = []
        traces = []
        for m in range(self.n_models):
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(self.seed * 1000 + m)
                model = self._new_model()
                with torch.no_grad():
                    init(model)
                traces.append(train_full_batch(model, loss(model), epochs=self.epochs, lr=self.lr, weight_decay=self.weight_decay))
            self.models_.append(model)
        return traces

    def _ensemble_state(self, extra: dict[str, np.ndarray]) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        self._check_fitted()
        params = self.get_params()
        params["hidden"] = [int(h) for h in self.hidden]
        config = {"kind": self.kind, "params": params, "n_features": self.n_features_, "n_experts": self.n_experts_}
        tensors = dict(extra)
        for m, model in enumerate(self.models_):
            tensors.update(module_to_numpy(model, f"m{m}."))
        return config, tensors

    @classmethod
    def _checked_params(cls, config: dict[str, Any]) -> dict[str, Any]:
        params = check_param_dict(config, cls.kind, cls.param_types)
        if not all(isinstance(h, int) and 1 <= h <= 4096 for h in params["hidden"]) or len(params["hidden"]) > 8:
            raise ValueError(f"router {cls.kind}: hidden must be a short list of layer widths")
        if not 1 <= params["n_models"] <= MAX_MODELS:
            raise ValueError(f"router {cls.kind}: n_models out of range")
        return params

    def _load_ensemble(self, config: dict[str, Any], tensors: dict[str, np.ndarray], known: set[str]) -> None:
        """Rebuild `models_` from the tensors; refuses tensors nobody asked for."""
        self.n_features_, self.n_experts_ = config["n_features"], config["n_experts"]
        known = set(known)
        self.models_ = []
        for m in range(self.n_models):
            model = self._new_model()
            load_module_from_numpy(model, tensors, f"m{m}.")
            known |= {f"m{m}.{name}" for name in model.state_dict()}
            self.models_.append(model)
        if set(tensors) != known:
            raise ValueError(f"router {self.kind}: unexpected tensors {sorted(set(tensors) - known)}")

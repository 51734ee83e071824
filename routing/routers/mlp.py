"""Small torch MLP utilities shared by the neural routers.

Training is full-batch Adam for a fixed number of epochs: router training sets are a few
hundred to a few thousand rows, so mini-batching buys nothing, and a fixed schedule (no
early stopping on a split we would have to carve out of scarce data) keeps a run a pure
function of (data, params, seed). All randomness runs inside `torch.random.fork_rng`, so
fitting a router never changes the caller's global torch RNG state.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn


def build_mlp(in_dim: int, hidden: Sequence[int], out_dim: int, dropout: float = 0.0) -> nn.Sequential:
    """Linear -> ReLU -> Dropout blocks, then a linear output (out_dim=0: no output layer)."""
    layers: list[nn.Module] = []
    prev = in_dim
    for width in hidden:
        layers += [nn.Linear(prev, int(width)), nn.ReLU(), nn.Dropout(dropout)]
        prev = int(width)
    if out_dim > 0:
        layers.append(nn.Linear(prev, out_dim))
    return nn.Sequential(*layers)


def train_full_batch(
    module: nn.Module,
    loss_fn: Callable[[], torch.Tensor],
    *,
    epochs: int,
    lr: float,
    weight_decay: float,
) -> list[float]:
    """Minimise `loss_fn()` (which closes over the data) with AdamW; returns the loss trace.

    Weight decay applies to weight matrices only. Decaying biases would pull every
    output towards logit 0 (F1 0.5) under strong regularisation, erasing the one thing
    a router must get right first: which expert is better *on average*.

    Runs single-threaded: for matrices this small, thread hand-off costs more than it
    saves, and on a shared 2-core machine two torch threads were 10-20x slower than one.
    The caller's thread setting is restored afterwards.
    """
    decay = [p for name, p in module.named_parameters() if not name.endswith("bias")]
    no_decay = [p for name, p in module.named_parameters() if name.endswith("bias")]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}], lr=lr
    )
    trace: list[float] = []
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        module.train()
        for _ in range(epochs):
            opt.zero_grad()
            loss = loss_fn()
            loss.backward()
            opt.step()
            trace.append(float(loss.detach()))
    finally:
        module.eval()
        torch.set_num_threads(threads)
    return trace


def module_to_numpy(module: nn.Module, prefix: str) -> dict[str, np.ndarray]:
    return {f"{prefix}{name}": t.detach().cpu().numpy().astype(np.float32) for name, t in module.state_dict().items()}


def load_module_from_numpy(module: nn.Module, tensors: dict[str, np.ndarray], prefix: str) -> None:
    """Load `prefix*` arrays into `module`, refusing missing, extra or mis-shaped tensors."""
    own = module.state_dict()
    given = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
    if set(given) != set(own):
        raise ValueError(
            f"{prefix or 'model'}: tensor names do not match the architecture "
            f"(missing {sorted(set(own) - set(given))}, unexpected {sorted(set(given) - set(own))})"
        )
    state = {}
    for name, ref in own.items():
        arr = given[name]
        if tuple(arr.shape) != tuple(ref.shape):
            raise ValueError(f"{prefix}{name}: shape {tuple(arr.shape)}, expected {tuple(ref.shape)}")
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"{prefix}{name}: contains non-finite values")
        state[name] = torch.as_tensor(np.asarray(arr, dtype=np.float32))
    module.load_state_dict(state, strict=True)
    module.eval()

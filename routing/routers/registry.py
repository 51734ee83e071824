"""The registry of router model kinds, by the names the CLI and checkpoints use.

An explicit table (not dynamic imports by name) so that a checkpoint's `kind` string can
only ever select one of these classes.
"""

from __future__ import annotations

from typing import Any

from routing.routers.baselines import ConstantRouter, KNNRouter
from routing.routers.l2d import L2DRouter
from routing.routers.base import BaseRouter
from routing.routers.trunk import SharedTrunkRouter

ROUTER_KINDS: dict[str, type[BaseRouter]] = {
    "l2d": L2DRouter,
    "trunk": SharedTrunkRouter,
    "knn": KNNRouter,
    "constant": ConstantRouter,
}


def make_router(kind: str, **params: Any) -> BaseRouter:
    try:
        cls = ROUTER_KINDS[kind]
    except KeyError:
        raise ValueError(f"unknown router kind {kind!r}; choose one of {sorted(ROUTER_KINDS)}") from None
    return cls(**params)


def router_from_state(config: Any, tensors: dict) -> BaseRouter:
    if not isinstance(config, dict) or config.get("kind") not in ROUTER_KINDS:
        raise ValueError(f"router: kind must be one of {sorted(ROUTER_KINDS)}")
    return ROUTER_KINDS[config["kind"]].from_state(config, tensors)

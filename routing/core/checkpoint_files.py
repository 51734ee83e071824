"""What both kinds of router checkpoint share: file names, size limits, the error type.

Kept apart from `routing/routers/checkpoint.py` so that reading a learned-cascade checkpoint
does not import the pre-answer routers (and with them torch) into the job's actors.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load_file

from routing.core.config import EXPERT_NAME

CONFIG_FILE = "router.json"
WEIGHTS_FILE = "weights.safetensors"
MAX_CONFIG_BYTES = 1 << 20
MAX_WEIGHTS_BYTES = 1 << 30


class CheckpointError(ValueError):
    """A checkpoint directory that is missing, malformed or inconsistent."""


def _no_constants(name: str) -> Any:
    raise ValueError(f"non-finite number {name} is not allowed")


def read_config_file(path: Path, keys: set[str], fmt: str, version: int) -> dict[str, Any]:
    """The parsed router.json of a checkpoint directory, refusing what is missing, too
    large, not JSON, holds NaN / Infinity, has other top-level keys than `keys`, or
    another format or version; the values are the caller's to check."""
    config = _parse(path)
    file = path / CONFIG_FILE
    if not isinstance(config, dict) or set(config) != keys:
        got = sorted(config) if isinstance(config, dict) else type(config).__name__
        raise CheckpointError(f"{file}: expected keys {sorted(keys)}, got {got}")
    if config["format"] != fmt or config["version"] != version:
        raise CheckpointError(f"{file}: format {config['format']!r} v{config['version']!r}; this code reads {fmt} v{version}")
    return config


def finite_number(v: Any) -> bool:
    """A JSON number that is finite (bools are not numbers here)."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def cost_list(costs: Any, n: int) -> bool:
    """A list of n finite non-negative numbers: one price per expert."""
    return isinstance(costs, list) and len(costs) == n and all(finite_number(c) and c >= 0 for c in costs)


def distinct_names(names: Any, lo: int, hi: int) -> bool:
    """A list of lo..hi distinct expert names (letters, digits, . _ -)."""
    return (
        isinstance(names, list) and lo <= len(names) <= hi
        and all(isinstance(n, str) and EXPERT_NAME.match(n) for n in names) and len(set(names)) == len(names)
    )


def _parse(path: Path) -> Any:
    file = path / CONFIG_FILE
    if not file.is_file():
        raise CheckpointError(f"{path}: not a router checkpoint ({CONFIG_FILE} missing)")
    if file.stat().st_size > MAX_CONFIG_BYTES:
        raise CheckpointError(f"{file}: larger than {MAX_CONFIG_BYTES} bytes; refusing to parse")
    try:
        return json.loads(file.read_text(encoding="utf-8"), parse_constant=_no_constants)
    except (UnicodeDecodeError, ValueError) as exc:
        raise CheckpointError(f"{file}: not valid JSON ({exc})") from None


def read_weights_file(path: Path) -> dict[str, np.ndarray]:
    """The tensors of a checkpoint's safetensors file (never a pickle), size-limited."""
    file = path / WEIGHTS_FILE
    if not file.is_file():
        raise CheckpointError(f"{path}: {WEIGHTS_FILE} missing")
    if file.stat().st_size > MAX_WEIGHTS_BYTES:
        raise CheckpointError(f"{file}: larger than {MAX_WEIGHTS_BYTES} bytes; refusing to load")
    try:
        return load_file(str(file))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{file}: not a readable safetensors file ({exc})") from None

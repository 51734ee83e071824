"""What both kinds of router checkpoint share: file names, size limits, the error type.

Kept apart from `routing/checkpoint.py` so that reading a learned-cascade checkpoint
does not import the pre-answer routers (and with them torch) into the job's actors.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load_file

CONFIG_FILE = "router.json"
WEIGHTS_FILE = "weights.safetensors"
MAX_CONFIG_BYTES = 1 << 20
MAX_WEIGHTS_BYTES = 1 << 30


class CheckpointError(ValueError):
    """A checkpoint directory that is missing, malformed or inconsistent."""


def _no_constants(name: str) -> Any:
    raise ValueError(f"non-finite number {name} is not allowed")


def read_config_file(path: Path) -> Any:
    """The parsed router.json of a checkpoint directory, refusing what is missing, too
    large, not JSON, or holds NaN / Infinity; its shape is the caller's to check."""
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

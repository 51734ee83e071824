"""`routebatch train-router --profile DIR --output ROUTER_DIR [--router l2d|trunk|knn|learned-cascade] [--encoder PATH]`.

DIR is a replay directory (questions.json, predictions/<expert>.json, costs.json — what
`routebatch profile` writes and what data/squad_replay holds). A random share of it is
held out for calibration (see `routing.training`); the checkpoint written to ROUTER_DIR
is what `router: {checkpoint: ROUTER_DIR, ...}` in a job config loads.

`--router learned-cascade` fits the learned cascade (`routing/cascades/learned.py`) on
the whole directory instead (its chain, regularisation, skip gate and default
threshold are chosen by cross-validation inside it), for `router: {kind:
learned-cascade, checkpoint: ROUTER_DIR}`. The gate reads the same question features
as the pre-answer routers (`--encoder`); it is kept only where skipping pays.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from pipelines import exit_codes
from pipelines.cli.feature_args import add_feature_arguments, encoder_from_arg
from routing.routers.checkpoint import CheckpointError, RouterCheckpoint
from routing.replay.data import ReplayDataError
from routing.training import TRAINABLE, train_router_checkpoint


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "train-router",
        help="train a router checkpoint from a replay/profile directory",
        description="Fit router features and a router on a replay directory and write a checkpoint.",
    )
    p.add_argument("--profile", required=True, help="replay directory: questions.json, predictions/, costs.json")
    p.add_argument("--output", required=True, help="checkpoint directory to write")
    p.add_argument("--router", choices=(*TRAINABLE, "learned-cascade"), default="trunk",
                   help="router model (default trunk); learned-cascade: the post-answer cascade")
    p.add_argument("--calibration-fraction", type=float, default=0.3, help="share held out for calibration (default 0.3)")
    add_feature_arguments(p)
    p.add_argument("--overwrite", action="store_true", help="replace an existing checkpoint")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.router == "learned-cascade":
        return _train_learned_cascade(args)
    encoder = encoder_from_arg(args.encoder)
    try:
        ckpt = train_router_checkpoint(
            args.profile, kind=args.router, encoder=encoder, max_length=args.max_length,
            calibration_fraction=args.calibration_fraction, seed=args.seed,
            covered_only=not args.all_questions, cache_dir=args.cache_dir,
        )
        ckpt.save(args.output, overwrite=args.overwrite)
    except (ReplayDataError, CheckpointError, ValueError) as exc:
        print(f"routebatch train-router: {exc}", file=sys.stderr)
        return exit_codes.FAILED
    loaded = RouterCheckpoint.load(args.output)  # prove it reads back before declaring success
    info = ckpt.info
    print(f"wrote {args.output}: {info['router_kind']} router over {len(loaded.expert_names)} experts, "
          f"fit on {info['n_fit']} questions, calibrated on {info['n_calibration']}; "
          f"reference {loaded.reference}; candidates {[n for n, c in zip(loaded.expert_names, loaded.candidates) if c]}")
    return exit_codes.OK


def _train_learned_cascade(args: argparse.Namespace) -> int:
    from routing.cascades.checkpoint import load_learned_cascade, save_learned_cascade
    from routing.training import train_learned_cascade

    try:
        fitted, info, featurizer = train_learned_cascade(
            args.profile, seed=args.seed, covered_only=not args.all_questions, encoder=encoder_from_arg(args.encoder),
            max_length=args.max_length, cache_dir=args.cache_dir, log=lambda msg: print(msg, file=sys.stderr),
        )
        save_learned_cascade(fitted, args.output, info=info, overwrite=args.overwrite, featurizer=featurizer)
        plan = load_learned_cascade(args.output)  # prove it reads back before declaring success
    except (ReplayDataError, CheckpointError, ValueError) as exc:
        print(f"routebatch train-router: {exc}", file=sys.stderr)
        return exit_codes.FAILED
    print(f"wrote {args.output}: learned cascade {plan.describe()}, fit on {info['n_fit']} questions; "
          f"cross-validated on them at that threshold: mean cost {info['threshold_cv_cost']:.4g}, "
          f"F1 {info['threshold_cv_f1']:.4f}")
    return exit_codes.OK

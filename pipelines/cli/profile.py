"""`routebatch profile CONFIG --sample N --output DIR`."""

from __future__ import annotations

import argparse
import json
import logging
import sys

from pipelines import exit_codes


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("profile", help="run every expert on a sample of the input (SMART-style adaptive profiling)")
    p.add_argument("config")
    p.add_argument("--sample", type=int, required=True, help="questions to sample from the input")
    p.add_argument("--output", required=True, help="directory (or s3:// prefix) for the profile")
    p.add_argument("--reference", help="the expert others are compared with (default: the costliest)")
    p.add_argument("--target", type=float, default=0.9, help="agreement with the reference to aim for (default 0.9)")
    p.add_argument("--confidence", type=float, default=0.95)
    p.add_argument("--batch", type=int, default=20, help="questions per profiling round")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-adaptive", action="store_true", help="profile every expert on the whole sample")
    p.set_defaults(func=_profile)


def _profile(args: argparse.Namespace) -> int:
    from pipelines.profiling import run_profile
    from pipelines.resources import PlanDoesNotFit
    from routing.core.config import load_config

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.sample < 1:
        print("routebatch: --sample must be at least 1", file=sys.stderr)
        return exit_codes.USAGE
    config = load_config(args.config)
    try:
        summary = run_profile(
            config,
            sample_size=args.sample,
            output=args.output,
            reference=args.reference,
            target=args.target,
            confidence=args.confidence,
            batch=args.batch,
            seed=args.seed,
            adaptive=not args.no_adaptive,
        )
    except PlanDoesNotFit as exc:
        print(f"routebatch: the plan does not fit the Ray cluster, nothing was run:\n{exc}", file=sys.stderr)
        return exit_codes.CONFIG
    width = max(len(n) for n in summary["experts"])
    print(f"profile of {summary['profiled']} questions (labels: {summary['labels']}, reference: {summary['reference']}); stopped: {summary['stopped']}")
    print(f"  {'expert'.ljust(width)}  {'items':>6} {'F1':>7} {'usd/question':>13} {'state':>13}")
    for name, s in summary["experts"].items():
        state = summary["states"].get(name, "reference")
        print(f"  {name.ljust(width)}  {s['items']:>6} {100 * s['f1']:>7.2f} {s['cost']:>13.6f} {state:>13}")
    mix = {k: round(v, 3) for k, v in summary["mix_plan"]["fractions"].items() if v > 0}
    print(f"  SMART mix for the rest at target {summary['target']}: {json.dumps(mix)} (${summary['mix_plan']['cost_per_item']:.6f}/question)")
    print(f"  written to {args.output}")
    return exit_codes.OK

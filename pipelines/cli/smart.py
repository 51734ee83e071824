"""`routebatch bench-smart`: replay the SMART paper's evaluation from its profiles.

Simulates whole jobs (see `routing.evaluation.smart_sim`) for every dataset in the profiles file,
every delta of the paper's grid and a number of seeds, prints one line per dataset and
delta, and writes every run to JSON so that a number in a report can be traced back to
the runs behind it. The command only reads a csv and does arithmetic, so it runs on any
machine in seconds; it is the check that our guarantees and cost model still behave
when the routing code changes.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict
from pathlib import Path

from pipelines import exit_codes
from routing.evaluation.smart_profiles import PRICES_PER_1K, cost_check, load_profiles
from routing.evaluation.smart_sim import DELTAS, SimSettings, format_table, run_smart_sim, summarize, to_jsonable


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "bench-smart",
        help="simulate SMART jobs from published model profiles",
        description="Simulate SMART (profiling + model mix) on published profiles and report "
        "whether accuracy targets are met and how much cheaper than the reference it is.",
    )
    parser.add_argument("--profiles", required=True, type=Path, help="smart_profiles.csv")
    parser.add_argument("--json", required=True, type=Path, dest="json_out", help="where to write all runs")
    parser.add_argument("--seeds", type=int, default=10, help="simulated jobs per dataset and delta (default 10)")
    parser.add_argument("--confidence", type=float, default=0.95, help="joint confidence of the guarantee")
    parser.add_argument("--batch", type=int, default=20, help="items profiled between decisions (default 20)")
    parser.add_argument("--strategy", choices=("mix", "single"), default="mix", help="model mix LP or one model")
    parser.add_argument(
        "--guarantee",
        choices=("realised", "expected"),
        default="realised",
        help="promise the delivered accuracy (default) or only its expectation",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.seeds <= 0 or args.batch <= 0:
        print("routebatch bench-smart: --seeds and --batch must be positive", file=sys.stderr)
        return exit_codes.USAGE
    if not 0 < args.confidence < 1:
        print("routebatch bench-smart: --confidence must lie in (0, 1)", file=sys.stderr)
        return exit_codes.USAGE
    try:
        datasets = load_profiles(args.profiles)
    except (OSError, KeyError, ValueError) as exc:
        # Nothing computed yet: the input cannot run this benchmark.
        print(f"routebatch bench-smart: cannot read {args.profiles}: {exc}", file=sys.stderr)
        return exit_codes.CONFIG

    settings = SimSettings(
        confidence=args.confidence, batch=args.batch, strategy=args.strategy, guarantee=args.guarantee
    )
    started = time.perf_counter()
    results = run_smart_sim(datasets.values(), DELTAS, args.seeds, settings)
    summaries = summarize(results)
    elapsed = time.perf_counter() - started

    print(format_table(summaries))
    met = sum(r.met for r in results)
    print(f"\n{met}/{len(results)} runs met their target; {elapsed:.1f}s")

    document = {
        "settings": {
            "profiles": str(args.profiles),
            "seeds": args.seeds,
            "deltas": list(DELTAS),
            **asdict(settings),
        },
        "prices_per_1k": {m: list(p) for m, p in PRICES_PER_1K.items()},
        "cost_check_relative_difference": cost_check(datasets),
        **to_jsonable(results, summaries),
    }
    args.json_out.parent.mkdir(parents=True, exist_ok=True)
    args.json_out.write_text(json.dumps(document, indent=1))
    return exit_codes.OK

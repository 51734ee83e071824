"""`routebatch run CONFIG`: the batch job from the command line."""

from __future__ import annotations

import argparse
import logging
import sys

from pipelines import exit_codes


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="run the batch job described by a YAML config")
    p.add_argument("config", nargs="?", help="path to the job's YAML config (optional with --resume)")
    p.add_argument("--output", help="output directory or s3:// prefix (overrides output.path)")
    p.add_argument(
        "--resume",
        metavar="RUN_DIR",
        help="continue the run in RUN_DIR, skipping its finished shards (with a CONFIG and no run there yet, start one there)",
    )
    p.add_argument("--overwrite", action="store_true", default=None, help="replace an earlier run at the output path")
    p.add_argument("--no-progress", action="store_true", help="no progress bars (for logs of scheduled jobs)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON instead of a table")
    p.add_argument("--no-report", action="store_true", help="do not write the HTML run report (RUN_DIR/_report/report.html)")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    import json

    from pipelines.batch_job import run_job
    from pipelines.resources import PlanDoesNotFit
    from pipelines.summary import format_summary
    from routing.core.config import load_config

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.resume:
        from pipelines.shards import read_run_record
        from routing.core.config import parse_config

        record = read_run_record(args.resume)
        if args.config:
            config = load_config(args.config)
        elif record is not None:
            config = parse_config(record["config"])  # paths in it are already resolved
        else:
            print(f"routebatch: --resume: {args.resume} holds no run to resume", file=sys.stderr)
            return exit_codes.CONFIG
        output = args.resume
    elif not args.config:
        print("routebatch run: give a CONFIG, or --resume RUN_DIR", file=sys.stderr)
        return exit_codes.USAGE
    else:
        config = load_config(args.config)
        output = args.output
    try:
        summary = run_job(config, output=output, overwrite=args.overwrite, resume=bool(args.resume), progress=not args.no_progress)
    except PlanDoesNotFit as exc:
        print(f"routebatch: the plan does not fit the Ray cluster, nothing was run:\n{exc}", file=sys.stderr)
        return exit_codes.CONFIG
    if args.json:
        print(json.dumps(summary.to_dict(), indent=2))
    else:
        print(format_summary(summary))
    if not args.no_report:
        from pipelines.reports.write import report_after_run

        # With --json, stdout is the summary alone, for machines; the pointer goes to stderr.
        print(report_after_run(summary.output), file=sys.stderr if args.json else sys.stdout)
    return summary.exit_code

"""`routebatch report RUN_DIR [--gold SQUAD_JSON] [--profile DIR] [--output report.html]`."""

from __future__ import annotations

import argparse
import sys

from pipelines import exit_codes


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="write an HTML report (with plots) of a finished run")
    p.add_argument("run_dir", help="a run's output directory (or s3:// prefix)")
    p.add_argument("--gold", help="SQuAD JSON with gold answers: adds F1 and the cost/F1 frontier")
    p.add_argument(
        "--profile",
        help="a `routebatch profile` directory: every expert on the same questions, for a fair best single expert and frontier",
    )
    p.add_argument("--output", help="where to write the page (default RUN_DIR/_report/report.html; report.json goes beside it)")
    p.set_defaults(func=_report)


def _report(args: argparse.Namespace) -> int:
    from pipelines.reports.write import write_report
    from pipelines.reports.data import ReportError
    from pipelines.reports.html import headline_sentence

    try:
        html_path, json_path, figures = write_report(args.run_dir, gold=args.gold, profile=args.profile, output=args.output)
    except ReportError as exc:
        print(f"routebatch report: {exc}", file=sys.stderr)
        return exit_codes.CONFIG
    print(headline_sentence(figures))
    print(f"report: {html_path}\nfigures: {json_path}")
    return exit_codes.OK

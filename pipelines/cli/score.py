"""`routebatch score`: official SQuAD EM/F1 of a run's output, overall and per expert."""

from __future__ import annotations

import argparse
import json
import sys

from pipelines import exit_codes
from pipelines.summary import NotRunOutput, open_output
from routing.core.config import ConfigError
from routing.answers.squad import load_squad, score_predictions


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("score", help="score a run's answers against SQuAD gold answers")
    p.add_argument("--predictions", required=True, help="a run's output directory (or s3:// prefix)")
    p.add_argument("--gold", required=True, help="SQuAD v1.1 or v2.0 JSON with the gold answers")
    p.add_argument("--json", nargs="?", const="-", metavar="PATH", help="write the scores as JSON to PATH (or stdout)")
    p.set_defaults(func=_score)


def read_answers(output: str) -> tuple[dict[str, str | None], dict[str, str]]:
    try:
        dataset = open_output(output, needs="id")
    except NotRunOutput as exc:
        raise ConfigError(f"--predictions: {exc}") from None
    table = dataset.to_table(columns=["id", "answer", "expert"])
    answers: dict[str, str | None] = {}
    experts: dict[str, str] = {}
    for rid, answer, expert in zip(*(table.column(c).to_pylist() for c in ("id", "answer", "expert"))):
        if rid is None or rid in answers:
            continue  # rows without an id, or later duplicates, were never answered
        answers[rid] = answer
        experts[rid] = expert or "(not routed)"
    return answers, experts


def format_table(scores: dict) -> str:
    rows = [("overall", scores)] + list(scores.get("groups", {}).items())
    width = max(len(n) for n, _ in rows)
    out = [f"{'':{width}}  {'count':>6} {'EM':>7} {'F1':>7}"]
    for name, s in rows:
        out.append(f"{name:{width}}  {s['count']:>6} {100 * s['exact']:>7.2f} {100 * s['f1']:>7.2f}")
    if scores.get("missing_predictions"):
        out.append(f"{scores['missing_predictions']} gold question(s) had no row in the output (scored as empty answers)")
    return "\n".join(out)


def _score(args: argparse.Namespace) -> int:
    gold = load_squad(args.gold)
    answers, experts = read_answers(args.predictions)
    scores = score_predictions(gold, answers, groups=experts).as_dict()
    scores["extra_predictions"] = len(set(answers) - {q.id for q in gold})
    if args.json == "-":
        print(json.dumps(scores, indent=2))
    else:
        print(format_table(scores))
        if args.json:
            with open(args.json, "w") as fh:
                json.dump(scores, fh, indent=2)
    return exit_codes.OK if not scores.get("missing_predictions") else exit_codes.COMPLETED_WITH_ERRORS

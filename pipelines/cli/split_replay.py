"""`routebatch split-replay DIR --by-article --output OUTDIR`: leave-one-article-out folds.

Writes OUTDIR/<article>/train and OUTDIR/<article>/test, each a replay directory in the
same layout as DIR, plus OUTDIR/folds.json. See `routing.replay.data.split_replay_by_article`.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from pipelines import exit_codes
from routing.replay.data import ReplayDataError, split_replay_by_article


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "split-replay",
        help="split a replay directory into cross-validation folds",
        description="Split a replay directory (questions.json, predictions/, costs.json) into folds.",
    )
    p.add_argument("directory", help="replay directory to split")
    p.add_argument("--by-article", action="store_true", required=True,
                   help="one fold per article: test on it, train on the others (the only mode so far)")
    p.add_argument("--output", required=True, help="directory to write the folds into")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty output directory")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        folds = split_replay_by_article(args.directory, args.output, overwrite=args.overwrite)
    except (ReplayDataError, OSError) as exc:
        print(f"routebatch split-replay: {exc}", file=sys.stderr)
        return exit_codes.FAILED
    for f in folds:
        print(f"{f.test_article}: train {f.n_train} questions -> {f.train_dir}, test {f.n_test} -> {f.test_dir}")
    return exit_codes.OK

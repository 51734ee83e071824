"""The `routebatch` command line.

Each command lives in its own module under `pipelines/` and registers itself through a
`register(subparsers)` function that adds its parser and sets `func`; `func(args)`
returns the process exit code. This file only assembles them, so adding a command
never means editing another command's code.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Optional, Sequence

from pipelines import exit_codes
from routing.core.config import ConfigError

# Modules that provide commands, in the order `routebatch --help` lists them.
COMMAND_MODULES = (
    "pipelines.cli.run",
    "pipelines.cli.validate",
    "pipelines.cli.score",
    "pipelines.cli.profile",
    "pipelines.cli.smart",
    "pipelines.cli.split_replay",
    "pipelines.cli.train_router",
    "pipelines.cli.bench_router",
    "pipelines.cli.serve",
    "pipelines.cli.report",
    "pipelines.cli.demo",
)

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="routebatch",
        description="Answer large batches of questions cheaply by routing each one to the right expert model.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:  # a command not written yet must not break the others
                continue
            raise
        module.register(sub)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except ConfigError as exc:
        print(f"routebatch: configuration error:\n{exc}", file=sys.stderr)
        return exit_codes.CONFIG
    except KeyboardInterrupt:
        print("routebatch: interrupted", file=sys.stderr)
        return exit_codes.INTERRUPTED


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

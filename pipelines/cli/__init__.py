"""The `routebatch` command line: one module per command, assembled by `entry`.

Each command module (`run`, `validate`, `score`, ...) registers its parser and handler;
`entry.main` is the console script (`routebatch = "pipelines.cli:main"`, and
`python -m pipelines.cli`). Nothing in `pipelines/` outside this package imports it.
"""

from pipelines.cli.entry import COMMAND_MODULES, build_parser, main

__all__ = ["COMMAND_MODULES", "build_parser", "main"]

"""`python -m pipelines.cli`: the same as the `routebatch` console script."""

import sys

from pipelines.cli.entry import main

sys.exit(main())

"""Process exit codes, one meaning each, so a scheduler can branch on them
(documented in docs/operations.md)."""

OK = 0  # every row answered
FAILED = 1  # the job did not finish, or rows out differ from rows in
USAGE = 2  # bad command line (argparse)
CONFIG = 3  # the configuration or the cluster cannot run this job; nothing was computed
COMPLETED_WITH_ERRORS = 4  # finished, rows out = rows in, but some rows or files carry errors
INTERRUPTED = 130

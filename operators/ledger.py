"""The run ledger: a small actor that input readers report to, file by file.

Counting input rows where they are parsed (rather than in the output) is what makes
"rows in = rows out" a real check instead of a tautology. Reports are keyed by file,
so a read task that Ray retries overwrites its own report instead of counting twice.
"""

from __future__ import annotations

import ray


@ray.remote(num_cpus=0)
class RunLedger:
    def __init__(self) -> None:
        self.rows_per_file: dict[str, int] = {}
        self.unreadable: dict[str, str] = {}

    def record_file(self, path: str, rows: int) -> None:
        self.rows_per_file[path] = rows
        self.unreadable.pop(path, None)

    def record_unreadable(self, path: str, reason: str) -> None:
        self.unreadable[path] = reason
        self.rows_per_file.pop(path, None)

    def snapshot(self) -> dict:
        return {
            "rows_per_file": dict(self.rows_per_file),
            "unreadable_files": dict(self.unreadable),
        }

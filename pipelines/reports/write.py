"""Write a run's report: `report.html` (one self-contained page) and `report.json`
(the same figures, for scripts and tests), by default in RUN_DIR/_report/."""

from __future__ import annotations

import json
from typing import Any, Optional

from pipelines.reports.data import compute_report, report_paths
from pipelines.reports.html import render_html
from routing.core.storage import write_bytes


def write_report(
    run_dir: str, *, gold: Optional[str] = None, profile: Optional[str] = None, output: Optional[str] = None
) -> tuple[str, str, dict[str, Any]]:
    """(path of report.html, path of report.json, the figures)."""
    figures = compute_report(run_dir, gold=gold, profile=profile)
    html_path, json_path = report_paths(run_dir, output)
    write_bytes(json_path, json.dumps(figures, indent=2).encode())
    write_bytes(html_path, render_html(figures).encode("utf-8"))
    return html_path, json_path, figures


def report_after_run(run_dir: str) -> str:
    """Write the report at the end of `routebatch run`; returns the line to print.

    A report that cannot be written must not turn a finished run into a failed one
    (the rows are written, the summary says how it went), so any error becomes a
    line saying so, and the run keeps its exit code."""
    try:
        html_path, _, _ = write_report(run_dir)
    except Exception as exc:  # noqa: BLE001 - see above: the report is an extra, never the outcome
        return f"  report: not written ({type(exc).__name__}: {exc}); try `routebatch report {run_dir}`"
    return f"  report: {html_path}  (F1 and the best single expert on the same questions: routebatch report {run_dir} --gold SQUAD_JSON --profile PROFILE_DIR)"

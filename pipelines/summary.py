"""The run summary: counts, costs and timing, read back from what was actually written.

The per-expert figures are aggregated from the output Parquet (only its small columns,
streamed), not from counters kept along the way, so the summary can never disagree
with the rows a user will read.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any, Optional

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from operators.schema import error_kind
from pipelines import exit_codes
from routing.core.config import JobConfig
from routing.core.storage import filesystem_and_path, join, write_bytes

SUMMARY_FILE = "_summary.json"


_SUM_COLUMNS = ("cost_usd", "input_tokens", "output_tokens", "expert_seconds")


@dataclass
class ExpertTotals:
    rows: int = 0
    answered: int = 0
    errors: int = 0
    cost_usd: float = 0.0
    input_tokens: int = 0
    output_tokens: int = 0
    expert_seconds: float = 0.0
    # Forward passes (request waves for HTTP experts) the expert ran for these rows, and
    # their mean fill: rows or windows held per pass over its batch_size. None where
    # the output carries no fill figures (runs from before they were recorded).
    forward_passes: float = 0.0
    mean_batch_fill: Optional[float] = None


@dataclass
class Summary:
    run_id: str
    output: str
    rows_in: int
    rows_out: int
    rows_match: bool
    rows_from_earlier_attempts: int
    rows_answered: int
    rows_with_errors: int
    errors_by_kind: dict[str, int]
    unreadable_files: dict[str, str]
    experts: dict[str, ExpertTotals]
    total_cost_usd: float
    wall_seconds: float
    rows_per_second: float
    started_at: str
    finished_at: str
    config_hash: str
    config: dict[str, Any] = field(repr=False)
    status: str = "completed"
    exit_code: int = exit_codes.OK

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class NotRunOutput(ValueError):
    """A path that holds no routebatch output to read."""


def open_output(output: str, needs: str) -> pads.Dataset:
    """The Parquet dataset of a run's output, refusing (with a message that says why)
    anything that is not one: a missing path, or Parquet files without column `needs`."""
    fs, path = filesystem_and_path(output)
    try:
        found = fs.get_file_info(path).type != pafs.FileType.NotFound
        dataset = pads.dataset(path, filesystem=fs, format="parquet") if found else None
    except (OSError, ValueError) as exc:
        raise NotRunOutput(f"cannot read {output} ({exc})") from None
    if dataset is None:
        raise NotRunOutput(f"{output} does not exist")
    if not dataset.files or needs not in dataset.schema.names:
        raise NotRunOutput(f"{output} holds no routebatch output (no Parquet files with a {needs} column)")
    return dataset


def count_rows(output: str) -> int:
    """Rows in the Parquet files under `output`, from their footers."""
    fs, path = filesystem_and_path(output)
    if fs.get_file_info(path).type == pafs.FileType.NotFound:
        return 0
    return pads.dataset(path, filesystem=fs, format="parquet").count_rows()


# Rows per batch when the summary reads the output back: small and fixed, so that the
# driver's memory does not grow with the output (see `output_totals`).
_SUMMARY_BATCH_ROWS = 16_384


def output_totals(output: str) -> tuple[int, dict[str, ExpertTotals], dict[str, int], int]:
    """(rows, per-expert totals, errors by kind, rows answered) of a run's Parquet.

    Read one file at a time in small batches on this thread, and summed with Arrow
    kernels per expert; only rows that carry an error go through Python, to read its
    kind. The driver's memory must stay flat however large the run: reading through a
    multi-threaded dataset scan and turning every batch into Python lists grew the
    driver by ~100 MB at 1M output rows against ~23 MB at 100k (bench/RESULTS.md),
    and a threaded group_by alone kept ~60 MB of it; this way it grows by ~15 MB at
    either size.
    """
    fs, path = filesystem_and_path(output)
    dataset = pads.dataset(path, filesystem=fs, format="parquet", exclude_invalid_files=False)
    experts: dict[str, ExpertTotals] = {}
    errors: dict[str, int] = {}
    rows = answered = 0
    cols = ["expert", "answer", "error", *_SUM_COLUMNS]
    has_fill = "batch_fill" in dataset.schema.names
    if has_fill:
        cols.append("batch_fill")
    fill_sums: dict[str, float] = {}
    for file in dataset.files:
        with fs.open_input_file(file) as fh:
            for batch in pq.ParquetFile(fh).iter_batches(batch_size=_SUMMARY_BATCH_ROWS, columns=cols, use_threads=False):
                n = batch.num_rows
                rows += n
                error = batch.column("error")
                with_error = np.zeros(n, dtype=bool)  # rows whose error has a kind, as error_kind reads it
                err_idx = np.flatnonzero(pc.is_valid(error).to_numpy(zero_copy_only=False))
                for i, text in zip(err_idx, error.take(pa.array(err_idx, pa.int64())).to_pylist()):
                    kind = error_kind(text)
                    if kind:
                        errors[kind] = errors.get(kind, 0) + 1
                        with_error[i] = True
                has_answer = pc.is_valid(batch.column("answer")).to_numpy(zero_copy_only=False)
                expert = batch.column("expert")
                for name in pc.unique(expert).to_pylist():
                    if name is None:
                        continue  # rows that never reached an expert count only in the totals above
                    mask = pc.fill_null(pc.equal(expert, name), False)
                    mine = mask.to_numpy(zero_copy_only=False)
                    t = experts.setdefault(name, ExpertTotals())
                    t.rows += int(mine.sum())
                    t.errors += int((with_error & mine).sum())
                    got = int((has_answer & mine).sum())
                    t.answered += got
                    answered += got
                    t.cost_usd += float(pc.sum(batch.column("cost_usd").filter(mask)).as_py() or 0.0)
                    t.input_tokens += int(pc.sum(batch.column("input_tokens").filter(mask)).as_py() or 0)
                    t.output_tokens += int(pc.sum(batch.column("output_tokens").filter(mask)).as_py() or 0)
                    t.expert_seconds += float(pc.sum(batch.column("expert_seconds").filter(mask)).as_py() or 0.0)
                if has_fill and "batch_fill" in batch.schema.names:
                    _add_fill(batch.column("batch_fill"), experts, fill_sums)
    for name, t in experts.items():
        if t.forward_passes > 0:
            t.mean_batch_fill = fill_sums.get(name, 0.0) / t.forward_passes
    return rows, experts, errors, answered


def _add_fill(column: pa.Array, experts: dict[str, ExpertTotals], fill_sums: dict[str, float]) -> None:
    """Add one batch's `batch_fill` entries (operators/schema.py) to each expert's
    passes and summed fill, keyed by the expert named in the entry: in a cascade a row
    carries one entry per expert it was asked, whichever expert it ended with."""
    entries = pc.list_flatten(column)
    if len(entries) == 0:
        return
    names = entries.field("expert")
    for name in pc.unique(names).to_pylist():
        if name is None:
            continue
        mask = pc.fill_null(pc.equal(names, name), False)
        t = experts.setdefault(name, ExpertTotals())
        t.forward_passes += float(pc.sum(entries.field("passes").filter(mask)).as_py() or 0.0)
        fill_sums[name] = fill_sums.get(name, 0.0) + float(pc.sum(entries.field("fill").filter(mask)).as_py() or 0.0)


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="seconds")


def build_summary(
    *,
    config: JobConfig,
    run_id: str,
    output: str,
    rows_in: int,
    rows_from_earlier_attempts: int = 0,
    unreadable: dict[str, str],
    started: float,
    finished: float,
) -> Summary:
    rows_out, experts, errors, answered = output_totals(output)
    wall = max(finished - started, 1e-9)
    rows_now = rows_out - rows_from_earlier_attempts
    rows_with_errors = sum(errors.values())
    status, code = "completed", exit_codes.OK
    if rows_out != rows_in:
        status, code = "failed: rows out differ from rows in", exit_codes.FAILED
    elif rows_with_errors or unreadable:
        status, code = "completed with errors", exit_codes.COMPLETED_WITH_ERRORS
    return Summary(
        run_id=run_id,
        output=output,
        rows_in=rows_in,
        rows_out=rows_out,
        rows_match=rows_in == rows_out,
        rows_from_earlier_attempts=rows_from_earlier_attempts,
        rows_answered=answered,
        rows_with_errors=rows_with_errors,
        errors_by_kind=dict(sorted(errors.items())),
        unreadable_files=dict(sorted(unreadable.items())),
        experts=dict(sorted(experts.items())),
        total_cost_usd=sum(t.cost_usd for t in experts.values()),
        wall_seconds=wall,
        rows_per_second=rows_now / wall,
        started_at=_iso(started),
        finished_at=_iso(finished),
        config_hash=config.config_hash(),
        config=config.model_dump(mode="json"),
        status=status,
        exit_code=code,
    )


def write_summary(summary: Summary, output: str) -> None:
    write_bytes(join(output, SUMMARY_FILE), json.dumps(summary.to_dict(), indent=2).encode())


def read_summary(output: str) -> Optional[dict]:
    from routing.core.storage import exists, read_bytes

    path = join(output, SUMMARY_FILE)
    return json.loads(read_bytes(path)) if exists(path) else None


def format_summary(summary: Summary) -> str:
    """The one screen printed at the end of `routebatch run`."""
    lines = [
        f"run {summary.run_id}: {summary.status}",
        f"  rows in {summary.rows_in}, rows out {summary.rows_out} ({'match' if summary.rows_match else 'MISMATCH'}), "
        f"answered {summary.rows_answered}, with errors {summary.rows_with_errors}"
        + (f", {summary.rows_from_earlier_attempts} from an earlier attempt" if summary.rows_from_earlier_attempts else ""),
        f"  wall {summary.wall_seconds:.1f} s, {summary.rows_per_second:.1f} rows/s, total cost ${summary.total_cost_usd:.6f}",
    ]
    if summary.experts:
        width = max(len(n) for n in summary.experts)
        lines.append(f"  {'expert'.ljust(width)}  {'rows':>8} {'errors':>7} {'cost_usd':>12} {'in_tok':>10} {'out_tok':>8} {'seconds':>9} {'fill':>5}")
        for name, t in summary.experts.items():
            fill = "-" if t.mean_batch_fill is None else f"{t.mean_batch_fill:.2f}"
            lines.append(
                f"  {name.ljust(width)}  {t.rows:>8} {t.errors:>7} {t.cost_usd:>12.6f} {t.input_tokens:>10} {t.output_tokens:>8} {t.expert_seconds:>9.2f} {fill:>5}"
            )
    for kind, n in summary.errors_by_kind.items():
        lines.append(f"  error {kind}: {n} row(s)")
    for path, reason in summary.unreadable_files.items():
        lines.append(f"  unreadable file {path}: {reason}")
    lines.append(f"  output: {summary.output}")
    return "\n".join(lines)

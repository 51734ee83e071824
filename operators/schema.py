"""The one row layout every stage reads and writes.

Every stage returns exactly this schema, so Ray Data never has to unify a block whose
`answer` column happens to be all-null (Arrow type `null`) with one whose column is
`string`, and the Parquet files of one run always share one schema.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

import pyarrow as pa

# One entry per stage expert a cascade row has been through, in stage order; `answer`
# is null where the stage gave none (an error), which agrees with nothing.
CASCADE_TRAIL_TYPE = pa.list_(pa.struct([("answer", pa.string()), ("score", pa.float64())]))

# One entry per expert call that answered the row: the expert, and the row's share of
# that call's forward passes and of their summed fill (held / batch_size per pass).
# Summed over an expert's rows these give its passes and its fill exactly, so the mean
# fill per pass is sum(fill) / sum(passes), computed from the output alone.
BATCH_FILL_TYPE = pa.list_(pa.struct([("expert", pa.string()), ("passes", pa.float64()), ("fill", pa.float64())]))

WORK_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("question", pa.string()),
        ("context", pa.string()),
        ("source", pa.string()),
        ("expert", pa.string()),
        # Cascade routers: the experts a row was asked, in order ("a>b>final"); the
        # row's cost, tokens and seconds are the sums over them. Null for other routers.
        ("consulted", pa.string()),
        ("answer", pa.string()),
        ("score", pa.float64()),
        ("cost_usd", pa.float64()),
        ("input_tokens", pa.int64()),
        ("output_tokens", pa.int64()),
        ("expert_seconds", pa.float64()),
        # Unix time the expert finished the row's batch (null if no expert ran it): what
        # a run report plots throughput over time from.
        ("answered_at", pa.float64()),
        ("error", pa.string()),
        ("run_id", pa.string()),
        ("batch_fill", BATCH_FILL_TYPE),
        # Cascade routers only, internal: the stage answers so far, which the next
        # stage needs to decide. Not written (see INTERNAL_COLUMNS).
        ("cascade_trail", CASCADE_TRAIL_TYPE),
    ]
)

# Work columns that never land in the output: the (large, duplicated) context, and the
# cascade's trail, whose answers the row's `answer` and `consulted` already report.
INTERNAL_COLUMNS = ("context", "cascade_trail")
OUTPUT_COLUMNS = [f.name for f in WORK_SCHEMA if f.name not in INTERNAL_COLUMNS]
OUTPUT_SCHEMA = pa.schema([WORK_SCHEMA.field(n) for n in OUTPUT_COLUMNS])

_ZERO = {"cost_usd": 0.0, "input_tokens": 0, "output_tokens": 0, "expert_seconds": 0.0}


def empty_row(**values: Any) -> dict:
    row = {f.name: None for f in WORK_SCHEMA}
    row.update(_ZERO)
    row.update(values)
    return row


def rows_to_table(rows: Iterable[Mapping[str, Any]]) -> pa.Table:
    rows = list(rows)
    return pa.table({f.name: [r.get(f.name) for r in rows] for f in WORK_SCHEMA}, schema=WORK_SCHEMA)



def error_kind(error: str | None) -> str | None:
    """Errors are written "kind: detail"; the kind is what summaries count by."""
    if not error:
        return None
    return error.split(":", 1)[0].strip()

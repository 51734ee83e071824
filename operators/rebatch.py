"""Block sizes for the expert chain: what each stage of the plan is handed per call.

Two properties of Ray Data's streaming, seen in bench/throughput.py's runs (Ray Data's
per-operator stats; bench/RESULTS.md has the figures), decide them:

* Ray Data streams *blocks*, not `map_batches` batches. A Parquet read yields one block
  per file (up to 128 MiB), and a `map_batches(batch_size=64)` stage runs a whole block
  as one task and writes one output block, however many 64-row calls it makes inside.
  So a corpus of 4 files flows as 4 blocks: the router has to finish a whole file
  before the first expert sees a row, the expert pools get 4 tasks to share between
  their actors, and the last file's tail runs on one actor while the others idle.
  Splitting the stream into blocks of `execution.batch_size` rows right after parsing
  gives every stage batch-sized tasks to pipeline and balance.
* The router splits each batch between the experts, so an expert stage that takes
  `execution.batch_size` rows per call answers only its share of them: with two
  experts, about 32 rows per call instead of 64, which leaves its forward passes less
  room to group windows of similar length (the runner pads each pass to its longest
  window). Handing the expert stages `n_experts x execution.batch_size` rows per call
  gives each expert about a full batch of its own rows on average, whatever the split.

On the 2-core bench machine, where three model processes saturate both cores anyway,
the measured gain is a few per cent and within the noise between sessions; the split
matters most where a pool has more actors than the input has files.
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger("routebatch")


def split_into_batches(ds: Any, rows: int, num_cpus: float) -> Any:
    """`ds` with its blocks split (and small ones merged) to about `rows` rows each.

    This is Ray Data's streaming repartition (`Dataset.repartition(
    target_num_rows_per_block=rows)`: no shuffle, nothing materialised), built here with
    the CPU share of the stage it follows. The public call cannot take one, so its tasks
    ask for a whole CPU: then it does not fuse into the preceding light map stage (Ray
    fuses only stages with equal resource requests), and on a 2-CPU node beside the
    expert actors a 1-CPU task is never scheduled, and the job waits for ever (seen in
    the bench: 0 rows after minutes). With the same `num_cpus` as the stage before it,
    it fuses into that stage's tasks and costs no extra pass over the data.

    Uses Ray Data's internal logical operator (Ray is pinned in pyproject.toml); if that
    moves in another release, the stream is left as it is: this only changes block
    sizes, never rows.
    """
    try:
        from ray.data._internal.logical.interfaces import LogicalPlan
        from ray.data._internal.logical.operators import StreamingRepartition

        op = StreamingRepartition(
            target_num_rows_per_block=rows,
            input_dependencies=[ds._logical_plan.dag],
            ray_remote_args={"num_cpus": num_cpus},
        )
        return type(ds)._from_parent(ds, LogicalPlan(op, ds.context))
    except (ImportError, AttributeError, TypeError) as exc:  # a Ray release without these internals
        log.warning("cannot split the stream into %d-row blocks on this Ray release (%s); blocks stay as read", rows, exc)
        return ds


def expert_batch_rows(batch_size: int, n_experts: int) -> int:
    """Rows per call of each expert stage: a batch per expert, so an expert's share of
    a batch that the router split between `n_experts` is about one batch on average."""
    return batch_size * max(1, n_experts)


# Forward passes each expert call should hold at least: a call's last pass is part
# full (half on average), so k passes per call give a mean fill of about (k - 0.5) / k.
PASSES_PER_CALL = 8
# The smallest routed share a call size is computed for; an expert expected to get less
# (or nothing) is sized as if it got this, so one call never grows past 1 / MIN_SHARE
# times its own rows.
MIN_SHARE = 0.02


def expert_call_rows(batch_size: int, expert_batch_size: int, share: float) -> int:
    """Rows per call of an expert stage, from the share of rows the router is expected
    to send it.

    Every row visits every expert stage and each stage answers only its own rows, so an
    expert that gets 10 % of the rows, in calls sized for the average expert, runs
    passes about a tenth full. Sizing the call as (own rows wanted) / share keeps the
    expert's own rows per call about the same whatever its share: at least
    PASSES_PER_CALL x its batch_size (rows, or windows for extractive QA, which has at
    least one window per row), and never fewer than one `execution.batch_size`.
    """
    own = max(batch_size, PASSES_PER_CALL * expert_batch_size)
    return int(-(-own // max(min(share, 1.0), MIN_SHARE)))


def sample_shares(router_spec: object, expert_names: list[str], questions: list, contexts: list) -> dict[str, float]:
    """Each expert's share of a first sample of rows, routed by the job's own router
    (built here, in the driver, from the same spec the router actor uses). Experts the
    sample never reached get 0; an empty sample gives every expert an equal share."""
    from routing.rules import build_router

    pairs = [(q, c) for q, c in zip(questions, contexts) if isinstance(q, str) and isinstance(c, str)]
    if not pairs:
        return {n: 1.0 / max(1, len(expert_names)) for n in expert_names}
    routes = build_router(router_spec).route([q for q, _ in pairs], [c for _, c in pairs])
    return {n: sum(r == n for r in routes) / len(routes) for n in expert_names}


def starting_actors(min_actors: int, rows: int | None, share: float, call_rows: int) -> int:
    """Actors an expert pool starts with for a shard of `rows` input rows.

    Every actor of a torch expert costs its process a few seconds of imports and model
    loading before it answers a row (bench/fixed_cost.py: about 5 s of CPU each for
    torch + transformers on the 2-core bench machine, paid by all actors at once). An
    actor beyond the number of calls the shard can give the expert never receives
    work, so the pool starts with no more actors than that: `min_actors`, lowered to
    ceil(rows x share / call_rows), at least 1. The pool keeps its `max_actors` and
    grows if the router sends more rows than the share foretold. Unknown `rows` (JSONL
    and SQuAD input, counted only as they are parsed) leave `min_actors` as it is.
    """
    if rows is None:
        return min_actors
    calls = -(-int(rows * min(max(share, 0.0), 1.0)) // max(1, call_rows))
    return max(1, min(min_actors, calls))

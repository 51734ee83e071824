"""The cost ledger's arithmetic: what one row cost, from the expert's prices and what
the row used.

A batch's measured seconds are shared among its rows by tokens, because on an
accelerator the time of a padded batch is driven by its token count; a row of 20
tokens should not pay as much GPU time as its neighbour of 2,000.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from routing.core.config import Cost


@dataclass(frozen=True)
class RowCharge:
    seconds: float
    cost_usd: float


def share_seconds(batch_seconds: float, tokens: Sequence[int]) -> list[float]:
    """Split a batch's wall seconds over its rows in proportion to their tokens.

    Rows with no tokens at all (everything zero) share the time equally, so the time is
    never lost from the ledger.
    """
    if batch_seconds < 0:
        raise ValueError(f"batch_seconds must be >= 0, got {batch_seconds}")
    n = len(tokens)
    if n == 0:
        return []
    total = float(sum(tokens))
    if total <= 0:
        return [batch_seconds / n] * n
    return [batch_seconds * t / total for t in tokens]


def hourly_units(num_gpus: float) -> float:
    """How many priced units an actor holds: its GPUs, or 1 actor-hour without GPUs."""
    return num_gpus if num_gpus > 0 else 1.0


def charge_rows(
    cost: Cost,
    num_gpus: float,
    batch_seconds: float,
    input_tokens: Sequence[int],
    output_tokens: Sequence[int],
    answered: Sequence[bool] | None = None,
) -> list[RowCharge]:
    """Cost of each row of one batch: token prices + per-item price + its share of the
    batch's device time at the hourly price.

    A row the expert failed to answer (`answered[i]` false) pays for the tokens and
    device time it used but not the per-item price: a per-item price buys an answer."""
    if len(input_tokens) != len(output_tokens):
        raise ValueError("input_tokens and output_tokens differ in length")
    if answered is None:
        answered = [True] * len(input_tokens)
    used = [i + o for i, o in zip(input_tokens, output_tokens)]
    seconds = share_seconds(batch_seconds, used)
    per_second = cost.usd_per_gpu_hour * hourly_units(num_gpus) / 3600.0
    charges = []
    for sec, tin, tout, ok in zip(seconds, input_tokens, output_tokens, answered):
        usd = (
            (cost.usd_per_item if ok else 0.0)
            + cost.usd_per_1k_input_tokens * tin / 1000.0
            + cost.usd_per_1k_output_tokens * tout / 1000.0
            + per_second * sec
        )
        charges.append(RowCharge(seconds=sec, cost_usd=usd))
    return charges

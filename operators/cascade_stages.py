"""The agreement cascade inside the batch job: what an expert stage does with the
rows it has just answered when the router is `kind: cascade`.

Ray Data cannot send a row back to an earlier stage, so the cascade is unrolled along
the chain of expert stages, which the plan lays out in cascade order (stages as listed,
then the final expert). Each stage answers the rows whose `expert` names it, appends
its answer to the row's trail, and rewrites `expert`: to the next expert to ask, or,
when the cascade stops, to the stage expert whose answer becomes the row's. The rule
is `routing.cascades.agreement.CascadePlan`'s, the very one `bench-router` evaluates offline.

Nothing paid is forgotten: a row's cost, tokens and seconds are sums over every expert
it was asked, and `consulted` lists those experts in order. A stage that fails on a row
gives no answer (None agrees with nothing) and the row moves on; only the final
expert's error, if it fails too, stays on the row.
"""

from __future__ import annotations

import logging

import numpy as np
import pyarrow as pa

from routing.cascades.agreement_plan import CascadePlan
from routing.cascades.learned_plan import LearnedCascadePlan

log = logging.getLogger("routebatch")

# What every consulted expert adds to a row rather than replaces.
SUMMED_COLUMNS = ("cost_usd", "input_tokens", "output_tokens", "expert_seconds")
_PRIOR_COLUMNS = (*SUMMED_COLUMNS, "consulted", "cascade_trail")


def _extend_trails(expert: str, t: int, before_trails: list, updates: dict[str, list]) -> list[list[dict]]:
    """Each row's trail with this expert's answer appended; it must be the row's t-th expert."""
    trails = []
    for before, answer, score in zip(before_trails, updates["answer"], updates["score"]):
        before = before or []
        if len(before) != t:
            # Only a plan that ran the stages out of order can get here: fail loudly
            # rather than decide on someone else's answers.
            raise RuntimeError(
                f"cascade stage {expert!r} got a row that has been through {len(before)} stage(s), expected {t}; "
                "the expert stages must run in cascade order"
            )
        trails.append([*before, {"answer": answer, "score": score}])
    return trails


def _final_choice(plan: LearnedCascadePlan, before_trails: list, updates: dict[str, list], out: dict[str, list]) -> dict[str, list]:
    """After a learned cascade's final expert: the row returns the answer, among all it
    paid for, that the last step's model scores highest. A row the final expert failed
    keeps that error, as under the agreement cascade."""
    trails = _extend_trails(plan.final, len(plan.stages), before_trails, updates)
    picks = plan.final_choice([[s["answer"] for s in trail] for trail in trails])
    out["cascade_trail"] = trails
    out["expert"] = [plan.final] * len(trails)
    out["answer"], out["score"] = list(out["answer"]), list(out["score"])
    for j, (trail, pos) in enumerate(zip(trails, picks)):
        if updates["error"][j] is None:
            out["expert"][j] = plan.model.chain[pos]
            out["answer"][j] = trail[pos]["answer"]
            out["score"][j] = trail[pos]["score"]
    return out


def cascade_updates(plan: CascadePlan | LearnedCascadePlan, expert: str, batch: pa.Table, idx: np.ndarray, updates: dict[str, list]) -> dict[str, list]:
    """The column updates for rows `idx` of `batch` that expert `expert` just answered.

    `updates` are the stage's own figures for those rows (answer, score, cost, tokens,
    seconds, answered_at, error), as it writes them for any router; the result carries
    the row's state after this step of the cascade instead.
    """
    take = pa.array(idx, pa.int64())
    prior = {c: batch.column(c).take(take).to_pylist() for c in _PRIOR_COLUMNS}
    out = dict(updates)
    for c in SUMMED_COLUMNS:
        out[c] = [(p or 0) + v for p, v in zip(prior[c], updates[c])]
    out["consulted"] = [f"{p}>{expert}" if p else expert for p in prior["consulted"]]
    if expert not in plan.stages:
        if isinstance(plan, LearnedCascadePlan) and not plan.final_only:
            return _final_choice(plan, prior["cascade_trail"], updates, out)
        return out  # the final expert: its answer, or its error, is the row's
    trails = _extend_trails(expert, plan.stages.index(expert), prior["cascade_trail"], updates)
    steps = plan.next_steps([[s["answer"] for s in trail] for trail in trails])
    failed = sum(e is not None for e in updates["error"])
    if failed:
        log.info("cascade stage %s gave no answer on %d row(s); they go on without it", expert, failed)
    out["cascade_trail"] = trails
    out["expert"] = [step.expert for step in steps]
    out["answer"] = [trail[s.answer_from]["answer"] if s.done else None for trail, s in zip(trails, steps)]
    out["score"] = [trail[s.answer_from]["score"] if s.done else None for trail, s in zip(trails, steps)]
    # A stopped row has its answer; a row that goes on is not failed (yet).
    out["error"] = [None] * len(steps)
    return out

"""The Ray Data operators of the batch job, in plan order.

Each is a thin adapter from an Arrow batch to `routing/` or to a model runner; the
plan that wires them together lives in `pipelines/batch_job.py`.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable, Optional

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from operators.cascade_stages import cascade_updates
from operators.read_input import UnreadableFile, parse_jsonl, parse_squad
from operators.runners.base import ExpertRunner, RunnerOutput
from operators.schema import INTERNAL_COLUMNS, WORK_SCHEMA, rows_to_table
from routing.core.config import (
    CascadeRouter,
    ColumnMapping,
    HFCausalLMExpert,
    HFExtractiveQAExpert,
    OpenAICompatibleExpert,
    ReplayExpert,
)
from routing.cascades.agreement_plan import CascadePlan
from routing.cascades.learned_plan import LearnedCascadePlan
from routing.core.costs import charge_rows
from routing.answers.validation import DuplicateIdTracker

log = logging.getLogger("routebatch")


def parse_files(batch: pa.Table, fmt: str, columns: ColumnMapping, run_id: str, ledger: Any) -> pa.Table:
    """JSONL / SQuAD: Ray's binary reader gives one row per file (`bytes` + `path`);
    each becomes its rows, and its row count (or why it is unreadable) goes to the
    ledger."""
    tables = []
    for data, path in zip(batch.column("bytes").to_pylist(), batch.column("path").to_pylist()):
        try:
            if fmt == "jsonl":
                rows = parse_jsonl(data, path, columns, run_id)
            else:
                rows = parse_squad(data, path, run_id)
        except UnreadableFile as exc:
            ledger.record_unreadable.remote(path, str(exc))
            continue
        ledger.record_file.remote(path, len(rows))
        tables.append(rows_to_table(rows))
    return pa.concat_tables(tables) if tables else WORK_SCHEMA.empty_table()


class FlagDuplicateIds:
    """Runs as a single actor: the set of seen ids must be one set for the whole run."""

    def __init__(self) -> None:
        self.tracker = DuplicateIdTracker()

    def __call__(self, batch: pa.Table) -> pa.Table:
        ids = batch.column("id").to_pylist()
        errors = batch.column("error").to_pylist()
        changed = False
        for i, (rid, err) in enumerate(zip(ids, errors)):
            if err is None:
                dup = self.tracker.check(rid)
                if dup:
                    errors[i] = dup
                    changed = True
        if not changed:
            return batch
        return batch.set_column(batch.schema.get_field_index("error"), "error", pa.array(errors, pa.string()))


class RouteRows:
    """The router actor: loads the router once, then names an expert for every
    answerable row of each batch."""

    def __init__(self, router_spec: Any, expert_names: list[str]) -> None:
        from routing.rules import build_router

        self.router = build_router(router_spec)
        unknown = set(getattr(self.router, "expert_names", [])) - set(expert_names)
        if unknown:
            raise ValueError(f"router names experts the config does not define: {sorted(unknown)}")

    def __call__(self, batch: pa.Table) -> pa.Table:
        ok = pc.is_null(batch.column("error")).to_numpy(zero_copy_only=False)
        experts: list[Optional[str]] = [None] * batch.num_rows
        idx = np.flatnonzero(ok)
        if len(idx):
            questions = batch.column("question").take(pa.array(idx)).to_pylist()
            contexts = batch.column("context").take(pa.array(idx)).to_pylist()
            for i, name in zip(idx, self.router.route(questions, contexts)):
                experts[i] = name
        batch = batch.set_column(batch.schema.get_field_index("expert"), "expert", pa.array(experts, pa.string()))
        if isinstance(self.router, LearnedCascadePlan) and self.router.model.gate is not None:
            # A row its gate sent past cheap experts carries their empty answers, so each
            # later stage sees it at the chain position it has reached.
            trails = [self.router.skipped_trail(e) if e is not None else None for e in experts]
            field = batch.schema.get_field_index("cascade_trail")
            batch = batch.set_column(field, "cascade_trail", pa.array(trails, batch.schema.field(field).type))
        return batch


class CheckAndRoute(RouteRows):
    """The duplicate-id check and the router in one actor: both must be single actors
    that see every row, so one process (started once, ~1-1.5 s of a 2-core machine)
    does both, flagging duplicates first so a duplicate row is never routed."""

    def __init__(self, router_spec: Any, expert_names: list[str]) -> None:
        super().__init__(router_spec, expert_names)
        self.dedupe = FlagDuplicateIds()

    def __call__(self, batch: pa.Table) -> pa.Table:
        return super().__call__(self.dedupe(batch))


def build_runner(
    spec: HFExtractiveQAExpert | ReplayExpert | HFCausalLMExpert | OpenAICompatibleExpert,
) -> ExpertRunner:
    if isinstance(spec, ReplayExpert):
        from operators.runners.replay import ReplayRunner

        return ReplayRunner(spec)
    if isinstance(spec, HFCausalLMExpert):
        from operators.runners.hf_causal import HFCausalLMRunner

        return HFCausalLMRunner(spec)
    if isinstance(spec, OpenAICompatibleExpert):
        from operators.runners.openai_compat import OpenAICompatibleRunner

        return OpenAICompatibleRunner(spec)
    from operators.runners.hf_qa import HFExtractiveQARunner

    return HFExtractiveQARunner(spec)


def _run_isolating_failures(runner: ExpertRunner, name: str, ids: list, questions: list, contexts: list) -> RunnerOutput:
    """Answer a sub-batch; if the runner raises, retry row by row so one poisonous row
    costs only its own answer, and say which exception it was."""
    try:
        return runner.answer(ids, questions, contexts)
    except Exception as batch_exc:  # noqa: BLE001 - isolating failures is this function's job
        if len(ids) == 1:
            msg = f"expert_error: {name} raised {type(batch_exc).__name__}: {batch_exc}"
            return RunnerOutput(answers=[None], scores=[None], input_tokens=[0], output_tokens=[0], errors=[msg[:500]])
        log.warning("expert %s failed on a batch of %d rows (%s); retrying row by row", name, len(ids), type(batch_exc).__name__)
        parts = [_run_isolating_failures(runner, name, [i], [q], [c]) for i, q, c in zip(ids, questions, contexts)]
        return RunnerOutput(
            answers=[a for p in parts for a in p.answers],
            scores=[s for p in parts for s in p.scores],
            input_tokens=[t for p in parts for t in p.input_tokens],
            output_tokens=[t for p in parts for t in p.output_tokens],
            errors=[e for p in parts for e in p.errors],
        )


def call_with_timeout(fn: Callable[[], RunnerOutput], timeout_s: float, name: str) -> tuple[bool, Optional[RunnerOutput]]:
    """(finished, result) of `fn()` run in a daemon thread and waited for `timeout_s`.

    Python cannot stop a thread, so a call that overruns is abandoned, not killed: it
    keeps running in the background, holding whatever it holds (a connection slot, a
    forward pass), and its result is thrown away when it ends. The thread is a daemon
    so that a call hung for good never keeps the actor's process from exiting.
    Exceptions from `fn` are re-raised in the caller.
    """
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["result"] = fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the caller below
            box["error"] = exc

    thread = threading.Thread(target=target, name=name, daemon=True)
    thread.start()
    thread.join(timeout_s)
    if thread.is_alive():
        return False, None
    if "error" in box:
        raise box["error"]
    return True, box["result"]


class AnswerWithExpert:
    """One expert's pool: answers the rows routed to it, passes every other row through
    untouched, and prices what it answered.

    With `batch_timeout_s` (execution.batch_timeout_s), a call to the runner that
    overruns turns the rows it was answering into `expert_error: timeout ...` errors
    and the stage moves on, so one hung request or model call cannot stall the job.
    The overrunning call is abandoned in its thread (see `call_with_timeout`) and the
    runner is reused for the next batch while it may still be running: every runner
    must tolerate that (the HTTP runner's thread pool and the HF runners' inference
    do). Calls still hanging are counted in the warning each timeout logs.
    """

    # Class defaults too, for stages built without __init__.
    batch_timeout_s: Optional[float] = None
    cascade_plan: Optional[CascadePlan | LearnedCascadePlan] = None

    def __init__(
        self,
        spec: HFExtractiveQAExpert | ReplayExpert,
        batch_timeout_s: Optional[float] = None,
        cascade: Optional[CascadeRouter | CascadePlan | LearnedCascadePlan] = None,
        timeout_rows: Optional[int] = None,
    ) -> None:
        """`cascade`: the job's cascade (an agreement-cascade router spec, or a plan the
        driver built, e.g. a learned cascade loaded from its checkpoint); the stage then
        takes the cascade's next step for the rows it answers (operators/cascade_stages.py).

        `timeout_rows`: with a `batch_timeout_s`, the most rows one timed call holds
        (the job passes `execution.batch_size`). A stage's calls are sized from the
        expert's routed share and can hold many batches' worth of its rows; timing
        them in pieces of this size keeps what one hung request costs to the rows of
        one batch, as the timeout promises (docs/operations.md)."""
        self.spec = spec
        self.batch_timeout_s = batch_timeout_s
        self.timeout_rows = timeout_rows
        plan = CascadePlan.from_spec(cascade) if isinstance(cascade, CascadeRouter) else cascade
        if plan is not None and spec.name in plan.expert_names:
            self.cascade_plan = plan
        self.runner = build_runner(spec)

    def _answer(self, ids: list, questions: list, contexts: list) -> RunnerOutput:
        step = self.timeout_rows if self.batch_timeout_s is not None and self.timeout_rows else len(ids)
        if len(ids) <= step:
            return self._answer_timed(ids, questions, contexts)
        parts = [self._answer_timed(ids[i:i + step], questions[i:i + step], contexts[i:i + step]) for i in range(0, len(ids), step)]
        return RunnerOutput(
            answers=[a for p in parts for a in p.answers],
            scores=[v for p in parts for v in p.scores],
            input_tokens=[v for p in parts for v in p.input_tokens],
            output_tokens=[v for p in parts for v in p.output_tokens],
            errors=[v for p in parts for v in p.errors],
        )

    def _answer_timed(self, ids: list, questions: list, contexts: list) -> RunnerOutput:
        """One call of the runner, abandoned after `batch_timeout_s` when one is set."""

        def call() -> RunnerOutput:
            return _run_isolating_failures(self.runner, self.spec.name, ids, questions, contexts)

        if self.batch_timeout_s is None:
            return call()
        name = f"expert-{self.spec.name}-batch"
        finished, out = call_with_timeout(call, self.batch_timeout_s, name)
        if finished:
            assert out is not None
            return out
        still_running = sum(1 for t in threading.enumerate() if t.name == name)
        n = len(ids)
        log.warning(
            "expert %s: a batch of %d row(s) overran execution.batch_timeout_s=%g s; its rows get errors "
            "(%d overrunning call(s) still running in the background)",
            self.spec.name, n, self.batch_timeout_s, still_running,
        )
        msg = (
            f"expert_error: timeout after {self.batch_timeout_s:g} s: expert {self.spec.name} did not answer "
            f"its batch of {n} row(s) within execution.batch_timeout_s"
        )
        return RunnerOutput(answers=[None] * n, scores=[None] * n, input_tokens=[0] * n, output_tokens=[0] * n, errors=[msg] * n)

    def __call__(self, batch: pa.Table) -> pa.Table:
        mine = pc.equal(batch.column("expert"), self.spec.name).to_numpy(zero_copy_only=False)
        idx = np.flatnonzero(np.nan_to_num(mine.astype(float)) > 0)
        if len(idx) == 0:
            return batch
        take = pa.array(idx)
        ids = batch.column("id").take(take).to_pylist()
        questions = batch.column("question").take(take).to_pylist()
        contexts = batch.column("context").take(take).to_pylist()

        started = time.perf_counter()
        out = self._answer(ids, questions, contexts)
        seconds = time.perf_counter() - started
        charges = charge_rows(
            self.spec.cost, self.spec.resources.num_gpus, seconds, out.input_tokens, out.output_tokens,
            answered=[e is None for e in out.errors],
        )

        updates = {
            "answer": out.answers,
            "score": out.scores,
            "cost_usd": [c.cost_usd for c in charges],
            "input_tokens": out.input_tokens,
            "output_tokens": out.output_tokens,
            "expert_seconds": [c.seconds for c in charges],
            "answered_at": [time.time()] * len(idx),
            "error": out.errors,
        }
        if self.cascade_plan is not None:
            updates = cascade_updates(self.cascade_plan, self.spec.name, batch, idx, updates)
        updates["batch_fill"] = self._fill_entries(batch, take, len(idx))
        return scatter_rows(batch, idx, updates)

    def _fill_entries(self, batch: pa.Table, take: pa.Array, n: int) -> list:
        """The rows' `batch_fill` lists with this call's entry appended (see
        operators/schema.py): the passes the runner logged during the call, spread
        evenly over the n rows it answered. A runner that keeps no log adds nothing."""
        log_ = getattr(self.runner, "passes", None)
        passes = log_.drain() if log_ is not None else []
        prior = batch.column("batch_fill").take(take).to_pylist()
        if not passes:
            return prior
        entry = {"expert": self.spec.name, "passes": len(passes) / n, "fill": sum(h / c for h, c in passes) / n}
        return [(p or []) + [entry] for p in prior]


def scatter_rows(batch: pa.Table, idx: np.ndarray, updates: dict[str, list]) -> pa.Table:
    """`batch` with `updates[name][k]` written into row `idx[k]` of column `name`.

    Done with Arrow kernels rather than by round-tripping whole columns through Python
    lists: every expert stage sees every row of the batch (the others' rows pass
    through), so per-row Python work here is paid once per row per expert, and it was
    the largest per-row cost of the expert stage (bench/RESULTS.md).
    """
    n = batch.num_rows
    if len(idx) == n:  # every row is this expert's: the new columns replace the old
        for name, values in updates.items():
            batch = batch.set_column(batch.schema.get_field_index(name), name, pa.array(values, WORK_SCHEMA.field(name).type))
        return batch
    position = np.full(n, -1, dtype=np.int64)
    position[idx] = np.arange(len(idx))
    mine = pa.array(position >= 0)
    # Rows that are not ours take a null from the update column, then keep their own value.
    spread = pa.array(position, mask=position < 0)
    for name, values in updates.items():
        field_index = batch.schema.get_field_index(name)
        new = pa.array(values, WORK_SCHEMA.field(name).type).take(spread)
        batch = batch.set_column(field_index, name, pc.if_else(mine, new, batch.column(name).combine_chunks()))
    return batch


def drop_context(batch: pa.Table) -> pa.Table:
    """The output row: the work row less the context and the other internal columns."""
    return batch.drop_columns(list(INTERNAL_COLUMNS))

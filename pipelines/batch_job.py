"""The batch job: read -> check -> route -> expert pools -> price -> Parquet.

`run_job(config)` is the one entry point, for the command line, for `ray job submit`
and for a task in a scheduler's DAG; it returns a `Summary` whose `exit_code` a
scheduler can act on.
"""

from __future__ import annotations

import logging
import os
import sys
import time
import uuid
from datetime import datetime, timezone
from contextlib import contextmanager
from typing import Iterator, Optional

import pyarrow.fs as pafs

from operators.ledger import RunLedger
from operators.stages import (
    AnswerWithExpert,
    CheckAndRoute,
    FlagDuplicateIds,
    RouteRows,
    drop_context,
)
from operators.read_input import normalize_table
from operators.rebatch import expert_batch_rows, expert_call_rows, sample_shares, split_into_batches, starting_actors
from operators.stages import parse_files
from pipelines.input_files import InputFiles, parquet_row_counts, parquet_schema_groups, resolve_input
from pipelines.preflight_checks import check_exists, check_model_sources, check_output_location, check_router_checkpoint
from pipelines.resources import (
    DEDUPE_ACTOR_CPUS,
    LIGHT_TASK_CPUS,
    ROUTER_ACTOR_CPUS,
    PlanDoesNotFit,
    ResourcePlan,
    check_plan_fits,
    plan_resources,
    reachable_nodes,
)
from pipelines.shards import (
    Shard,
    clear_dir,
    plan_shards,
    read_marker,
    read_run_record,
    shard_dir,
    write_marker,
    write_run_record,
)
from pipelines.summary import SUMMARY_FILE, Summary, build_summary, count_rows, write_summary
from routing.core.config import (
    CascadeRouter,
    ConfigError,
    ExpertSpec,
    JobConfig,
    LearnedCascadeRouter,
    OpenAICompatibleExpert,
    load_config,
    ReplayExpert,
)
from routing.cascades.agreement_plan import CascadePlan
from routing.cascades.learned_plan import LearnedCascadePlan
from routing.core.storage import exists, filesystem_and_path, is_s3, join

log = logging.getLogger("routebatch")


FORWARDED_ENV = (
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "HF_HUB_OFFLINE",
    "HF_HOME",
    "HF_ENDPOINT",
    "TRANSFORMERS_OFFLINE",
)


def new_run_id() -> str:
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:6]


def preflight(config: JobConfig, output: str, overwrite: bool, resume: bool = False) -> InputFiles:
    """Every check that needs no cluster: paths exist, the output is free (or, when
    resuming, holds this very job). Runs before Ray starts, so a misconfiguration costs
    seconds, not a cluster's start-up."""
    files = resolve_input(config.input)
    check_model_sources(config.experts)
    for e in config.experts:
        if isinstance(e, ReplayExpert):
            check_exists(f"experts.{e.name}.predictions", e.predictions, "point it at a JSON file of recorded answers")
        if isinstance(e, OpenAICompatibleExpert):
            from operators.runners.openai_compat import api_key_problem

            problem = api_key_problem(e)
            if problem:
                raise ConfigError(problem)
    if getattr(config.router, "checkpoint", None):
        check_router_checkpoint(config.router, [e.name for e in config.experts])
    check_output_location(output)
    record = read_run_record(output)
    if resume and record is not None:
        # Resuming a run that has nothing left to do only re-writes its summary, so a
        # scheduler's retry of a finished night is harmless.
        if record["config_hash"] != config.config_hash():
            raise ConfigError(
                f"--resume: the config differs from the one {output} was started with (hash {record['config_hash']}); "
                "resume with the same config, or start a new run in a new output path"
            )
    elif not overwrite and not resume:
        if exists(join(output, SUMMARY_FILE)):
            raise ConfigError(
                f"output.path: {output} already holds a finished run; choose a new output path, or set output.overwrite: true (or --overwrite) to replace it"
            )
        if record is not None:
            raise ConfigError(
                f"output.path: {output} holds an unfinished run ({record['run_id']}); continue it with --resume {output}, or pass --overwrite to start again"
            )
    return files


def start_ray(config: JobConfig) -> bool:
    """Connect to the configured cluster or start a small local Ray. Returns whether
    we started it (and so must stop it)."""
    import ray

    if ray.is_initialized():
        return False
    # Settings (never credentials: those come from each node's own credential chain)
    # that must reach the workers for them to behave like the driver.
    env_vars = {k: os.environ[k] for k in FORWARDED_ENV if k in os.environ}
    runtime_env = {"env_vars": env_vars} if env_vars else None
    # Inside `ray job submit`, RAY_ADDRESS names the cluster that runs the job.
    address = config.ray.address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, runtime_env=runtime_env, log_to_driver=True)
    else:
        kwargs = {
            # "local" always starts a fresh instance; without it Ray would join any
            # cluster a `ray start` left on this machine.
            "address": "local",
            "num_cpus": config.ray.num_cpus or os.cpu_count() or 1,
            "include_dashboard": False,
            "runtime_env": runtime_env,
        }
        if config.ray.num_gpus is not None:
            kwargs["num_gpus"] = config.ray.num_gpus
        if config.ray.object_store_memory_mb:
            kwargs["object_store_memory"] = config.ray.object_store_memory_mb * 1024 * 1024
        ray.init(**kwargs)
    return True


@contextmanager
def ray_for(config: JobConfig, plan: ResourcePlan) -> Iterator[None]:
    """Ray, started or joined, with the plan checked against its nodes before any work;
    a Ray we started is stopped afterwards, one we joined is left running."""
    import ray

    started = start_ray(config)
    try:
        check_plan_fits(plan, reachable_nodes(config.ray.cluster_config, config.ray.address or os.environ.get("RAY_ADDRESS")))
        yield
    finally:
        if started:
            ray.shutdown()


def _normalize_batch(batch, columns, run_id):
    return normalize_table(batch, columns, run_id)


def read_input_dataset(config: JobConfig, files: InputFiles, readable: list[str], run_id: str, ledger, dedupe: bool = True):
    """Input files -> checked work rows (WORK_SCHEMA), duplicates flagged (unless
    `dedupe` is False: the batch job flags them in its router actor). Lazy."""
    import ray
    from ray.data import ActorPoolStrategy

    batch = config.execution.batch_size
    light = {"num_cpus": LIGHT_TASK_CPUS}
    if config.input.format == "parquet":
        cols = config.input.columns
        # Ray 2.60's default Parquet reader (datasource V2) starts with a file-listing
        # task that always asks for one whole CPU, whatever read_parquet(num_cpus=...)
        # says; once the expert pools hold all but a fraction of a CPU it is never
        # scheduled and the job waits for ever (seen: a 2-CPU Ray with four 0.35-CPU
        # expert actors, 0 rows after minutes). The V1 reader honours the light-task
        # share. read_parquet copies the context when called, so it is set here, for
        # every caller (the job and `routebatch profile`); tests/test_batch_job.py runs
        # such a tight plan.
        ray.data.DataContext.get_current().use_datasource_v2 = False
        # One read per schema: files that disagree on a column's type cannot share a
        # read_parquet (see parquet_schema_groups); each group becomes work rows first.
        parts = [
            ray.data.read_parquet(group, filesystem=files.filesystem, include_paths=True, **light)
            .select_columns(list(dict.fromkeys([cols.id, cols.question, cols.context, "path"])))
            .map_batches(
                _normalize_batch, fn_kwargs={"columns": cols, "run_id": run_id}, batch_format="pyarrow", batch_size=batch, **light
            )
            for group in parquet_schema_groups(files, readable)
        ]
        ds = parts[0].union(*parts[1:]) if len(parts) > 1 else parts[0]
    else:
        ds = ray.data.read_binary_files(readable, filesystem=files.filesystem, include_paths=True, **light)
        ds = ds.map_batches(
            parse_files,
            fn_kwargs={"fmt": config.input.format, "columns": config.input.columns, "run_id": run_id, "ledger": ledger},
            batch_format="pyarrow",
            batch_size=1,
            **light,
        )
    if config.input.limit:
        ds = ds.limit(config.input.limit)
    # Blocks as read are whole files (or 128 MiB of one): cut them to what an expert
    # stage takes per call, so every stage pipelines and every actor of a pool gets a
    # share (operators/rebatch.py, measured in bench/RESULTS.md).
    ds = split_into_batches(ds, expert_batch_rows(batch, len(config.experts)), LIGHT_TASK_CPUS)
    if dedupe:
        ds = ds.map_batches(
            FlagDuplicateIds,
            compute=ActorPoolStrategy(size=1),
            batch_format="pyarrow",
            batch_size=batch,
            num_cpus=DEDUPE_ACTOR_CPUS,
        )
    return ds


SHARE_SAMPLE_ROWS = 2048


def expected_shares(config: JobConfig, files: InputFiles, readable: list[str]) -> dict[str, float]:
    """Each expert's expected share of the rows, for sizing its stage's calls.

    Parquet input: the job's router applied in the driver to a first sample (the first
    rows of up to 8 files, SHARE_SAMPLE_ROWS in all; nothing more is read). A cascade
    sends every row to its first expert and fewer on; its later experts, and any input
    that is not Parquet, get an equal share (the sizing of earlier releases)."""
    names = [e.name for e in config.experts]
    equal = {n: 1.0 / len(names) for n in names}
    if isinstance(config.router, (CascadeRouter, LearnedCascadeRouter)):
        first = expert_stage_order(config)[0].name
        return {**equal, first: 1.0}
    if config.input.format != "parquet" or not readable:
        return equal
    import pyarrow.parquet as pq

    cols = config.input.columns
    picked = readable[:8]
    questions: list = []
    contexts: list = []
    try:
        for path in picked:
            with files.filesystem.open_input_file(path) as fh:
                for b in pq.ParquetFile(fh).iter_batches(batch_size=SHARE_SAMPLE_ROWS // len(picked), columns=[cols.question, cols.context]):
                    questions += b.column(0).to_pylist()
                    contexts += b.column(1).to_pylist()
                    break
        return sample_shares(config.router, names, questions, contexts)
    except Exception as exc:  # noqa: BLE001 - sizing is an optimisation; the job must not fail on it
        log.warning("cannot sample the input to size the expert calls (%s); equal shares assumed", exc)
        return equal


def expert_stage_class(name: str) -> type:
    """A subclass per expert, so that progress bars, logs and Ray's actor list say
    `Expert[name]` instead of one anonymous AnswerWithExpert per pool."""
    return type(f"Expert[{name}]", (AnswerWithExpert,), {})


def cascade_plan(config: JobConfig) -> Optional[CascadePlan | LearnedCascadePlan]:
    """The job's cascade, built once in the driver (a learned cascade is read from its
    checkpoint here), or None when the router is not a cascade."""
    if isinstance(config.router, CascadeRouter):
        return CascadePlan.from_spec(config.router)
    if isinstance(config.router, LearnedCascadeRouter):
        from routing.cascades.checkpoint import plan_from_spec

        plan = plan_from_spec(config.router)
        log.info("router: learned cascade %s", plan.describe())
        return plan
    return None


def expert_stage_order(config: JobConfig, plan: Optional[CascadePlan | LearnedCascadePlan] = None) -> list[ExpertSpec]:
    """The experts in the order their stages are chained.

    Config order, except under a cascade router: a row moves forward only, so the
    cascade's experts come first in the order it asks them (stages, then the final
    expert), then any other expert (which a cascade never asks). `plan`: the job's
    `cascade_plan`, when the caller has built it already."""
    if plan is None and isinstance(config.router, (CascadeRouter, LearnedCascadeRouter)):
        plan = cascade_plan(config)
    if plan is None:
        return list(config.experts)
    first = plan.expert_names
    rank = {name: i for i, name in enumerate(first)}
    return sorted(config.experts, key=lambda e: rank.get(e.name, len(first)))


def build_dataset(config: JobConfig, files: InputFiles, readable: list[str], run_id: str, ledger, rows: Optional[int] = None):
    """The Ray Data plan. Nothing executes until the dataset is written.

    `rows`: the input rows of these files where the Parquet footers tell (else None);
    an expert pool starts with no more actors than the calls they can give it."""
    from ray.data import ActorPoolStrategy

    batch = config.execution.batch_size
    light = {"num_cpus": LIGHT_TASK_CPUS}
    ds = read_input_dataset(config, files, readable, run_id, ledger, dedupe=False)
    ds = ds.map_batches(
        CheckAndRoute,
        fn_constructor_args=(config.router, [e.name for e in config.experts]),
        compute=ActorPoolStrategy(size=1),
        batch_format="pyarrow",
        batch_size=batch,
        num_cpus=ROUTER_ACTOR_CPUS,
    )
    cascade = cascade_plan(config)
    shares = expected_shares(config, files, readable)
    log.info("expert call sizes from expected shares %s", {n: round(v, 3) for n, v in shares.items()})
    for expert in expert_stage_order(config, cascade):
        call_rows = expert_call_rows(batch, expert.batch_size, shares[expert.name])
        start = starting_actors(expert.pool.min_actors, rows, shares[expert.name], call_rows)
        if start < expert.pool.min_actors:
            log.info("expert %s: pool starts with %d actor(s), not %d: %s rows give it about %d call(s)",
                     expert.name, start, expert.pool.min_actors, rows, -(-int(rows * shares[expert.name]) // call_rows))
        ds = ds.map_batches(
            expert_stage_class(expert.name),
            fn_constructor_args=(expert,),
            fn_constructor_kwargs={
                "batch_timeout_s": config.execution.batch_timeout_s, "cascade": cascade, "timeout_rows": batch,
            },
            compute=ActorPoolStrategy(min_size=start, max_size=expert.pool.max_actors),
            batch_format="pyarrow",
            # The router splits each batch between the experts: a call of this size
            # holds about PASSES_PER_CALL full passes of this expert's own rows,
            # whatever its share (operators/rebatch.py, bench/RESULTS.md).
            batch_size=call_rows,
            # num_cpus, num_gpus and (when asked for) custom resources. Ray Data's actor
            # pools restart a dead actor and retry its batch by default
            # (max_restarts=-1, max_task_retries=-1); we rely on that and do not override it.
            **expert.resources.ray_options(),
        )
    return ds.map_batches(drop_context, batch_format="pyarrow", batch_size=batch, **light)


def inspect_input(config: JobConfig, files: InputFiles) -> tuple[list[str], dict[str, int], dict[str, str]]:
    """(readable files, rows per file where the footers tell, unreadable files -> why).

    Parquet files are checked in the driver from their footers alone; JSONL and SQuAD
    files are counted by the read tasks as they parse them (the ledger)."""
    if config.input.format != "parquet":
        return list(files.paths), {}, {}
    cols = config.input.columns
    expected_rows, unreadable = parquet_row_counts(files, list(dict.fromkeys([cols.id, cols.question, cols.context])))
    readable = [p for p in files.paths if p in expected_rows]
    if not readable:
        reasons = "; ".join(f"{files.uri(p)}: {r}" for p, r in sorted(unreadable.items())[:3])
        raise ConfigError(f"input.path: no readable Parquet file with the mapped columns ({reasons})")
    return readable, expected_rows, unreadable


def run_job(
    config: JobConfig | str | os.PathLike,
    *,
    output: Optional[str] = None,
    overwrite: Optional[bool] = None,
    resume: bool = False,
    progress: bool = True,
) -> Summary:
    """Run the whole job and write `<output>/_summary.json`.

    Raises ConfigError for anything wrong before compute starts (nothing is written
    then), and PlanDoesNotFit when the cluster cannot host the plan. With `resume`,
    shards an earlier attempt finished are kept and only the rest is computed; where
    the output holds no run yet, it starts one there.
    """
    if isinstance(config, (str, os.PathLike)):
        config = load_config(config)
    output = output or config.output.path
    overwrite = False if resume else (config.output.overwrite if overwrite is None else overwrite)
    started_wall = time.time()
    files = preflight(config, output, overwrite, resume)
    readable, footer_rows, footer_unreadable = inspect_input(config, files)
    shards = plan_shards(files.filesystem, readable, int(config.execution.shard_mb * 1024 * 1024))

    rows_in = rows_earlier = 0
    unreadable = {files.uri(p): r for p, r in footer_unreadable.items()}
    with ray_for(config, plan_resources(config)):
        # Only now, with the plan known to fit, does anything get written.
        record = read_run_record(output) if resume else None
        if record is None:
            if overwrite:
                clear_dir(output)
            record = {
                "run_id": new_run_id(),
                "config_hash": config.config_hash(),
                "config": config.model_dump(mode="json"),
                "started_at": started_wall,
                "attempts": 0,
            }
        record["attempts"] += 1
        run_id = record["run_id"]
        write_run_record(output, record)
        from ray.data import DataContext

        ctx = DataContext.get_current()
        ctx.enable_progress_bars = progress
        ctx.print_on_execution_start = progress
        for shard in shards:
            remaining = config.input.limit - rows_in if config.input.limit else None
            if remaining is not None and remaining <= 0:
                break
            done = read_marker(output, shard)
            if done is None:
                done = _run_shard(config, files, shard, output, run_id, footer_rows, remaining, progress, len(shards))
            else:
                rows_earlier += done["rows_out"]
                if progress:
                    print(f"{shard.id}: finished by an earlier attempt ({done['rows_out']} rows), skipped", file=sys.stderr)
            rows_in += done["rows_in"]
            unreadable.update(done["unreadable_files"])

    summary = build_summary(
        config=config,
        run_id=run_id,
        output=output,
        rows_in=rows_in,
        rows_from_earlier_attempts=rows_earlier,
        unreadable=unreadable,
        started=started_wall,
        finished=time.time(),
    )
    write_summary(summary, output)
    return summary


def _run_shard(
    config: JobConfig,
    files: InputFiles,
    shard: Shard,
    output: str,
    run_id: str,
    footer_rows: dict[str, int],
    limit: Optional[int],
    progress: bool,
    n_shards: int,
) -> dict:
    """One shard, one streaming execution, then its marker (the commit point)."""
    import ray

    target = shard_dir(output, shard)
    clear_dir(target)  # whatever an interrupted attempt left here is not trusted
    # Parquet rows are counted from the footers before the run; only the parsers of
    # JSONL and SQuAD files report to a ledger (one actor process less to start).
    ledger = RunLedger.remote() if config.input.format != "parquet" else None
    shard_config = config if limit is None else config.model_copy(update={"input": config.input.model_copy(update={"limit": limit})})
    rows = sum(footer_rows[p] for p in shard.paths) if ledger is None else None
    if rows is not None and limit is not None:
        rows = min(rows, limit)
    ds = build_dataset(shard_config, files, list(shard.paths), run_id, ledger, rows)
    out_fs, out_path = filesystem_and_path(target)
    if progress:
        print(f"{shard.id} ({shard.index + 1}/{n_shards}): {len(shard.paths)} file(s) -> {target}", file=sys.stderr)
    # Blocks are batch-sized by now; without a floor every block would be its own file.
    ds.write_parquet(
        out_path, filesystem=out_fs, min_rows_per_file=config.output.min_rows_per_file,
        ray_remote_args={"num_cpus": LIGHT_TASK_CPUS},
    )
    if ledger is None:  # Parquet: counted from the footers, unreadable files found there
        rows_in, unreadable = sum(footer_rows[p] for p in shard.paths), {}
    else:
        snap = ray.get(ledger.snapshot.remote())
        ray.kill(ledger)
        rows_in, unreadable = sum(snap["rows_per_file"].values()), snap["unreadable_files"]
    if limit is not None:
        rows_in = min(rows_in, limit)
    record = {
        "rows_in": rows_in,
        "rows_out": count_rows(target),
        "unreadable_files": {files.uri(p): r for p, r in unreadable.items()},
        "finished_at": time.time(),
    }
    write_marker(output, shard, record)
    return record

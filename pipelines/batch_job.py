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
    FlagDuplicateIds,
    RouteRows,
    drop_context,
)
from operators.read_input import normalize_table
from operators.stages import parse_files
from pipelines.input_files import InputFiles, parquet_row_counts, resolve_input
from pipelines.resources import (
    DEDUPE_ACTOR_CPUS,
    LIGHT_TASK_CPUS,
    ROUTER_ACTOR_CPUS,
    PlanDoesNotFit,
    ResourcePlan,
    check_plan_fits,
    cluster_nodes,
    plan_resources,
)
from pipelines.summary import SUMMARY_FILE, Summary, build_summary, write_summary
from routing.config import ConfigError, HFExtractiveQAExpert, JobConfig, ReplayExpert
from routing.storage import exists, filesystem_and_path, is_s3, join

log = logging.getLogger("routebatch")


def new_run_id() -> str:
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:6]


def preflight(config: JobConfig, output: str, overwrite: bool) -> InputFiles:
    """Every check that needs no cluster: paths exist, the output is free. Runs before
    Ray starts, so a misconfiguration costs seconds, not a cluster's start-up."""
    files = resolve_input(config.input)
    for e in config.experts:
        if isinstance(e, ReplayExpert) and not exists(e.predictions):
            raise ConfigError(f"experts.{e.name}.predictions: {e.predictions} does not exist; point it at a JSON file of recorded answers")
        if isinstance(e, HFExtractiveQAExpert) and e.model.startswith(("/", ".", "~")) and not os.path.isdir(e.model):
            raise ConfigError(f"experts.{e.name}.model: local model directory {e.model} does not exist; use a hub id or a saved model directory")
    if exists(join(output, SUMMARY_FILE)) and not overwrite:
        raise ConfigError(
            f"output.path: {output} already holds a finished run; choose a new output path, or set output.overwrite: true (or --overwrite) to replace it"
        )
    return files


def _clear_output(output: str) -> None:
    fs, path = filesystem_and_path(output)
    info = fs.get_file_info(path)
    if info.type == pafs.FileType.Directory:
        fs.delete_dir_contents(path, missing_dir_ok=True)


def _start_ray(config: JobConfig) -> bool:
    """Connect to the configured cluster or start a small local Ray. Returns whether
    we started it (and so must stop it)."""
    import ray

    if ray.is_initialized():
        return False
    env_vars = {k: v for k, v in os.environ.items() if k.startswith(("AWS_ENDPOINT_URL", "HF_", "TRANSFORMERS_"))}
    runtime_env = {"env_vars": env_vars} if env_vars else None
    if config.ray.address:
        ray.init(address=config.ray.address, runtime_env=runtime_env, log_to_driver=True)
    else:
        kwargs = {
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

    started = _start_ray(config)
    try:
        check_plan_fits(plan, cluster_nodes())
        yield
    finally:
        if started:
            ray.shutdown()


def _normalize_batch(batch, columns, run_id):
    return normalize_table(batch, columns, run_id)


def read_rows(config: JobConfig, files: InputFiles, readable: list[str], run_id: str, ledger):
    """Input files -> checked work rows (WORK_SCHEMA), duplicates flagged. Lazy."""
    import ray
    from ray.data import ActorPoolStrategy

    batch = config.execution.batch_size
    light = {"num_cpus": LIGHT_TASK_CPUS}
    if config.input.format == "parquet":
        cols = config.input.columns
        ds = ray.data.read_parquet(
            readable, filesystem=files.filesystem, include_paths=True, **light
        ).select_columns(list(dict.fromkeys([cols.id, cols.question, cols.context, "path"])))
        ds = ds.map_batches(
            _normalize_batch, fn_kwargs={"columns": cols, "run_id": run_id}, batch_format="pyarrow", batch_size=batch, **light
        )
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
    ds = ds.map_batches(
        FlagDuplicateIds,
        compute=ActorPoolStrategy(size=1),
        batch_format="pyarrow",
        batch_size=batch,
        num_cpus=DEDUPE_ACTOR_CPUS,
    )
    return ds


def build_dataset(config: JobConfig, files: InputFiles, readable: list[str], run_id: str, ledger):
    """The Ray Data plan. Nothing executes until the dataset is written."""
    from ray.data import ActorPoolStrategy

    batch = config.execution.batch_size
    light = {"num_cpus": LIGHT_TASK_CPUS}
    ds = read_rows(config, files, readable, run_id, ledger)
    ds = ds.map_batches(
        RouteRows,
        fn_constructor_args=(config.router, [e.name for e in config.experts]),
        compute=ActorPoolStrategy(size=1),
        batch_format="pyarrow",
        batch_size=batch,
        num_cpus=ROUTER_ACTOR_CPUS,
    )
    for expert in config.experts:
        remote_args = {"resources": dict(expert.resources.custom)} if expert.resources.custom else {}
        ds = ds.map_batches(
            AnswerWithExpert,
            fn_constructor_args=(expert,),
            compute=ActorPoolStrategy(min_size=expert.pool.min_actors, max_size=expert.pool.max_actors),
            batch_format="pyarrow",
            batch_size=batch,
            num_cpus=expert.resources.num_cpus,
            num_gpus=expert.resources.num_gpus,
            # Ray Data's actor pools restart a dead actor and retry its batch by default
            # (max_restarts=-1, max_task_retries=-1); we rely on that and do not override it.
            **remote_args,
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
    config: JobConfig,
    *,
    output: Optional[str] = None,
    overwrite: Optional[bool] = None,
    progress: bool = True,
) -> Summary:
    """Run the whole job and write `<output>/_summary.json`.

    Raises ConfigError for anything wrong before compute starts (nothing is written
    then), and PlanDoesNotFit when the cluster cannot host the plan.
    """
    import ray

    output = output or config.output.path
    overwrite = config.output.overwrite if overwrite is None else overwrite
    started_wall = time.time()
    run_id = new_run_id()
    files = preflight(config, output, overwrite)

    readable, expected_rows, unreadable = inspect_input(config, files)

    with ray_for(config, plan_resources(config)):
        from ray.data import DataContext

        ctx = DataContext.get_current()
        ctx.enable_progress_bars = progress
        ctx.print_on_execution_start = progress

        if overwrite:
            _clear_output(output)
        ledger = RunLedger.remote()
        ds = build_dataset(config, files, readable, run_id, ledger)
        out_fs, out_path = filesystem_and_path(output)
        log.info("run %s: %d input file(s) -> %s", run_id, len(files.paths), output)
        ds.write_parquet(out_path, filesystem=out_fs, ray_remote_args={"num_cpus": LIGHT_TASK_CPUS})
        snap = ray.get(ledger.snapshot.remote())

    if config.input.format != "parquet":
        expected_rows = snap["rows_per_file"]
        unreadable.update(snap["unreadable_files"])
    rows_in = sum(expected_rows.values())
    if config.input.limit:
        rows_in = min(rows_in, config.input.limit)
    summary = build_summary(
        config=config,
        run_id=run_id,
        output=output,
        rows_in=rows_in,
        unreadable={files.uri(p): r for p, r in unreadable.items()},
        started=started_wall,
        finished=time.time(),
    )
    write_summary(summary, output)
    return summary

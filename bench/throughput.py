"""Throughput and memory of routebatch against the plain alternatives (issue 5).

    python bench/throughput.py --quick       # smoke run, < 5 min on 2 cores; no memory run
    python bench/throughput.py               # full: 3 repeats of 5,700 questions, then the 100k/1M-row memory run
    python bench/throughput.py --memory-only # only the memory run (add --memory-previous to compare the previous plan)
    python bench/throughput.py --no-memory   # full throughput runs without the memory run
    python bench/throughput.py --headline    # < 5 min: the one-line figures of issue 14, printed last

Results and what they mean: bench/RESULTS.md.

Why it is built this way:

* Every measurement runs in a fresh child process (`--child MODE`), timed from the
  child's first line to its last, so imports, model loading and (for the Ray runs)
  Ray's start-up and shut-down are inside the figure, as they are for a user. Ray's
  fixed costs are also measured on their own (an empty `ray.init`/`shutdown`, and the
  whole job on one batch of rows), so they can be told apart from per-row costs.
* All runs answer the same questions (the 950 questions of data/squad_replay,
  copied K times under new ids) with the same routing decisions: a rule router on
  context length whose thresholds are computed once here, and which the direct loop
  and routebatch both apply through `routing.rules` (the direct loop's decisions are
  checked against the `expert` column routebatch wrote).
* The experts are real BERT-style QA models built here (random weights, the real
  MiniLM tokenizer) with 2, 4 and 8 layers, so they really differ in cost. The direct
  loop calls the project's `HFExtractiveQARunner`, so tokenisation and span decoding
  are identical code in every run; answers are compared between the direct loop and
  routebatch, which must agree.
* The same thread settings everywhere: OMP/MKL/RAYON thread counts in the environment
  of every child (Ray workers inherit it from the driver that starts Ray) and
  `torch.set_num_threads` in every process that runs a model. With 1 thread per model
  process the direct loop uses one core, so it is also run with 2 threads (the best a
  single plain process can do on this machine), and routebatch is compared with the
  faster of the two.
* The same priority everywhere: Ray starts its workers at nice 15, which on a machine
  shared with other busy processes starves them against a direct loop at nice 0; the
  children set RAY_worker_niceness=0 (--ray-worker-niceness to change it).
* Figures are noisy on a shared machine: the runs of one repeat are interleaved, each
  is repeated, and the median is reported together with every raw figure.
* "routebatch" rows run the plan exactly as pipelines/batch_job.py builds it; "previous plan"
  rows undo the block split this bench led to (`_apply_previous_plan`), so what it
  changed stays measured.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

_T0 = time.perf_counter()  # child runs are timed from here: before torch, Ray or pyarrow load

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
QUESTIONS = Path(os.environ.get("ROUTEBATCH_DATA", REPO / "data")) / "squad_replay" / "questions.json"

# name -> (layers, hidden, heads); intermediate = 4 x hidden, as in BERT.
MODELS = {"small": (2, 64, 2), "medium": (4, 128, 4), "large": (8, 128, 4)}
EXPERT_SETS = {2: ["small", "large"], 3: ["small", "medium", "large"]}
MAX_SEQ_LEN, DOC_STRIDE, WINDOW_BATCH = 256, 64, 16
RAY_WORKER_NICENESS = 0  # set from --ray-worker-niceness
RAY_TMPDIR = "/tmp/rbbench"  # short: Ray's unix socket paths must stay under ~100 chars
ROW_BATCH = 64  # rows per call in every mode: the direct loop's batches and execution.batch_size


# --------------------------------------------------------------------------- set-up


def thread_env(threads: int) -> dict[str, str]:
    """One thread setting for every process: the child, and (inherited) Ray's workers."""
    env = dict(os.environ)
    env.update(
        OMP_NUM_THREADS=str(threads),
        MKL_NUM_THREADS=str(threads),
        RAYON_NUM_THREADS=str(threads),  # the Rust tokenizer's pool
        TOKENIZERS_PARALLELISM="true" if threads > 1 else "false",
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        RAY_DEDUP_LOGS="0",
        # A private Ray temp dir: `ray.init()` without an address joins whatever cluster
        # /tmp/ray/ray_current_cluster names (another user's `ray start` on a shared
        # machine), and run_job's embedded Ray must be our own for the figures to mean
        # anything.
        RAY_TMPDIR=RAY_TMPDIR,
        # Ray 2.60's default Parquet reader (datasource V2) adds a ListFiles task that
        # always asks for 1 whole CPU: beside expert pools that leave less than a CPU
        # free it never runs. run_job picks the V1 reader itself (pipelines/batch_job.py,
        # read_input_dataset); this puts the plain single-model Ray Data job on the same reader.
        RAY_DATA_USE_DATASOURCE_V2="0",
        # Ray starts its workers at nice 15 by default; the direct loop runs at nice 0.
        # On a machine shared with other busy processes that alone starves the Ray
        # workers, so every process here runs at the same priority (0) unless
        # --ray-worker-niceness says otherwise.
        RAY_worker_niceness=str(RAY_WORKER_NICENESS),
        PYTHONPATH=os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep),
    )
    return env


def build_models(workdir: Path) -> dict[str, str]:
    """Save the three expert models (random weights, MiniLM tokenizer) once."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForQuestionAnswering

    sys.path.insert(0, str(REPO / "tests"))
    from tiny_models import minilm_dir

    tokenizer = AutoTokenizer.from_pretrained(minilm_dir())
    paths = {}
    for name, (layers, hidden, heads) in MODELS.items():
        path = workdir / "models" / name
        paths[name] = str(path)
        if (path / "config.json").exists():
            continue
        config = BertConfig(
            vocab_size=tokenizer.vocab_size,
            hidden_size=hidden,
            num_hidden_layers=layers,
            num_attention_heads=heads,
            intermediate_size=4 * hidden,
            max_position_embeddings=512,
        )
        torch.manual_seed(1234)
        model = BertForQuestionAnswering(config)
        with torch.no_grad():  # widen the QA head so spans get clearly different scores
            model.qa_outputs.weight.normal_(0.0, 1.0)
        model.eval()
        path.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(path)
        tokenizer.save_pretrained(path)
    return paths


def write_corpus(workdir: Path, copies: int, shards: int = 4) -> tuple[str, int]:
    """The SQuAD-replay questions, `copies` times under fresh ids, in Parquet shards."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from routing.answers.squad import load_squad

    questions = load_squad(QUESTIONS)
    rows = [(f"{q.id}-{k}", q.question, q.context) for k in range(copies) for q in questions]
    out = workdir / (f"corpus-{copies}" if shards == 4 else f"corpus-{copies}-{shards}files")
    if not out.exists():
        out.mkdir(parents=True)
        per = -(-len(rows) // shards)
        for s in range(shards):
            part = rows[s * per:(s + 1) * per]
            pq.write_table(
                pa.table({"id": [r[0] for r in part], "question": [r[1] for r in part], "context": [r[2] for r in part]}),
                out / f"part-{s:03d}.parquet",
            )
    return str(out), len(rows)


def rule_router(corpus: str, experts: list[str]) -> dict[str, Any]:
    """Longer contexts go to deeper experts; thresholds at equal-count quantiles of
    context length, computed once from the corpus, so every run routes identically."""
    import numpy as np
    import pyarrow.dataset as pads

    lengths = np.array([len(c) for c in pads.dataset(corpus).to_table(columns=["context"]).column("context").to_pylist()])
    k = len(experts)
    cuts = [int(np.quantile(lengths, i / k)) for i in range(1, k)]
    # First matching rule wins: check the deepest expert's threshold first.
    rules = [{"expert": experts[i + 1], "min_context_chars": cuts[i]} for i in reversed(range(k - 1))]
    return {"kind": "rule", "rules": rules, "default": experts[0]}


def expert_spec(name: str, model: str, *, num_cpus: float, min_actors: int = 1, max_actors: int = 1) -> dict[str, Any]:
    return {
        "name": name,
        "kind": "hf-extractive-qa",
        "model": model,
        "max_seq_len": MAX_SEQ_LEN,
        "doc_stride": DOC_STRIDE,
        "batch_size": WINDOW_BATCH,
        "resources": {"num_cpus": num_cpus},
        "pool": {"min_actors": min_actors, "max_actors": max_actors},
        "cost": {"usd_per_gpu_hour": 1.0},
    }


def job_config(corpus: str, out: str, experts: list[dict], router: dict, batch: int = ROW_BATCH, object_store_mb: int = 1024) -> dict[str, Any]:
    return {
        "input": {"path": corpus, "format": "parquet"},
        "output": {"path": out, "overwrite": True},
        "experts": experts,
        "router": router,
        "ray": {"num_cpus": 2, "num_gpus": 0, "object_store_memory_mb": object_store_mb},
        "execution": {"batch_size": batch},
    }


# --------------------------------------------------------------------------- children


def _result(**values: Any) -> None:
    print("RESULT " + json.dumps(values), flush=True)


def child_direct(plan: dict) -> None:
    """One Python process, no Ray: route, then each expert over its rows in batches."""
    import torch

    torch.set_num_threads(plan["threads"])
    import pyarrow as pa
    import pyarrow.dataset as pads
    import pyarrow.parquet as pq

    from operators.runners.hf_qa import HFExtractiveQARunner
    from routing.core.config import HFExtractiveQAExpert, RuleRouter
    from routing.rules import build_router

    table = pads.dataset(plan["corpus"]).to_table()
    ids = table.column("id").to_pylist()
    questions = table.column("question").to_pylist()
    contexts = table.column("context").to_pylist()
    t_route = time.perf_counter()
    routes = build_router(RuleRouter.model_validate(plan["router"])).route(questions, contexts)
    route_s = time.perf_counter() - t_route
    answers: list[Optional[str]] = [None] * len(ids)
    load_s = 0.0
    for spec in plan["experts"]:
        t_load = time.perf_counter()
        runner = HFExtractiveQARunner(HFExtractiveQAExpert.model_validate(spec), device="cpu")
        load_s += time.perf_counter() - t_load
        mine = [i for i, r in enumerate(routes) if r == spec["name"]]
        for lo in range(0, len(mine), plan["batch"]):
            part = mine[lo:lo + plan["batch"]]
            out = runner.answer([ids[i] for i in part], [questions[i] for i in part], [contexts[i] for i in part])
            for i, a in zip(part, out.answers):
                answers[i] = a
    pq.write_table(pa.table({"id": ids, "expert": routes, "answer": answers}), plan["out"])
    _result(wall_s=time.perf_counter() - _T0, load_s=load_s, route_s=route_s, rows=len(ids), torch_threads=torch.get_num_threads())


class _PlainQA:
    """What a user writes without routing: one model, `map_batches`, answers out."""

    def __init__(self, spec: dict, threads: int) -> None:
        import torch

        from operators.runners.hf_qa import HFExtractiveQARunner
        from routing.core.config import HFExtractiveQAExpert

        torch.set_num_threads(threads)
        self.runner = HFExtractiveQARunner(HFExtractiveQAExpert.model_validate(spec), device="cpu")

    def __call__(self, batch):  # pa.Table -> pa.Table
        import pyarrow as pa

        ids = batch.column("id").to_pylist()
        out = self.runner.answer(ids, batch.column("question").to_pylist(), batch.column("context").to_pylist())
        return pa.table({"id": ids, "answer": pa.array(out.answers, pa.string()), "score": pa.array(out.scores, pa.float64())})


def child_raydata(plan: dict) -> None:
    """A plain single-model Ray Data job on a local Ray of the same size."""
    import ray
    from ray.data import ActorPoolStrategy

    t_init = time.perf_counter()
    ray.init(num_cpus=2, num_gpus=0, object_store_memory=1024 * 1024 * 1024, include_dashboard=False, log_to_driver=False)
    init_s = time.perf_counter() - t_init
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    spec = plan["experts"][0]
    t_job = time.perf_counter()
    (
        ray.data.read_parquet(plan["corpus"], num_cpus=0.25)
        .map_batches(
            _PlainQA,
            fn_constructor_args=(spec, plan["threads"]),
            compute=ActorPoolStrategy(size=spec["pool"]["max_actors"]),
            batch_size=plan["batch"],
            batch_format="pyarrow",
            num_cpus=spec["resources"]["num_cpus"],
        )
        .write_parquet(plan["out"], ray_remote_args={"num_cpus": 0.25})
    )
    job_s = time.perf_counter() - t_job
    t_down = time.perf_counter()
    ray.shutdown()
    _result(wall_s=time.perf_counter() - _T0, init_s=init_s, job_s=job_s, shutdown_s=time.perf_counter() - t_down, rows=plan["rows"])


def _apply_previous_plan() -> None:
    """Run the plan as batch_job.py built it before the block split was wired in: blocks
    as read (one per file), and expert stages that take `execution.batch_size` rows per
    call. Rows labelled "previous plan" measure what the wiring changed."""
    import pipelines.batch_job as batch_job

    batch_job.split_into_batches = lambda ds, rows, num_cpus: ds
    batch_job.expert_batch_rows = lambda batch_size, n_experts: batch_size
    batch_job.expert_call_rows = lambda batch_size, expert_batch_size, share: batch_size


def child_routebatch(plan: dict) -> None:
    """The whole routebatch job (`run_job`), which starts and stops its own Ray."""
    from pipelines.batch_job import run_job
    from routing.core.config import parse_config

    if plan.get("previous_plan"):
        _apply_previous_plan()
    if plan.get("pools_at_min_actors"):
        # Every pool starts at its min_actors, as on a long input: the reference run
        # whose start-up the steady-state subtraction cancels must start the same
        # actors as the long run it is subtracted from.
        import pipelines.batch_job as batch_job

        batch_job.starting_actors = lambda min_actors, rows, share, call_rows: min_actors
    cfg = parse_config(job_config(plan["corpus"], plan["out"], plan["experts"], plan["router"], plan["batch"]))
    t_job = time.perf_counter()
    summary = run_job(cfg, output=plan["out"], overwrite=True, progress=False)
    _result(
        wall_s=time.perf_counter() - _T0,
        job_s=time.perf_counter() - t_job,
        rows=summary.rows_out,
        exit_code=summary.exit_code,
        experts={n: t.rows for n, t in summary.experts.items()},
        fill={n: t.mean_batch_fill for n, t in summary.experts.items()},
    )


def child_rayinit(plan: dict) -> None:
    """Ray's own fixed cost: start a local Ray like run_job does, then stop it."""
    import ray

    t = time.perf_counter()
    ray.init(num_cpus=2, num_gpus=0, object_store_memory=1024 * 1024 * 1024, include_dashboard=False)
    init_s = time.perf_counter() - t
    t = time.perf_counter()
    ray.shutdown()
    _result(wall_s=time.perf_counter() - _T0, init_s=init_s, shutdown_s=time.perf_counter() - t)


def _vm_hwm_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def child_memory(plan: dict) -> None:
    """Stream a large corpus through the job while sampling the driver's RSS."""
    import threading

    import psutil

    proc = psutil.Process()
    peak = [proc.memory_info().rss]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.05):
            peak[0] = max(peak[0], proc.memory_info().rss)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    from pipelines.batch_job import run_job
    from routing.core.config import parse_config

    if plan.get("previous_plan"):
        _apply_previous_plan()
    cfg = parse_config(job_config(plan["corpus"], plan["out"], plan["experts"], plan["router"], plan["batch"], object_store_mb=plan["object_store_mb"]))
    t_job = time.perf_counter()
    summary = run_job(cfg, output=plan["out"], overwrite=True, progress=False)
    job_s = time.perf_counter() - t_job
    done.set()
    sampler.join()
    peak[0] = max(peak[0], proc.memory_info().rss)
    _result(
        wall_s=time.perf_counter() - _T0,
        job_s=job_s,
        rows=summary.rows_out,
        rows_in=summary.rows_in,
        exit_code=summary.exit_code,
        peak_rss_mb=peak[0] / 2**20,
        # The kernel's own high-water mark of this process's resident set: it catches
        # peaks shorter than the sampling period. (getrusage's ru_maxrss would not do:
        # it starts from the parent's RSS at fork, which here is the bench's.)
        vm_hwm_mb=_vm_hwm_mb(),
        end_rss_mb=proc.memory_info().rss / 2**20,
    )


CHILDREN = {
    "direct": child_direct,
    "raydata": child_raydata,
    "routebatch": child_routebatch,
    "rayinit": child_rayinit,
    "memory": child_memory,
}


# --------------------------------------------------------------------------- parent


def run_child(mode: str, plan: dict, workdir: Path, threads: int, timeout: float = 1200, attempts: int = 3) -> dict:
    """Run one measurement in a fresh process; a failed attempt is reported and retried
    (on a shared machine another user's `ray stop --force` ends every Ray process)."""
    for attempt in range(1, attempts + 1):
        try:
            return _run_child_once(mode, plan, workdir, threads, timeout)
        except (RuntimeError, subprocess.TimeoutExpired) as exc:
            print(f"  !! {mode} attempt {attempt} failed: {str(exc)[-1500:]}", flush=True)
            transient = any(sign in str(exc) for sign in ("SIGTERM", "lost objects", "Terminated", "raylet", "GCS", "TimeoutExpired"))
            if attempt == attempts or not transient:
                raise
    raise AssertionError("unreachable")


def _run_child_once(mode: str, plan: dict, workdir: Path, threads: int, timeout: float) -> dict:
    Path(RAY_TMPDIR).mkdir(parents=True, exist_ok=True)
    plan_path = workdir / "plans" / f"{mode}-{time.time_ns()}.json"
    plan_path.parent.mkdir(parents=True, exist_ok=True)
    plan_path.write_text(json.dumps({**plan, "threads": threads}))
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--child", mode, "--plan", str(plan_path)],
        env=thread_env(threads),
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=str(workdir),
    )
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    raise RuntimeError(f"child {mode} failed (exit {proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}")


def stage_costs(corpus: str, router: dict, names: list[str]) -> dict[str, float]:
    """ms per question of the non-model stages, in this process, on the real operators
    (no Ray): where routebatch spends CPU that the direct loop does not."""
    import pyarrow.dataset as pads

    from operators.read_input import normalize_table
    from operators.schema import WORK_SCHEMA
    from operators.stages import AnswerWithExpert, FlagDuplicateIds, RouteRows, drop_context
    from operators.runners.base import RunnerOutput
    from routing.core.config import ColumnMapping, ReplayExpert, parse_config

    class _Instant:
        """A runner that costs nothing, so only the stage's own Arrow work is timed."""

        def answer(self, ids, questions, contexts):
            n = len(ids)
            return RunnerOutput(["a"] * n, [1.0] * n, [10] * n, [1] * n)

    table = pads.dataset(corpus).to_table()
    table = table.append_column("path", __import__("pyarrow").array(["p"] * table.num_rows))
    batches = [table.slice(lo, ROW_BATCH) for lo in range(0, table.num_rows, ROW_BATCH)]
    times: dict[str, float] = {}

    def timed(name, fn, inputs):
        t = time.perf_counter()
        outs = [fn(b) for b in inputs]
        times[name] = (time.perf_counter() - t) * 1000 / table.num_rows
        return outs

    work = timed("parse+check rows", lambda b: normalize_table(b, ColumnMapping(), "run"), batches)
    work = timed("flag duplicate ids", FlagDuplicateIds(), work)
    cfg = parse_config({"input": {"path": corpus}, "output": {"path": "/tmp/x"}, "router": router,
                        "experts": [{"name": n, "kind": "replay", "predictions": "/dev/null"} for n in names]})
    work = timed("route (RouteRows)", RouteRows(cfg.router, names), work)
    for n in names:
        stage = AnswerWithExpert.__new__(AnswerWithExpert)
        stage.spec = ReplayExpert(name=n, kind="replay", predictions="/dev/null")
        stage.runner = _Instant()
        work = timed(f"expert stage {n} (runner excluded)", stage, work)
    timed("drop context", drop_context, work)
    assert all(w.schema == WORK_SCHEMA for w in work)
    return times


def agreement(direct_out: str, rb_out: str) -> dict[str, float]:
    """Share of questions where routebatch chose the same expert and gave the same
    answer as the direct loop."""
    import pyarrow.dataset as pads

    d = pads.dataset(direct_out).to_table(columns=["id", "expert", "answer"]).to_pylist()
    r = {row["id"]: row for row in pads.dataset(rb_out).to_table(columns=["id", "expert", "answer"]).to_pylist()}
    same_expert = sum(1 for row in d if r.get(row["id"], {}).get("expert") == row["expert"])
    same_answer = sum(1 for row in d if r.get(row["id"], {}).get("answer") == row["answer"])
    return {"rows": len(d), "same_expert": same_expert / len(d), "same_answer": same_answer / len(d)}


def median(results: list[dict], key: str = "wall_s") -> float:
    return statistics.median(r[key] for r in results)


def _label_path(label: str) -> str:
    return "".join(ch if ch.isalnum() else "_" for ch in label).strip("_")


# Actors per expert pool, sized to each expert's share of the work as an operator would
# size them: the 8-layer expert does most of it (see RESULTS.md), so it gets 2 actors.
POOLS = {"small": 1, "medium": 1, "large": 2}
EXPERT_CPUS = 0.35  # per actor: 4 actors + dedupe + router + one light task = 2.0 CPUs


def throughput(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    models = build_models(workdir)
    corpus, n_rows = write_corpus(workdir, args.copies, args.shards)
    routers = {k: rule_router(corpus, names) for k, names in EXPERT_SETS.items()}
    threads = args.threads
    print(f"corpus: {n_rows} questions ({args.copies} x squad_replay) in {args.shards} Parquet file(s) in {corpus}; threads per model process: {threads}")
    print(f"routers: {json.dumps(routers)}")
    print(f"pools (actors per expert): {POOLS}, {EXPERT_CPUS} CPU each; execution.batch_size {ROW_BATCH}; "
          f"windows per forward pass {WINDOW_BATCH}; max_seq_len {MAX_SEQ_LEN}, doc_stride {DOC_STRIDE}", flush=True)

    one_batch = workdir / "corpus-one-batch"
    if not one_batch.exists():
        import pyarrow.dataset as pads
        import pyarrow.parquet as pq

        one_batch.mkdir()
        pq.write_table(pads.dataset(corpus).head(ROW_BATCH), one_batch / "part-000.parquet")

    def experts_for(k: int) -> list[dict]:
        return [expert_spec(n, models[n], num_cpus=EXPERT_CPUS, min_actors=POOLS[n], max_actors=POOLS[n]) for n in EXPERT_SETS[k]]

    runs: list[tuple[str, str, dict, int]] = []  # (label, mode, plan, threads)
    for k in args.experts:
        base = {"corpus": corpus, "rows": n_rows, "batch": ROW_BATCH, "router": routers[k], "experts": experts_for(k)}
        runs.append((f"direct T=1, {k} experts", "direct", base, 1))
        if not args.quick:
            runs.append((f"direct T=2, {k} experts", "direct", base, 2))
        runs.append((f"routebatch, {k} experts", "routebatch", base, threads))
        if not args.quick:
            runs.append((f"routebatch previous plan, {k} experts", "routebatch", {**base, "previous_plan": True}, threads))
    single = expert_spec("large", models["large"], num_cpus=EXPERT_CPUS, min_actors=2, max_actors=2)
    single_plan = {"corpus": corpus, "rows": n_rows, "batch": ROW_BATCH, "experts": [single],
                   "router": {"kind": "fixed", "expert": "large"}}
    if not args.target_only:
        runs.append(("raydata single model (large, 2 actors)", "raydata", single_plan, threads))
    if not (args.quick or args.target_only):
        runs.append(("routebatch fixed router (large, 2 actors)", "routebatch", single_plan, threads))
    runs.append(("ray.init + shutdown", "rayinit", {}, threads))
    k0 = args.experts[0]
    fixed_label = f"routebatch, {k0} experts, {ROW_BATCH} rows (fixed costs)"
    direct_fixed_label = f"direct T=1, {k0} experts, {ROW_BATCH} rows (fixed costs)"
    if not args.quick:
        one = {"corpus": str(one_batch), "rows": ROW_BATCH, "batch": ROW_BATCH, "router": routers[k0], "experts": experts_for(k0)}
        runs.append((direct_fixed_label, "direct", one, 1))
        runs.append((fixed_label, "routebatch", one, threads))

    def variants(k: int) -> list[str]:
        return [label for label, *_ in runs if label.startswith("routebatch") and label.endswith(f", {k} experts")]

    results: dict[str, list[dict]] = {label: [] for label, *_ in runs}
    outputs: dict[str, str] = {}
    for rep in range(args.repeats):
        for label, mode, plan, t in runs:  # interleaved, so slow spells of a shared machine hit every run alike
            out = str(workdir / "out" / f"{_label_path(label)}-{rep}") + (".parquet" if mode == "direct" else "")
            Path(out).parent.mkdir(parents=True, exist_ok=True)
            res = run_child(mode, {**plan, "out": out}, workdir, t)
            res["rep"] = rep
            results[label].append(res)
            outputs.setdefault(label, out)
            qps = res.get("rows", 0) / res["wall_s"] if res.get("rows") else float("nan")
            print(f"  [{rep}] {label}: wall {res['wall_s']:.1f} s, {qps:.1f} q/s  {json.dumps({k: v for k, v in res.items() if k not in ('wall_s', 'rep')})}", flush=True)

    print()
    print(f"{'run':<52} {'rows':>6} {'wall s (median)':>16} {'q/s':>7}   all walls")
    qps: dict[str, float] = {}
    for label, *_ in runs:
        rs = results[label]
        wall = median(rs)
        rows = rs[0].get("rows", 0)
        qps[label] = rows / wall if rows else float("nan")
        walls = ", ".join(f"{r['wall_s']:.1f}" for r in rs)
        print(f"{label:<52} {rows:>6} {wall:>16.1f} {qps[label]:>7.1f}   {walls}")
    print()
    ratios: dict[str, float] = {}
    single_qps = qps.get("raydata single model (large, 2 actors)")
    for k in args.experts:
        d1 = qps[f"direct T=1, {k} experts"]
        best = max(d1, qps.get(f"direct T=2, {k} experts", 0.0))
        for variant in variants(k):
            ratios[f"{variant} / direct T=1"] = qps[variant] / d1
            if not args.quick:
                ratios[f"{variant} / best direct (T=1 or T=2)"] = qps[variant] / best
            if single_qps:
                ratios[f"{variant} / raydata single (large)"] = qps[variant] / single_qps
    overhead_ms = None
    if "routebatch fixed router (large, 2 actors)" in qps:
        ratios["routebatch fixed router / raydata single (large)"] = qps["routebatch fixed router (large, 2 actors)"] / single_qps
    for name, value in ratios.items():
        print(f"ratio {name:<70} {value:.3f}")
    if args.quick:
        print(f"(--quick answers {n_rows} questions: these ratios are mostly Ray's and the actors' fixed start-up "
              "cost, about 30 s on 2 cores; the full run and bench/RESULTS.md's 'Steady state' give the figures "
              "the targets are judged on)")
    if "routebatch fixed router (large, 2 actors)" in qps:
        overhead_ms = (median(results["routebatch fixed router (large, 2 actors)"]) - median(results["raydata single model (large, 2 actors)"])) * 1000 / n_rows
        print(f"routing overhead, whole job: (routebatch fixed router - raydata single) wall / rows = {overhead_ms:.2f} ms/question")
    init = results["ray.init + shutdown"]
    line = f"Ray fixed costs: ray.init {median(init, 'init_s'):.1f} s + ray.shutdown {median(init, 'shutdown_s'):.1f} s (medians)"
    if fixed_label in results:
        line += f"; whole routebatch job ({k0} experts) on {ROW_BATCH} rows: {median(results[fixed_label]):.1f} s"
    print(line)
    if fixed_label in results and direct_fixed_label in results:
        # Per-row speed once everything has started: the extra rows over the extra time
        # against a job of one batch. Fixed costs (start-up, model loading, shutdown)
        # cancel out, so this is what a long job tends to.
        steady = {}
        for label, fixed in ((f"direct T=1, {k0} experts", direct_fixed_label), (f"routebatch, {k0} experts", fixed_label)):
            extra_s = median(results[label]) - median(results[fixed])
            steady[label] = (n_rows - ROW_BATCH) / extra_s if extra_s > 0 else float("nan")
            print(f"steady state, {label}: {steady[label]:.1f} q/s; fixed cost (job on {ROW_BATCH} rows) {median(results[fixed]):.1f} s")
        ratios[f"steady state routebatch / direct T=1, {k0} experts"] = steady[f"routebatch, {k0} experts"] / steady[f"direct T=1, {k0} experts"]
        print(f"ratio steady state routebatch / direct T=1, {k0} experts: {ratios[f'steady state routebatch / direct T=1, {k0} experts']:.3f}")
    for k in args.experts:
        d = results[f"direct T=1, {k} experts"]
        print(f"direct T=1, {k} experts: model loading {median(d, 'load_s'):.1f} s; rule routing in-process {median(d, 'route_s') * 1000 / n_rows:.4f} ms/question")
        for variant in variants(k):
            agree = agreement(outputs[f"direct T=1, {k} experts"], outputs[variant])
            print(f"{variant} vs direct: same expert {agree['same_expert']:.2%}, same answer {agree['same_answer']:.2%} of {agree['rows']} rows")
    costs = stage_costs(corpus, routers[max(args.experts)], EXPERT_SETS[max(args.experts)])
    print("non-model stages in-process, ms/question: " + ", ".join(f"{k} {v:.4f}" for k, v in costs.items()))
    return {"results": results, "qps": qps, "ratios": ratios, "routing_overhead_ms": overhead_ms, "stage_costs_ms": costs}


def write_memory_corpus(workdir: Path, sizes: list[int], shard_rows: int) -> dict[int, str]:
    """Synthetic short rows in Parquet shards, written once for the largest size; the
    smaller sizes are hard links to its first shards, so they are the same rows."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    biggest = max(sizes)
    base = workdir / "memory" / f"rows-{biggest}"
    if not (base / "_done").exists():
        base.mkdir(parents=True, exist_ok=True)
        for s, lo in enumerate(range(0, biggest, shard_rows)):
            ids = [f"m{i:08d}" for i in range(lo, min(lo + shard_rows, biggest))]
            pq.write_table(
                pa.table({
                    "id": ids,
                    "question": [f"What is item {i[1:]}?" for i in ids],
                    "context": [f"Item {i[1:]} is a widget of kind {int(i[1:]) % 7}." + (" It is long." * (int(i[1:]) % 3)) for i in ids],
                }),
                base / f"part-{s:05d}.parquet",
            )
        (base / "_done").write_text("")
    dirs = {biggest: str(base)}
    for size in sizes:
        if size == biggest:
            continue
        d = workdir / "memory" / f"rows-{size}"
        if not d.exists():
            d.mkdir(parents=True)
            for s in range(-(-size // shard_rows)):
                os.link(base / f"part-{s:05d}.parquet", d / f"part-{s:05d}.parquet")
        dirs[size] = str(d)
    preds = workdir / "memory" / "predictions.json"
    if not preds.exists():
        preds.write_text(json.dumps({f"m{i:08d}": f"kind {i % 7}" for i in range(biggest)}))
    return dirs


def memory(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    sizes = sorted(int(s) for s in args.memory_rows.split(","))
    dirs = write_memory_corpus(workdir, sizes, args.memory_shard_rows)
    preds = str(workdir / "memory" / "predictions.json")
    experts = [
        {"name": "cheap", "kind": "replay", "predictions": preds, "batch_size": 1024, "resources": {"num_cpus": 0.25}},
        {"name": "strong", "kind": "replay", "predictions": preds, "batch_size": 1024, "resources": {"num_cpus": 0.25}},
    ]
    router = {"kind": "rule", "rules": [{"expert": "strong", "min_context_chars": 45}], "default": "cheap"}
    variants = [("plan as built", {})]
    if args.memory_previous:
        variants.append(("previous plan", {"previous_plan": True}))
    print(f"memory: replay experts, execution.batch_size {args.memory_batch}, input shards of {args.memory_shard_rows} rows; "
          f"variants: {', '.join(v for v, _ in variants)}", flush=True)
    results: dict[tuple[str, int], list[dict]] = {(v, s): [] for v, _ in variants for s in sizes}
    for rep in range(args.memory_repeats):
        for variant, extra in variants:
            for size in sizes:
                out = str(workdir / "out" / f"memory-{_label_path(variant)}-{size}-{rep}")
                res = run_child("memory", {"corpus": dirs[size], "out": out, "experts": experts, "router": router,
                                           "batch": args.memory_batch, "object_store_mb": 1024, **extra}, workdir, args.threads, timeout=3000)
                results[(variant, size)].append(res)
                print(f"  [{rep}] {variant}, {size} rows: {json.dumps(res)}", flush=True)
    print()
    print(f"{'variant':<28} {'rows':>9} {'peak driver RSS MB (median)':>28} {'VmHWM MB':>9} {'wall s':>8} {'rows/s':>8}   all peaks")
    ratios = {}
    for variant, _ in variants:
        for size in sizes:
            rs = results[(variant, size)]
            print(f"{variant:<28} {size:>9} {median(rs, 'peak_rss_mb'):>28.0f} {median(rs, 'vm_hwm_mb'):>9.0f} {median(rs):>8.1f} "
                  f"{size / median(rs):>8.0f}   " + ", ".join(f"{r['peak_rss_mb']:.0f}" for r in rs))
        lo, hi = sizes[0], sizes[-1]
        ratios[variant] = median(results[(variant, hi)], "peak_rss_mb") / median(results[(variant, lo)], "peak_rss_mb")
    for variant, ratio in ratios.items():
        print(f"peak driver RSS {sizes[-1]} rows / {sizes[0]} rows, {variant}: {ratio:.3f}")
    return {"results": {f"{v}|{s}": r for (v, s), r in results.items()}, "ratios": ratios}


HEADLINE_SHARE = 0.10  # the costly expert's share of the rows in the headline run
# Actors per expert, sized to each expert's share of the *compute*, not of the rows: the
# 8-layer expert answers 10 % of the rows but, on these long contexts (about 1.4 windows
# a row against 1.0), takes about 60 % of the model time (6.6 s against 4.3 s for the
# 2,850 rows on one thread). With small 2 / large 1 its one actor was the job's critical
# path (steady_state_ratio_t2 0.50); small 1 / large 2 gave 0.93-0.95 (bench/RESULTS.md).
HEADLINE_POOLS = {"small": 1, "large": 2}


def run_headline(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """The figures issue 14 is judged on, from one run of interleaved children:

    * steady-state ratios: routebatch's q/s over the direct loop's (T=2 and T=1 torch
      threads), each steady state being (rows - 64) / (wall - wall of the same job on
      64 rows, started with the same actors), so start-up and shut-down cancel out;
    * the whole-job ratio against the T=1 loop;
    * fixed_cost_s: the whole routebatch job's wall on one 64-row batch;
    * min_batch_fill: the lowest mean fill (forward-pass windows over batch_size) over
      the experts of the routebatch run, in which the 8-layer expert gets about 10 %
      of the rows (a rule router on context length, threshold at the 90 % quantile).

    Every run answers the same questions with the same routing decisions.
    """
    models = build_models(workdir)
    corpus, n_rows = write_corpus(workdir, args.copies, args.shards)
    import numpy as np
    import pyarrow.dataset as pads
    import pyarrow.parquet as pq

    lengths = np.array([len(c) for c in pads.dataset(corpus).to_table(columns=["context"]).column("context").to_pylist()])
    cut = int(np.quantile(lengths, 1 - HEADLINE_SHARE))
    router = {"kind": "rule", "rules": [{"expert": "large", "min_context_chars": cut}], "default": "small"}
    experts = [expert_spec(n, models[n], num_cpus=EXPERT_CPUS, min_actors=k, max_actors=k) for n, k in HEADLINE_POOLS.items()]
    one_batch = workdir / "corpus-one-batch"
    if not one_batch.exists():
        one_batch.mkdir()
        pq.write_table(pads.dataset(corpus).head(ROW_BATCH), one_batch / "part-000.parquet")
    print(f"headline: {n_rows} questions in {args.shards} file(s); router {json.dumps(router)}; pools {HEADLINE_POOLS}, "
          f"{EXPERT_CPUS} CPU each; batch_size {ROW_BATCH} rows, {WINDOW_BATCH} windows per pass", flush=True)
    big = {"corpus": corpus, "rows": n_rows, "batch": ROW_BATCH, "router": router, "experts": experts}
    small = {**big, "corpus": str(one_batch), "rows": ROW_BATCH}
    runs = [
        ("direct T=1", "direct", big, 1), ("direct T=2", "direct", big, 2), ("routebatch", "routebatch", big, 1),
        ("direct T=1, 64 rows", "direct", small, 1), ("direct T=2, 64 rows", "direct", small, 2),
        ("routebatch, 64 rows", "routebatch", small, 1),
        ("routebatch, 64 rows, pools at min_actors", "routebatch", {**small, "pools_at_min_actors": True}, 1),
    ]
    results: dict[str, list[dict]] = {label: [] for label, *_ in runs}
    outputs: dict[str, str] = {}
    for rep in range(args.repeats):
        for label, mode, plan, t in runs:
            out = str(workdir / "out" / f"headline-{_label_path(label)}-{rep}") + (".parquet" if mode == "direct" else "")
            Path(out).parent.mkdir(parents=True, exist_ok=True)
            res = run_child(mode, {**plan, "out": out}, workdir, t)
            results[label].append(res)
            outputs.setdefault(label, out)
            print(f"  [{rep}] {label}: wall {res['wall_s']:.1f} s  {json.dumps({k: v for k, v in res.items() if k != 'wall_s'})}", flush=True)
    wall = {label: median(rs) for label, rs in results.items()}

    def steady(label: str) -> float:
        # A 64-row job starts fewer actors than a long one (batch_job.starting_actors);
        # its reference here starts the same actors, so start-up cancels.
        extra = wall[label] - wall[f"{label}, 64 rows" + (", pools at min_actors" if label == "routebatch" else "")]
        return (n_rows - ROW_BATCH) / extra if extra > 0 else float("nan")

    rb, d1, d2 = steady("routebatch"), steady("direct T=1"), steady("direct T=2")
    fills = [r.get("fill") or {} for r in results["routebatch"]]
    per_expert = {n: statistics.median(f[n] for f in fills if f.get(n) is not None) for n in fills[0] if fills[0][n] is not None}
    agree = agreement(outputs["direct T=1"], outputs["routebatch"])
    shares = {n: v / n_rows for n, v in results["routebatch"][0]["experts"].items()}
    print(f"steady state q/s: routebatch {rb:.1f}, direct T=1 {d1:.1f}, direct T=2 {d2:.1f}")
    print(f"whole job q/s: routebatch {n_rows / wall['routebatch']:.1f}, direct T=1 {n_rows / wall['direct T=1']:.1f}, "
          f"direct T=2 {n_rows / wall['direct T=2']:.1f}")
    print(f"expert shares of the rows: {json.dumps(shares)}; mean batch fill per expert: {json.dumps(per_expert)}")
    print(f"routebatch vs direct: same expert {agree['same_expert']:.2%}, same answer {agree['same_answer']:.2%} of {agree['rows']} rows")
    figures = {
        "steady_state_ratio_t2": rb / d2,
        "steady_state_ratio_t1": rb / d1,
        "whole_job_ratio_t1": (n_rows / wall["routebatch"]) / (n_rows / wall["direct T=1"]),
        "fixed_cost_s": wall["routebatch, 64 rows"],
        "min_batch_fill": min(per_expert.values()) if per_expert else float("nan"),
    }
    print("headline: " + " ".join(f"{k}={v:.3f}" if k != "fixed_cost_s" else f"{k}={v:.1f}" for k, v in figures.items()), flush=True)
    return {"results": results, "figures": figures, "fill": per_expert, "shares": shares}


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="smoke run in < 5 min: one repeat, the 950 questions once, 2 experts, no T=2 direct run, "
                        "no fixed-router run, no memory run")
    p.add_argument("--copies", type=int, help="corpus = this many copies of the 950 questions (default 6; 1 with --quick)")
    p.add_argument("--shards", type=int, default=4, help="Parquet files the throughput corpus is written in (default 4)")
    p.add_argument("--repeats", type=int, help="repeats of every run (default 3; 1 with --quick)")
    p.add_argument("--experts", help="expert counts to run routebatch with (default 2,3; 2 with --quick)")
    p.add_argument("--headline", action="store_true",
                   help="issue 14's figures in < 5 min (2,850 questions, 1 repeat, one expert at ~10 %% of the rows); "
                        "its last line is `headline: steady_state_ratio_t2=... min_batch_fill=...`")
    p.add_argument("--target-only", action="store_true",
                   help="only the runs the issue's targets are judged on: direct T=1 and T=2, routebatch (and its "
                        "previous plan), and ray.init (e.g. with a larger --copies)")
    p.add_argument("--threads", type=int, default=1, help="threads per model process for the Ray runs (default 1)")
    p.add_argument("--no-memory", action="store_true", help="skip the memory run (it is skipped with --quick)")
    p.add_argument("--memory-only", action="store_true", help="only the memory run")
    p.add_argument("--memory-rows", default="100000,1000000")
    p.add_argument("--memory-batch", type=int, default=1024, help="execution.batch_size of the memory run")
    p.add_argument("--memory-shard-rows", type=int, default=10000)
    p.add_argument("--memory-repeats", type=int, default=3)
    p.add_argument("--memory-previous", action="store_true", help="also run the memory check with the previous plan (no block split)")
    p.add_argument("--ray-worker-niceness", type=int, default=0,
                   help="nice value of Ray's worker processes (Ray's own default is 15; 0 = the direct loop's priority)")
    p.add_argument("--workdir", help="where models, corpora and outputs go (default: a new temp dir)")
    p.add_argument("--json", help="also write every raw figure here")
    p.add_argument("--child", choices=sorted(CHILDREN), help=argparse.SUPPRESS)
    p.add_argument("--plan", help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args.child:
        CHILDREN[args.child](json.loads(Path(args.plan).read_text()))
        return 0

    global RAY_WORKER_NICENESS
    RAY_WORKER_NICENESS = args.ray_worker_niceness
    args.copies = args.copies or (1 if args.quick else 3 if args.headline else 6)
    args.repeats = args.repeats or (1 if (args.quick or args.headline) else 3)
    args.experts = [int(k) for k in (args.experts or ("2" if args.quick else "2,3")).split(",")]
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="routebatch-bench-")).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    print(f"routebatch throughput bench; workdir {workdir}; python {sys.version.split()[0]}; nproc {os.cpu_count()}", flush=True)
    report: dict[str, Any] = {"args": vars(args)}
    if args.headline:
        report["headline"] = run_headline(args, workdir)
        if args.json:
            Path(args.json).write_text(json.dumps(report, indent=2, default=str))
        print(f"bench finished in {time.perf_counter() - started:.0f} s", file=sys.stderr)
        # The headline line is the last line on stdout.
        return 0
    if not args.memory_only:
        report["throughput"] = throughput(args, workdir)
    if args.memory_only or not (args.quick or args.no_memory):
        print()
        report["memory"] = memory(args, workdir)
    print(f"\nbench finished in {time.perf_counter() - started:.0f} s")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())

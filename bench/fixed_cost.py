"""Where a small routebatch job's fixed cost goes (issue 14, item 3).

    python bench/fixed_cost.py              # 3 repeats of the 64-row, 2-expert job
    python bench/fixed_cost.py --repeats 1
    python bench/fixed_cost.py --compare-start-cap   # also the plan whose pools start at min_actors

The job is bench/throughput.py's "routebatch, 64 rows" run (same models, same rule
router, same pools and thread settings), run in a fresh child process, timed from the
child's first line. The child wraps the batch job's phases (`pipelines/batch_job.py`)
and its actor stages with timers, so the wall splits into:

* driver imports (routebatch, Ray, pyarrow) before the job starts;
* preflight + input inspection (no cluster);
* `ray.init` and the plan check against the nodes;
* building the Ray Data plan and sampling the router's shares;
* the streaming execution, and inside it, per actor: when its process was created,
  when its constructor was entered (its imports done: unpickling the stage imports
  torch / transformers), and when the constructor returned (model loaded);
* writing the summary and `ray.shutdown`.

Actors start in parallel, so their spans overlap each other and the execution; the
table gives each one's timestamps relative to the job's start.
"""

from __future__ import annotations

_T0_WALL = __import__("time").time()

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
sys.path.insert(0, str(REPO))

TIMINGS_ENV = "ROUTEBATCH_BENCH_TIMINGS"  # the file the child's actors append their spans to


def _actor_span(kind: str, name: str, entered: float, done: float) -> None:
    import psutil

    created = psutil.Process().create_time()
    with open(os.environ[TIMINGS_ENV], "a") as fh:
        fh.write(json.dumps({"kind": kind, "name": name, "pid": os.getpid(), "created": created,
                             "entered": entered, "done": done}) + "\n")


def child(plan: dict) -> None:
    """The job with its phases timed (run in a fresh process)."""
    phases: list[tuple[str, float, float]] = []
    t_imp = time.time()
    import pipelines.batch_job as batch_job
    from operators.stages import AnswerWithExpert, CheckAndRoute
    from routing.core.config import parse_config

    import ray

    phases.append(("driver imports (routebatch, ray, pyarrow)", t_imp, time.time()))

    def timed(name: str, fn):
        def wrapper(*a, **k):
            t = time.time()
            try:
                return fn(*a, **k)
            finally:
                phases.append((name, t, time.time()))
        return wrapper

    class TimedExpert(AnswerWithExpert):
        def __init__(self, spec, *a, **k):
            t = time.time()
            super().__init__(spec, *a, **k)
            _actor_span("expert", spec.name, t, time.time())

    class TimedRouter(CheckAndRoute):
        def __init__(self, *a, **k):
            t = time.time()
            super().__init__(*a, **k)
            _actor_span("router", "check+route", t, time.time())

    if plan.get("no_start_cap"):  # the plan before starting_actors: every pool starts at min_actors
        batch_job.starting_actors = lambda min_actors, rows, share, call_rows: min_actors
    batch_job.expert_stage_class = lambda name: type(f"Expert[{name}]", (TimedExpert,), {})
    batch_job.CheckAndRoute = TimedRouter
    for name, attr in [("preflight", "preflight"), ("inspect input (Parquet footers)", "inspect_input"),
                       ("ray.init", "start_ray"), ("plan check against the nodes", "check_plan_fits"),
                       ("router share sample", "expected_shares"), ("build the Ray Data plan", "build_dataset"),
                       ("shard: execute + write Parquet + marker", "_run_shard"), ("summary", "write_summary")]:
        setattr(batch_job, attr, timed(name, getattr(batch_job, attr)))
    ray.shutdown = timed("ray.shutdown", ray.shutdown)

    from throughput import job_config  # noqa: E402 - the bench's own job, unchanged

    cfg = parse_config(job_config(plan["corpus"], plan["out"], plan["experts"], plan["router"], plan["batch"]))
    t_job = time.time()
    summary = batch_job.run_job(cfg, output=plan["out"], overwrite=True, progress=False)
    t_end = time.time()
    actors = [json.loads(line) for line in Path(os.environ[TIMINGS_ENV]).read_text().splitlines()] if Path(os.environ[TIMINGS_ENV]).exists() else []
    print("RESULT " + json.dumps({
        "t0": _T0_WALL, "job_start": t_job, "end": t_end, "rows": summary.rows_out, "exit_code": summary.exit_code,
        "phases": phases, "actors": actors,
    }), flush=True)


def report(res: dict) -> dict[str, float]:
    """Print one run's breakdown; return the figures that are summed over repeats."""
    t0 = res["t0"]
    print(f"  wall {res['end'] - t0:.1f} s ({res['rows']} rows, exit {res['exit_code']}); times from the child's start:")
    figures = {"wall": res["end"] - t0}
    for name, a, b in sorted(res["phases"], key=lambda p: p[1]):
        print(f"    {a - t0:6.1f} -> {b - t0:6.1f}  {b - a:6.2f} s  {name}")
        figures[name] = figures.get(name, 0.0) + (b - a)
    for act in sorted(res["actors"], key=lambda x: x["created"]):
        imp, load = act["entered"] - act["created"], act["done"] - act["entered"]
        print(f"    actor {act['kind']} {act['name']} (pid {act['pid']}): process at {act['created'] - t0:6.1f}, "
              f"imports+unpickle {imp:5.2f} s, constructor (model load) {load:5.2f} s, ready at {act['done'] - t0:6.1f}")
        figures[f"actor {act['name']} imports"] = imp
        figures[f"actor {act['name']} constructor"] = load
    if res["actors"]:
        last_ready = max(a["done"] for a in res["actors"])
        figures["last actor ready (from child start)"] = last_ready - t0
        print(f"    last actor ready at {last_ready - t0:.1f} s; job end at {res['end'] - t0:.1f} s")
    return figures


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--workdir", help="where models and corpora are built (default: a temp dir)")
    p.add_argument("--compare-start-cap", action="store_true",
                   help="interleave runs of the plan before starting_actors (every pool starts at its min_actors)")
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(json.loads(Path(args.child).read_text()))
        return 0
    import throughput as tp
    import pyarrow.dataset as pads
    import pyarrow.parquet as pq

    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="rb-fixed-"))
    models = tp.build_models(workdir)
    corpus, _ = tp.write_corpus(workdir, 1, 1)
    one = workdir / "corpus-one-batch"
    if not one.exists():
        one.mkdir()
        pq.write_table(pads.dataset(corpus).head(tp.ROW_BATCH), one / "part-000.parquet")
    router = tp.rule_router(corpus, ["small", "large"])
    experts = [tp.expert_spec(n, models[n], num_cpus=tp.EXPERT_CPUS, min_actors=k, max_actors=k) for n, k in tp.HEADLINE_POOLS.items()]
    variants = ["as built", "pools start at min_actors"] if args.compare_start_cap else ["as built"]
    totals: dict[str, list[dict[str, float]]] = {v: [] for v in variants}
    for rep, variant in [(r, v) for r in range(args.repeats) for v in variants]:
        plan = {"corpus": str(one), "out": str(workdir / "out" / f"fixed-{rep}"), "experts": experts, "router": router,
                "batch": tp.ROW_BATCH, "no_start_cap": variant != "as built"}
        plan_path = workdir / f"plan-{rep}.json"
        plan_path.write_text(json.dumps(plan))
        env = {**tp.thread_env(1), TIMINGS_ENV: str(workdir / f"actors-{rep}.jsonl")}
        Path(env[TIMINGS_ENV]).unlink(missing_ok=True)
        proc = subprocess.run([sys.executable, __file__, "--child", str(plan_path)], env=env, capture_output=True, text=True, timeout=900)
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
        if not lines:
            print(proc.stdout[-2000:], proc.stderr[-4000:])
            return 1
        print(f"[{rep}] {variant}")
        totals[variant].append(report(json.loads(lines[-1][len("RESULT "):])))
    for variant, runs in totals.items():
        print(f"medians over repeats (s), {variant}:")
        for key in dict.fromkeys(k for t in runs for k in t):
            vals = [t[key] for t in runs if key in t]
            print(f"  {statistics.median(vals):6.2f}  {key}   ({', '.join(f'{v:.2f}' for v in vals)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

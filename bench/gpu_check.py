"""GPU check (issue 14): a routed job on one GPU with fractional `num_gpus` pools.

    python bench/gpu_check.py            # on a machine with one GPU, < 8 min
    python bench/gpu_check.py --dry-run  # checks the plan without a GPU (runs in CI)

It builds three BERT-style QA models of different sizes (random weights, the MiniLM
tokenizer, as bench/throughput.py does), runs `run_job` with a rule router on context
length that sends about 60/30/10 % of the rows to the small/medium/large expert, each
pool asking for a fraction of the one GPU, and prints:

* the device each expert actor used and the GPU memory it allocated (a probe actor per
  expert with the pool's own resources loads the same runner and answers one batch);
* half precision: on or off (the runner has no half-precision setting: always off);
* rows/s per expert (its rows over its summed expert seconds), and its mean batch fill
  (from the run summary);
* the same job's direct loop (one process, the same runner on cuda:0) on the same GPU;
* last, what it could not measure.

Why a dry run: a device is lent to a session only now and then; the plan (configs,
resource fractions that fit one GPU, models) must already be known to be right then.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

# name -> (layers, hidden, heads): three clearly different costs on a GPU.
GPU_MODELS = {"small": (2, 128, 2), "medium": (6, 384, 6), "large": (12, 768, 12)}
# Fraction of the one GPU each pool's actor asks for: they must sum to at most 1.
GPU_FRACTIONS = {"small": 0.2, "medium": 0.3, "large": 0.4}
SHARES = {"small": 0.6, "medium": 0.3, "large": 0.1}
COPIES = 4  # 3,800 questions
WINDOW_BATCH = 64
ROW_BATCH = 256


def plan(workdir: Path) -> dict[str, Any]:
    """The job config (models not yet built), checked with the project's own parser."""
    from routing.core.config import parse_config

    experts = [
        {
            "name": n, "kind": "hf-extractive-qa", "model": str(workdir / "models" / n),
            "max_seq_len": 384, "doc_stride": 128, "batch_size": WINDOW_BATCH,
            "resources": {"num_cpus": 1, "num_gpus": GPU_FRACTIONS[n]},
            "pool": {"min_actors": 1, "max_actors": 1}, "cost": {"usd_per_gpu_hour": 2.0},
        }
        for n in GPU_MODELS
    ]
    config = {
        "input": {"path": str(workdir / "corpus"), "format": "parquet"},
        "output": {"path": str(workdir / "out"), "overwrite": True},
        "experts": experts,
        # Thresholds filled in from the corpus (quantiles for SHARES) before the run.
        "router": {"kind": "rule", "rules": [{"expert": "large", "min_context_chars": 900},
                                             {"expert": "medium", "min_context_chars": 600}], "default": "small"},
        "ray": {"num_gpus": 1},
        "execution": {"batch_size": ROW_BATCH},
    }
    parse_config(config)
    total = sum(GPU_FRACTIONS.values())
    if total > 1.0 + 1e-9:
        raise SystemExit(f"plan error: GPU fractions sum to {total} > 1")
    return config


def probe(spec: dict) -> dict:
    """Ray actor body: load the runner with the pool's resources, answer one batch,
    report its device and GPU memory."""
    import torch

    from operators.runners.hf_qa import HFExtractiveQARunner
    from routing.core.config import HFExtractiveQAExpert

    runner = HFExtractiveQARunner(HFExtractiveQAExpert.model_validate(spec))
    runner.answer(["x"] * 64, ["What is it?"] * 64, ["It is a test context with some words. " * 20] * 64)
    out = {"device": str(runner.device), "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES")}
    if runner.device.type == "cuda":
        out["gpu_mem_allocated_mb"] = torch.cuda.max_memory_allocated() / 2**20
        out["gpu_mem_reserved_mb"] = torch.cuda.memory_reserved() / 2**20
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dry-run", action="store_true", help="check the plan without a GPU")
    p.add_argument("--workdir")
    args = p.parse_args(argv)
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="routebatch-gpu-")).resolve()
    config = plan(workdir)
    print(f"plan: {len(GPU_MODELS)} experts {json.dumps(GPU_MODELS)}; GPU fractions {json.dumps(GPU_FRACTIONS)} "
          f"(sum {sum(GPU_FRACTIONS.values()):.2f}); target shares {json.dumps(SHARES)}; {COPIES} x 950 questions; "
          f"execution.batch_size {ROW_BATCH}, {WINDOW_BATCH} windows per pass")
    not_measured: list[str] = ["half precision: the hf-extractive-qa runner has no fp16 setting, so it is always off"]
    try:
        import torch

        has_gpu = torch.cuda.is_available() and torch.cuda.device_count() > 0
    except ImportError:
        has_gpu = False
    if args.dry_run or not has_gpu:
        print(f"dry run: config valid, GPU fractions fit one GPU; GPU present: {has_gpu}")
        not_measured += ["device per actor, GPU memory per actor, rows/s per expert, batch fill, direct loop on the GPU: "
                         + ("--dry-run" if args.dry_run else "no GPU on this machine")]
        print("could not measure: " + "; ".join(not_measured))
        return 0 if args.dry_run else 1

    import numpy as np
    import pyarrow.dataset as pads
    import ray

    import throughput as tb
    from pipelines.batch_job import run_job
    from routing.core.config import parse_config

    started = time.perf_counter()
    tb.MODELS = GPU_MODELS
    models = tb.build_models(workdir)
    corpus, n_rows = tb.write_corpus(workdir, COPIES)
    config["input"]["path"] = corpus
    lengths = np.array([len(c) for c in pads.dataset(corpus).to_table(columns=["context"]).column("context").to_pylist()])
    config["router"]["rules"] = [
        {"expert": "large", "min_context_chars": int(np.quantile(lengths, 1 - SHARES["large"]))},
        {"expert": "medium", "min_context_chars": int(np.quantile(lengths, SHARES["small"]))},
    ]
    for e in config["experts"]:
        e["model"] = models[e["name"]]
    cfg = parse_config(config)
    ray.init(num_gpus=1, include_dashboard=False)
    try:
        for e in config["experts"]:
            actor = ray.remote(probe).options(num_cpus=e["resources"]["num_cpus"], num_gpus=e["resources"]["num_gpus"])
            print(f"actor {e['name']} (num_gpus {e['resources']['num_gpus']}): {json.dumps(ray.get(actor.remote(e)))}")
        t = time.perf_counter()
        summary = run_job(cfg, output=config["output"]["path"], overwrite=True, progress=False)
        job_s = time.perf_counter() - t
    finally:
        ray.shutdown()
    print("half precision: off")
    print(f"routed job: {summary.rows_out} rows in {job_s:.1f} s = {summary.rows_out / job_s:.1f} rows/s (exit {summary.exit_code})")
    for name, t in summary.experts.items():
        rate = t.rows / t.expert_seconds if t.expert_seconds else float("nan")
        print(f"expert {name}: {t.rows} rows, {rate:.1f} rows/s of expert time, mean batch fill {t.mean_batch_fill}")
    # The direct loop on the same GPU: route, then each expert over its rows.
    from operators.runners.hf_qa import HFExtractiveQARunner
    from routing.core.config import HFExtractiveQAExpert
    from routing.rules import build_router

    table = pads.dataset(corpus).to_table()
    ids, qs, cs = (table.column(c).to_pylist() for c in ("id", "question", "context"))
    t = time.perf_counter()
    routes = build_router(cfg.router).route(qs, cs)
    for e in config["experts"]:
        runner = HFExtractiveQARunner(HFExtractiveQAExpert.model_validate(e), device="cuda:0")
        mine = [i for i, r in enumerate(routes) if r == e["name"]]
        for lo in range(0, len(mine), ROW_BATCH):
            part = mine[lo:lo + ROW_BATCH]
            runner.answer([ids[i] for i in part], [qs[i] for i in part], [cs[i] for i in part])
    direct_s = time.perf_counter() - t
    print(f"direct loop on the same GPU: {n_rows} rows in {direct_s:.1f} s = {n_rows / direct_s:.1f} rows/s "
          f"(routebatch / direct = {(summary.rows_out / job_s) / (n_rows / direct_s):.3f})")
    not_measured.append("GPU busy fraction over time (no sampler of utilisation is run)")
    print("could not measure: " + "; ".join(not_measured))
    print(f"gpu check finished in {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""A corpus whose blocks do not fit the object store: the job spills to disk and slows
down, but finishes with every row exactly once.

The job starts its own Ray from the config (`ray.object_store_memory_mb: 80`, close to
Ray's minimum) with its session under a temp dir of the test's, so the raylet's log can
show that spilling really happened."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from pipelines import exit_codes
from pipelines.batch_job import run_job
from routing.core.config import parse_config

pytestmark = pytest.mark.ray

WORDS = "alpha beta gamma delta epsilon zeta eta theta iota kappa".split()
N_ROWS = 1_000
CONTEXT_CHARS = 100_000  # 1,000 rows of 100k characters: one ~100 MB file, one ~100 MB block


def test_blocks_larger_than_the_object_store_spill_and_lose_nothing(tmp_path: Path, monkeypatch) -> None:
    import ray

    if ray.is_initialized():  # this test needs a Ray of its own, with a tiny object store
        ray.shutdown()
    src = tmp_path / "in"
    src.mkdir()
    ids = [f"r{i}" for i in range(N_ROWS)]
    with open(src / "big.jsonl", "w") as fh:
        for i, rid in enumerate(ids):
            block = " ".join(WORDS[(i + k) % len(WORDS)] for k in range(20)) + " "
            context = (block * (CONTEXT_CHARS // len(block) + 1))[:CONTEXT_CHARS]
            fh.write(json.dumps({"id": rid, "question": f"What is {i}?", "context": context}) + "\n")
    assert (src / "big.jsonl").stat().st_size > 90 * 1024 * 1024
    (tmp_path / "recorded.json").write_text(json.dumps({rid: rid.upper() for rid in ids}))
    cfg = parse_config(
        {
            "input": {"path": str(src), "format": "jsonl"},
            "output": {"path": str(tmp_path / "out")},
            "experts": [{"name": "rec", "kind": "replay", "predictions": str(tmp_path / "recorded.json")}],
            "router": {"kind": "fixed", "expert": "rec"},
            "ray": {"num_cpus": 2, "num_gpus": 0, "object_store_memory_mb": 80},
            "execution": {"batch_size": 64},
        }
    )
    # A short path of its own: Ray's socket paths must stay under 108 bytes.
    ray_tmp = Path(tempfile.mkdtemp(prefix="rbos", dir="/tmp"))
    monkeypatch.setenv("RAY_TMPDIR", str(ray_tmp))
    try:
        summary = run_job(cfg, progress=False)
        assert not ray.is_initialized()  # the job stopped the Ray it started
        raylet_logs = list(ray_tmp.glob("**/session_*/logs/raylet*.out"))
        assert raylet_logs, f"no raylet log under {ray_tmp}"
        spilled = [line for log in raylet_logs for line in log.read_text(errors="replace").splitlines() if "Spilled" in line]
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)

    rows = pq.read_table(tmp_path / "out", columns=["id", "answer", "error"]).to_pylist()
    assert sorted(r["id"] for r in rows) == sorted(ids)  # every row, exactly once
    assert all(r["error"] is None and r["answer"] == r["id"].upper() for r in rows)
    assert summary.rows_in == summary.rows_out == N_ROWS and summary.exit_code == exit_codes.OK
    assert spilled, "the object store never spilled: the corpus did not put it under pressure"

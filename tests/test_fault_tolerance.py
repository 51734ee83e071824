"""An expert actor dies mid-job; a driver is killed mid-run and the run resumed.
Either way every row comes out exactly once."""

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from local_cluster import run_cli, short_temp_dir, stop_cluster
from pipelines.batch_job import run_job
from routing.core.config import parse_config
from routing.answers.squad import load_squad

REPO = Path(__file__).resolve().parents[1]
SLICE = REPO / "examples" / "data" / "squad-replay-slice"

pytestmark = pytest.mark.ray


def _write_jsonl_shards(folder: Path, n_files: int, per_file: int) -> list[str]:
    gold = load_squad(SLICE / "questions.json")
    folder.mkdir(parents=True)
    ids = []
    for f in range(n_files):
        rows = [gold[(f * per_file + i) % len(gold)] for i in range(per_file)]
        lines = []
        for i, q in enumerate(rows):
            rid = f"{f}-{i}-{q.id}"
            ids.append(rid)
            lines.append(json.dumps({"id": rid, "question": q.question, "context": q.context}))
        (folder / f"part-{f:02d}.jsonl").write_text("\n".join(lines))
    return ids


def test_expert_actor_killed_mid_job_every_row_once(local_ray, tmp_path, tiny_qa_model):
    from ray_state import actors_named

    ids = _write_jsonl_shards(tmp_path / "in", 1, 600)
    cfg = parse_config(
        {
            "input": {"path": str(tmp_path / "in"), "format": "jsonl"},
            "output": {"path": str(tmp_path / "out")},
            "experts": [
                {"name": "tiny", "kind": "hf-extractive-qa", "model": tiny_qa_model, "max_seq_len": 256, "doc_stride": 64,
                 "batch_size": 4, "resources": {"num_cpus": 1}, "cost": {"usd_per_gpu_hour": 1.0}},
            ],
            "router": {"kind": "fixed", "expert": "tiny"},
            "execution": {"batch_size": 4},
        }
    )
    result = {}
    job = threading.Thread(target=lambda: result.setdefault("summary", run_job(cfg, progress=False)))
    job.start()
    killed = None
    deadline = time.time() + 120
    while time.time() < deadline and job.is_alive():
        alive = actors_named("Expert[tiny]", state="ALIVE")
        if alive and alive[0].get("Pid"):
            time.sleep(0.5)  # let it answer a few batches first
            os.kill(alive[0]["Pid"], signal.SIGKILL)
            killed = alive[0]["ActorID"]
            killed_while_running = job.is_alive()
            break
        time.sleep(0.2)
    job.join(timeout=300)
    assert killed is not None, "the expert actor never showed up"
    summary = result["summary"]
    out = pq.read_table(tmp_path / "out").column("id").to_pylist()
    assert sorted(out) == sorted(ids)  # every row, exactly once
    assert summary.rows_in == summary.rows_out == 600 and summary.rows_with_errors == 0
    assert killed_while_running
    # Ray Data either restarted the killed actor or replaced it with a new one.
    tiny = actors_named("Expert[tiny]")
    print([(a["ActorID"][:8], a["State"], a["NumRestarts"]) for a in tiny])
    assert any(a["ActorID"] == killed and a["NumRestarts"] >= 1 for a in tiny) or len(tiny) >= 2


def test_interrupted_run_resumes_without_writing_a_row_twice(tmp_path):
    ids = _write_jsonl_shards(tmp_path / "in", 6, 40)
    preds = {rid: "x" for rid in ids}
    (tmp_path / "preds.json").write_text(json.dumps(preds))
    config = {
        "input": {"path": str(tmp_path / "in"), "format": "jsonl"},
        "output": {"path": str(tmp_path / "out")},
        "experts": [{"name": "rec", "kind": "replay", "predictions": str(tmp_path / "preds.json"), "cost": {"usd_per_item": 0.5}}],
        "router": {"kind": "fixed", "expert": "rec"},
        "ray": {"num_cpus": 2},
        "execution": {"shard_mb": 0.001},  # every file its own shard
    }
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(config))
    cmd = [sys.executable, "-m", "pipelines.cli", "run", str(tmp_path / "job.yaml"), "--no-progress"]
    # Its own Ray temp dir, so that the Ray processes it leaves behind can be found.
    ray_tmp = short_temp_dir("rbray")
    env = {**os.environ, "RAY_TMPDIR": str(ray_tmp)}
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        markers = tmp_path / "out" / "_shards"
        deadline = time.time() + 180
        while time.time() < deadline and proc.poll() is None and len(list(markers.glob("*.json"))) < 2:
            time.sleep(0.1)
        assert proc.poll() is None, "the run finished before it could be interrupted"
        os.killpg(proc.pid, signal.SIGKILL)  # the driver, as a crash or `kill -9` would
        proc.wait()
    finally:
        if proc.poll() is None:  # the test failed before killing it
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        stop_cluster(temp_dir=ray_tmp)  # Ray's own daemons run in sessions of their own
        shutil.rmtree(ray_tmp, ignore_errors=True)
    done_before = len(list(markers.glob("*.json")))
    assert 2 <= done_before < 6 and not (tmp_path / "out" / "_summary.json").exists()

    resumed = run_cli(
        [sys.executable, "-m", "pipelines.cli", "run", "--resume", str(tmp_path / "out"), "--json", "--no-progress"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    summary = json.loads(resumed.stdout[resumed.stdout.index("{"):])
    out = pq.read_table(tmp_path / "out").column("id").to_pylist()
    assert sorted(out) == sorted(ids) and len(out) == len(set(out))
    assert summary["rows_in"] == summary["rows_out"] == 240
    assert summary["rows_from_earlier_attempts"] == 40 * done_before
    assert summary["total_cost_usd"] == pytest.approx(0.5 * 240)

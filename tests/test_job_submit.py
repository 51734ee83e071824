"""`ray job submit --working-dir . -- routebatch run ...` against a Ray head of the
test's own, as the README's "Run on a cluster" section documents it."""

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from local_cluster import free_port, short_temp_dir, stop_cluster

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.ray


def test_ray_job_submit_runs_the_example(tmp_path):
    port, dash, agent = free_port(), free_port(), free_port()
    ray_tmp = short_temp_dir("rbj")  # short: Ray's socket paths must fit 107 bytes
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    env.pop("RAY_ADDRESS", None)
    try:  # from `ray start` on: a start that fails half-way may leave a GCS behind
        subprocess.check_call(
            ["ray", "start", "--head", f"--port={port}", "--num-cpus=2", "--num-gpus=0", "--include-dashboard=true",
             f"--dashboard-port={dash}", "--dashboard-host=127.0.0.1", f"--dashboard-agent-listen-port={agent}",
             f"--temp-dir={ray_tmp}", "--disable-usage-stats"],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        out = tmp_path / "out"
        address = f"http://127.0.0.1:{dash}"
        deadline = time.time() + 60  # the dashboard's job API comes up a little after the head
        while True:
            probe = subprocess.run(["ray", "job", "list", "--address", address], env=env, capture_output=True, text=True)
            if probe.returncode == 0 or time.time() > deadline:
                break
            time.sleep(1)
        for _ in range(15):  # the job agent starts a little after the dashboard answers
            proc = subprocess.run(
                ["ray", "job", "submit", "--address", address, "--working-dir", ".", "--",
                 "routebatch", "run", "examples/squad-replay.yaml", "--output", str(out), "--no-progress"],
                cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
            )
            if "No available agent" not in proc.stderr:
                break
            time.sleep(2)
        assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
        assert "succeeded" in proc.stdout
        summary = json.loads((out / "_summary.json").read_text())
        assert summary["rows_in"] == summary["rows_out"] == 311 and summary["exit_code"] == 0
    finally:
        # Every process of this head: the GCS (which only its port and temp dir name),
        # the raylet, the dashboard and its agents, the job's driver and the workers.
        stop_cluster(port, ray_tmp)
        shutil.rmtree(ray_tmp, ignore_errors=True)

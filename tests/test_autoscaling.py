"""Per-expert GPU pools on an autoscaling cluster (Ray's fake multi-node provider):
GPU nodes are added while the job runs, each expert's actors land only on nodes with
the resources it asked for, and idle nodes are released afterwards.

The scenario runs in its own process with its own Ray cluster (tests/autoscaling_scenario.py),
on a port and in a temp dir chosen here, so that this test ends the cluster even when
the scenario never gets to."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from local_cluster import free_port, short_temp_dir, stop_cluster

HERE = Path(__file__).resolve().parent

pytestmark = pytest.mark.ray


def test_gpu_pools_scale_up_pin_and_release(tmp_path, tiny_qa_model):
    out = tmp_path / "observed.json"
    port, ray_tmp = free_port(), short_temp_dir("rbas")
    try:
        proc = subprocess.run(
            [sys.executable, str(HERE / "autoscaling_scenario.py"), str(out), tiny_qa_model, str(ray_tmp), str(port)],
            capture_output=True, text=True, timeout=600,
        )
    finally:
        # The scenario stops its cluster itself; not when it timed out or was killed.
        stop_cluster(port, ray_tmp)
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert out.exists(), proc.stderr[-3000:]
    obs = json.loads(out.read_text())
    print(json.dumps({k: v for k, v in obs.items() if k != "samples"}, indent=1))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert obs["nodes_before"] == 0
    assert obs["rows_in"] == obs["rows_out"] == 400
    small, large = obs["rows_per_expert"]["small"], obs["rows_per_expert"]["large"]
    assert small > 3 * large > 0  # most traffic to one expert
    assert obs["max_gpu_nodes_during_job"] >= 2  # GPU nodes were added while the job ran
    assert obs["placements"]["small"] and obs["placements"]["large"]
    for where in obs["placements"]["small"]:
        assert where.get("GPU", 0) >= 1 and where.get("gpu_small", 0) >= 1 and "gpu_large" not in where
    for where in obs["placements"]["large"]:
        assert where.get("GPU", 0) >= 1 and where.get("gpu_large", 0) >= 1 and "gpu_small" not in where
    assert obs["released_at_s"] is not None and obs["released_at_s"] > obs["job_finished_s"]

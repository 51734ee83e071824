"""Run one routed job on a local autoscaling Ray cluster and record what happened.

Run as a script in its own process (the test does): `python autoscaling_scenario.py
OUT.json MODEL_DIR RAY_TMP PORT`. It starts a head node with Ray's fake multi-node provider, whose
worker node types advertise (fake) GPUs and GPU-class resources, runs a job whose
router sends most rows to one expert, samples the cluster's nodes while it runs, then
waits for idle nodes to be released, and writes its observations as JSON.

Ray's `AutoscalingCluster.start()` runs `ray stop --force`, which would end every Ray
process on the machine; this script starts and stops only its own cluster instead,
on a port and in a temp dir that the test chose, so that the test can end the cluster
itself when this script is killed or times out before its own `finally` runs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
# A throwaway cluster on loopback for one test: no token between its own processes.
os.environ["RAY_AUTH_MODE"] = "disabled"
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from local_cluster import stop_cluster  # noqa: E402

WORKER_TYPES = {
    "gpu_small": {"resources": {"CPU": 1, "GPU": 1, "gpu_small": 1}, "node_config": {}, "min_workers": 0, "max_workers": 2},
    "gpu_large": {"resources": {"CPU": 1, "GPU": 1, "gpu_large": 1}, "node_config": {}, "min_workers": 0, "max_workers": 1},
}


def cluster_config(gcs_address: str) -> dict:
    return {
        "cluster_name": "routebatch-autoscaling-test",
        "max_workers": 3,
        "upscaling_speed": 1.0,
        "idle_timeout_minutes": 0.1,
        "provider": {
            "type": "fake_multinode",
            "use_node_id_as_ip": True,
            "disable_node_updaters": True,
            "disable_launch_config_check": True,
            "gcs_address": gcs_address,
        },
        "auth": {"ssh_user": "ubuntu"},
        "available_node_types": {
            **WORKER_TYPES,
            "ray.head.default": {"resources": {"CPU": 2}, "node_config": {}, "max_workers": 0},
        },
        "head_node_type": "ray.head.default",
        "file_mounts": {},
        "cluster_synced_files": [],
        "file_mounts_sync_continuously": False,
        "rsync_exclude": [],
        "rsync_filter": [],
        "initialization_commands": [],
        "setup_commands": [],
        "head_setup_commands": [],
        "worker_setup_commands": [],
        "head_start_ray_commands": [],
        "worker_start_ray_commands": [],
    }


def worker_nodes() -> list[dict]:
    import ray

    return [n for n in ray.nodes() if n.get("Alive") and n["Resources"].get("GPU")]


def main(out_path: str, model_dir: str, ray_tmp: str, port: int) -> None:
    import ray

    from pipelines.batch_job import run_job
    from ray_state import actors_named
    from routing.core.config import parse_config
    from routing.answers.squad import load_squad

    ip = "127.0.0.1"
    tmp = Path(tempfile.mkdtemp(prefix="rb-autoscale-"))
    config_file = tmp / "cluster.json"
    config_file.write_text(json.dumps(cluster_config(f"{ip}:{port}")))
    (tmp / "cluster.yaml").write_text(yaml.safe_dump(cluster_config(f"{ip}:{port}")))
    env = {**os.environ, "AUTOSCALER_UPDATE_INTERVAL_S": "1", "RAY_FAKE_CLUSTER": "1"}
    subprocess.check_call(
        ["ray", "start", "--head", f"--port={port}", f"--node-ip-address={ip}", "--num-cpus=2", "--num-gpus=0",
         f"--autoscaling-config={config_file}", "--include-dashboard=false", "--disable-usage-stats",
         f"--temp-dir={ray_tmp}"],
        env=env, stdout=subprocess.DEVNULL,
    )
    obs: dict = {"events": []}
    t0 = time.time()
    try:
        ray.init(address=f"{ip}:{port}", log_to_driver=False)
        obs["nodes_before"] = len(worker_nodes())

        gold = load_squad(HERE.parent / "examples" / "data" / "squad-replay-slice" / "questions.json")
        rows = [gold[i % len(gold)] for i in range(400)]
        src = tmp / "in.jsonl"
        src.write_text("\n".join(json.dumps({"id": f"{i}-{q.id}", "question": q.question, "context": q.context}) for i, q in enumerate(rows)))
        hf = {"kind": "hf-extractive-qa", "model": model_dir, "max_seq_len": 256, "doc_stride": 64, "batch_size": 8}
        job = parse_config(
            {
                "input": {"path": str(src), "format": "jsonl"},
                "output": {"path": str(tmp / "out")},
                "experts": [
                    {**hf, "name": "small", "resources": {"num_gpus": 1, "num_cpus": 1, "custom": {"gpu_small": 1}},
                     "pool": {"min_actors": 1, "max_actors": 2}, "cost": {"usd_per_gpu_hour": 1.0}},
                    {**hf, "name": "large", "resources": {"num_gpus": 1, "num_cpus": 1, "custom": {"gpu_large": 1}},
                     "pool": {"min_actors": 1, "max_actors": 1}, "cost": {"usd_per_gpu_hour": 4.0}},
                ],
                # About 90 % of the rows go to "small".
                "router": {"kind": "rule", "rules": [{"expert": "large", "min_context_chars": 1400}], "default": "small"},
                "ray": {"address": f"{ip}:{port}", "cluster_config": str(tmp / "cluster.yaml")},
                "execution": {"batch_size": 8},
            }
        )
        samples: list[tuple[float, int]] = []
        running = threading.Event()
        running.set()

        def sample() -> None:
            while running.is_set():
                samples.append((time.time() - t0, len(worker_nodes())))
                time.sleep(0.5)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        job_started = time.time() - t0
        summary = run_job(job, progress=False)
        job_finished = time.time() - t0
        running.clear()
        sampler.join()

        nodes = {n["NodeID"]: n["Resources"] for n in ray.nodes()}
        placements = {}
        for name in ("small", "large"):
            placements[name] = [
                {k: v for k, v in nodes.get(a["Address"]["NodeID"], {}).items() if k in ("CPU", "GPU", "gpu_small", "gpu_large")}
                for a in actors_named(f"Expert[{name}]")
            ]
        released_at = None
        deadline = time.time() + 120
        while time.time() < deadline:
            if not worker_nodes():
                released_at = time.time() - t0
                break
            time.sleep(1)
        obs.update(
            {
                "job_started_s": job_started,
                "job_finished_s": job_finished,
                "max_gpu_nodes_during_job": max((n for _, n in samples), default=0),
                "first_gpu_node_s": next((t for t, n in samples if n > 0), None),
                "samples": samples,
                "rows_in": summary.rows_in,
                "rows_out": summary.rows_out,
                "rows_per_expert": {n: t.rows for n, t in summary.experts.items()},
                "placements": placements,
                "released_at_s": released_at,
            }
        )
    finally:
        try:
            ray.shutdown()
        finally:
            stop_cluster(port, Path(ray_tmp))
            Path(out_path).write_text(json.dumps(obs, indent=2))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]))

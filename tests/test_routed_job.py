"""A trained router in the batch job: train-router's checkpoint drives `routebatch run`,
and the job sends each question where the policy, loaded in-process, says."""

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from pipelines.batch_job import run_job
from pipelines.cli import main as cli
from routing.checkpoint import RouterCheckpoint
from routing.config import parse_config
from routing.squad import load_squad

REPO = Path(__file__).resolve().parents[1]
SLICE = REPO / "examples" / "data" / "squad-replay-slice"

pytestmark = pytest.mark.ray


def test_checkpoint_router_routes_the_job_as_the_policy_does(local_ray, tmp_path):
    router_dir = tmp_path / "router"
    rc = cli(["train-router", "--profile", str(SLICE), "--output", str(router_dir), "--encoder", "none", "--all-questions", "--router", "knn"])
    assert rc == 0 and (router_dir / "router.json").exists() and (router_dir / "weights.safetensors").exists()
    costs = json.loads((SLICE / "costs.json").read_text())["experts"]
    budget = 0.5  # per question, in the units of the profile's costs.json (the priciest costs 40)
    cfg = parse_config(
        {
            "input": {"path": str(SLICE / "questions.json"), "format": "squad"},
            "output": {"path": str(tmp_path / "out")},
            "experts": [
                {"name": n, "kind": "replay", "predictions": str(SLICE / "predictions" / f"{n}.json"), "cost": {"usd_per_item": c["cost"] / 10000}}
                for n, c in costs.items()
            ],
            "router": {"checkpoint": str(router_dir), "budget_per_item": budget},
        }
    )
    summary = run_job(cfg, progress=False)
    rows = {r["id"]: r for r in pq.read_table(tmp_path / "out").to_pylist()}
    gold = load_squad(SLICE / "questions.json")
    assert summary.rows_in == summary.rows_out == len(gold) == len(rows)

    policy = RouterCheckpoint.load(str(router_dir)).policy(budget_per_item=budget)
    expected = policy.route([q.question for q in gold], [q.context for q in gold])
    assert [rows[q.id]["expert"] for q in gold] == expected
    assert len(set(expected)) >= 2  # a real mix, not one expert
    mean_cost = sum(r["cost_usd"] for r in rows.values()) / len(rows)
    assert mean_cost < max(c["cost"] for c in costs.values()) / 10000  # cheaper than the priciest on everything

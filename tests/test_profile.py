"""`routebatch profile` on replay experts: the replay layout it writes, and adaptive stopping."""

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from pipelines.profiling import run_profile
from routing.core.config import load_config
from routing.answers.squad import load_squad, score_one

REPO = Path(__file__).resolve().parents[1]
SLICE = REPO / "examples" / "data" / "squad-replay-slice"

pytestmark = pytest.mark.ray


def test_full_profile_writes_replay_layout_scored_against_gold(local_ray, tmp_path):
    cfg = load_config(REPO / "examples" / "squad-replay.yaml")
    out = tmp_path / "prof"
    summary = run_profile(cfg, sample_size=60, output=str(out), batch=20, adaptive=False, seed=3)
    assert summary["labels"] == "gold" and summary["profiled"] == 60
    gold = {q.id: q for q in load_squad(SLICE / "questions.json")}
    written = load_squad(out / "questions.json")
    assert len(written) == 60 and all(q.id in gold for q in written)
    assert all(q.answers == gold[q.id].answers for q in written)
    recorded = json.loads((SLICE / "predictions" / "nlnet-single.json").read_text())
    preds = json.loads((out / "predictions" / "nlnet-single.json").read_text())
    assert preds == {q.id: recorded[q.id] for q in written}
    results = pq.read_table(out / "results.parquet").to_pylist()
    assert len(results) == 60 * 3
    for r in results[:20]:
        q = gold[r["id"]]
        assert r["f1"] == pytest.approx(score_one(r["answer"], () if q.is_impossible else q.answers)[1])
    costs = json.loads((out / "costs.json").read_text())["experts"]
    assert costs["bert-large-single-v2"]["cost"] == pytest.approx(0.001)
    assert costs["nlnet-single"]["items"] == 60


def test_adaptive_profile_stops_early_on_a_large_corpus(local_ray, tmp_path):
    cfg = load_config(REPO / "examples" / "squad-replay.yaml")
    summary = run_profile(cfg, sample_size=200, output=str(tmp_path / "p"), batch=20, adaptive=True)
    assert summary["reference"] == "bert-large-single-v2"  # the costliest by measurement
    assert summary["profiled"] < 200 and summary["stopped"].startswith("expected saving")
    assert summary["mix_plan"]["feasible"]
    assert sum(summary["mix_plan"]["fractions"].values()) == pytest.approx(1.0)


def test_an_expert_that_fails_on_a_question_scores_it_wrong(local_ray, tmp_path):
    """r-net-plus-ensemble has recordings for answerable questions only; on the others
    it fails. Scored as the empty answer it would be right on every unanswerable
    question it could not read, and the profile would rank it near the top."""
    cfg = load_config(REPO / "examples" / "squad-cascade.yaml")
    run_profile(cfg, sample_size=60, output=str(tmp_path / "p"), batch=30, adaptive=False, seed=5)
    results = [r for r in pq.read_table(tmp_path / "p" / "results.parquet").to_pylist() if r["expert"] == "r-net-plus-ensemble"]
    failed = [r for r in results if r["error"] is not None]
    assert failed and all(r["f1"] == 0.0 and r["em"] == 0.0 for r in failed)
    preds = json.loads((tmp_path / "p" / "predictions" / "r-net-plus-ensemble.json").read_text())
    assert set(preds) == {r["id"] for r in results if r["error"] is None}

"""A trained router in the batch job: train-router's checkpoint drives `routebatch run`,
and the job sends each question where the policy, loaded in-process, says."""

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from pipelines.batch_job import run_job
from pipelines.cli import main as cli
from routing.routers.checkpoint import RouterCheckpoint
from routing.core.config import parse_config
from routing.answers.squad import load_squad

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


CASCADE_PRICES = {  # usd_per_item, and the final expert also pays per input token
    "nlnet-single": 0.0002,
    "r-net-plus-ensemble": 0.0003,  # recorded only for answerable questions: fails on the rest
    "slqa-plus-ensemble": 0.0004,
    "bert-large-single-v2": 0.001,
    "bidaf-self-attention-elmo": 0.0002,  # defined but never asked by the cascade
}
FINAL_PER_1K_INPUT = 0.0001


def _recorded(name: str) -> dict[str, str]:
    """An expert's answers as the replay expert gives them (null recorded = "")."""
    data = json.loads((SLICE / "predictions" / f"{name}.json").read_text())
    return {str(k): "" if v is None else str(v) for k, v in data.items()}


@pytest.mark.parametrize(
    "router",
    [
        {"stages": ["nlnet-single", "r-net-plus-ensemble", "slqa-plus-ensemble"], "agreement": 0.8, "quorum": 2,
         "quality": {"nlnet-single": 0.75, "r-net-plus-ensemble": 0.86, "slqa-plus-ensemble": 0.84}},
        {"stages": ["r-net-plus-ensemble", "slqa-plus-ensemble", "nlnet-single"], "agreement": 0.5, "quorum": 3},
    ],
    ids=["quorum2", "unanimous"],
)
def test_cascade_router_answers_as_cascade_decide_and_pays_for_every_expert_asked(local_ray, tmp_path, router):
    import numpy as np

    from routing.cascades.agreement_plan import cascade_decide, pairwise_agreement

    router = {"kind": "cascade", "final": "bert-large-single-v2", **router}
    names = list(CASCADE_PRICES)
    experts = [
        {"name": n, "kind": "replay", "predictions": str(SLICE / "predictions" / f"{n}.json"),
         "cost": {"usd_per_item": CASCADE_PRICES[n], **({"usd_per_1k_input_tokens": FINAL_PER_1K_INPUT} if n == router["final"] else {})}}
        for n in reversed(names)  # config order is not cascade order
    ]
    cfg = parse_config(
        {
            "input": {"path": str(SLICE / "questions.json"), "format": "squad"},
            "output": {"path": str(tmp_path / "out")},
            "experts": experts,
            "router": router,
            "execution": {"batch_size": 64},
        }
    )
    summary = run_job(cfg, progress=False)
    table = pq.read_table(tmp_path / "out")
    gold = load_squad(SLICE / "questions.json")
    ids = table.column("id").to_pylist()
    assert sorted(ids) == sorted(q.id for q in gold) and len(set(ids)) == len(gold)  # every row exactly once
    assert summary.rows_in == summary.rows_out == len(gold) and summary.rows_with_errors == 0
    assert "cascade_trail" not in table.column_names and "consulted" in table.column_names
    rows = {r["id"]: r for r in table.to_pylist()}

    # The same decision offline, on the same recorded answers (None where an expert has none).
    recorded = {n: _recorded(n) for n in names}
    answers = [[recorded[n].get(q.id) for n in names] for q in gold]
    stages = [names.index(s) for s in router["stages"]]
    final = names.index(router["final"])
    quality = np.zeros(len(names))
    quality[stages] = [router["quality"][s] for s in router["stages"]] if "quality" in router else range(len(stages))
    bits = 2.0 ** np.arange(len(names))  # one bit per expert: the cost paid says who was asked
    choice, paid = cascade_decide(
        pairwise_agreement(answers, stages), stages, final, quality, bits, router["agreement"], len(gold), router["quorum"]
    )
    order = [*stages, final]
    for i, q in enumerate(gold):
        row = rows[q.id]
        asked = [names[j] for j in order if int(paid[i]) & (1 << j)]
        assert row["expert"] == names[choice[i]] and row["answer"] == answers[i][choice[i]], q.id
        assert row["consulted"] == ">".join(asked), q.id
        tokens = len(q.question.split()) + len(q.context.split())
        expected = sum(CASCADE_PRICES[n] for n in asked if q.id in recorded[n]) + (
            FINAL_PER_1K_INPUT * tokens / 1000 if router["final"] in asked else 0.0
        )
        assert row["cost_usd"] == pytest.approx(expected, rel=1e-9, abs=1e-15), q.id
        assert row["input_tokens"] == tokens * len(asked), q.id
    # Both ends of the cascade happen on this slice, and the unused expert is never asked.
    assert 0 < sum(r["expert"] == router["final"] for r in rows.values()) < len(rows)
    assert not any("bidaf" in r["consulted"] for r in rows.values())
    # Totals still add up: every row's whole cost sits with the expert that answered it.
    assert summary.total_cost_usd == pytest.approx(sum(r["cost_usd"] for r in rows.values()))
    assert sum(t.rows for t in summary.experts.values()) == len(gold)


def test_learned_cascade_router_answers_as_the_fitted_model_and_pays_for_every_expert_asked(local_ray, tmp_path):
    import numpy as np

    from routing.cascades.checkpoint import save_learned_cascade
    from routing.cascades.learned import LearnedCascade
    from routing.replay.data import load_replay

    chain = ["nlnet-single", "r-net-plus-ensemble", "slqa-plus-ensemble", "bert-large-single-v2"]
    fitted = LearnedCascade(chain=chain, l2=(1.0,)).fit(load_replay(SLICE))
    save_learned_cascade(fitted, tmp_path / "router", info={})
    names = list(CASCADE_PRICES)
    final = chain[-1]
    experts = [
        {"name": n, "kind": "replay", "predictions": str(SLICE / "predictions" / f"{n}.json"),
         "cost": {"usd_per_item": CASCADE_PRICES[n], **({"usd_per_1k_input_tokens": FINAL_PER_1K_INPUT} if n == final else {})}}
        for n in reversed(names)  # config order is not chain order
    ]
    theta = 0.6
    cfg = parse_config(
        {
            "input": {"path": str(SLICE / "questions.json"), "format": "squad"},
            "output": {"path": str(tmp_path / "out")},
            "experts": experts,
            "router": {"kind": "learned-cascade", "checkpoint": str(tmp_path / "router"), "threshold": theta},
            "execution": {"batch_size": 64},
        }
    )
    summary = run_job(cfg, progress=False)
    table = pq.read_table(tmp_path / "out")
    gold = load_squad(SLICE / "questions.json")
    assert sorted(table.column("id").to_pylist()) == sorted(q.id for q in gold)  # every row exactly once
    assert summary.rows_in == summary.rows_out == len(gold) and summary.rows_with_errors == 0
    rows = {r["id"]: r for r in table.to_pylist()}

    # The same decisions offline, from the same recorded answers (None where r-net has none).
    recorded = {n: _recorded(n) for n in chain}
    trails = [[recorded[n].get(q.id) for n in chain] for q in gold]
    bits = 2.0 ** np.arange(len(chain))  # one bit per chain expert: the cost paid says who was asked
    choice, paid = fitted.model_.__class__(fitted.model_.chain, bits, fitted.model_.weights, fitted.model_.l2).decide(trails, theta)
    for i, q in enumerate(gold):
        row = rows[q.id]
        asked = [chain[j] for j in range(len(chain)) if int(paid[i]) & (1 << j)]
        assert row["expert"] == chain[choice[i]] and row["answer"] == trails[i][choice[i]], q.id
        assert row["consulted"] == ">".join(asked), q.id
        tokens = len(q.question.split()) + len(q.context.split())
        expected = sum(CASCADE_PRICES[n] for n in asked if q.id in recorded[n]) + (
            FINAL_PER_1K_INPUT * tokens / 1000 if final in asked else 0.0
        )
        assert row["cost_usd"] == pytest.approx(expected, rel=1e-9, abs=1e-15), q.id
    # Some rows stop early, some go all the way, and the unused expert is never asked.
    lengths = {r["consulted"].count(">") + 1 for r in rows.values()}
    assert 1 in lengths or 2 in lengths
    assert len(chain) in lengths
    assert not any("bidaf" in r["consulted"] for r in rows.values())
    assert summary.total_cost_usd == pytest.approx(sum(r["cost_usd"] for r in rows.values()))

    # An accuracy target the held-out outcomes cannot certify: the final expert alone.
    strict = cfg.model_copy(update={
        "router": cfg.router.model_copy(update={"threshold": None, "accuracy_target": 1.0}),
        "output": cfg.output.model_copy(update={"path": str(tmp_path / "strict")}),
    })
    run_job(strict, progress=False)
    strict_rows = pq.read_table(tmp_path / "strict").to_pylist()
    assert len(strict_rows) == len(gold)
    assert all(r["expert"] == final and r["consulted"] == final and r["answer"] == recorded[final].get(r["id"]) for r in strict_rows)


def test_learned_cascade_checkpoint_problems_fail_before_ray_starts(tmp_path):
    from pipelines.batch_job import preflight
    from routing.cascades.checkpoint import save_learned_cascade
    from routing.core.config import ConfigError
    from routing.cascades.learned import LearnedCascade
    from routing.replay.data import load_replay

    fitted = LearnedCascade(chain=["nlnet-single", "slqa-plus-ensemble"], l2=(1.0,)).fit(load_replay(SLICE))
    save_learned_cascade(fitted, tmp_path / "router", info={})

    def config(router):
        return parse_config({
            "input": {"path": str(SLICE / "questions.json"), "format": "squad"},
            "output": {"path": str(tmp_path / "out")},
            "experts": [{"name": "nlnet-single", "kind": "replay", "predictions": str(SLICE / "predictions" / "nlnet-single.json")}],
            "router": router,
        })

    with pytest.raises(ConfigError, match=r"asks expert\(s\) \['slqa-plus-ensemble'\]"):
        preflight(config({"kind": "learned-cascade", "checkpoint": str(tmp_path / "router")}), str(tmp_path / "out"), False)
    with pytest.raises(ConfigError, match="router.checkpoint"):
        preflight(config({"kind": "learned-cascade", "checkpoint": str(tmp_path / "nowhere")}), str(tmp_path / "out"), False)
    with pytest.raises(ConfigError, match="threshold"):
        config({"kind": "learned-cascade", "checkpoint": str(tmp_path / "router"), "threshold": 1.5})
    with pytest.raises(ConfigError, match="choose one of threshold, budget_per_item, accuracy_target"):
        config({"kind": "learned-cascade", "checkpoint": str(tmp_path / "router"), "threshold": 0.5, "budget_per_item": 1.0})


def test_a_learned_cascade_that_skips_cheap_experts_by_the_question_runs_in_the_job_as_offline(local_ray, tmp_path):
    """The skip gate in the batch job: the router actor starts a row past the experts its
    question says will fail, the row's trail carries their empty answers, nobody pays
    for them, and every row's answer, expert and cost equal the offline decision."""
    from routing.cascades.checkpoint import save_learned_cascade
    from routing.cascades.learned import LearnedCascade
    from routing.features.featurizer import RouterFeaturizer
    from routing.replay.data import load_replay
    from tests.test_learned_cascade import _when_synthetic

    train_dir, _ = _when_synthetic(tmp_path / "train", seed=4)
    test_dir, when = _when_synthetic(tmp_path / "test", n_per_article=30, seed=5)
    train, test = load_replay(train_dir), load_replay(test_dir)
    fz = RouterFeaturizer(encoder=None).fit(train.question_texts, train.contexts, train.f1)
    fitted = LearnedCascade().fit(train, fz.transform(train.question_texts, train.contexts))
    assert fitted.model_.gate is not None
    save_learned_cascade(fitted, tmp_path / "router", info={}, featurizer=fz)
    prices = {"A": 0.001, "F": 0.01}
    cfg = parse_config(
        {
            "input": {"path": str(test_dir / "questions.json"), "format": "squad"},
            "output": {"path": str(tmp_path / "out")},
            "experts": [{"name": n, "kind": "replay", "predictions": str(test_dir / "predictions" / f"{n}.json"),
                         "cost": {"usd_per_item": p}} for n, p in prices.items()],
            "router": {"kind": "learned-cascade", "checkpoint": str(tmp_path / "router")},
            "execution": {"batch_size": 16},
        }
    )
    summary = run_job(cfg, progress=False)
    rows = {r["id"]: r for r in pq.read_table(tmp_path / "out").to_pylist()}
    assert sorted(rows) == sorted(q.id for q in test.questions) and summary.rows_with_errors == 0
    theta = float(fitted.thresholds_[fitted.pick()])
    choice, _ = fitted.model_.decide(fitted.trails(test), theta, fz.transform(test.question_texts, test.contexts))
    chain = fitted.model_.chain
    for q, pos in zip(test.questions, choice):
        row = rows[q.id]
        assert row["expert"] == chain[pos] and row["answer"] == test.answers[test.questions.index(q)][test.expert_names.index(chain[pos])]
        assert row["consulted"] == ("F" if when[q.id] else "A"), q.id  # "When" questions skip A, unpaid
        assert row["cost_usd"] == pytest.approx(prices[row["consulted"]]), q.id

"""The SMART replay on the paper's published profiles, and the bench-smart command."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pipelines.cli import main
from routing.evaluation.smart_profiles import PRICES_PER_1K, DatasetProfile, cost_check, load_profiles
from routing.evaluation.smart_sim import (
    DELTAS,
    RunResult,
    SimSettings,
    agreement_draws,
    candidate_models,
    run_smart_sim,
    simulate_job,
    summarize,
)


@pytest.fixture(scope="module")
def profiles_path(reference_data: Path) -> Path:
    return reference_data / "smart_profiles.csv"


@pytest.fixture(scope="module")
def datasets(profiles_path: Path) -> dict[str, DatasetProfile]:
    return load_profiles(profiles_path)


@pytest.fixture(scope="module")
def paper_runs(datasets: dict[str, DatasetProfile]) -> list[RunResult]:
    """The paper's experiment: 3 datasets x 10 deltas x 10 seeds at confidence 0.95."""
    return run_smart_sim(datasets.values(), DELTAS, seeds=10)


def test_profiles_load_with_prices_that_reproduce_the_published_costs(datasets: dict[str, DatasetProfile]) -> None:
    assert sorted(datasets) == ["ag_news", "imdb", "sms_spam"]
    assert {ds.items for ds in datasets.values()} == {50_000, 5_574, 127_600}
    for ds in datasets.values():
        assert set(ds.models) == set(PRICES_PER_1K)
        assert ds.models["gpt-4"].conformity == 1.0
        costs = ds.costs_per_item()
        assert max(costs, key=costs.get) == "gpt-4"
    for per_model in cost_check(datasets).values():
        assert max(per_model.values()) < 1e-9


def test_agreement_draws_follow_conformity(datasets: dict[str, DatasetProfile]) -> None:
    ds = datasets["ag_news"]
    models = candidate_models(ds)
    draws = agreement_draws(ds.conformity(), models, ds.items, seed=3)
    assert draws.shape == (ds.items, len(models))
    for j, m in enumerate(models):
        p = ds.conformity()[m]
        assert abs(draws[:, j].mean() - p) <= 4 * np.sqrt(p * (1 - p) / ds.items) + 1e-12
    assert np.array_equal(draws, agreement_draws(ds.conformity(), models, ds.items, seed=3))


def test_targets_met_on_at_least_95_percent_of_runs_per_dataset(paper_runs: list[RunResult]) -> None:
    for name in ("imdb", "sms_spam", "ag_news"):
        runs = [r for r in paper_runs if r.dataset == name]
        assert len(runs) == len(DELTAS) * 10
        met = np.mean([r.met for r in runs])
        assert met >= 0.95, f"{name}: only {met:.0%} of runs met their target"
        # `met` must agree with the accuracy it summarises.
        for r in runs:
            assert r.met == (r.realised_accuracy >= 1 - r.delta - 1e-12)


def test_every_setting_saves_money_and_loose_targets_save_a_lot(paper_runs: list[RunResult]) -> None:
    summaries = summarize(paper_runs)
    assert len(summaries) == 3 * len(DELTAS)
    for s in summaries:
        assert s.savings > 1.0, s
    for name in ("imdb", "sms_spam", "ag_news"):
        rows = sorted((s for s in summaries if s.dataset == name), key=lambda s: s.delta)
        # A looser target never costs much more (allowing for seed noise)...
        for tighter, looser in zip(rows, rows[1:]):
            assert looser.mean_relative_cost <= tighter.mean_relative_cost * 1.1
        # ...and at delta = 0.2 the cheap models take nearly all the work.
        assert rows[-1].savings > 10


def test_run_accounting_adds_up(paper_runs: list[RunResult], datasets: dict[str, DatasetProfile]) -> None:
    for r in paper_runs[:: len(DELTAS) + 1]:
        ds = datasets[r.dataset]
        costs = ds.costs_per_item()
        assert r.items_profiled + sum(r.allocation.values()) == r.items
        plan_cost = sum(costs[m] * n for m, n in r.allocation.items())
        assert r.total_cost == pytest.approx(r.profiling_cost + plan_cost, rel=1e-9)
        assert r.reference_cost == pytest.approx(r.items * costs["gpt-4"])
        assert r.savings == pytest.approx(r.reference_cost / r.total_cost)
        # Profiling runs the reference on every profiled item, so it costs at least that.
        assert r.profiling_cost >= r.items_profiled * costs["gpt-4"] - 1e-9


def test_same_seed_same_result(datasets: dict[str, DatasetProfile]) -> None:
    ds = datasets["sms_spam"]
    draws = agreement_draws(ds.conformity(), candidate_models(ds), ds.items, seed=11)
    first = simulate_job(ds, 0.1, draws, seed=11)
    second = simulate_job(ds, 0.1, draws.copy(), seed=11)
    assert first == second


def test_mix_is_no_dearer_than_single_model_on_the_same_draws(datasets: dict[str, DatasetProfile]) -> None:
    ds = datasets["sms_spam"]
    draws = agreement_draws(ds.conformity(), candidate_models(ds), ds.items, seed=2)
    for delta in (0.04, 0.1):
        mix = simulate_job(ds, delta, draws, seed=2)
        single = simulate_job(ds, delta, draws, seed=2, settings=SimSettings(strategy="single"))
        # Same profiling, so the plans alone differ; rounding moves at most one item.
        assert mix.items_profiled == single.items_profiled
        assert mix.total_cost <= single.total_cost + ds.costs_per_item()["gpt-4"]


def test_bench_smart_command(profiles_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "smart.json"
    code = main(["bench-smart", "--profiles", str(profiles_path), "--json", str(out), "--seeds", "1"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "imdb" in printed and "sms_spam" in printed and "ag_news" in printed
    document = json.loads(out.read_text())
    assert document["settings"]["seeds"] == 1
    assert document["settings"]["confidence"] == 0.95
    assert len(document["runs"]) == 3 * len(DELTAS)
    assert len(document["summary"]) == 3 * len(DELTAS)
    assert {"met_share", "mean_relative_cost", "savings"} <= set(document["summary"][0])


def test_bench_smart_rejects_a_missing_file(tmp_path: Path) -> None:
    code = main(["bench-smart", "--profiles", str(tmp_path / "nope.csv"), "--json", str(tmp_path / "o.json")])
    assert code != 0
    assert not (tmp_path / "o.json").exists()

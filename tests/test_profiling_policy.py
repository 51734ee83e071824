"""The adaptive profiler: per-model decisions, the overall stopping rule and the plan."""

from __future__ import annotations

import numpy as np
import pytest

from routing.calibration.model_mix import remaining_target
from routing.calibration.profiling_policy import AdaptiveProfiler, ModelState

COSTS = {"ref": 10.0, "good": 1.0, "weak": 2.0}


def _profile(profiler: AdaptiveProfiler, rates: dict[str, float], seed: int = 0) -> int:
    """Run the profiling loop the way a job would, with simulated agreement; returns
    the number of items profiled."""
    rng = np.random.default_rng(seed)
    while not profiler.should_stop():
        size = profiler.next_batch_size
        for model in profiler.active_models():
            profiler.observe(model, rng.random(size) < rates[model])
    return profiler.items_profiled


def test_clearly_weak_model_is_dropped() -> None:
    # "weak" costs more than "good" and agrees far less often: no plan needs it.
    profiler = AdaptiveProfiler(COSTS, "ref", 0.95, 0.95, total_items=100_000)
    profiler.update("good", 97, 100)
    profiler.update("weak", 30, 100)
    assert profiler.state("weak") is ModelState.DOMINATED
    assert profiler.active_models() == ["good"]
    # The decision is sticky: a lucky streak afterwards does not bring it back.
    profiler.update("weak", 100, 100)
    assert "weak" not in profiler.active_models()


def test_cheap_unreliable_model_stays_useful_to_the_mix() -> None:
    # Cheaper than everything else, the program can spend the error budget on it, so
    # it is not dominated even though it is often wrong.
    costs = {"ref": 10.0, "good": 1.0, "junk": 0.1}
    profiler = AdaptiveProfiler(costs, "ref", 0.8, 0.95, total_items=100_000)
    profiler.update("good", 99, 100)
    profiler.update("junk", 30, 100)
    assert profiler.state("junk") is ModelState.ACTIVE


def test_model_that_surely_meets_the_target_is_no_longer_profiled() -> None:
    profiler = AdaptiveProfiler(COSTS, "ref", 0.9, 0.95, total_items=100_000)
    profiler.update("good", 300, 300)
    profiler.update("weak", 280, 300)
    assert profiler.lower_bounds()["good"] >= profiler.planning_target()
    assert profiler.state("good") is ModelState.MEETS_TARGET
    assert "good" not in profiler.active_models()


def test_undecided_models_stay_active() -> None:
    profiler = AdaptiveProfiler(COSTS, "ref", 0.95, 0.95, total_items=100_000)
    profiler.update("good", 19, 20)
    profiler.update("weak", 18, 20)
    assert profiler.active_models() == ["good", "weak"]


def test_easy_case_stops_long_before_the_sample_runs_out() -> None:
    costs = {"ref": 10.0, "good": 0.3, "fair": 0.2, "poor": 0.5}
    profiler = AdaptiveProfiler(costs, "ref", 0.9, 0.95, total_items=200_000, batch=20)
    profiled = _profile(profiler, {"good": 0.99, "fair": 0.7, "poor": 0.5})
    assert profiled <= 1_000  # 0.5% of the job
    plan = profiler.plan()
    assert plan.fractions["good"] >= 0.9
    assert plan.accuracy_lower >= profiler.planning_target() - 1e-9


def test_hard_case_keeps_profiling_while_it_pays() -> None:
    # A cheap model near the target in a huge job: tighter bounds are worth a lot,
    # so one batch is far from enough...
    costs = {"ref": 10.0, "cheap": 0.3}
    profiler = AdaptiveProfiler(costs, "ref", 0.95, 0.95, total_items=1_000_000, batch=20)
    profiler.update("cheap", 19, 20)
    assert not profiler.should_stop()
    saving, cost = profiler.profiling_tradeoff()
    assert saving > cost
    # ...but it does stop eventually, with a sample much smaller than the job.
    profiled = _profile(profiler, {"cheap": 0.97}, seed=1)
    assert 200 < profiled < 100_000


def test_stops_after_the_first_batch_when_profiling_cannot_pay() -> None:
    # The cheap model saves at most 10% of the reference's price per item, while
    # profiling an item costs nearly twice the reference: a 1,000-item job cannot
    # recover more batches.
    costs = {"ref": 10.0, "cheap": 9.0}
    profiler = AdaptiveProfiler(costs, "ref", 0.95, 0.95, total_items=1_000, batch=20)
    assert not profiler.should_stop()  # no evidence yet: one batch is always profiled
    profiler.update("cheap", 19, 20)
    assert profiler.active_models() == ["cheap"]
    saving, cost = profiler.profiling_tradeoff()
    assert saving <= cost
    assert profiler.should_stop()


def test_stops_when_fewer_items_remain_than_a_batch() -> None:
    # Profiling the last 10 items means answering them with the reference *and* the
    # cheap model: never cheaper than any plan for them.
    profiler = AdaptiveProfiler({"ref": 10.0, "cheap": 0.3}, "ref", 0.95, 0.95, total_items=30, batch=20)
    profiler.update("cheap", 19, 20)
    assert profiler.remaining_items == 10
    assert profiler.should_stop()


def test_profiling_cost_counts_reference_and_active_models() -> None:
    profiler = AdaptiveProfiler(COSTS, "ref", 0.95, 0.95, total_items=100_000)
    assert profiler.profiling_cost_per_item() == pytest.approx(13.0)
    profiler.update("good", 97, 100)
    profiler.update("weak", 30, 100)
    assert profiler.profiling_cost_per_item() == pytest.approx(11.0)


def test_no_active_models_means_stop() -> None:
    profiler = AdaptiveProfiler({"ref": 10.0, "good": 1.0}, "ref", 0.8, 0.95, total_items=100_000)
    profiler.update("good", 200, 200)
    assert profiler.active_models() == []
    assert profiler.should_stop()
    assert profiler.plan().models_used == ["good"]


def test_targets_account_for_profiled_items_and_outcome_scatter() -> None:
    profiler = AdaptiveProfiler(COSTS, "ref", 0.95, 0.95, total_items=10_000)
    profiler.update("good", 950, 1_000)
    profiler.update("weak", 900, 1_000)
    assert profiler.remaining_target() == pytest.approx(remaining_target(0.95, 10_000, 1_000))
    assert profiler.planning_target() > profiler.remaining_target()
    expected = AdaptiveProfiler(COSTS, "ref", 0.95, 0.95, total_items=10_000, guarantee="expected")
    expected.update("good", 950, 1_000)
    expected.update("weak", 900, 1_000)
    assert expected.planning_target() == pytest.approx(expected.remaining_target())
    # The realised guarantee splits the budget over one more event, so bounds are lower.
    assert profiler.lower_bounds()["good"] < expected.lower_bounds()["good"]
    assert profiler.plan().cost_per_item >= expected.plan().cost_per_item


def test_same_observations_same_decisions() -> None:
    runs = []
    for _ in range(2):
        profiler = AdaptiveProfiler({"ref": 10.0, "a": 0.5, "b": 1.0}, "ref", 0.92, 0.95, total_items=50_000)
        profiled = _profile(profiler, {"a": 0.9, "b": 0.96}, seed=5)
        runs.append((profiled, profiler.counts(), profiler.plan().fractions))
    assert runs[0] == runs[1]


def test_observe_and_update_validate_input() -> None:
    profiler = AdaptiveProfiler(COSTS, "ref", 0.95, 0.95, total_items=100)
    profiler.observe("good", [True, False, True])
    assert profiler.counts()["good"] == (2, 3)
    assert profiler.items_profiled == 3
    with pytest.raises(ValueError):
        profiler.update("ref", 1, 1)
    with pytest.raises(KeyError):
        profiler.update("other", 1, 1)
    with pytest.raises(ValueError):
        profiler.update("good", 5, 4)
    with pytest.raises(ValueError):
        profiler.update("good", 0, 98)  # more items than the job has
    with pytest.raises(ValueError):
        AdaptiveProfiler(COSTS, "missing", 0.95, 0.95, total_items=100)
    with pytest.raises(ValueError):
        AdaptiveProfiler(COSTS, "ref", 1.5, 0.95, total_items=100)


def test_batches_grow_with_the_sample_but_never_past_the_job() -> None:
    profiler = AdaptiveProfiler(COSTS, "ref", 0.95, 0.95, total_items=5_000, batch=20, growth=0.1)
    assert profiler.next_batch_size == 20
    profiler.update("good", 900, 1_000)
    assert profiler.next_batch_size == 100
    profiler.update("good", 3_900, 3_950)
    assert profiler.next_batch_size == 50  # only 50 items are left
    fixed = AdaptiveProfiler(COSTS, "ref", 0.95, 0.95, total_items=5_000, batch=20, growth=0.0)
    fixed.update("good", 900, 1_000)
    assert fixed.next_batch_size == 20

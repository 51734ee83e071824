"""The model-mix program: hand-solved cases, production's vertex solver against a linprog oracle, the
remaining-items target, the union bound, the realisation margin and integer splits."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import binom

from routing.calibration.guarantees import clopper_pearson_lower
from mix_oracle import linprog_mix
from routing.calibration.model_mix import MixPlan, allocate_items, conformity_lower_bounds, min_mix_cost, per_model_confidence
from routing.calibration.model_mix import realised_target, remaining_target, single_model_plan
from routing.calibration.model_mix import solve_mix as production_solve_mix

# "vertices" is production's `solve_mix`; "linprog" the test oracle (tests/mix_oracle.py).
SOLVERS = ["linprog", "vertices"]


def solve_mix(costs: dict, bounds: dict, target: float, reference: str, solver: str = "vertices") -> MixPlan:
    if solver == "linprog":
        return linprog_mix(costs, bounds, target, reference)
    return production_solve_mix(costs, bounds, target, reference)


@pytest.mark.parametrize("solver", SOLVERS)
def test_two_models_solve_the_two_by_two_system(solver: str) -> None:
    # x_cheap + x_ref = 1 and 0.9 x_cheap + 1.0 x_ref = 0.95  =>  x_cheap = 0.5.
    plan = solve_mix({"ref": 10.0, "cheap": 1.0}, {"cheap": 0.9}, 0.95, "ref", solver=solver)
    assert plan.feasible
    assert plan.fractions["cheap"] == pytest.approx(0.5, abs=1e-9)
    assert plan.fractions["ref"] == pytest.approx(0.5, abs=1e-9)
    assert plan.cost_per_item == pytest.approx(5.5, abs=1e-8)
    assert plan.accuracy_lower == pytest.approx(0.95, abs=1e-9)


@pytest.mark.parametrize("solver", SOLVERS)
def test_mix_of_two_cheap_models_beats_each_alone(solver: str) -> None:
    # A (cost 1, 0.80) and B (cost 3, 0.95) straddle 0.90: x_B = 0.1 / 0.15 = 2/3,
    # cost 1/3 + 2 = 2.333 beats B alone (3) and A with the reference (5.5).
    costs = {"ref": 10.0, "A": 1.0, "B": 3.0}
    plan = solve_mix(costs, {"A": 0.80, "B": 0.95}, 0.90, "ref", solver=solver)
    assert plan.fractions["A"] == pytest.approx(1 / 3, abs=1e-9)
    assert plan.fractions["B"] == pytest.approx(2 / 3, abs=1e-9)
    assert plan.fractions["ref"] == pytest.approx(0.0, abs=1e-12)
    assert plan.cost_per_item == pytest.approx(7 / 3, abs=1e-8)
    assert sorted(plan.models_used) == ["A", "B"]


@pytest.mark.parametrize("solver", SOLVERS)
def test_cheapest_model_that_meets_the_target_takes_everything(solver: str) -> None:
    costs = {"ref": 10.0, "mid": 2.0, "cheap": 1.0}
    bounds = {"mid": 0.97, "cheap": 0.93}
    plan = solve_mix(costs, bounds, 0.92, "ref", solver=solver)
    assert plan.is_single_model and plan.models_used == ["cheap"]
    single = single_model_plan(costs, bounds, 0.92, "ref")
    assert single.fractions == pytest.approx(plan.fractions)
    assert single.cost_per_item == pytest.approx(plan.cost_per_item)


def test_single_model_plan_picks_cheapest_qualified_and_falls_back_to_reference() -> None:
    costs = {"ref": 10.0, "mid": 2.0, "cheap": 1.0}
    bounds = {"mid": 0.97, "cheap": 0.93}
    assert single_model_plan(costs, bounds, 0.95, "ref").models_used == ["mid"]
    assert single_model_plan(costs, bounds, 0.99, "ref").models_used == ["ref"]


@pytest.mark.parametrize("solver", SOLVERS)
def test_infeasible_target_sends_everything_to_reference(solver: str) -> None:
    # Profiling answered 1,000 of 10,000 items but only 500 agreed: no plan can
    # lift the whole job to 0.99, so the program is infeasible.
    target = remaining_target(0.99, 10_000, 1_000, processed_correct=500)
    assert target > 1
    plan = solve_mix({"ref": 10.0, "cheap": 1.0}, {"cheap": 0.99}, target, "ref", solver=solver)
    assert not plan.feasible
    assert plan.fractions == {"ref": 1.0, "cheap": 0.0}
    assert plan.cost_per_item == 10.0


@pytest.mark.parametrize("solver", SOLVERS)
def test_perfect_target_needs_the_reference_and_no_target_needs_nothing(solver: str) -> None:
    costs = {"ref": 10.0, "cheap": 1.0, "cheaper": 0.5}
    bounds = {"cheap": 0.999, "cheaper": 0.2}
    full = solve_mix(costs, bounds, 1.0, "ref", solver=solver)
    assert full.feasible and full.fractions["ref"] == pytest.approx(1.0)
    free = solve_mix(costs, bounds, -0.3, "ref", solver=solver)
    assert free.models_used == ["cheaper"]


def test_models_without_bounds_are_left_out() -> None:
    plan = solve_mix({"ref": 10.0, "unknown": 0.1, "cheap": 1.0}, {"cheap": 0.95}, 0.9, "ref")
    assert "unknown" not in plan.fractions
    assert plan.models_used == ["cheap"]


@settings(max_examples=80, deadline=None)
@given(
    costs=st.lists(st.floats(0.0, 9.0), min_size=1, max_size=5),
    bounds=st.lists(st.floats(0.0, 1.0), min_size=5, max_size=5),
    target=st.floats(-0.1, 1.0),
)
def test_linprog_and_vertex_enumeration_agree(costs: list[float], bounds: list[float], target: float) -> None:
    names = [f"m{i}" for i in range(len(costs))]
    cost_map = {"ref": 10.0, **dict(zip(names, costs))}
    bound_map = dict(zip(names, bounds))
    lp = solve_mix(cost_map, bound_map, target, "ref", solver="linprog")
    vx = solve_mix(cost_map, bound_map, target, "ref", solver="vertices")
    assert lp.feasible and vx.feasible
    # HiGHS stops within ~1e-7 of the optimum (costs here are up to 10).
    assert lp.cost_per_item == pytest.approx(vx.cost_per_item, rel=1e-6, abs=1e-6)
    for plan in (lp, vx):
        assert sum(plan.fractions.values()) == pytest.approx(1.0)
        assert min(plan.fractions.values()) >= 0.0
        assert plan.accuracy_lower >= target - 1e-7
        assert len(plan.models_used) <= 2  # a vertex of a two-constraint program
    # Restricting to one model can never be cheaper than the best mix.
    assert single_model_plan(cost_map, bound_map, target, "ref").cost_per_item >= vx.cost_per_item - 1e-12
    assert min_mix_cost(list(cost_map.values()), [1.0] + bounds[: len(costs)], target) == pytest.approx(
        vx.cost_per_item, rel=1e-12
    )


def test_min_mix_cost_reports_infeasibility() -> None:
    assert min_mix_cost([1.0, 2.0], [0.5, 0.6], 0.9) is None
    assert min_mix_cost([1.0, 2.0], [0.5, 0.6], 0.55) == pytest.approx(1.5)


def test_remaining_target_makes_the_whole_job_exactly_meet_the_target() -> None:
    total, processed, target = 10_000, 1_200, 0.95
    t_rest = remaining_target(target, total, processed)
    # Profiled items count as correct, so the rest may be a little worse...
    assert t_rest == pytest.approx((0.95 * 10_000 - 1_200) / 8_800)
    assert t_rest < target
    # ...and hitting it exactly gives exactly the target over the whole job.
    assert (processed + t_rest * (total - processed)) / total == pytest.approx(target)
    # Not everything profiled was right: the rest has to make up for it.
    assert remaining_target(target, total, processed, processed_correct=1_000) > t_rest


def test_remaining_target_edges() -> None:
    assert remaining_target(0.9, 100, 0) == pytest.approx(0.9)
    assert remaining_target(0.9, 100, 100) == 0.0
    assert remaining_target(0.9, 100, 100, processed_correct=80) == math.inf
    assert remaining_target(0.5, 100, 60) < 0  # enough already correct: anything goes
    with pytest.raises(ValueError):
        remaining_target(0.9, 100, 101)


def test_bonferroni_split() -> None:
    assert per_model_confidence(0.95, 4) == pytest.approx(0.9875)
    assert per_model_confidence(0.95, 4, "none") == 0.95
    assert per_model_confidence(0.95, 1) == 0.95
    with pytest.raises(ValueError):
        per_model_confidence(0.95, 4, "holm")  # type: ignore[arg-type]
    counts = {"a": (90, 100), "b": (50, 60), "c": (0, 0)}
    corrected = conformity_lower_bounds(counts, 0.95)
    plain = conformity_lower_bounds(counts, 0.95, "none")
    assert corrected["a"] == pytest.approx(clopper_pearson_lower(90, 100, 1 - 0.05 / 3))
    assert corrected["a"] < plain["a"] and corrected["b"] < plain["b"]
    assert corrected["c"] == 0.0


def test_union_bound_keeps_joint_coverage_where_per_model_bounds_do_not() -> None:
    """Four models, each bounded from 200 items: the chance that *all* bounds hold is
    what the mix relies on. Uncorrected 95% bounds fall short of 95% jointly."""
    rates = np.array([0.6, 0.85, 0.93, 0.97])
    n, reps = 200, 20_000
    draws = np.random.default_rng(7).binomial(n, rates, size=(reps, rates.size))

    def joint_coverage(per_model: float) -> float:
        table = np.array([clopper_pearson_lower(x, n, per_model) for x in range(n + 1)])
        return float(np.mean(np.all(table[draws] <= rates, axis=1)))

    assert joint_coverage(per_model_confidence(0.95, 4)) >= 0.95
    assert joint_coverage(per_model_confidence(0.95, 4, "none")) < 0.93


def test_realised_target_adds_a_margin_that_shrinks_with_job_size() -> None:
    small = realised_target(0.95, 1_000, 0.99)
    large = realised_target(0.95, 100_000, 0.99)
    assert small > large > 0.95
    assert realised_target(1.0, 1_000, 0.99) == 1.0
    assert realised_target(-0.2, 1_000, 0.99) == -0.2


@pytest.mark.parametrize(("target", "items"), [(0.9, 500), (0.96, 20_000), (0.985, 3_000)])
def test_realised_target_meets_the_target_with_confidence(target: float, items: int) -> None:
    confidence = 0.99
    p = realised_target(target, items, confidence)
    needed = math.ceil(target * items)
    # Binomial at that mean falls short with probability at most 1 - confidence...
    assert binom.cdf(needed - 1, items, p) <= 1 - confidence + 1e-9
    # ...and so does a mix of a perfect model and a weaker one with the same mean
    # (Poisson-binomial, less spread than the binomial), checked by simulation.
    weak = 0.8
    share_weak = (1 - p) / (1 - weak)
    n_weak = int(share_weak * items)
    rng = np.random.default_rng(3)
    correct = (items - n_weak) + rng.binomial(n_weak, weak, size=20_000)
    assert np.mean(correct >= needed) >= confidence - 0.003


def test_allocate_items_rounds_towards_the_reference() -> None:
    fractions = {"ref": 0.25, "a": 1 / 3, "b": 1 - 0.25 - 1 / 3}
    counts = allocate_items(fractions, 1000, remainder_to="ref")
    assert sum(counts.values()) == 1000
    assert counts["a"] == 333 and counts["b"] == 416  # floors of 333.3 and 416.7
    assert counts["ref"] == 251


@settings(max_examples=80, deadline=None)
@given(
    weights=st.lists(st.floats(0.0, 1.0), min_size=1, max_size=6).filter(lambda w: sum(w) > 1e-6),
    n_items=st.integers(0, 100_000),
)
def test_allocate_items_largest_remainder_properties(weights: list[float], n_items: int) -> None:
    fractions = {f"m{i}": w for i, w in enumerate(weights)}
    total = sum(weights)
    counts = allocate_items(fractions, n_items)
    assert sum(counts.values()) == n_items
    for m, w in fractions.items():
        assert abs(counts[m] - n_items * w / total) < 1 + 1e-6
    conservative = allocate_items(fractions, n_items, remainder_to="m0")
    assert sum(conservative.values()) == n_items
    for m, w in fractions.items():
        if m != "m0":
            assert conservative[m] <= n_items * w / total + 1e-6


def test_allocate_items_rejects_bad_input() -> None:
    with pytest.raises(ValueError):
        allocate_items({"a": 0.0}, 10)
    with pytest.raises(ValueError):
        allocate_items({"a": 1.0}, 10, remainder_to="ref")

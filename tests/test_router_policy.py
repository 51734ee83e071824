"""The lambda policy, its calibration for budgets and accuracy targets, and curve metrics."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from routing.replay.metrics import CurvePoint, best_single, curve_figures, oracle, random_mix_curve, upper_hull
from routing.calibration.policy import (
    choose_lambda_for_budget,
    choose_setting_for_accuracy,
    lambda_grid,
    lambda_settings,
    relative_outcomes,
    route,
    sweep,
)


def test_route_breaks_ties_towards_the_cheaper_expert():
    loss = np.array([[0.2, 0.2, 0.2], [0.5, 0.1, 0.0]])
    costs = np.array([3.0, 1.0, 2.0])
    assert route(loss, costs, 0.0).tolist() == [1, 2]
    assert route(loss, costs, 1.0).tolist() == [1, 1]
    allowed = np.array([True, False, True])
    assert route(loss, costs, 0.0, allowed).tolist() == [2, 2]
    with pytest.raises(ValueError):
        route(loss, costs, -1.0)


@settings(max_examples=60, deadline=None)
@given(
    loss=arrays(np.float64, (12, 4), elements=st.floats(0, 1)),
    costs=arrays(np.float64, 4, elements=st.floats(0.01, 50), unique=True),
)
def test_sweep_cost_never_increases_with_lambda(loss, costs):
    lams = lambda_grid(loss, costs, n_points=25)
    assert lams[0] == 0.0 and np.all(np.diff(lams) > 0)
    per_question = np.stack([costs[route(loss, costs, lam)] for lam in lams])
    # Per question (not just on average) a dearer lambda never buys a dearer expert.
    assert np.all(np.diff(per_question, axis=0) <= 1e-12)
    # The grid ends where everything goes to the cheapest expert.
    assert (route(loss, costs, lams[-1]) == np.argmin(costs)).all()


def test_sweep_reports_cost_quality_and_mix():
    loss = np.array([[0.0, 0.5], [0.9, 0.1]])
    f1 = np.array([[1.0, 0.0], [0.0, 1.0]])
    curve = sweep(loss, np.array([1.0, 5.0]), [0.0, 10.0], f1, f1, ["a", "b"])
    assert curve[0].cost == 3.0 and curve[0].f1 == 1.0 and curve[0].mix == {"a": 0.5, "b": 0.5}
    assert curve[1].cost == 1.0 and curve[1].f1 == 0.5 and curve[1].mix == {"a": 1.0}


def _calibration(n=400, seed=0):
    rng = np.random.default_rng(seed)
    costs = np.array([0.5, 3.0, 40.0])
    f1 = (rng.random((n, 3)) < np.array([0.5, 0.8, 0.92])).astype(float)
    noise = rng.normal(scale=0.3, size=(n, 3))
    loss = np.clip(1 - f1 + noise, 0, 1)  # informative but noisy predictions
    return loss, f1, costs


@pytest.mark.parametrize("budget", [0.6, 2.0, 5.0, 12.0, 30.0])
def test_budget_calibration_respects_the_budget(budget):
    loss, f1, costs = _calibration()
    choice = choose_lambda_for_budget(loss, costs, f1, budget)
    assert choice.feasible
    chosen = route(loss, costs, choice.lam)
    assert costs[chosen].mean() <= budget + 1e-9
    assert choice.cost == pytest.approx(costs[chosen].mean())
    # It is the best F1 among the grid's affordable lambdas.
    f1s, cs = lambda_settings(loss, costs, f1, lambda_grid(loss, costs))
    affordable = cs.mean(axis=1) <= budget + 1e-9
    assert choice.f1 == pytest.approx(f1s.mean(axis=1)[affordable].max())


def test_budget_below_every_setting_is_flagged():
    loss, f1, costs = _calibration()
    choice = choose_lambda_for_budget(loss, costs, f1, 0.1)
    assert not choice.feasible and choice.cost == pytest.approx(0.5)


@settings(max_examples=50, deadline=None)
@given(
    a=arrays(np.float64, 20, elements=st.floats(0, 1)),
    b=arrays(np.float64, 20, elements=st.floats(0, 1)),
    target=st.floats(0.01, 1.0),
)
def test_relative_outcomes_are_in_unit_interval_and_conservative(a, b, target):
    v = relative_outcomes(a, b, target)
    assert np.all((v >= 0) & (v <= 1))
    # Mean above target really implies the F1 ratio target.
    if v.mean() >= target:
        assert a.mean() >= target * b.mean() - 1e-9


def test_accuracy_choice_is_fixed_sequence():
    ref = np.ones(300)
    good = np.ones(300)
    bad = np.zeros(300)
    # dearest first: good, bad, good -> stops at the bad one, keeps the first.
    choice = choose_setting_for_accuracy(np.stack([good, bad, good]), ref, 0.9)
    assert choice.index == 0 and len(choice.lower_bounds) == 2
    # first already fails -> fall back to the reference.
    assert choose_setting_for_accuracy(np.stack([bad, good]), ref, 0.9).index == -1
    # Too few questions to certify a strict target: refuse rather than guess.
    assert choose_setting_for_accuracy(np.ones((1, 20)), np.ones(20), 0.99).index == -1


def test_accuracy_guarantee_holds_over_repeated_calibration_draws():
    """Simulate the population: settings whose true F1 ratio straddles the target."""
    rng = np.random.default_rng(0)
    target, confidence, n_cal, n_pop = 0.9, 0.95, 150, 20000
    ref = (rng.random(n_pop) < 0.9).astype(float)
    # Setting s keeps the reference answer except on a share of questions, where it is wrong.
    shares = [0.0, 0.04, 0.07, 0.09, 0.11, 0.15, 0.3]
    pop = np.stack([np.where(rng.random(n_pop) < s, 0.0, ref) for s in shares])
    true_ratio = pop.mean(axis=1) / ref.mean()
    violations = 0
    trials = 300
    for t in range(trials):
        idx = rng.choice(n_pop, n_cal, replace=False)
        c = choose_setting_for_accuracy(pop[:, idx], ref[idx], target, confidence, seed=t)
        ratio = 1.0 if c.index < 0 else true_ratio[c.index]
        violations += ratio < target
    assert violations / trials <= 1 - confidence + 0.02
    assert true_ratio[2] > target > true_ratio[4]  # the sequence really straddles the target


def test_best_single_oracle_and_headline_by_hand():
    f1 = np.array([[1.0, 1.0, 1.0], [0.0, 1.0, 1.0], [0.0, 0.0, 1.0], [0.0, 0.5, 0.5]])
    costs = np.array([1.0, 2.0, 10.0])
    best = best_single(f1, costs, ["a", "b", "c"])
    assert best == {"name": "c", "f1": 0.875, "cost": 10.0}
    orc = oracle(f1, f1, costs)
    # cheapest expert reaching each row's max: a, b, c, b
    assert orc["f1"] == pytest.approx(0.875) and orc["cost"] == pytest.approx((1 + 2 + 10 + 2) / 4)
    # Ties in F1 go to the cheaper expert.
    assert best_single(np.ones((2, 2)), np.array([5.0, 1.0]), ["x", "y"])["name"] == "y"
    curve = [CurvePoint(0, 2.0, 0.80, 0.8), CurvePoint(1, 4.0, 0.87, 0.87), CurvePoint(2, 9.0, 0.95, 0.95)]
    h = curve_figures(curve, {"f1": 0.875, "cost": 10.0}, {"f1": 0.975})
    assert h["cost_at_best_f1"] == 4.0 and h["savings_vs_best"] == pytest.approx(0.6)
    assert h["gap_closed"] == pytest.approx((0.95 - 0.875) / (0.975 - 0.875))
    none = curve_figures(curve[:1], {"f1": 0.875, "cost": 10.0}, {"f1": 0.975})
    assert none["cost_at_best_f1"] is None and none["savings_vs_best"] is None


def test_random_mix_follows_the_training_hull():
    costs = np.array([1.0, 2.0, 3.0, 10.0])
    train_quality = np.array([0.5, 0.55, 0.8, 0.9])  # expert 1 lies under the 0 -> 2 segment
    assert upper_hull(costs, train_quality) == [0, 2, 3]
    f1 = np.tile(train_quality, (4, 1))
    curve = random_mix_curve(train_quality, f1, f1, costs, ["a", "b", "c", "d"], steps=4)
    assert {p.cost for p in curve} >= {1.0, 3.0, 10.0}
    mid = [p for p in curve if p.cost == pytest.approx(2.0)][0]
    assert mid.f1 == pytest.approx(0.65) and mid.mix == {"a": 0.5, "c": 0.5}

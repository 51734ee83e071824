"""One-sided Clopper-Pearson bounds: known values, the defining binomial tail property
(checked with scipy's binomial, not the beta quantiles the code uses), and coverage."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.special import betaincinv
from scipy.stats import binom

from routing.calibration.guarantees import clopper_pearson_lower, clopper_pearson_upper


@pytest.mark.parametrize("n", [1, 7, 100, 5000])
@pytest.mark.parametrize("confidence", [0.9, 0.95, 0.99])
def test_zero_successes_closed_form(n: int, confidence: float) -> None:
    # With no successes the lower bound is 0 and the upper bound solves (1-p)^n = 1-c.
    assert clopper_pearson_lower(0, n, confidence) == 0.0
    assert clopper_pearson_upper(0, n, confidence) == pytest.approx(1 - (1 - confidence) ** (1 / n), rel=1e-9)


@pytest.mark.parametrize("n", [1, 7, 100, 5000])
@pytest.mark.parametrize("confidence", [0.9, 0.95, 0.99])
def test_all_successes_closed_form(n: int, confidence: float) -> None:
    # With n of n the upper bound is 1 and the lower bound solves p^n = 1-c.
    assert clopper_pearson_upper(n, n, confidence) == 1.0
    assert clopper_pearson_lower(n, n, confidence) == pytest.approx((1 - confidence) ** (1 / n), rel=1e-9)


def test_textbook_value_five_of_ten() -> None:
    # The two-sided 90% Clopper-Pearson interval for 5/10 is (0.2224, 0.7776), so the
    # one-sided 95% bounds are its ends.
    assert clopper_pearson_lower(5, 10, 0.95) == pytest.approx(0.22244, abs=1e-5)
    assert clopper_pearson_upper(5, 10, 0.95) == pytest.approx(0.77756, abs=1e-5)


@pytest.mark.parametrize(("x", "n"), [(1, 10), (37, 50), (940, 1000), (9_990, 10_000)])
@pytest.mark.parametrize("confidence", [0.95, 0.9875])
def test_matches_independent_inverse_beta(x: int, n: int, confidence: float) -> None:
    # The regularised incomplete beta inverse is a different routine from beta.ppf.
    assert clopper_pearson_lower(x, n, confidence) == pytest.approx(betaincinv(x, n - x + 1, 1 - confidence), rel=1e-8)
    assert clopper_pearson_upper(x, n, confidence) == pytest.approx(betaincinv(x + 1, n - x, confidence), rel=1e-8)


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 2000), frac=st.floats(0.0, 1.0), confidence=st.floats(0.5, 0.999))
def test_bounds_solve_the_binomial_tail_equations(n: int, frac: float, confidence: float) -> None:
    """Definition: the lower bound L is the rate at which seeing >= x successes has
    probability exactly 1-c; the upper bound U the rate at which <= x has 1-c."""
    x = int(round(frac * n))
    lower = clopper_pearson_lower(x, n, confidence)
    upper = clopper_pearson_upper(x, n, confidence)
    assert 0.0 <= lower <= x / n <= upper <= 1.0
    if x > 0:
        assert binom.sf(x - 1, n, lower) == pytest.approx(1 - confidence, rel=1e-6, abs=1e-12)
    if x < n:
        assert binom.cdf(x, n, upper) == pytest.approx(1 - confidence, rel=1e-6, abs=1e-12)


@settings(max_examples=40, deadline=None)
@given(n=st.integers(2, 500), x=st.integers(0, 499), confidence=st.floats(0.5, 0.99))
def test_bounds_move_the_right_way(n: int, x: int, confidence: float) -> None:
    x = min(x, n - 1)
    # More successes raise both bounds; more confidence widens the interval.
    assert clopper_pearson_lower(x + 1, n, confidence) > clopper_pearson_lower(x, n, confidence)
    assert clopper_pearson_upper(x + 1, n, confidence) > clopper_pearson_upper(x, n, confidence)
    wider = min(0.999, confidence + 0.005)
    assert clopper_pearson_lower(x, n, wider) <= clopper_pearson_lower(x, n, confidence)
    assert clopper_pearson_upper(x, n, wider) >= clopper_pearson_upper(x, n, confidence)


@pytest.mark.parametrize(("p", "n"), [(0.5, 30), (0.9, 100), (0.97, 400), (0.999, 1000)])
def test_lower_bound_coverage_by_simulation(p: float, n: int) -> None:
    """The bound must sit at or below the true rate in at least `confidence` of samples."""
    confidence = 0.95
    table = np.array([clopper_pearson_lower(x, n, confidence) for x in range(n + 1)])
    draws = np.random.default_rng(1234).binomial(n, p, size=20_000)
    coverage = float(np.mean(table[draws] <= p))
    slack = 3 * np.sqrt(confidence * (1 - confidence) / draws.size)  # Monte Carlo error
    assert coverage >= confidence - slack


@pytest.mark.parametrize("p", [0.05, 0.3, 0.62, 0.88, 0.95, 0.995])
@pytest.mark.parametrize("n", [20, 137, 1000])
def test_exact_coverage_never_below_confidence(p: float, n: int) -> None:
    """Exact coverage: sum the binomial probabilities of the outcomes whose bound holds."""
    confidence = 0.95
    xs = np.arange(n + 1)
    lower = np.array([clopper_pearson_lower(x, n, confidence) for x in xs])
    upper = np.array([clopper_pearson_upper(x, n, confidence) for x in xs])
    pmf = binom.pmf(xs, n, p)
    assert pmf[lower <= p].sum() >= confidence - 1e-12
    assert pmf[upper >= p].sum() >= confidence - 1e-12


@pytest.mark.parametrize(
    ("successes", "trials", "confidence"),
    [(1, 0, 0.95), (-1, 10, 0.95), (11, 10, 0.95), (5, 10, 0.0), (5, 10, 1.0)],
)
def test_rejects_impossible_inputs(successes: float, trials: int, confidence: float) -> None:
    with pytest.raises(ValueError):
        clopper_pearson_lower(successes, trials, confidence)
    with pytest.raises(ValueError):
        clopper_pearson_upper(successes, trials, confidence)

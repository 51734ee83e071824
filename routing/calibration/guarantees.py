"""Exact binomial confidence bounds, the statistical core of every accuracy guarantee.

SMART's guarantee and our calibrated accuracy targets both reduce to "with confidence
c, the true success rate is at least p": a one-sided Clopper-Pearson bound, which is
exact (never anti-conservative) for any sample size, unlike the normal approximation.
"""

from __future__ import annotations

from scipy.special import betaincinv


def clopper_pearson_lower(successes: float, trials: int, confidence: float = 0.95) -> float:
    """One-sided lower bound L with P(true rate >= L) >= confidence."""
    _check(successes, trials, confidence)
    if successes <= 0:
        return 0.0
    return float(betaincinv(successes, trials - successes + 1, 1.0 - confidence))


def clopper_pearson_upper(successes: float, trials: int, confidence: float = 0.95) -> float:
    """One-sided upper bound U with P(true rate <= U) >= confidence."""
    _check(successes, trials, confidence)
    if successes >= trials:
        return 1.0
    return float(betaincinv(successes + 1, trials - successes, confidence))


def _check(successes: float, trials: int, confidence: float) -> None:
    if trials <= 0:
        raise ValueError(f"trials must be positive, got {trials}")
    if not 0 <= successes <= trials:
        raise ValueError(f"successes must lie in [0, {trials}], got {successes}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")

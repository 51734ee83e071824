"""SMART's model mix: which share of the remaining items each model should answer.

After profiling we know, for every cheap model j, a lower bound l_j on its conformity
(the share of items on which it agrees with the reference model). Sending a share x_j of
the remaining items to model j gives an expected conformity of at least sum_j x_j * l_j,
so the cheapest plan that still keeps the promise is the linear program

    minimise    sum_j x_j * cost_j
    subject to  sum_j x_j * l_j >= t,   sum_j x_j = 1,   x_j >= 0,

where the reference itself is one of the candidates with l = 1 (it agrees with itself
by definition), which is what makes the program feasible for any t <= 1. Two
constraints mean an optimal vertex has at most two non-zero shares: either one model
that is accurate enough on its own, or a pair that straddles the target. So the program
is solved exactly by enumerating those O(k^2) vertices, both for the profiler's
thousands of what-if costs (`min_mix_cost`) and for the plan that is executed
(`solve_mix`). A general LP solver would be the other way; measured on random problems
it agrees to ~1e-9 and is far slower per solve (docs/library-decisions.md), so
`scipy.optimize.linprog` only serves as the tests' independent oracle
(tests/mix_oracle.py).

The program only sees bounds and prices, so it may hand a share of items to a cheap
model that is usually wrong: inside the error budget, a wrong answer bought cheaply is
as good as any. On the SMART profiles this happens at loose targets (babbage-002, which
never agrees with GPT-4, gets a few percent of the items).

The target t for the remaining items is not the user's target: items already answered
during profiling were answered by the reference, so they are all correct, and the
remaining items may be a little worse (`remaining_target`).

Confidence. Each l_j is a one-sided Clopper-Pearson bound that holds with probability
c_j. The plan is right when every bound it relies on holds; because the models it relies
on are chosen after looking at the data, the only simple argument that covers the
choice is a union bound over all k candidate models: with c_j = 1 - (1 - c) / k, all
bounds hold together with probability at least c (Bonferroni). That is the default
(`correction="bonferroni"`), because it is the one that makes the stated guarantee
true whatever the profiler and the program end up choosing; its price is a slightly
lower bound per model (for k = 4 and c = 0.95, each bound is taken at 0.9875).
`correction="none"` uses c for every model, which is only honest if a single,
pre-chosen model is bounded.

Expected versus realised accuracy. Bounds on the models' conformity promise an
*expected* share of correct answers. The job, however, is judged on the share it
actually delivers, which scatters around that expectation; a plan whose expectation
sits exactly on the target misses it about half of the time. `realised_target` raises
the target just enough that the delivered share reaches the original one with a given
confidence, and the union bound simply gets one more event to cover (k models + 1).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, Mapping, Optional, Sequence

import numpy as np

from routing.calibration.guarantees import clopper_pearson_lower, clopper_pearson_upper

Correction = Literal["bonferroni", "none"]
Guarantee = Literal["realised", "expected"]

# Shares below this are solver noise, not a decision to send items to a model.
_SHARE_EPS = 1e-12
# Accept a plan whose bound is this close to the target (float noise in the mix).
_FEASIBILITY_TOL = 1e-9


@dataclass(frozen=True)
class MixPlan:
    """The share of the remaining items each model answers, and what that promises.

    `fractions` has an entry for every model that was considered (zeros included) and
    sums to one. `accuracy_lower` is sum_j x_j * l_j, the conformity the plan guarantees
    on the remaining items (given that the bounds hold). `feasible` is False only when
    not even the reference alone can reach `target`: the plan then sends everything to
    the reference, the best that can still be done.
    """

    fractions: dict[str, float]
    cost_per_item: float
    target: float
    accuracy_lower: float
    feasible: bool

    @property
    def models_used(self) -> list[str]:
        """Models that receive a non-zero share, in the order of `fractions`."""
        return [m for m, x in self.fractions.items() if x > 0]

    @property
    def is_single_model(self) -> bool:
        return len(self.models_used) == 1


def per_model_confidence(confidence: float, n_models: int, correction: Correction = "bonferroni") -> float:
    """Confidence at which each of `n_models` events must hold for a joint `confidence`.

    Bonferroni: P(some event fails) <= sum of the individual failure chances, so giving
    each one a failure chance (1 - confidence) / n_models keeps the joint one within
    budget without assuming the models' errors are independent (they are not: all of
    them are compared against the same reference answers on the same items). Count
    the realisation of the plan as one more event when the guarantee is "realised".
    """
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    if correction == "none" or n_models <= 1:
        return confidence
    if correction == "bonferroni":
        return 1.0 - (1.0 - confidence) / n_models
    raise ValueError(f"unknown correction {correction!r}; use 'bonferroni' or 'none'")


def realised_target(target: float, remaining_items: int, confidence: float) -> float:
    """Expected conformity that makes the *delivered* share reach `target` with `confidence`.

    Answers on the remaining items are independent successes with (unknown, differing)
    rates; their count S is Poisson-binomial. Hoeffding (1956) showed that below its
    mean such a count is no more spread out than a binomial with the same mean:
    P(S <= c) <= P(Bin(R, mean/R) <= c) for c <= mean - 1. So it suffices that a
    Bin(R, p) count falls short of k = ceil(target * R) with probability at most
    1 - confidence, and the smallest such p is exactly the one-sided Clopper-Pearson
    upper bound for k - 1 successes in R trials. Targets outside (0, 1) need no margin:
    <= 0 is met by anything and >= 1 only by the reference, which has no variance.
    """
    if remaining_items <= 0 or not 0 < target < 1:
        return target
    needed = math.ceil(target * remaining_items - 1e-9)
    if needed <= 0:
        return target
    return max(target, clopper_pearson_upper(needed - 1, remaining_items, confidence))


def conformity_lower_bounds(
    counts: Mapping[str, tuple[float, int]],
    confidence: float,
    correction: Correction = "bonferroni",
) -> dict[str, float]:
    """Lower conformity bounds for every model in `counts` ({model: (agreements, seen)}).

    The correction divides the failure budget over all models passed in, so pass every
    candidate that was profiled, not only the ones that look good: selecting first and
    correcting afterwards would undo the point of the correction. A model with no
    observations gets the only bound that is certain, 0.
    """
    per_model = per_model_confidence(confidence, len(counts), correction)
    return {
        model: (clopper_pearson_lower(agree, seen, per_model) if seen > 0 else 0.0)
        for model, (agree, seen) in counts.items()
    }


def remaining_target(
    target: float,
    total_items: int,
    processed_items: int,
    processed_correct: Optional[float] = None,
) -> float:
    """Conformity the not-yet-processed items must reach so the whole job meets `target`.

    The promise is about all `total_items`: (correct so far + correct from now on) /
    total >= target. With C items already correct and R = total - processed left, the
    rest must reach (target * total - C) / R. Profiled items were answered by the
    reference, so by default C = processed_items; then the remaining target is below the
    user's one, and profiling buys some slack on top of information. The value can be
    <= 0 (any plan will do) or > 1 (nothing can save the job; `solve_mix` then falls back
    to the reference). With nothing left it is 0 if the job already met the target and
    infinity otherwise.
    """
    if total_items <= 0:
        raise ValueError(f"total_items must be positive, got {total_items}")
    if not 0 <= processed_items <= total_items:
        raise ValueError(f"processed_items must lie in [0, {total_items}], got {processed_items}")
    correct = float(processed_items if processed_correct is None else processed_correct)
    if not 0 <= correct <= processed_items:
        raise ValueError(f"processed_correct must lie in [0, {processed_items}], got {correct}")
    remaining = total_items - processed_items
    needed = target * total_items - correct
    if remaining == 0:
        return 0.0 if needed <= _FEASIBILITY_TOL else math.inf
    return needed / remaining


def min_mix_cost(costs: Sequence[float], accuracies: Sequence[float], target: float) -> Optional[float]:
    """Exact optimum of the mix program, or None when it is infeasible.

    An optimal vertex uses one model with accuracy >= target or two models whose
    accuracies straddle it (mixed so the constraint is tight), so checking those
    O(k^2) candidates is exact. This is the workhorse for the profiler's what-if plans,
    where calling an LP solver thousands of times per job would dominate the run time.
    """
    found = _best_vertex(costs, accuracies, target)
    return None if found is None else found[0]


def _best_vertex(
    costs: Sequence[float], accuracies: Sequence[float], target: float
) -> Optional[tuple[float, int, int, float]]:
    """(cost, i, j, share of j) of the cheapest vertex; the share of i is 1 - share of j."""
    best: Optional[tuple[float, int, int, float]] = None
    k = len(costs)
    for i in range(k):
        if accuracies[i] >= target - _FEASIBILITY_TOL:
            if best is None or costs[i] < best[0]:
                best = (float(costs[i]), i, i, 1.0)
    for i in range(k):
        a_i = accuracies[i]
        if a_i >= target:
            continue
        for j in range(k):
            a_j = accuracies[j]
            # A pair needs a partner above the target; if that partner is also no
            # dearer than i, it beats the pair on its own (a vertex counted above).
            if a_j <= target or costs[j] <= costs[i]:
                continue
            share_j = (target - a_i) / (a_j - a_i)
            cost = costs[i] + share_j * (costs[j] - costs[i])
            if best is None or cost < best[0] - 1e-15:
                best = (float(cost), i, j, float(share_j))
    return best


def solve_mix(
    costs: Mapping[str, float],
    lower_bounds: Mapping[str, float],
    target: float,
    reference: str,
) -> MixPlan:
    """Cheapest shares of the remaining items that keep conformity >= `target`.

    `costs` holds the per-item cost of every model, the reference included; models
    without a lower bound are left out (nothing is known about them), except the
    reference, whose bound is 1 by definition. `target` is the remaining-items target
    (see `remaining_target`). If no mix can reach it, everything goes to the reference
    and the plan says `feasible=False`.
    """
    if reference not in costs:
        raise ValueError(f"reference {reference!r} has no cost")
    models = [m for m in costs if m == reference or m in lower_bounds]
    cost_vec = np.array([float(costs[m]) for m in models])
    acc_vec = np.array([1.0 if m == reference else float(lower_bounds[m]) for m in models])
    if np.any(cost_vec < 0):
        raise ValueError("costs must be non-negative")
    if np.any((acc_vec < 0) | (acc_vec > 1)):
        raise ValueError("lower bounds must lie in [0, 1]")

    shares = _solve_vertices(cost_vec, acc_vec, target)
    feasible = shares is not None
    if shares is None:
        shares = np.array([1.0 if m == reference else 0.0 for m in models])
    return MixPlan(
        fractions={m: float(x) for m, x in zip(models, shares)},
        cost_per_item=float(shares @ cost_vec),
        target=float(target),
        accuracy_lower=float(shares @ acc_vec),
        feasible=feasible,
    )


def _solve_vertices(cost_vec: np.ndarray, acc_vec: np.ndarray, target: float) -> Optional[np.ndarray]:
    if not math.isfinite(target):
        return None
    found = _best_vertex(cost_vec.tolist(), acc_vec.tolist(), target)
    if found is None:
        return None
    _, i, j, share_j = found
    shares = np.zeros(len(cost_vec))
    shares[i] += 1.0 - share_j
    shares[j] += share_j
    return _clean(shares)


def _clean(shares: np.ndarray) -> np.ndarray:
    """Drop solver noise so that `models_used` reflects real decisions."""
    shares = np.where(shares < _SHARE_EPS, 0.0, shares)
    return shares / shares.sum()


def single_model_plan(
    costs: Mapping[str, float],
    lower_bounds: Mapping[str, float],
    target: float,
    reference: str,
) -> MixPlan:
    """SMART's simpler strategy: the cheapest single model whose bound reaches `target`.

    This is the mix program restricted to one non-zero share. It is never cheaper than
    `solve_mix` and serves as its special case and as a baseline; the reference always
    qualifies when target <= 1, otherwise the plan is the infeasible fallback.
    """
    if reference not in costs:
        raise ValueError(f"reference {reference!r} has no cost")
    models = [m for m in costs if m == reference or m in lower_bounds]
    bound = {m: (1.0 if m == reference else float(lower_bounds[m])) for m in models}
    qualified = [m for m in models if bound[m] >= target - _FEASIBILITY_TOL]
    feasible = bool(qualified) and math.isfinite(target)
    chosen = min(qualified, key=lambda m: (costs[m], m)) if feasible else reference
    return MixPlan(
        fractions={m: (1.0 if m == chosen else 0.0) for m in models},
        cost_per_item=float(costs[chosen]),
        target=float(target),
        accuracy_lower=bound[chosen],
        feasible=feasible,
    )


def allocate_items(
    fractions: Mapping[str, float],
    n_items: int,
    remainder_to: Optional[str] = None,
) -> dict[str, int]:
    """Whole numbers of items per model that add up to `n_items`.

    With `remainder_to` (normally the reference), every other model gets the floor of
    its share and the named model everything left over: rounding then can only move
    items to the most accurate model, so it never weakens the accuracy promise.
    Without it, the largest-remainder method gives the closest split (each count within
    one of its exact share).
    """
    if n_items < 0:
        raise ValueError(f"n_items must be non-negative, got {n_items}")
    total = sum(fractions.values())
    if total <= 0 or any(x < 0 for x in fractions.values()):
        raise ValueError("fractions must be non-negative and not all zero")
    exact = {m: n_items * x / total for m, x in fractions.items()}
    counts = {m: int(math.floor(v + 1e-9)) for m, v in exact.items()}
    left = n_items - sum(counts.values())
    if remainder_to is not None:
        if remainder_to not in fractions:
            raise ValueError(f"{remainder_to!r} is not among the fractions")
        counts = {m: (c if m != remainder_to else 0) for m, c in counts.items()}
        counts[remainder_to] = n_items - sum(counts.values())
        return counts
    # Largest remainders first; ties broken by name so the split is deterministic.
    order = sorted(fractions, key=lambda m: (-(exact[m] - counts[m]), m))
    for m in order[:left]:
        counts[m] += 1
    return counts

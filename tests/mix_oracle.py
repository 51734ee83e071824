"""Test oracle for the model-mix program: the same LP handed to scipy's HiGHS.

Production (`routing.calibration.model_mix.solve_mix`) solves the program by enumerating its
vertices, which is exact and far cheaper per call (docs/library-decisions.md). A
general LP solver is the independent check that the enumeration misses no vertex, so
it lives here, beside the tests that compare the two.
"""

from __future__ import annotations

import math
from typing import Mapping

import numpy as np
from scipy.optimize import linprog

from routing.calibration.model_mix import MixPlan

_SHARE_EPS = 1e-12
_FEASIBILITY_TOL = 1e-9


def linprog_mix(costs: Mapping[str, float], lower_bounds: Mapping[str, float], target: float, reference: str) -> MixPlan:
    """`solve_mix`'s contract (same model set, same fallback), solved with linprog."""
    if reference not in costs:
        raise ValueError(f"reference {reference!r} has no cost")
    models = [m for m in costs if m == reference or m in lower_bounds]
    cost_vec = np.array([float(costs[m]) for m in models])
    acc_vec = np.array([1.0 if m == reference else float(lower_bounds[m]) for m in models])
    shares = None
    if math.isfinite(target) and target <= acc_vec.max() + _FEASIBILITY_TOL:
        k = len(models)
        result = linprog(
            c=cost_vec, A_ub=-acc_vec[np.newaxis, :], b_ub=[-target], A_eq=np.ones((1, k)), b_eq=[1.0],
            bounds=[(0.0, None)] * k, method="highs",
        )
        if result.status == 0:
            shares = np.where(result.x < _SHARE_EPS, 0.0, np.asarray(result.x, dtype=float))
            shares = shares / shares.sum()
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

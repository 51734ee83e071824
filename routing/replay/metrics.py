"""Offline evaluation of routing decisions on scored replay data.

All figures are means over questions of the chosen expert's F1 / EM and of the cost
actually paid (a cascade pays for every expert it ran). Reference points:

* best single: the expert with the highest F1 (ties go to the cheaper one);
* oracle: per question, the cheapest expert among those with the highest F1 — the
  ceiling of any router that picks one recorded answer per question.

Headline figures of a cost/F1 curve (what `bench-router` reports):

* cost_at_best_f1: the lowest mean cost at which the curve reaches best-single F1 minus
  a tolerance (1 F1 point);
* savings_vs_best: 1 - cost_at_best_f1 / best single cost;
* gap_closed: (best curve F1 at cost <= best single cost - best single F1) /
  (oracle F1 - best single F1). Negative when the router never matches the best single.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Optional, Sequence

import numpy as np

_TIE = 1e-12


@dataclass(frozen=True)
class CurvePoint:
    """One operating point: the policy parameter and what it achieved."""

    param: float
    cost: float
    f1: float
    em: float
    mix: dict[str, float] = field(default_factory=dict)
    label: str = ""

    def as_dict(self) -> dict:
        return asdict(self)


def expert_summary(f1: np.ndarray, em: np.ndarray, costs: np.ndarray, names: Sequence[str]) -> dict[str, dict]:
    return {
        name: {"f1": float(np.mean(f1[:, j])), "em": float(np.mean(em[:, j])), "cost": float(costs[j])}
        for j, name in enumerate(names)
    }


def best_single_index(mean_f1: np.ndarray, costs: np.ndarray) -> int:
    """Highest mean F1; among (near-)ties the cheapest."""
    top = mean_f1.max()
    candidates = np.flatnonzero(mean_f1 >= top - _TIE)
    return int(candidates[np.argmin(costs[candidates])])


def best_single(f1: np.ndarray, costs: np.ndarray, names: Sequence[str]) -> dict:
    j = best_single_index(f1.mean(axis=0), costs)
    return {"name": names[j], "f1": float(f1[:, j].mean()), "cost": float(costs[j])}


def oracle_choice(f1: np.ndarray, costs: np.ndarray) -> np.ndarray:
    """Per question, the cheapest expert whose F1 equals the best F1 on that question."""
    best = f1.max(axis=1, keepdims=True)
    masked_cost = np.where(f1 >= best - _TIE, costs[None, :], np.inf)
    return np.argmin(masked_cost, axis=1)


def oracle(f1: np.ndarray, em: np.ndarray, costs: np.ndarray) -> dict:
    choice = oracle_choice(f1, costs)
    rows = np.arange(f1.shape[0])
    return {"f1": float(f1[rows, choice].mean()), "em": float(em[rows, choice].mean()), "cost": float(costs[choice].mean())}


def curve_point(
    choice: np.ndarray,
    f1: np.ndarray,
    em: np.ndarray,
    costs: np.ndarray,
    names: Sequence[str],
    param: float,
    paid: Optional[np.ndarray] = None,
    label: str = "",
) -> CurvePoint:
    """Evaluate one routing decision per question (`paid` overrides the cost per question)."""
    rows = np.arange(f1.shape[0])
    counts = np.bincount(choice, minlength=len(names)) / max(len(choice), 1)
    return CurvePoint(
        param=float(param),
        cost=float(np.mean(paid if paid is not None else costs[choice])),
        f1=float(f1[rows, choice].mean()),
        em=float(em[rows, choice].mean()),
        mix={name: float(counts[j]) for j, name in enumerate(names) if counts[j] > 0},
        label=label,
    )


def curve_figures(curve: Sequence[CurvePoint], best: dict, oracle_: dict, tolerance: float = 0.01) -> dict:
    """cost_at_best_f1, savings_vs_best, gap_closed and the best F1 within the best's cost."""
    reach = [p.cost for p in curve if p.f1 >= best["f1"] - tolerance - _TIE]
    cost_at = min(reach) if reach else None
    within = [p.f1 for p in curve if p.cost <= best["cost"] + 1e-9]
    f1_within = max(within) if within else None
    gap = oracle_["f1"] - best["f1"]
    return {
        "cost_at_best_f1": cost_at,
        "savings_vs_best": (1.0 - cost_at / best["cost"]) if cost_at is not None and best["cost"] > 0 else None,
        "f1_at_best_cost": f1_within,
        "gap_closed": ((f1_within - best["f1"]) / gap) if f1_within is not None and gap > _TIE else None,
        "max_f1": max(p.f1 for p in curve) if curve else None,
    }


def upper_hull(costs: np.ndarray, quality: np.ndarray) -> list[int]:
    """Experts on the upper concave hull of (cost, quality), cheapest first.

    Mixing two experts at random gives any point on the segment between them, so the
    best a question-blind random mix can do at a given cost is this hull.
    """
    order = sorted(range(len(costs)), key=lambda j: (costs[j], -quality[j]))
    hull: list[int] = []
    for j in order:
        if hull and quality[j] <= quality[hull[-1]] + _TIE:
            continue  # dominated: costs at least as much and is no better
        while len(hull) >= 2:
            a, b = hull[-2], hull[-1]
            # Drop b if it lies on or below the segment a -> j.
            cross = (costs[b] - costs[a]) * (quality[j] - quality[a]) - (quality[b] - quality[a]) * (costs[j] - costs[a])
            if cross >= 0:
                hull.pop()
            else:
                break
        hull.append(j)
    return hull


def random_mix_curve(
    train_mean_f1: np.ndarray,
    f1: np.ndarray,
    em: np.ndarray,
    costs: np.ndarray,
    names: Sequence[str],
    steps: int = 50,
) -> list[CurvePoint]:
    """Expected test outcome of random mixes along the hull chosen on *training* means.

    The param of each point is the probability of the dearer expert of its segment. We
    report the expectation instead of one random draw so the baseline is not flattered
    or punished by luck.
    """
    hull = upper_hull(costs, train_mean_f1)
    mean_f1, mean_em = f1.mean(axis=0), em.mean(axis=0)
    points: list[CurvePoint] = []
    if len(hull) == 1:
        j = hull[0]
        return [CurvePoint(0.0, float(costs[j]), float(mean_f1[j]), float(mean_em[j]), {names[j]: 1.0})]
    for a, b in zip(hull, hull[1:]):
        for q in np.linspace(0.0, 1.0, steps + 1):
            mix = {names[a]: float(1 - q), names[b]: float(q)}
            points.append(
                CurvePoint(
                    param=float(q),
                    cost=float((1 - q) * costs[a] + q * costs[b]),
                    f1=float((1 - q) * mean_f1[a] + q * mean_f1[b]),
                    em=float((1 - q) * mean_em[a] + q * mean_em[b]),
                    mix={k: v for k, v in mix.items() if v > 0},
                )
            )
    return points


def selection_score(h: dict) -> float:
    """What "best" means: savings at best-minus-one-point plus gap closed (missing = -1)."""
    sav = h["savings_vs_best"] if h["savings_vs_best"] is not None else -1.0
    gap = h["gap_closed"] if h["gap_closed"] is not None else -1.0
    return float(sav + gap)

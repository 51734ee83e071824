"""The model-mix LP: vertex enumeration (`routing.calibration.model_mix.solve_mix`) against scipy's
HiGHS (`tests/mix_oracle.linprog_mix`) on random problems. Prints time per solve and
the largest cost disagreement.

    PYTHONPATH=$PWD python bench/mix_solvers.py --problems 2000
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
from mix_oracle import linprog_mix  # noqa: E402

from routing.calibration.model_mix import solve_mix  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--problems", type=int, default=2000)
    parser.add_argument("--models", type=int, nargs="+", default=[2, 4, 8, 16])
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    for k in args.models:
        problems = []
        for _ in range(args.problems):
            names = [f"m{i}" for i in range(k)]
            costs = {"ref": 10.0, **{n: float(c) for n, c in zip(names, rng.uniform(0, 9, k))}}
            bounds = {n: float(b) for n, b in zip(names, rng.uniform(0, 1, k))}
            problems.append((costs, bounds, float(rng.uniform(-0.1, 1.05))))
        timings = {}
        plans = {}
        for name, fn in (("vertices", solve_mix), ("linprog", linprog_mix)):
            start = time.perf_counter()
            plans[name] = [fn(c, b, t, "ref") for c, b, t in problems]
            timings[name] = (time.perf_counter() - start) / len(problems)
        worst = max(abs(a.cost_per_item - b.cost_per_item) / max(1.0, abs(b.cost_per_item)) for a, b in zip(plans["vertices"], plans["linprog"]))
        feas = sum(a.feasible != b.feasible for a, b in zip(plans["vertices"], plans["linprog"]))
        print(f"k={k:2d} (+ reference) problems={len(problems)}: vertices {timings['vertices']*1e6:8.1f} us/solve, "
              f"linprog {timings['linprog']*1e6:8.1f} us/solve, max rel cost diff {worst:.2e}, feasibility disagreements {feas}")


if __name__ == "__main__":
    main()

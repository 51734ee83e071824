"""kNN router prediction: the full queries x memory matrix with a stable argsort (the
implementation before issue 17) against the blocked `np.partition` one in
`routing.routers.baselines`. Prints peak traced memory, time, and whether both pick the
same neighbours (same predicted losses).

    PYTHONPATH=$PWD python bench/knn_memory.py --memory 20000 --queries 5000
"""

from __future__ import annotations

import argparse
import time
import tracemalloc

import numpy as np

from routing.routers.baselines import KNNRouter


def full_matrix_predict(router: KNNRouter, X: np.ndarray) -> np.ndarray:
    """The former `KNNRouter.predict_loss`, kept here as the baseline."""
    X = router._check_X(X)
    k = min(router.n_neighbors, router.X_.shape[0])
    d2 = (X**2).sum(1)[:, None] - 2 * X @ router.X_.T + (router.X_**2).sum(1)[None, :]
    nearest = np.argsort(np.maximum(d2, 0), axis=1, kind="stable")[:, :k]
    return 1.0 - router.f1_[nearest].astype(np.float64).mean(axis=1)


def measure(fn, *args):  # type: ignore[no-untyped-def]
    tracemalloc.start()
    start = time.perf_counter()
    out = fn(*args)
    elapsed = time.perf_counter() - start
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return out, elapsed, peak


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--memory", type=int, default=20_000)
    parser.add_argument("--queries", type=int, default=5_000)
    parser.add_argument("--features", type=int, default=64)
    parser.add_argument("--experts", type=int, default=4)
    parser.add_argument("--neighbors", type=int, default=25)
    parser.add_argument("--duplicates", type=float, default=0.2, help="share of memory rows that repeat another row (ties)")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    X = rng.normal(size=(args.memory, args.features)).astype(np.float32)
    n_dup = int(args.duplicates * args.memory)
    X[rng.choice(args.memory, n_dup, replace=False)] = X[rng.choice(args.memory, n_dup)]
    f1 = rng.uniform(size=(args.memory, args.experts))
    router = KNNRouter(n_neighbors=args.neighbors).fit(X, f1, np.ones(args.experts))
    Q = np.concatenate([X[: args.queries // 2], rng.normal(size=(args.queries - args.queries // 2, args.features))]).astype(np.float32)
    before, t_before, m_before = measure(full_matrix_predict, router, Q)
    after, t_after, m_after = measure(router.predict_loss, Q)
    print(f"memory={args.memory} queries={args.queries} features={args.features} k={args.neighbors}")
    print(f"full matrix + argsort : {t_before:7.2f} s  peak {m_before / 2**20:8.1f} MiB")
    print(f"blocked + partition   : {t_after:7.2f} s  peak {m_after / 2**20:8.1f} MiB")
    differ = np.abs(before - after).max(axis=1) > 1e-12
    print(f"max |difference| in predicted loss: {np.abs(before - after).max():.3g} ({differ.sum()} of {len(Q)} queries)")
    # Both compute float32 distances by the expansion |q|^2 - 2 q.m + |m|^2, whose
    # rounding depends on how BLAS blocks the product; near-ties can then flip. The old
    # code shows the same flips between one batch and a sub-batch of it:
    head = min(257, len(Q))
    alone = full_matrix_predict(router, Q[:head])
    print(f"old code, first {head} queries alone vs inside the full batch: {(np.abs(alone - before[:head]).max(axis=1) > 1e-12).sum()} queries differ")
    # The selection rule itself equals the stable argsort on the same distance matrix:
    from routing.routers.baselines import _nearest_mask

    d2 = np.round(rng.uniform(0, 3, size=(200, 500)).astype(np.float32))  # many exact ties
    ref = np.zeros_like(d2, dtype=bool)
    np.put_along_axis(ref, np.argsort(d2, axis=1, kind="stable")[:, : args.neighbors], True, axis=1)
    print(f"selection equals stable argsort on a tied matrix: {bool((_nearest_mask(d2, args.neighbors) > 0).__eq__(ref).all())}")


if __name__ == "__main__":
    main()

"""Choosing encoder layers for the router by how well they separate expert success.

The idea, after the encoder/target decoupling line of work: a frozen encoder's layers
differ in how linearly they expose a *downstream* target, and the last layer is not
reliably the best. We score each layer on two measurable properties:

* Fisher separability against the experts' correctness labels: the ratio of between-class
  to within-class scatter, tr(S_w^-1 S_b). A small head on top of the layer can only
  route well if "expert j gets this right" and "gets it wrong" fall in different places.
  We compute it in the layer's top principal subspace (the same dimension for every
  layer) with a little shrinkage on S_w, because with a few hundred questions and 384
  dimensions S_w is singular and the unreduced ratio would be pure noise. Fixing the
  dimension also makes the in-sample optimism of the ratio equal across layers, so
  scores stay comparable.
* Effective dimensionality: the participation ratio (sum λ)^2 / sum λ^2 of the layer's
  covariance eigenvalues. Layers whose variance collapses into a few directions (the
  anisotropy common in top layers) leave a small head little to work with; we use this
  as a soft penalty, not as the main criterion.

The in-sample Fisher ratio is optimistic, and by different amounts for differently
shaped layers (with MiniLM on a few hundred SQuAD questions, shuffled labels already
score about two thirds of the real ratio). So by default we subtract its mean over a few
label permutations ("chance") and use the excess:

    score = (excess / max excess) * (PR / max PR) ** pr_weight,

with excess floored at 0; when no layer beats chance the PR alone decides. The labels
are multi-expert, so the Fisher ratio is averaged over experts whose label is not
constant.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np


@dataclass(frozen=True)
class LayerScore:
    layer: int
    fisher: float
    fisher_chance: float  # mean Fisher ratio under permuted labels
    participation_ratio: float
    score: float


@dataclass(frozen=True)
class LayerSelection:
    chosen: tuple[int, ...]
    scores: tuple[LayerScore, ...]


def _principal_projection(X: np.ndarray, n_components: int) -> np.ndarray:
    Xc = X - X.mean(axis=0)
    r = max(1, min(n_components, Xc.shape[0] - 1, Xc.shape[1]))
    # Economy SVD; rows of vt are the principal directions.
    _, _, vt = np.linalg.svd(Xc, full_matrices=False)
    return Xc @ vt[:r].T


def fisher_separability(
    X: np.ndarray, labels: np.ndarray, n_components: int = 32, shrinkage: float = 0.05, min_class: int = 3
) -> float:
    """Mean over label columns of tr(S_w^-1 S_b) in X's top principal subspace.

    `labels` is (n,) or (n, k) of 0/1 values; columns with fewer than `min_class`
    examples in either class carry no separability information and are skipped.
    """
    X = np.asarray(X, dtype=np.float64)
    Y = np.asarray(labels)
    if Y.ndim == 1:
        Y = Y[:, None]
    if X.ndim != 2 or Y.shape[0] != X.shape[0]:
        raise ValueError(f"X {X.shape} and labels {Y.shape} disagree on the number of examples")
    Z = _principal_projection(X, n_components)
    n, r = Z.shape
    values = []
    for col in Y.T:
        pos = col.astype(bool)
        n_pos = int(pos.sum())
        if n_pos < min_class or n - n_pos < min_class:
            continue
        mu = Z.mean(axis=0)
        s_w = np.zeros((r, r))
        s_b = np.zeros((r, r))
        for mask in (pos, ~pos):
            Zc = Z[mask]
            mu_c = Zc.mean(axis=0)
            d = Zc - mu_c
            s_w += d.T @ d / n
            diff = (mu_c - mu)[:, None]
            s_b += (mask.sum() / n) * (diff @ diff.T)
        # Shrink S_w towards a scaled identity so the inverse is stable when n ~ r.
        s_w = (1 - shrinkage) * s_w + shrinkage * (np.trace(s_w) / r) * np.eye(r)
        values.append(float(np.trace(np.linalg.solve(s_w, s_b))))
    return float(np.mean(values)) if values else 0.0


def participation_ratio(X: np.ndarray) -> float:
    """(sum λ)^2 / sum λ^2 of the covariance eigenvalues: 1 for a line, d for isotropy."""
    X = np.asarray(X, dtype=np.float64)
    Xc = X - X.mean(axis=0)
    # Squared singular values are proportional to the covariance eigenvalues.
    s2 = np.linalg.svd(Xc, compute_uv=False) ** 2
    total = s2.sum()
    return float(total**2 / (s2**2).sum()) if total > 0 else 0.0


def select_layers(
    layer_features: Sequence[np.ndarray],
    labels: np.ndarray,
    n_select: int = 1,
    pr_weight: float = 0.5,
    n_components: int = 32,
    n_permutations: int = 3,
    seed: int = 0,
) -> LayerSelection:
    """Score every layer and return the `n_select` best (best first) with all scores.

    `layer_features[l]` is the (n, d_l) feature matrix of layer l; `labels` the (n,) or
    (n, k) 0/1 correctness labels of the experts. The same label permutations are used
    for every layer, so chance levels are comparable.
    """
    if not layer_features:
        raise ValueError("no layers to choose from")
    if n_select < 1:
        raise ValueError("n_select must be at least 1")
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    perms = [rng.permutation(labels.shape[0]) for _ in range(n_permutations)]
    fisher = np.array([fisher_separability(X, labels, n_components=n_components) for X in layer_features])
    chance = np.array(
        [
            np.mean([fisher_separability(X, labels[p], n_components=n_components) for p in perms]) if perms else 0.0
            for X in layer_features
        ]
    )
    excess = np.maximum(fisher - chance, 0.0)
    pr = np.array([participation_ratio(X) for X in layer_features])
    f_norm = excess / excess.max() if excess.max() > 0 else np.ones_like(excess)
    p_norm = pr / pr.max() if pr.max() > 0 else np.ones_like(pr)
    score = f_norm * p_norm**pr_weight
    # Stable order: higher score first, then the earlier (cheaper to compute) layer.
    order = sorted(range(len(score)), key=lambda i: (-score[i], i))
    scores = tuple(
        LayerScore(
            layer=i, fisher=float(fisher[i]), fisher_chance=float(chance[i]),
            participation_ratio=float(pr[i]), score=float(score[i]),
        )
        for i in range(len(score))
    )
    return LayerSelection(chosen=tuple(order[: min(n_select, len(order))]), scores=scores)

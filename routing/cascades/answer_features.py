"""Post-answer features: what the answers a cascade has paid for say about each other.

A pre-answer router has only the question to go on, and on the shared SQuAD replay data
that is a weak signal (the encoder layers' Fisher separability against correctness is
barely above shuffled labels). Once a few experts have answered, the answers
themselves are a much stronger one: a span that two independent readers return is
usually right, and which readers agree matters (agreement between two strong readers
means more than agreement with a weak one). The agreement cascade uses that signal
through one hand-set rule (quorum at a threshold tau); the learned cascade
(`routing/cascades/learned.py`) fits how much each piece of it is worth.

For one question, a cascade chain of `width` experts and the first `m` of them
answered, each answered candidate answer gets one feature row:

* which chain position gave it (one-hot, `width`);
* its token-F1 agreement with the answer of every other answered position (`width`,
  0 for itself and for positions not asked yet) and whether that agreement is exact
  (`width`);
* the share of the other answered positions agreeing with it at >= 0.5 and exactly;
* how many other answers it strictly contains, and how many contain it (boundary
  disputes: "the Normans" against "Normans in France"), as shares;
* whether it is empty ("no answer"), log(1 + its length in tokens), and its log length
  against the median log length of the answered candidates;
* a constant 1 (the bias; kept last so a regulariser can leave it out).

The layout depends only on `width`, so one weight vector per cascade step is all a
model needs, and the batch job computes exactly these numbers from a row's trail.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from routing.answers.squad import normalize_answer, token_f1

N_SHARED = 8  # the features after the three per-position blocks (see n_features)


def n_features(width: int) -> int:
    """Length of one candidate's feature row for a chain of `width` experts."""
    return 3 * width + N_SHARED


@dataclass(frozen=True)
class AnswerStats:
    """Pairwise facts about the answers of `n` questions at `width` chain positions.

    `answered[q, i]` is False where position i has not answered question q (or gave no
    answer at all, as a failed expert does: None agrees with nothing).
    """

    agreement: np.ndarray  # (n, width, width) token F1, 0 where either side is missing
    contains: np.ndarray  # (n, width, width) True where answer i strictly contains answer j
    length: np.ndarray  # (n, width) normalised tokens
    empty: np.ndarray  # (n, width) the answer is "" (no answer)
    answered: np.ndarray  # (n, width)

    @property
    def width(self) -> int:
        return self.length.shape[1]


def answer_stats(trails: Sequence[Sequence[Optional[str]]], width: int) -> AnswerStats:
    """Stats of each question's answers by chain position (a trail may be shorter than
    `width`: positions not asked yet count as unanswered)."""
    n = len(trails)
    agreement = np.zeros((n, width, width))
    contains = np.zeros((n, width, width), dtype=bool)
    length = np.zeros((n, width))
    empty = np.zeros((n, width), dtype=bool)
    answered = np.zeros((n, width), dtype=bool)
    for q, trail in enumerate(trails):
        if len(trail) > width:
            raise ValueError(f"a trail holds at most {width} answers, got {len(trail)}")
        norm: list[Optional[str]] = [None if a is None else normalize_answer(a) for a in trail]
        for i, a in enumerate(trail):
            if a is None:
                continue
            answered[q, i] = True
            length[q, i] = len(norm[i].split())
            empty[q, i] = not norm[i]
            for j in range(i + 1, len(trail)):
                b = trail[j]
                if b is None:
                    continue
                agreement[q, i, j] = agreement[q, j, i] = token_f1(a, b)
                ni, nj = norm[i], norm[j]
                if ni and nj and ni != nj:
                    contains[q, i, j] = f" {nj} " in f" {ni} "
                    contains[q, j, i] = f" {ni} " in f" {nj} "
    return AnswerStats(agreement, contains, length, empty, answered)


def _row_median(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Per row, the median of the values where mask holds (0 for a row with none)."""
    v = np.sort(np.where(mask, values, np.inf), axis=1)
    k = mask.sum(axis=1)
    lo = np.take_along_axis(v, np.maximum((k - 1) // 2, 0)[:, None], axis=1)[:, 0]
    hi = np.take_along_axis(v, np.minimum(k // 2, v.shape[1] - 1)[:, None], axis=1)[:, 0]
    return np.where(k > 0, (lo + hi) / 2, 0.0)


def candidate_features(stats: AnswerStats, m: int, candidate: int) -> np.ndarray:
    """(n, n_features(width)) features of the answer at chain position `candidate`
    once positions 0..m-1 were asked (see the module docstring for the layout)."""
    if not 0 <= candidate < m <= stats.width:
        raise ValueError(f"candidate {candidate} must be one of the {m} positions asked (chain of {stats.width})")
    n, width = stats.length.shape
    others = [j for j in range(m) if j != candidate]
    asked = stats.answered[:, :m]
    me = stats.answered[:, candidate]
    position = np.zeros((n, width))
    position[:, candidate] = 1.0
    agree = np.zeros((n, width))
    exact = np.zeros((n, width))
    if others:
        agree[:, others] = stats.agreement[:, candidate, others]
        exact[:, others] = stats.agreement[:, candidate, others] >= 1.0 - 1e-9
    n_other = np.maximum(asked[:, others].sum(axis=1), 1) if others else np.ones(n)
    shared = np.zeros((n, N_SHARED))
    if others:
        shared[:, 0] = (agree[:, others] >= 0.5).sum(axis=1) / n_other
        shared[:, 1] = exact[:, others].sum(axis=1) / n_other
        shared[:, 2] = stats.contains[:, candidate, others].sum(axis=1) / n_other
        shared[:, 3] = stats.contains[:, others, candidate].sum(axis=1) / n_other
    shared[:, 4] = stats.empty[:, candidate]
    log_len = np.log1p(stats.length[:, :m])
    shared[:, 5] = log_len[:, candidate]
    shared[:, 6] = log_len[:, candidate] - _row_median(log_len, asked)
    shared[:, 7] = 1.0
    X = np.hstack([position, agree, exact, shared])
    X[~me] = 0.0  # a missing answer is no candidate; callers mask it out of the choice
    return X

"""Turn an extractive reader's start/end logits into an answer string.

A reader scores every token as a possible answer start and end. A long context is cut
into overlapping windows, so one question has several sets of logits, and the answer may
lie in any of them. This module searches every window for the best valid spans, maps the
winner back to character offsets of the *original* context (so the answer is always a
verbatim slice of it), and applies the SQuAD 2.0 "no answer" rule.

Scores follow the convention of Hugging Face's SQuAD post-processing: a span scores
start_logit + end_logit (not a product of softmax probabilities), and the null score is
start_logit[cls] + end_logit[cls], minimised over the windows. Using raw logit sums keeps
scores comparable across windows, which per-window softmaxes would not be, and keeps
`null_score_threshold` values tuned with the Hugging Face scripts meaningful here.

Unlike the scripts, which only pair the top-n start and top-n end tokens, the search here
is exhaustive over every start/end pair in the allowed band, so the reported best span
really is the highest-scoring valid span.

Pure numpy on purpose: it is the part of the expert most worth property-testing, and it
must stay importable without torch or Ray.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np


@dataclass(frozen=True)
class Window:
    """One model window of one question, described in model-token positions.

    `offsets[t]` is the (char_start, char_end) of token t in the original context; it is
    only read where `context_mask[t]` is true, because question and special tokens carry
    offsets into other strings (or dummy zeros). `cls_index` is the token whose start and
    end logits encode "no answer"; None when the model has no such token.
    """

    start_logits: np.ndarray
    end_logits: np.ndarray
    offsets: np.ndarray
    context_mask: np.ndarray
    cls_index: Optional[int] = 0

    def __post_init__(self) -> None:
        # Normalise once here so the search below can rely on dtypes and shapes.
        start = np.asarray(self.start_logits, dtype=np.float64).reshape(-1)
        end = np.asarray(self.end_logits, dtype=np.float64).reshape(-1)
        n = start.shape[0]
        offsets = np.asarray(self.offsets, dtype=np.int64).reshape(-1, 2) if n else np.zeros((0, 2), np.int64)
        mask = np.asarray(self.context_mask, dtype=bool).reshape(-1)
        for name, arr in (("end_logits", end), ("offsets", offsets), ("context_mask", mask)):
            if arr.shape[0] != n:
                raise ValueError(f"Window.{name} has {arr.shape[0]} tokens, start_logits has {n}")
        if self.cls_index is not None and not 0 <= self.cls_index < max(n, 1):
            raise ValueError(f"Window.cls_index {self.cls_index} is outside the window of {n} tokens")
        object.__setattr__(self, "start_logits", start)
        object.__setattr__(self, "end_logits", end)
        object.__setattr__(self, "offsets", offsets)
        object.__setattr__(self, "context_mask", mask)

    def __len__(self) -> int:
        return int(self.start_logits.shape[0])


@dataclass(frozen=True)
class SpanCandidate:
    """A valid answer span, kept so callers can inspect the runners-up (n-best)."""

    text: str
    score: float
    char_start: int
    char_end: int
    window: int
    token_start: int
    token_end: int
    probability: float = 0.0

    @property
    def n_tokens(self) -> int:
        return self.token_end - self.token_start + 1


@dataclass(frozen=True)
class SpanAnswer:
    """The decoded answer of one question.

    `context[char_start:char_end] == text` always holds; the null answer is ("", 0, 0).
    `score` is the best span's score when a span is answered and the null score when the
    answer is empty (None only when there is neither a span nor a null score).
    """

    text: str
    score: Optional[float]
    char_start: int
    char_end: int
    is_null: bool
    n_tokens: int
    best_span_score: Optional[float]
    null_score: Optional[float]
    n_best: tuple[SpanCandidate, ...] = field(default_factory=tuple)


def decode_spans(
    windows: Sequence[Window],
    context: str,
    *,
    max_answer_len: int,
    n_best: int = 20,
    null_score_threshold: Optional[float] = None,
) -> SpanAnswer:
    """Pick the answer of one question from all of its windows.

    A span (s, e) of window w is valid when s <= e, e - s + 1 <= max_answer_len, every
    token from s to e is a context token with offsets inside `context`, and the
    characters it covers are not empty (an empty slice would be indistinguishable from
    the "no answer" answer). With `null_score_threshold` set, the answer is empty when
    null_score - best_span_score > threshold, the SQuAD 2.0 rule; with None the best span
    is always answered. No valid span at all also gives the empty answer.
    """
    if max_answer_len < 1:
        raise ValueError(f"max_answer_len must be at least 1, got {max_answer_len}")
    if n_best < 1:
        raise ValueError(f"n_best must be at least 1, got {n_best}")

    null_score = _null_score(windows)
    pools = [_window_spans(w, i, len(context), max_answer_len) for i, w in enumerate(windows)]
    candidates = _top_unique(pools, context, n_best)

    best = candidates[0] if candidates else None
    answer_null = best is None or (
        null_score_threshold is not None
        and null_score is not None
        and null_score - best.score > null_score_threshold
    )
    best_score = best.score if best is not None else None
    if answer_null:
        return SpanAnswer("", null_score, 0, 0, True, 0, best_score, null_score, candidates)
    assert best is not None
    return SpanAnswer(
        best.text, best.score, best.char_start, best.char_end, False, best.n_tokens,
        best_score, null_score, candidates,
    )


@np.errstate(invalid="ignore", over="ignore")  # inf + -inf is filtered out, not an error
def _null_score(windows: Sequence[Window]) -> Optional[float]:
    """Minimum CLS score over windows: the window that most believes the answer is
    inside it sets the bar, as in Hugging Face's post-processing."""
    scores = [
        w.start_logits[w.cls_index] + w.end_logits[w.cls_index]
        for w in windows
        if w.cls_index is not None and len(w) > 0
    ]
    finite = [float(s) for s in scores if np.isfinite(s)]
    return min(finite) if finite else None


@dataclass(frozen=True)
class _Pool:
    """All valid spans of one window, as parallel arrays (cheap to rank jointly)."""

    window: int
    scores: np.ndarray
    starts: np.ndarray
    ends: np.ndarray
    char_starts: np.ndarray
    char_ends: np.ndarray


@np.errstate(invalid="ignore", over="ignore")  # non-finite sums are dropped below
def _window_spans(w: Window, index: int, context_len: int, max_answer_len: int) -> _Pool:
    n = len(w)
    if n == 0:
        empty = np.zeros(0, dtype=np.int64)
        return _Pool(index, np.zeros(0), empty, empty, empty, empty)
    tok_ok = (
        w.context_mask
        & (w.offsets[:, 0] >= 0)
        & (w.offsets[:, 1] <= context_len)
        & (w.offsets[:, 0] <= w.offsets[:, 1])
    )
    # bad_before[t] = number of unusable tokens among 0..t-1; a span s..e stays inside
    # the context iff no unusable token lies in it, i.e. bad_before[e+1] == bad_before[s].
    bad_before = np.concatenate(([0], np.cumsum(~tok_ok)))
    width = min(max_answer_len, n)
    starts = np.repeat(np.arange(n), width)
    ends = starts + np.tile(np.arange(width), n)
    inside = ends < n
    starts, ends = starts[inside], ends[inside]
    ok = bad_before[ends + 1] == bad_before[starts]
    starts, ends = starts[ok], ends[ok]
    char_starts = w.offsets[starts, 0]
    char_ends = w.offsets[ends, 1]
    scores = w.start_logits[starts] + w.end_logits[ends]
    keep = (char_ends > char_starts) & np.isfinite(scores)
    return _Pool(index, scores[keep], starts[keep], ends[keep], char_starts[keep], char_ends[keep])


def _top_unique(pools: list[_Pool], context: str, n_best: int) -> tuple[SpanCandidate, ...]:
    """The n best spans over all windows, one per character span.

    Overlapping windows see the same text twice; listing it twice would crowd the
    n-best list, so each character span keeps only its best-scoring occurrence.
    """
    scores = np.concatenate([p.scores for p in pools]) if pools else np.zeros(0)
    if scores.size == 0:
        return ()
    window = np.concatenate([np.full(p.scores.size, p.window) for p in pools])
    starts = np.concatenate([p.starts for p in pools])
    ends = np.concatenate([p.ends for p in pools])
    cstarts = np.concatenate([p.char_starts for p in pools])
    cends = np.concatenate([p.char_ends for p in pools])

    # Ranking a shortlist is enough unless duplicates ate into it; then rank everything.
    # Ties break on (window, start, end) so the result never depends on array layout.
    shortlist = min(scores.size, 4 * n_best)
    order_keys = (ends, starts, window, -scores)
    if shortlist < scores.size:
        top = np.argpartition(-scores, shortlist - 1)[:shortlist]
        # argpartition may cut through a run of tied scores; include every tie.
        cutoff = scores[top].min()
        top = np.flatnonzero(scores >= cutoff)
    else:
        top = np.arange(scores.size)
    picked = _dedupe(top[np.lexsort(tuple(k[top] for k in order_keys))], cstarts, cends, n_best)
    if len(picked) < n_best and top.size < scores.size:
        picked = _dedupe(np.lexsort(order_keys), cstarts, cends, n_best)

    chosen = scores[picked]
    probs = np.exp(chosen - chosen.max())
    probs /= probs.sum()
    return tuple(
        SpanCandidate(
            text=context[int(cstarts[i]):int(cends[i])],
            score=float(scores[i]),
            char_start=int(cstarts[i]),
            char_end=int(cends[i]),
            window=int(window[i]),
            token_start=int(starts[i]),
            token_end=int(ends[i]),
            probability=float(p),
        )
        for i, p in zip(picked, probs)
    )


def _dedupe(order: np.ndarray, cstarts: np.ndarray, cends: np.ndarray, n_best: int) -> list[int]:
    seen: set[tuple[int, int]] = set()
    picked: list[int] = []
    for i in order:
        key = (int(cstarts[i]), int(cends[i]))
        if key in seen:
            continue
        seen.add(key)
        picked.append(int(i))
        if len(picked) == n_best:
            break
    return picked

"""The span decoder: hand-made logits with known answers, plus a brute-force oracle."""

from __future__ import annotations

import math
import re
from typing import Optional

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from routing.answers.spans import SpanAnswer, Window, decode_spans

CONTEXT = "Marie Curie won the Nobel Prize in Physics in 1903 and in Chemistry in 1911 ."
WORDS = [(m.start(), m.end()) for m in re.finditer(r"\S+", CONTEXT)]
LOW = -20.0


def word_window(
    first: int,
    last: int,
    *,
    n_question: int = 3,
    start: Optional[dict[int, float]] = None,
    end: Optional[dict[int, float]] = None,
    cls: tuple[float, float] = (LOW, LOW),
    question_logit: float = LOW,
) -> Window:
    """[CLS] q*n [SEP] words[first..last] [SEP], with logits given per *word* index.

    Question tokens carry offsets into the question (as real tokenizers do), which point
    at the start of the context: a decoder that ignored the mask would return them.
    """
    ctx = list(range(first, last + 1))
    n = 1 + n_question + 1 + len(ctx) + 1
    s = np.full(n, LOW)
    e = np.full(n, LOW)
    offsets = np.zeros((n, 2), dtype=np.int64)
    mask = np.zeros(n, dtype=bool)
    s[0], e[0] = cls
    for k in range(n_question):
        offsets[1 + k] = (k, k + 1)
        s[1 + k] = e[1 + k] = question_logit
    base = 2 + n_question
    for k, w in enumerate(ctx):
        t = base + k
        offsets[t] = WORDS[w]
        mask[t] = True
        s[t] = (start or {}).get(w, LOW)
        e[t] = (end or {}).get(w, LOW)
    return Window(s, e, offsets, mask, cls_index=0)


def words(i: int, j: int) -> str:
    return CONTEXT[WORDS[i][0]:WORDS[j][1]]


def test_single_window_best_span() -> None:
    w = word_window(0, len(WORDS) - 1, start={4: 5.0, 1: 2.0}, end={6: 4.0, 2: 3.0})
    ans = decode_spans([w], CONTEXT, max_answer_len=30)
    assert ans.text == words(4, 6) == "Nobel Prize in"
    assert (ans.char_start, ans.char_end) == (WORDS[4][0], WORDS[6][1])
    assert ans.score == pytest.approx(9.0)
    assert ans.n_tokens == 3 and not ans.is_null
    # The n-best list is ranked, unique, and led by the answer.
    assert ans.n_best[0].text == ans.text
    assert [c.score for c in ans.n_best] == sorted((c.score for c in ans.n_best), reverse=True)
    assert len({(c.char_start, c.char_end) for c in ans.n_best}) == len(ans.n_best)
    assert sum(c.probability for c in ans.n_best) == pytest.approx(1.0)


def test_n_best_is_capped() -> None:
    w = word_window(0, len(WORDS) - 1, start={i: float(i) for i in range(10)}, end={i: 0.0 for i in range(10)})
    ans = decode_spans([w], CONTEXT, max_answer_len=5, n_best=4)
    assert len(ans.n_best) == 4


def test_max_answer_len_enforced() -> None:
    # The unconstrained best is words 0..5 (6 tokens); with a 3-token limit the decoder
    # must settle for the best short span: start 0 with end 2 (1 + 0.5) beats start 4
    # with end 5 (LOW + 3).
    w = word_window(0, len(WORDS) - 1, start={0: 10.0}, end={5: 10.0, 2: 0.5})
    assert decode_spans([w], CONTEXT, max_answer_len=6).text == words(0, 5)
    ans = decode_spans([w], CONTEXT, max_answer_len=3)
    assert ans.text == words(0, 2)
    assert ans.n_tokens <= 3
    assert ans.score == pytest.approx(10.5)


def test_question_and_special_tokens_are_never_answers() -> None:
    w = word_window(0, len(WORDS) - 1, start={8: 1.0}, end={9: 1.0}, question_logit=100.0, cls=(50.0, 50.0))
    ans = decode_spans([w], CONTEXT, max_answer_len=30)
    assert ans.text == words(8, 9)


def test_span_may_not_cross_a_non_context_token() -> None:
    # Context tokens on both sides of a question token: start before it and end after it
    # would score best, but the span would swallow the question token.
    w = word_window(0, 5, start={1: 10.0, 4: 1.0}, end={4: 10.0, 5: 1.0})
    mask = w.context_mask.copy()
    gap = int(np.flatnonzero(mask)[2])  # the token of word 2
    mask[gap] = False
    broken = Window(w.start_logits, w.end_logits, w.offsets, mask, cls_index=0)
    ans = decode_spans([broken], CONTEXT, max_answer_len=30)
    assert ans.text == words(4, 4)


def test_best_span_in_second_of_two_overlapping_windows() -> None:
    first = word_window(0, 8, start={2: 3.0, 7: 1.0}, end={3: 3.0, 8: 1.0})
    second = word_window(6, 14, start={7: 1.0, 11: 6.0}, end={8: 1.0, 12: 6.0})
    ans = decode_spans([first, second], CONTEXT, max_answer_len=30)
    assert ans.text == words(11, 12) == "in Chemistry"
    assert CONTEXT[ans.char_start:ans.char_end] == ans.text
    assert ans.n_best[0].window == 1
    # Words 7..8 score 2.0 in both windows (the overlap): listed once, not twice.
    texts = [c.text for c in ans.n_best]
    assert texts.count(words(7, 8)) == 1


def test_null_score_is_the_minimum_over_windows() -> None:
    a = word_window(0, 8, start={2: 3.0}, end={3: 3.0}, cls=(4.0, 4.0))
    b = word_window(6, 14, cls=(1.0, 2.0))
    ans = decode_spans([a, b], CONTEXT, max_answer_len=30, null_score_threshold=0.0)
    assert ans.null_score == pytest.approx(3.0)
    assert ans.best_span_score == pytest.approx(6.0)
    assert ans.text == words(2, 3)


@pytest.mark.parametrize(
    ("threshold", "expect_null"),
    [(0.0, True), (3.9, True), (4.1, False), (10.0, False), (-100.0, True)],
)
def test_null_threshold_rule(threshold: float, expect_null: bool) -> None:
    # null = 10, best span = 6: null - best = 4, answer empty iff 4 > threshold.
    w = word_window(0, len(WORDS) - 1, start={2: 3.0}, end={3: 3.0}, cls=(5.0, 5.0))
    ans = decode_spans([w], CONTEXT, max_answer_len=30, null_score_threshold=threshold)
    assert ans.is_null is expect_null
    if expect_null:
        assert (ans.text, ans.char_start, ans.char_end, ans.n_tokens) == ("", 0, 0, 0)
        assert ans.score == pytest.approx(10.0)
    else:
        assert ans.text == words(2, 3)
        assert ans.score == pytest.approx(6.0)


def test_threshold_none_always_answers() -> None:
    w = word_window(0, len(WORDS) - 1, start={2: -5.0}, end={3: -5.0}, cls=(1000.0, 1000.0))
    ans = decode_spans([w], CONTEXT, max_answer_len=30, null_score_threshold=None)
    assert ans.text == words(2, 3) and not ans.is_null
    assert ans.null_score == pytest.approx(2000.0)


def test_no_valid_span_gives_the_empty_answer() -> None:
    w = word_window(0, 4, start={1: 5.0}, end={2: 5.0}, cls=(1.0, 1.0))
    no_context = Window(w.start_logits, w.end_logits, w.offsets, np.zeros(len(w), bool), cls_index=0)
    ans = decode_spans([no_context], CONTEXT, max_answer_len=30)
    assert ans.is_null and ans.text == "" and ans.n_best == ()
    assert ans.score == pytest.approx(2.0)  # the null score
    nothing = decode_spans([], CONTEXT, max_answer_len=30)
    assert nothing.is_null and nothing.score is None


def test_zero_width_tokens_cannot_make_an_empty_span() -> None:
    w = word_window(0, 4, start={1: 9.0, 3: 1.0}, end={1: 9.0, 3: 1.0})
    offsets = w.offsets.copy()
    t = int(np.flatnonzero(w.context_mask)[1])
    offsets[t] = (offsets[t][0], offsets[t][0])  # a token that covers no characters
    ans = decode_spans([Window(w.start_logits, w.end_logits, offsets, w.context_mask)], CONTEXT, max_answer_len=30)
    assert ans.text == words(1, 3)  # the zero-width token alone (9 + 9) is skipped


def test_window_rejects_inconsistent_arrays() -> None:
    with pytest.raises(ValueError, match="end_logits"):
        Window(np.zeros(4), np.zeros(3), np.zeros((4, 2)), np.ones(4, bool))
    with pytest.raises(ValueError, match="cls_index"):
        Window(np.zeros(4), np.zeros(4), np.zeros((4, 2)), np.ones(4, bool), cls_index=7)
    with pytest.raises(ValueError, match="max_answer_len"):
        decode_spans([], CONTEXT, max_answer_len=0)


# --- properties against an independent brute-force oracle ----------------------------


@np.errstate(invalid="ignore", over="ignore")
def oracle(windows: list[Window], context: str, max_len: int) -> tuple[Optional[float], Optional[float]]:
    """(best span score, null score) by enumerating every pair, written separately."""
    best: Optional[float] = None
    nulls = []
    for w in windows:
        n = len(w)
        if w.cls_index is not None and n:
            v = w.start_logits[w.cls_index] + w.end_logits[w.cls_index]
            if math.isfinite(v):
                nulls.append(float(v))
        for s in range(n):
            for e in range(s, min(n, s + max_len)):
                toks_ok = all(
                    w.context_mask[t] and 0 <= w.offsets[t][0] <= w.offsets[t][1] <= len(context)
                    for t in range(s, e + 1)
                )
                score = w.start_logits[s] + w.end_logits[e]
                if toks_ok and w.offsets[e][1] > w.offsets[s][0] and math.isfinite(score):
                    best = float(score) if best is None else max(best, float(score))
    return best, (min(nulls) if nulls else None)


logit = st.one_of(
    st.floats(-50, 50),
    st.sampled_from([float("nan"), float("inf"), float("-inf"), 1e300, -1e300]),
)


@st.composite
def realistic_windows(draw: st.DrawFn) -> tuple[str, list[Window]]:
    """A context cut into tokens, then into overlapping windows with question tokens."""
    context = draw(st.text(min_size=1, max_size=60))
    cuts = sorted(set(draw(st.lists(st.integers(0, len(context)), max_size=20)) + [0, len(context)]))
    tokens = list(zip(cuts[:-1], cuts[1:]))
    windows = []
    for _ in range(draw(st.integers(1, 4))):
        lo = draw(st.integers(0, max(len(tokens) - 1, 0)))
        hi = draw(st.integers(lo, len(tokens)))
        nq = draw(st.integers(0, 3))
        n_pad = draw(st.integers(0, 2))
        span = tokens[lo:hi]
        n = 1 + nq + 1 + len(span) + 1 + n_pad
        offsets = [(0, 0)] + [(0, 1)] * nq + [(0, 0)] + span + [(0, 0)] * (1 + n_pad)
        mask = [False] * (2 + nq) + [True] * len(span) + [False] * (1 + n_pad)
        s = draw(st.lists(logit, min_size=n, max_size=n))
        e = draw(st.lists(logit, min_size=n, max_size=n))
        windows.append(Window(np.array(s), np.array(e), np.array(offsets), np.array(mask), cls_index=0))
    return context, windows


@st.composite
def arbitrary_windows(draw: st.DrawFn) -> tuple[str, list[Window]]:
    """Anything shape-consistent: offsets out of range, masks with holes, no CLS."""
    context = draw(st.text(max_size=30))
    windows = []
    for _ in range(draw(st.integers(0, 3))):
        n = draw(st.integers(0, 12))
        ints = st.integers(-3, len(context) + 3)
        offsets = draw(st.lists(st.tuples(ints, ints), min_size=n, max_size=n))
        mask = draw(st.lists(st.booleans(), min_size=n, max_size=n))
        s = draw(st.lists(logit, min_size=n, max_size=n))
        e = draw(st.lists(logit, min_size=n, max_size=n))
        cls = draw(st.one_of(st.none(), st.integers(0, n - 1))) if n else None
        windows.append(Window(np.array(s, dtype=float), np.array(e, dtype=float),
                              np.array(offsets, dtype=np.int64).reshape(-1, 2), np.array(mask, dtype=bool), cls))
    return context, windows


def check_against_oracle(context: str, windows: list[Window], max_len: int, threshold: Optional[float]) -> SpanAnswer:
    ans = decode_spans(windows, context, max_answer_len=max_len, n_best=5, null_score_threshold=threshold)
    assert context[ans.char_start:ans.char_end] == ans.text
    for c in ans.n_best:
        assert context[c.char_start:c.char_end] == c.text != ""
        assert 1 <= c.n_tokens <= max_len
    best, null = oracle(windows, context, max_len)
    assert ans.best_span_score == best
    assert ans.null_score == null
    should_be_null = best is None or (threshold is not None and null is not None and null - best > threshold)
    assert ans.is_null is should_be_null
    if ans.is_null:
        assert ans.text == "" and ans.n_tokens == 0 and ans.score == null
    else:
        assert ans.text != "" and ans.score == best and 1 <= ans.n_tokens <= max_len
    return ans


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(realistic_windows(), st.integers(1, 6), st.one_of(st.none(), st.floats(-20, 20)))
def test_property_realistic_layouts(case: tuple[str, list[Window]], max_len: int, threshold: Optional[float]) -> None:
    context, windows = case
    check_against_oracle(context, windows, max_len, threshold)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(arbitrary_windows(), st.integers(1, 4), st.one_of(st.none(), st.floats(-20, 20)))
def test_property_never_crashes_on_arbitrary_layouts(
    case: tuple[str, list[Window]], max_len: int, threshold: Optional[float]
) -> None:
    context, windows = case
    check_against_oracle(context, windows, max_len, threshold)


# --- properties the oracle comparison does not cover: the n-best list, invariances -----

int_logit = st.integers(-20, 20).map(float)  # exact sums: shifts and ties stay exact


@st.composite
def integer_windows(draw: st.DrawFn) -> tuple[str, list[Window]]:
    """Realistic layouts (question tokens, overlapping context windows, padding) with
    small integer logits, so that ties are common and arithmetic is exact."""
    context = draw(st.text(alphabet="ab c", min_size=1, max_size=40))
    cuts = sorted(set(draw(st.lists(st.integers(0, len(context)), max_size=15)) + [0, len(context)]))
    tokens = list(zip(cuts[:-1], cuts[1:]))
    windows = []
    for _ in range(draw(st.integers(1, 3))):
        lo = draw(st.integers(0, max(len(tokens) - 1, 0)))
        hi = draw(st.integers(lo, len(tokens)))
        nq = draw(st.integers(0, 2))
        span = tokens[lo:hi]
        n = 1 + nq + 1 + len(span) + 1
        offsets = [(0, 0)] + [(0, 1)] * nq + [(0, 0)] + span + [(0, 0)]
        mask = [False] * (2 + nq) + [True] * len(span) + [False]
        s = draw(st.lists(int_logit, min_size=n, max_size=n))
        e = draw(st.lists(int_logit, min_size=n, max_size=n))
        windows.append(Window(np.array(s), np.array(e), np.array(offsets), np.array(mask), cls_index=0))
    return context, windows


def best_per_span(windows: list[Window], context: str, max_len: int) -> dict[tuple[int, int], float]:
    """Every valid character span and its best score over all windows, by enumeration."""
    best: dict[tuple[int, int], float] = {}
    for w in windows:
        for s in range(len(w)):
            for e in range(s, min(len(w), s + max_len)):
                if not all(w.context_mask[t] and 0 <= w.offsets[t][0] <= w.offsets[t][1] <= len(context) for t in range(s, e + 1)):
                    continue
                key = (int(w.offsets[s][0]), int(w.offsets[e][1]))
                if key[1] > key[0]:
                    best[key] = max(best.get(key, -math.inf), float(w.start_logits[s] + w.end_logits[e]))
    return best


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(integer_windows(), st.integers(1, 5), st.integers(1, 6))
def test_property_n_best_is_the_best_distinct_spans(case: tuple[str, list[Window]], max_len: int, n_best: int) -> None:
    context, windows = case
    ans = decode_spans(windows, context, max_answer_len=max_len, n_best=n_best)
    spans = best_per_span(windows, context, max_len)
    listed = [(c.char_start, c.char_end) for c in ans.n_best]
    assert len(listed) == len(set(listed)) == min(n_best, len(spans))  # distinct, and as many as exist
    assert [c.score for c in ans.n_best] == sorted(spans.values(), reverse=True)[: len(listed)]
    for c in ans.n_best:
        assert c.score == spans[(c.char_start, c.char_end)]  # each span listed with its best occurrence
        assert 0.0 <= c.probability <= 1.0
    if ans.n_best:
        assert sum(c.probability for c in ans.n_best) == pytest.approx(1.0)
        assert [c.probability for c in ans.n_best] == sorted((c.probability for c in ans.n_best), reverse=True)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(integer_windows(), st.integers(1, 5), st.one_of(st.none(), st.integers(-10, 10).map(float)),
       st.integers(-30, 30), st.integers(-30, 30))
def test_property_shifting_all_logits_changes_scores_not_answers(
    case: tuple[str, list[Window]], max_len: int, threshold: Optional[float], a: int, b: int
) -> None:
    """Span and null scores are both start + end logits, so adding `a` to every start
    logit and `b` to every end logit moves both by a + b and leaves the answer alone."""
    context, windows = case
    shifted = [Window(w.start_logits + a, w.end_logits + b, w.offsets, w.context_mask, w.cls_index) for w in windows]
    one = decode_spans(windows, context, max_answer_len=max_len, null_score_threshold=threshold)
    two = decode_spans(shifted, context, max_answer_len=max_len, null_score_threshold=threshold)
    assert (two.text, two.char_start, two.char_end, two.is_null) == (one.text, one.char_start, one.char_end, one.is_null)
    for x, y in ((one.score, two.score), (one.null_score, two.null_score), (one.best_span_score, two.best_span_score)):
        assert (x is None and y is None) or y == x + a + b


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(integer_windows(), st.integers(1, 5), st.floats(-30, 30), st.floats(-30, 30), st.randoms(use_true_random=False))
def test_property_threshold_is_monotone_and_window_order_only_breaks_ties(
    case: tuple[str, list[Window]], max_len: int, t1: float, t2: float, rng
) -> None:
    context, windows = case
    low, high = sorted((t1, t2))
    # Raising the threshold can only turn "no answer" into an answer, never the reverse.
    if decode_spans(windows, context, max_answer_len=max_len, null_score_threshold=high).is_null:
        assert decode_spans(windows, context, max_answer_len=max_len, null_score_threshold=low).is_null
    shuffled = list(windows)
    rng.shuffle(shuffled)
    a = decode_spans(windows, context, max_answer_len=max_len)
    b = decode_spans(shuffled, context, max_answer_len=max_len)
    assert (a.best_span_score, a.null_score, a.is_null) == (b.best_span_score, b.null_score, b.is_null)
    top = [s for s in best_per_span(windows, context, max_len).values() if s == a.best_span_score]
    if len(top) == 1:  # no tie for first place: the answer cannot depend on window order
        assert (a.text, a.char_start, a.char_end) == (b.text, b.char_start, b.char_end)

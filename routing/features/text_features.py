"""Cheap, model-free features of a (question, context) pair.

Why these: extractive QA systems fail in recognisable ways. Long contexts and low
lexical overlap between question and context make span finding hard (the answer
sentence is not a paraphrase of the question); "why"/"how" questions have long, fuzzy
answers that weak systems cut wrong, while "when"/"how many" answers are short and
typed; negations and many named entities trip up shallow matchers. None of this needs a
neural encoder, so these features cost microseconds and give every router a baseline
signal that transfers across articles.
"""

from __future__ import annotations

import math
import re
from typing import Sequence

import numpy as np

_WORD = re.compile(r"[A-Za-z0-9]+(?:'[a-z]+)?")
_SENT_END = re.compile(r"(?<=[.!?])\s+")
_STOP = frozenset(
    """a an the of in on at to for by with from and or but is are was were be been being
    what which who whom whose when where why how do does did that this these those it its
    as into than then there their they he she his her i you we our your not no""".split()
)

# (feature name, matcher on the lower-cased question) in priority order: the first hit wins.
_QWORDS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("qw_how_many", re.compile(r"\bhow (many|much|long|far|old|large|big)\b")),
    ("qw_what", re.compile(r"\bwhat\b")),
    ("qw_which", re.compile(r"\bwhich\b")),
    ("qw_who", re.compile(r"\bwho(m|se)?\b")),
    ("qw_when", re.compile(r"\bwhen\b|\bwhat year\b")),
    ("qw_where", re.compile(r"\bwhere\b")),
    ("qw_why", re.compile(r"\bwhy\b")),
    ("qw_how", re.compile(r"\bhow\b")),
)

TEXT_FEATURE_NAMES: tuple[str, ...] = (
    "log_question_words",
    "log_context_words",
    "log_context_sentences",
    *(name for name, _ in _QWORDS),
    "qw_other",
    "overlap_unigram",
    "overlap_bigram",
    "best_sentence_overlap",
    "best_sentence_position",
    "best_sentence_margin",
    "question_has_digit",
    "question_negation",
    "log_question_capitalised",
)


def _words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def _content(words: list[str]) -> list[str]:
    return [w for w in words if w not in _STOP]


def _question_word(question_lower: str) -> str:
    # "What year" is a when-question; check it before the generic "what".
    if re.search(r"\bwhat year\b|\bwhen\b", question_lower):
        return "qw_when"
    for name, pattern in _QWORDS:
        if pattern.search(question_lower):
            return name
    return "qw_other"


def text_features_one(question: str, context: str) -> np.ndarray:
    """The TEXT_FEATURE_NAMES vector of one pair (float64)."""
    q_words = _words(question)
    c_words = _words(context)
    q_content = set(_content(q_words))
    c_set = set(c_words)
    sentences = [s for s in _SENT_END.split(context) if s.strip()] or [context]

    overlap = len(q_content & c_set) / len(q_content) if q_content else 0.0
    q_bigrams = set(zip(q_words, q_words[1:]))
    c_bigrams = set(zip(c_words, c_words[1:]))
    bigram_overlap = len(q_bigrams & c_bigrams) / len(q_bigrams) if q_bigrams else 0.0

    # Which sentence shares most content words with the question, and by how much it
    # beats the runner-up: a clear winner means the answer sentence is easy to find.
    sent_scores = []
    for s in sentences:
        s_set = set(_words(s))
        sent_scores.append(len(q_content & s_set) / len(q_content) if q_content else 0.0)
    order = np.argsort(sent_scores)[::-1]
    best = float(sent_scores[order[0]])
    margin = best - (float(sent_scores[order[1]]) if len(order) > 1 else 0.0)
    position = float(order[0]) / max(len(sentences) - 1, 1)

    qword = _question_word(question.lower())
    one_hot = [1.0 if qword == name else 0.0 for name, _ in _QWORDS] + [1.0 if qword == "qw_other" else 0.0]
    raw_tokens = question.split()
    capitalised = sum(1 for t in raw_tokens[1:] if t[:1].isupper())
    negation = bool(re.search(r"\b(not|never|no|none|n't)\b|n't\b", question.lower()))

    return np.array(
        [
            math.log1p(len(q_words)),
            math.log1p(len(c_words)),
            math.log1p(len(sentences)),
            *one_hot,
            overlap,
            bigram_overlap,
            best,
            position,
            margin,
            float(any(ch.isdigit() for ch in question)),
            float(negation),
            math.log1p(capitalised),
        ],
        dtype=np.float64,
    )


def text_features(questions: Sequence[str], contexts: Sequence[str]) -> np.ndarray:
    """(n, len(TEXT_FEATURE_NAMES)) features for parallel lists of questions and contexts."""
    if len(questions) != len(contexts):
        raise ValueError(f"{len(questions)} questions but {len(contexts)} contexts")
    if not questions:
        return np.zeros((0, len(TEXT_FEATURE_NAMES)))
    return np.stack([text_features_one(q, c) for q, c in zip(questions, contexts)])

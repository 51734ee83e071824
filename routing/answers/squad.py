"""SQuAD data and the official scoring rules (v1.1 and v2.0).

The normalisation is the official one, re-implemented: lower-case, drop punctuation,
drop the articles a/an/the, collapse white space. Exact match and token F1 take the
maximum over the gold answers; an unanswerable question (SQuAD 2.0) is right only when
the prediction is empty.
"""

from __future__ import annotations

import collections
import json
import re
import string
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Mapping, Optional

_PUNCT = set(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)


def normalize_answer(text: str) -> str:
    text = text.lower()
    text = "".join(ch for ch in text if ch not in _PUNCT)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def _tokens(text: str) -> list[str]:
    return normalize_answer(text).split() if text else []


def exact_match(prediction: str, gold: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(gold))


def token_f1(prediction: str, gold: str) -> float:
    pred_toks, gold_toks = _tokens(prediction), _tokens(gold)
    if not pred_toks or not gold_toks:
        # An empty side is right only against another empty side (the v2.0 rule).
        return float(pred_toks == gold_toks)
    common = collections.Counter(pred_toks) & collections.Counter(gold_toks)
    overlap = sum(common.values())
    if overlap == 0:
        return 0.0
    precision = overlap / len(pred_toks)
    recall = overlap / len(gold_toks)
    return 2 * precision * recall / (precision + recall)


def score_one(prediction: Optional[str], golds: Iterable[str]) -> tuple[float, float]:
    """(exact match, F1) of one prediction against its gold answers.

    No gold answers (or only empty ones) means the question is unanswerable: the only
    correct prediction is the empty string. A missing prediction counts as empty.
    """
    prediction = prediction or ""
    golds = [g for g in golds if normalize_answer(g)] or [""]
    return (
        max(exact_match(prediction, g) for g in golds),
        max(token_f1(prediction, g) for g in golds),
    )


@dataclass(frozen=True)
class SquadQuestion:
    id: str
    question: str
    context: str
    answers: tuple[str, ...]
    is_impossible: bool
    title: str = ""


def iter_squad(doc: Mapping) -> Iterator[SquadQuestion]:
    """Flatten a parsed SQuAD JSON document (v1.1 or v2.0) into questions."""
    for article in doc["data"]:
        title = article.get("title", "")
        for paragraph in article["paragraphs"]:
            context = paragraph["context"]
            for qa in paragraph["qas"]:
                answers = tuple(a["text"] for a in qa.get("answers", []))
                yield SquadQuestion(
                    id=str(qa["id"]),
                    question=qa["question"],
                    context=context,
                    answers=answers,
                    is_impossible=bool(qa.get("is_impossible", False)) or not answers,
                    title=title,
                )


def load_squad(path: str | Path) -> list[SquadQuestion]:
    # utf-8-sig: a file saved by a Windows tool starts with a byte-order mark that is not text.
    with open(path, encoding="utf-8-sig") as fh:
        return list(iter_squad(json.load(fh)))


@dataclass
class ScoreTable:
    """EM and F1 (as fractions, 0..1) overall and per group (such as the expert)."""

    count: int = 0
    exact: float = 0.0
    f1: float = 0.0
    groups: dict[str, "ScoreTable"] = field(default_factory=dict)
    missing: int = 0

    def add(self, em: float, f1: float, group: Optional[str] = None) -> None:
        self.count += 1
        self.exact += em
        self.f1 += f1
        if group is not None:
            self.groups.setdefault(group, ScoreTable()).add(em, f1)

    def as_dict(self) -> dict:
        out = {
            "count": self.count,
            "exact": self.exact / self.count if self.count else 0.0,
            "f1": self.f1 / self.count if self.count else 0.0,
        }
        if self.groups:
            out["groups"] = {k: v.as_dict() for k, v in sorted(self.groups.items())}
        if self.missing:
            out["missing_predictions"] = self.missing
        return out


def score_predictions(
    gold: Iterable[SquadQuestion],
    predictions: Mapping[str, Optional[str]],
    groups: Optional[Mapping[str, str]] = None,
) -> ScoreTable:
    """Score every gold question; a question with no prediction counts as answered empty.

    That is the official script's convention too, so a job that loses rows is penalised
    rather than flattered.
    """
    table = ScoreTable()
    for q in gold:
        if q.id not in predictions:
            table.missing += 1
        em, f1 = score_one(predictions.get(q.id), () if q.is_impossible else q.answers)
        table.add(em, f1, (groups or {}).get(q.id, "(missing)" if q.id not in predictions else None))
    return table

"""Hand-made replay directories for router tests: small enough to score by hand."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

# Two articles, five questions. Gold answers and each expert's recorded answer are
# chosen so every F1 below can be checked by hand (see test_router_replay.py).
ARTICLES = [
    {
        "title": "Cats",
        "paragraphs": [
            {
                "context": "The big cat sat on the mat in 1999. Cats like warm places.",
                "qas": [
                    {"id": "c1", "question": "Where did the big cat sit?", "is_impossible": False,
                     "answers": [{"text": "on the mat", "answer_start": 16}]},
                    {"id": "c2", "question": "When did the cat sit?", "is_impossible": False,
                     "answers": [{"text": "1999", "answer_start": 30}, {"text": "in 1999", "answer_start": 27}]},
                    {"id": "c3", "question": "What colour is the cat?", "is_impossible": True, "answers": []},
                ],
            }
        ],
    },
    {
        "title": "Dogs",
        "paragraphs": [
            {
                "context": "Dogs bark at the postman every morning. The dog is called Rex.",
                "qas": [
                    {"id": "d1", "question": "What is the dog called?", "is_impossible": False,
                     "answers": [{"text": "Rex", "answer_start": 58}]},
                    {"id": "d2", "question": "Who do dogs bark at?", "is_impossible": False,
                     "answers": [{"text": "the postman", "answer_start": 13}]},
                ],
            }
        ],
    },
]

PREDICTIONS = {
    # cheap: right on c1, half right on c2 ... see the expected F1 table in the tests
    "cheap": {"c1": "the mat", "c2": "1999 cats", "c3": "warm places", "d1": "Rex", "d2": "every morning"},
    "dear": {"c1": "on the mat", "c2": "in 1999", "c3": "", "d1": "Rex.", "d2": "postman"},
    # covers only the answerable questions, like the SQuAD 1.1 systems
    "partial": {"c1": "big cat", "c2": "1999", "d1": "dog", "d2": "the postman"},
}
COSTS = {"cheap": 1.0, "dear": 10.0, "partial": 2.0}


def write_replay(
    path: Path,
    predictions: Optional[dict[str, dict[str, str]]] = None,
    costs: Optional[dict[str, float]] = None,
    articles: Optional[list] = None,
) -> Path:
    path = Path(path)
    (path / "predictions").mkdir(parents=True, exist_ok=True)
    (path / "questions.json").write_text(json.dumps({"version": "v2.0", "data": articles or ARTICLES}))
    for name, preds in (predictions or PREDICTIONS).items():
        (path / "predictions" / f"{name}.json").write_text(json.dumps(preds))
    (path / "costs.json").write_text(
        json.dumps({"experts": {n: {"cost": c} for n, c in (costs or COSTS).items()}})
    )
    return path

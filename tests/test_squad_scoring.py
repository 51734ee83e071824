"""Scoring follows the official SQuAD rules (v1.1 and v2.0)."""

import json

import pytest

from routing.answers.squad import load_squad, normalize_answer, score_one, score_predictions, token_f1


def test_normalisation_matches_official_rules():
    assert normalize_answer("The  Norman's  Conquest!") == "normans conquest"
    assert normalize_answer("an apple, a pear") == "apple pear"
    assert normalize_answer("  ") == ""
    # Articles only as whole words; "theatre" keeps its "the".
    assert normalize_answer("Theatre") == "theatre"


def test_f1_and_em():
    assert token_f1("the cat sat", "cat sat down") == pytest.approx(2 * (2 / 2) * (2 / 3) / (2 / 2 + 2 / 3))
    assert score_one("Paris", ["paris", "Paris, France"]) == (1.0, 1.0)
    em, f1 = score_one("in France", ["France"])
    assert em == 0.0 and f1 == pytest.approx(2 / 3)


def test_unanswerable_rule():
    assert score_one("", []) == (1.0, 1.0)
    assert score_one(None, []) == (1.0, 1.0)
    assert score_one("France", []) == (0.0, 0.0)
    assert score_one("", ["France"]) == (0.0, 0.0)


def test_replay_best_single_matches_published_figure(squad_replay_dir):
    """The data README: bert-large-ensemble-v1 reaches F1 about 0.91 on the 473
    answerable questions."""
    gold = [q for q in load_squad(squad_replay_dir / "questions.json") if not q.is_impossible]
    assert len(gold) == 473
    preds = json.loads((squad_replay_dir / "predictions" / "bert-large-ensemble-v1.json").read_text())
    table = score_predictions(gold, preds).as_dict()
    assert table["count"] == 473 and table["f1"] == pytest.approx(0.91, abs=0.01)


def test_missing_predictions_score_as_empty():
    from routing.answers.squad import SquadQuestion

    gold = [
        SquadQuestion("a", "q", "c", ("x",), False),
        SquadQuestion("b", "q", "c", (), True),
    ]
    table = score_predictions(gold, {}, groups={})
    d = table.as_dict()
    assert d["missing_predictions"] == 2
    assert d["f1"] == pytest.approx(0.5)  # the unanswerable one is right when empty

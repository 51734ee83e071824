"""Replay loading, official scoring of the matrices, and article splits."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest

from pipelines.cli import main
from routing.replay.data import ReplayDataError, load_replay, split_replay_by_article
from tests.router_data import write_replay


def test_scores_match_hand_computed_values(tmp_path):
    rs = load_replay(write_replay(tmp_path / "r"), covered_only=False)
    assert rs.expert_names == ("cheap", "partial", "dear")  # ordered by cost
    assert rs.costs.tolist() == [1.0, 2.0, 10.0]
    ids = [q.id for q in rs.questions]
    assert ids == ["c1", "c2", "c3", "d1", "d2"]
    f1 = {(q, e): rs.f1[i, j] for i, q in enumerate(ids) for j, e in enumerate(rs.expert_names)}
    em = {(q, e): rs.em[i, j] for i, q in enumerate(ids) for j, e in enumerate(rs.expert_names)}
    # "the mat" vs "on the mat": normalised {mat} vs {on, mat}: P=1, R=1/2 -> F1 2/3.
    assert f1[("c1", "cheap")] == pytest.approx(2 / 3)
    assert em[("c1", "cheap")] == 0.0
    # "1999 cats" vs golds "1999" (P=1/2, R=1 -> 2/3) and "in 1999" (P=1/2, R=1/2 -> 1/2): max 2/3.
    assert f1[("c2", "cheap")] == pytest.approx(2 / 3)
    # Unanswerable: only the empty answer is right.
    assert f1[("c3", "cheap")] == 0.0 and f1[("c3", "dear")] == 1.0 and em[("c3", "dear")] == 1.0
    # Punctuation is stripped: "Rex." == "Rex".
    assert em[("d1", "dear")] == 1.0
    # "postman" vs "the postman": the article is dropped, exact match.
    assert em[("d2", "dear")] == 1.0
    # "big cat" vs "on the mat": no overlap.
    assert f1[("c1", "partial")] == 0.0
    # The partial expert never answered c3: uncovered, NaN, not a zero.
    assert not rs.covered[2, 1] and np.isnan(rs.f1[2, 1]) and rs.answers[2][1] is None


def test_covered_only_keeps_questions_every_expert_answered(tmp_path):
    rs = load_replay(write_replay(tmp_path / "r"))
    assert [q.id for q in rs.questions] == ["c1", "c2", "d1", "d2"]
    assert rs.covered.all() and np.isfinite(rs.f1).all()


def test_uncovered_cells_can_count_as_wrong(tmp_path):
    rs = load_replay(write_replay(tmp_path / "r"), covered_only=False).uncovered_as_wrong()
    # "partial" never answered the unanswerable c3: wrong, not a credited abstention.
    assert rs.f1[2, 1] == 0.0 and rs.em[2, 1] == 0.0 and not rs.covered[2, 1]
    assert rs.f1[2, 2] == 1.0  # the expert that did abstain keeps its credit


def test_reference_replay_counts(squad_replay_dir):
    full = load_replay(squad_replay_dir, covered_only=False)
    covered = load_replay(squad_replay_dir)
    assert full.n_questions == 950 and covered.n_questions == 473
    assert full.n_experts == 8 and list(full.costs) == sorted(full.costs)
    best = covered.expert_index("bert-large-ensemble-v1")
    assert covered.f1[:, best].mean() == pytest.approx(0.906, abs=0.005)


def test_costs_and_predictions_must_agree(tmp_path):
    d = write_replay(tmp_path / "r")
    costs = json.loads((d / "costs.json").read_text())
    del costs["experts"]["dear"]
    (d / "costs.json").write_text(json.dumps(costs))
    with pytest.raises(ReplayDataError, match="no cost for"):
        load_replay(d)


def test_bad_cost_is_refused(tmp_path):
    d = write_replay(tmp_path / "r", costs={"cheap": -1.0, "dear": 10.0, "partial": 2.0})
    with pytest.raises(ReplayDataError, match="non-negative"):
        load_replay(d)


def test_split_by_article_writes_leave_one_out_folds(tmp_path):
    src = write_replay(tmp_path / "r")
    folds = split_replay_by_article(src, tmp_path / "folds")
    assert [f.test_article for f in folds] == ["Cats", "Dogs"]
    for f in folds:
        train = load_replay(f.train_dir, covered_only=False)
        test = load_replay(f.test_dir, covered_only=False)
        assert {q.title for q in test.questions} == {f.test_article}
        assert f.test_article not in {q.title for q in train.questions}
        assert train.expert_names == test.expert_names
        # Together they are the whole set, scored identically.
        assert train.n_questions + test.n_questions == 5
    cats = load_replay(folds[0].test_dir, covered_only=False)
    whole = load_replay(src, covered_only=False)
    np.testing.assert_array_equal(np.nan_to_num(cats.f1, nan=-1), np.nan_to_num(whole.f1[:3], nan=-1))
    manifest = json.loads((tmp_path / "folds" / "folds.json").read_text())
    assert [m["n_test"] for m in manifest["folds"]] == [3, 2]
    with pytest.raises(ReplayDataError, match="not empty"):
        split_replay_by_article(src, tmp_path / "folds")


def test_split_replay_cli_on_reference_data(squad_replay_dir, tmp_path, capsys):
    code = main(["split-replay", str(squad_replay_dir), "--by-article", "--output", str(tmp_path / "f")])
    assert code == 0
    tests = Counter()
    for fold in sorted((tmp_path / "f").iterdir()):
        if fold.is_dir():
            test = load_replay(fold / "test", covered_only=False)
            train = load_replay(fold / "train", covered_only=False)
            tests[test.questions[0].title] = test.n_questions
            assert test.n_questions + train.n_questions == 950
    assert tests == {"Normans": 208, "Computational_complexity_theory": 418, "Southern_California": 324}
    assert "Normans" in capsys.readouterr().out

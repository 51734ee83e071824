"""The learned cascade: features, the fitted stop/select rule, checkpoints, the job's plan."""

from __future__ import annotations

import json

import numpy as np
import pytest

from routing.cascades.answer_features import answer_stats, candidate_features, n_features
from routing.cascades.checkpoint import load_learned_cascade, save_learned_cascade
from routing.core.checkpoint_files import CheckpointError
from routing.cascades.learned_plan import LearnedCascadeModel, LearnedCascadePlan, decide_chain
from routing.cascades.agreement import AgreementCascade
from routing.cascades.learned import LearnedCascade, choose_threshold, fit_logistic
from routing.replay.data import load_replay
from tests.router_data import write_replay

# -- synthetic replay data where the right rule is known ------------------------------------

WORDS = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet"]


def _synthetic(path, n_per_article=80, seed=0, final_wrong_when_cheap_agree=False):
    """Two articles; cheap experts A (cost 1) and B (cost 2) are each right 60 % of the
    time, independently, and wrong with answers of their own; the final expert F
    (cost 20) is right 90 % of the time. So "A and B agree" means "both right", and the
    cheapest way to F's quality is: stop when they agree, ask F otherwise. With
    `final_wrong_when_cheap_agree`, F is wrong exactly where A and B agree: then only a
    rule that may return a cheap answer after F has spoken can beat F."""
    rng = np.random.default_rng(seed)
    articles, preds = [], {"A": {}, "B": {}, "F": {}}
    for art in range(2):
        qas = []
        context = " ".join(WORDS)
        for q in range(n_per_article):
            qid = f"a{art}q{q}"
            gold = f"{WORDS[q % 10]} {WORDS[(q * 3 + art) % 10]}"
            qas.append({"id": qid, "question": f"question {q}?", "is_impossible": False,
                        "answers": [{"text": gold, "answer_start": 0}]})
            a_right, b_right = rng.random() < 0.6, rng.random() < 0.6
            preds["A"][qid] = gold if a_right else f"wrong-a-{q}"
            preds["B"][qid] = gold if b_right else f"wrong-b-{q}"
            f_right = rng.random() < 0.9
            if final_wrong_when_cheap_agree:
                f_right = not (a_right and b_right)
            preds["F"][qid] = gold if f_right else f"wrong-f-{q}"
        articles.append({"title": f"Article{art}", "paragraphs": [{"context": context, "qas": qas}]})
    return write_replay(path, predictions=preds, costs={"A": 1.0, "B": 2.0, "F": 20.0}, articles=articles)


# -- pieces ---------------------------------------------------------------------------------

def test_logistic_regression_recovers_a_known_model():
    rng = np.random.default_rng(1)
    X = np.hstack([rng.normal(size=(4000, 2)), np.ones((4000, 1))])
    w_true = np.array([2.0, -1.0, 0.5])
    y = (rng.random(4000) < 1 / (1 + np.exp(-X @ w_true))).astype(float)
    w = fit_logistic(X, y, l2=0.0)
    assert np.allclose(w, w_true, atol=0.15)
    # The penalty shrinks the weights but never the bias (last column).
    strong = fit_logistic(X, y, l2=1e5)
    assert np.all(np.abs(strong[:2]) < 0.05) and abs(strong[2]) > 0.1
    with pytest.raises(ValueError, match="targets"):
        fit_logistic(X, y * 2, l2=1.0)


def test_candidate_features_by_hand():
    stats = answer_stats([["the Paris", "paris", "Paris France"], ["", None]], width=3)
    assert stats.answered.tolist() == [[True, True, True], [True, False, False]]
    x = candidate_features(stats, 3, 0)[0]
    w = 3
    assert x.shape == (n_features(w),)
    assert x[:w].tolist() == [1, 0, 0]  # position one-hot
    assert x[w:2 * w].tolist() == pytest.approx([0, 1.0, 2 / 3])  # token F1 with the others
    assert x[2 * w:3 * w].tolist() == [0, 1, 0]  # exact agreement
    shared = x[3 * w:]
    assert shared[0] == 1.0 and shared[1] == 0.5  # both others >= 0.5, one of two exact
    assert shared[2] == 0.0 and shared[3] == 0.5  # contained in "Paris France"
    assert shared[4] == 0.0 and shared[-1] == 1.0
    # Only the first position asked: no agreement evidence yet; an empty answer is flagged.
    y = candidate_features(stats, 1, 0)[1]
    assert y[3 * w + 4] == 1.0 and not y[w:3 * w].any()
    with pytest.raises(ValueError):
        candidate_features(stats, 1, 1)  # position 1 has not been asked


def test_decide_chain_stops_escalates_and_pays_by_hand():
    # Three questions, chain of three experts costing 1, 2, 10.
    s1 = np.array([[0.9], [0.5], [0.2]])
    s2 = np.array([[0.9, 0.1], [0.95, 0.2], [0.3, 0.4]])
    s3 = np.array([[0.0, 0.0, 1.0], [0.0, 0.0, 1.0], [0.8, 0.1, 0.6]])
    costs = np.array([1.0, 2.0, 10.0])
    choice, paid = decide_chain([s1, s2, s3], costs, theta=0.8)
    assert choice.tolist() == [0, 0, 0]  # q0 stops at once; q1 after two; q2's final step prefers position 0
    assert paid.tolist() == [1.0, 3.0, 13.0]
    choice, paid = decide_chain([s1, s2, s3], costs, theta=0.0)
    assert paid.tolist() == [1.0, 1.0, 1.0]
    choice, paid = decide_chain([s1, s2, s3], costs, theta=1.0)
    assert paid.tolist() == [13.0, 13.0, 13.0]  # nothing is trusted before the end


# -- fitting --------------------------------------------------------------------------------

def test_it_learns_to_stop_when_the_cheap_experts_agree(tmp_path):
    train = load_replay(_synthetic(tmp_path / "train", seed=0))
    test = load_replay(_synthetic(tmp_path / "test", seed=1))
    lc = LearnedCascade(max_stages=2).fit(train)
    assert lc.model_.chain == ("A", "B", "F")  # both cheap experts: their agreement is the signal
    f_f1 = float(np.nan_to_num(test.f1[:, test.expert_index("F")]).mean())
    curve = lc.sweep(test)
    within = [p for p in curve if p.f1 >= f_f1 - 0.01]
    assert within, "never reaches the final expert's F1"
    cheapest = min(within, key=lambda p: p.cost)
    # Stop on agreement (36 % of questions, both right) and ask F otherwise: about
    # 3 + 0.64 * 20 = 15.8 per question instead of 20, at F's F1 or better.
    assert cheapest.cost < 0.85 * 20.0
    # The threshold picked on training data is a usable operating point on test data.
    picked = curve[lc.pick()]
    assert picked.cost < 20.0 and picked.f1 >= f_f1 - 0.03


def test_after_the_final_expert_an_agreed_cheap_answer_can_win(tmp_path):
    train = load_replay(_synthetic(tmp_path / "train", seed=2, final_wrong_when_cheap_agree=True))
    test = load_replay(_synthetic(tmp_path / "test", seed=3, final_wrong_when_cheap_agree=True))
    lc = LearnedCascade(chain=["A", "B", "F"]).fit(train)
    f_f1 = float(test.f1[:, test.expert_index("F")].mean())
    oracle = float(np.nan_to_num(test.f1).max(axis=1).mean())
    whole_chain = lc.sweep(test)[-1]  # threshold 1: every expert asked, then the choice
    assert whole_chain.cost == pytest.approx(23.0)
    assert whole_chain.f1 > f_f1 + 0.2 and whole_chain.f1 == pytest.approx(oracle, abs=0.02)


def _when_synthetic(path, n_per_article=60, seed=0):
    """Three articles; a third of the questions ask "When ...?". The cheap expert A
    (cost 1) answers every other question right and every "When" question wrong, with a
    span as long as the right one, so its answer alone cannot say it failed; the final
    expert F (cost 10) is always right. Without the question no rule beats F alone at
    F's F1 (A's answers look alike); with it, the cheapest is: skip A on "When"
    questions, stop after A on the rest (0.67 * 1 + 0.33 * 10 = 4 per question)."""
    rng = np.random.default_rng(seed)
    articles, preds, when = [], {"A": {}, "F": {}}, {}
    for art in range(3):
        qas = []
        for q in range(n_per_article):
            qid = f"a{art}q{q}"
            gold = f"{WORDS[q % 10]} {WORDS[(q * 3 + art) % 10]}"
            wrong = f"{WORDS[(q + 5) % 10]} {WORDS[(q * 7 + 1) % 10]}"
            when[qid] = bool(rng.random() < 1 / 3)
            text = f"When did {WORDS[q % 10]} happen in part {q}?" if when[qid] else f"What is {WORDS[q % 10]} number {q}?"
            qas.append({"id": qid, "question": text, "is_impossible": False, "answers": [{"text": gold, "answer_start": 0}]})
            preds["A"][qid] = wrong if when[qid] else gold
            preds["F"][qid] = gold
        articles.append({"title": f"Article{art}", "paragraphs": [{"context": " ".join(WORDS), "qas": qas}]})
    return write_replay(path, predictions=preds, costs={"A": 1.0, "F": 10.0}, articles=articles), when


def _text_features(replay):
    from routing.features.featurizer import RouterFeaturizer

    fz = RouterFeaturizer(encoder=None).fit(replay.question_texts, replay.contexts, replay.f1)
    return fz, fz.transform(replay.question_texts, replay.contexts)


def test_question_features_let_the_cascade_skip_a_cheap_expert_that_fails_on_one_kind_of_question(tmp_path):
    train_dir, _ = _when_synthetic(tmp_path / "train", seed=0)
    test_dir, when = _when_synthetic(tmp_path / "test", seed=1)
    train, test = load_replay(train_dir), load_replay(test_dir)
    fz, X_train = _text_features(train)
    X_test = fz.transform(test.question_texts, test.contexts)
    is_when = np.array([when[q] for q in (x.id for x in test.questions)])

    blind = LearnedCascade().fit(train)  # answers only: it cannot tell A's failures apart
    assert blind.model_.gate is None
    blind_point = blind.sweep(test)[blind.pick()]

    lc = LearnedCascade().fit(train, X_train)
    assert lc.model_.gate is not None and lc.skip_share_ == pytest.approx(1 / 3, abs=0.1)
    start = lc.model_.gate.start(X_test)
    assert np.all(start[is_when] == 1) and np.all(start[~is_when] == 0)  # A skipped exactly on "When" questions
    point = lc.sweep(test, X=X_test)[lc.pick()]
    assert point.f1 == pytest.approx(1.0)  # F's quality
    assert point.cost == pytest.approx(1.0 * (~is_when).mean() + 10.0 * is_when.mean())
    assert blind_point.cost >= 10.0 > 2 * point.cost
    with pytest.raises(ValueError, match="give them"):
        lc.settings(test)  # a gated cascade cannot be evaluated without the questions' features


def test_a_gated_checkpoint_routes_in_the_job_as_offline_and_checks_its_encoder(tmp_path):
    import shutil

    from routing.features.featurizer import RouterFeaturizer
    from routing.rules import build_router
    from routing.core.config import LearnedCascadeRouter
    from tests.tiny_models import build_tiny_qa_model

    train_dir, _ = _when_synthetic(tmp_path / "train", seed=2)
    test_dir, when = _when_synthetic(tmp_path / "test", seed=3)
    train, test = load_replay(train_dir), load_replay(test_dir)
    fz, X_train = _text_features(train)
    lc = LearnedCascade().fit(train, X_train)
    with pytest.raises(ValueError, match="featurizer"):
        save_learned_cascade(lc, tmp_path / "no-fz", info={})
    save_learned_cascade(lc, tmp_path / "ckpt", info={}, featurizer=fz)
    plan = build_router(LearnedCascadeRouter(kind="learned-cascade", checkpoint=str(tmp_path / "ckpt")))
    assert "skips a cheap expert" in plan.describe()
    routed = plan.route(test.question_texts, test.contexts)
    assert routed == ["F" if when[q] else "A" for q in (x.id for x in test.questions)]
    assert plan.skipped_trail("F") == [{"answer": None, "score": None}] and plan.skipped_trail("A") == []
    # Step by step as the expert stages run it, from the trail the router hands on.
    X_test = fz.transform(test.question_texts, test.contexts)
    theta = plan.threshold
    choice, paid = lc.model_.decide(lc.trails(test), theta, X_test)
    for q, (first, trail) in enumerate(zip(routed, lc.trails(test))):
        pos, cost = _step_by_step(plan, trail, first)
        assert (pos, cost) == (choice[q], pytest.approx(paid[q])), q

    # A gate on encoder features refuses an encoder whose files differ from the one it was fitted with.
    enc = build_tiny_qa_model(tmp_path / "enc")
    efz = RouterFeaturizer(encoder=enc, max_length=32, layers=[1], pca_components=4, cache_dir=str(tmp_path / "cache"))
    lc2 = LearnedCascade().fit(train, efz.fit_transform(train.question_texts, train.contexts, train.f1))
    assert lc2.model_.gate is not None
    save_learned_cascade(lc2, tmp_path / "enc-ckpt", info={}, featurizer=efz)
    assert load_learned_cascade(tmp_path / "enc-ckpt").model.gate is not None
    other = shutil.copytree(enc, tmp_path / "other")  # the same model but for one weight
    from safetensors.torch import load_file as load_torch, save_file as save_torch

    weights = load_torch(str(other / "model.safetensors"))
    first = sorted(weights)[0]
    weights[first] = weights[first] + 1.0
    save_torch(weights, str(other / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match="hashes to"):
        load_learned_cascade(tmp_path / "enc-ckpt", encoder=str(other))
    moved = shutil.copytree(enc, tmp_path / "moved")
    assert load_learned_cascade(tmp_path / "enc-ckpt", encoder=str(moved)).model.gate is not None


def test_version_1_checkpoints_still_load(tmp_path):
    lc = _fitted(tmp_path)
    path = save_learned_cascade(lc, tmp_path / "ckpt", info={})
    cfg = json.loads((path / "router.json").read_text())
    assert cfg["version"] == 2 and cfg["gate"] is None
    del cfg["gate"]
    cfg["version"] = 1
    (path / "router.json").write_text(json.dumps(cfg))
    assert load_learned_cascade(path).model.gate is None


def test_fixed_chain_must_be_real_experts(tmp_path):
    train = load_replay(_synthetic(tmp_path / "train"))
    with pytest.raises(ValueError, match="at least two"):
        LearnedCascade(chain=["F"]).fit(train)
    with pytest.raises(ValueError, match=r"expert\(s\) \['nope'\]"):
        LearnedCascade(chain=["A", "nope"]).fit(train)


# -- checkpoints and the job's plan ----------------------------------------------------------

def _fitted(tmp_path):
    return LearnedCascade(max_stages=2).fit(load_replay(_synthetic(tmp_path / "train", seed=4)))


def _step_by_step(plan, trail, first):
    """(answering position, cost paid) for one row as the expert stages run it: from the
    expert the router named (with the skipped experts' empty answers), one step at a time."""
    held = [s["answer"] for s in plan.skipped_trail(first)]
    paid = 0.0
    while True:
        k = len(held)
        held.append(trail[k])
        paid += plan.model.costs[k]
        if k + 1 == plan.model.width:
            return plan.final_choice([held])[0], paid
        step = plan.next_steps([held])[0]
        if step.done:
            return step.answer_from, paid
        assert step.expert == plan.model.chain[k + 1]


def test_checkpoint_round_trip_and_the_plan_decide_as_offline(tmp_path):
    lc = _fitted(tmp_path)
    save_learned_cascade(lc, tmp_path / "ckpt", info={"note": "test"})
    with pytest.raises(CheckpointError, match="already holds"):
        save_learned_cascade(lc, tmp_path / "ckpt", info={})
    test = load_replay(_synthetic(tmp_path / "test", seed=5))
    trails = lc.trails(test)
    # Some answers missing, as when an expert fails on a row.
    trails[0][1] = None
    trails[3][0] = None
    for theta in (0.3, 0.7, 0.95):
        plan = load_learned_cascade(tmp_path / "ckpt", threshold=theta)
        offline_choice, offline_paid = lc.model_.decide(trails, theta)
        for q, trail in enumerate(trails):
            pos, paid = _step_by_step(plan, trail, plan.model.chain[0])
            assert pos == offline_choice[q] and paid == pytest.approx(offline_paid[q]), (theta, q)
    default = load_learned_cascade(tmp_path / "ckpt")
    assert default.threshold == pytest.approx(float(lc.thresholds_[lc.pick()]))
    assert default.route(["q1", "q2"], ["c", "c"]) == ["A", "A"]


def test_tampered_checkpoints_are_refused(tmp_path):
    from safetensors.numpy import load_file, save_file

    lc = _fitted(tmp_path)
    good = save_learned_cascade(lc, tmp_path / "good", info={})

    def variant(name, edit_json=None, edit_tensors=None):
        d = tmp_path / name
        d.mkdir()
        cfg = json.loads((good / "router.json").read_text())
        tensors = load_file(str(good / "weights.safetensors"))
        if edit_json:
            edit_json(cfg)
        if edit_tensors:
            tensors = edit_tensors(tensors)
        (d / "router.json").write_text(json.dumps(cfg))
        save_file(tensors, str(d / "weights.safetensors"))
        return d

    cases = {
        "format": (lambda c: c.update(format="routebatch-router"), None, "format"),
        "extra_key": (lambda c: c.update(code="import os"), None, "expected keys"),
        "bad_name": (lambda c: c["chain"].__setitem__(0, "../etc"), None, "chain"),
        "threshold": (lambda c: c.update(threshold=2.0), None, "threshold"),
        "missing_step": (None, lambda t: {k: v for k, v in t.items() if k != "step1"}, "expected tensors"),
        "dtype": (None, lambda t: {k: v.astype(np.float32) for k, v in t.items()}, "float64"),
        "shape": (None, lambda t: {**t, "step1": np.zeros(3)}, "weights must be"),
        "nan": (None, lambda t: {**t, "step1": np.full_like(t["step1"], np.nan)}, "finite"),
        "cal_shape": (None, lambda t: {**t, "calibration.f1": t["calibration.f1"][:, :3]}, "calibration tensors"),
        "cal_range": (None, lambda t: {**t, "calibration.f1": t["calibration.f1"] + 2.0}, "in range"),
        "grid": (lambda c: c.update(thresholds=c["thresholds"][::-1]), None, "increasing"),
    }
    for name, (ej, et, match) in cases.items():
        with pytest.raises(CheckpointError, match=match):
            load_learned_cascade(variant(name, ej, et))
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "router.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="JSON"):
        load_learned_cascade(tmp_path / "junk")


def test_plan_checks_its_inputs():
    w = n_features(3)
    model = LearnedCascadeModel(("a", "b", "c"), np.array([1.0, 2.0, 3.0]), tuple(np.zeros(w) for _ in range(3)), 1.0)
    with pytest.raises(ValueError, match="threshold"):
        LearnedCascadePlan(model, 1.5)
    plan = LearnedCascadePlan(model, 0.5)
    with pytest.raises(ValueError, match="1 to 2 answers"):
        plan.next_steps([["x", "y", "z"]])
    with pytest.raises(ValueError, match="holds 3 answers"):
        plan.final_choice([["x"]])
    bad = LearnedCascadeModel(("a", "b"), np.array([1.0, 2.0]), (np.zeros(2), np.zeros(2)), 1.0)
    with pytest.raises(ValueError, match="weights must be"):
        LearnedCascadePlan(bad, 0.5)


def test_train_router_cli_writes_a_learned_cascade_the_job_config_loads(tmp_path, capsys):
    from pipelines.cli import main
    from routing.core.config import LearnedCascadeRouter
    from routing.rules import build_router

    data = _synthetic(tmp_path / "profile", seed=6)
    out = tmp_path / "router"
    assert main(["train-router", "--profile", str(data), "--output", str(out), "--router", "learned-cascade"]) == 0
    said = capsys.readouterr().out
    assert f"wrote {out}: learned cascade A>B>F" in said and "threshold" in said
    plan = build_router(LearnedCascadeRouter(kind="learned-cascade", checkpoint=str(out), threshold=0.5))
    assert isinstance(plan, LearnedCascadePlan) and plan.threshold == 0.5 and plan.final == "F"
    # A second run does not silently replace it.
    assert main(["train-router", "--profile", str(data), "--output", str(out), "--router", "learned-cascade"]) != 0
    assert "already holds" in capsys.readouterr().err


def test_choose_threshold_for_a_budget_or_an_accuracy_target():
    thresholds = np.array([0.0, 0.5, 1.0])
    # Three thresholds on four held-out questions: cheap and weak, middle, dear and as good as the reference.
    f1 = np.array([[0.0, 1.0, 0.0, 1.0], [1.0, 1.0, 0.0, 1.0], [1.0, 1.0, 1.0, 1.0]])
    cost = np.array([[1.0] * 4, [2.0, 2.0, 6.0, 2.0], [6.0] * 4])
    ref = np.ones(4)
    assert choose_threshold(thresholds, f1, cost, ref, budget_per_item=3.0).threshold == 0.5
    assert choose_threshold(thresholds, f1, cost, ref, budget_per_item=100.0).threshold == 1.0
    low = choose_threshold(thresholds, f1, cost, ref, budget_per_item=0.5)
    assert low.threshold == 0.0 and "below every threshold" in low.description
    # Four questions cannot certify 0.9 of the reference: every question to the final expert.
    assert choose_threshold(thresholds, f1, cost, ref, accuracy_target=0.9).threshold is None
    # Many questions on which every threshold matches the reference: the cheapest certified one.
    many = 400
    good = np.ones((3, many))
    choice = choose_threshold(thresholds, good, np.tile([[1.0], [2.0], [6.0]], many), np.ones(many), accuracy_target=0.95)
    assert choice.threshold == 0.0 and "lower bound" in choice.description
    with pytest.raises(ValueError, match="exactly one"):
        choose_threshold(thresholds, f1, cost, ref)


def test_a_checkpoint_turns_budgets_and_targets_into_thresholds(tmp_path):
    lc = _fitted(tmp_path)
    save_learned_cascade(lc, tmp_path / "ckpt", info={})
    budget = 0.5 * (lc.oof_cost_.mean(axis=1).min() + lc.oof_cost_.mean(axis=1).max())
    plan = load_learned_cascade(tmp_path / "ckpt", budget_per_item=budget)
    expected = choose_threshold(lc.thresholds_, lc.oof_f1_, lc.oof_cost_, lc.reference_f1_, budget_per_item=budget)
    assert plan.threshold == expected.threshold and plan.threshold is not None
    assert "budget" in plan.describe()
    # A target no threshold can certify: the final expert alone, asked first.
    strict = load_learned_cascade(tmp_path / "ckpt", accuracy_target=1.0)
    assert strict.final_only and strict.route(["q"], ["c"]) == ["F"] and "F only" in strict.describe()
    with pytest.raises(ValueError, match="choose one"):
        load_learned_cascade(tmp_path / "ckpt", 0.5, budget_per_item=1.0)
    # The out-of-fold outcomes are what a model that never saw the question decided.
    assert lc.oof_f1_.shape == (len(lc.thresholds_), 160) and np.all(lc.oof_cost_ >= 1.0)
    assert [c for c, _ in lc.train_curve_] == pytest.approx(list(lc.oof_cost_.mean(axis=1)))


def test_thresholds_sit_where_rows_change_their_decision():
    from routing.cascades.learned import threshold_grid

    rng = np.random.default_rng(3)
    # Scores bunched near 0.9 (as fitted step models give): an even grid would put one
    # threshold among them; the quantile grid puts most there.
    step1 = np.clip(0.9 + 0.01 * rng.normal(size=(500, 1)), 0, 1)
    step2 = np.full((500, 2), -np.inf)
    grid = threshold_grid([step1, step2], 51)
    assert grid[0] == 0.0 and grid[-1] == 1.0 and np.all(np.diff(grid) > 0)
    assert np.sum((grid > 0.85) & (grid < 0.95)) >= 40


def test_deployed_choice_is_the_cheapest_within_tolerance_else_the_best():
    from routing.calibration.policy import deployed_choice

    ref = np.full(4, 0.8)
    f1 = np.array([[0.5] * 4, [0.79] * 4, [0.82] * 4, [0.8] * 4])
    cost = np.array([[1.0] * 4, [2.0] * 4, [5.0] * 4, [9.0] * 4])
    t, rank = deployed_choice(f1, cost, ref, tolerance=0.01)
    assert t == 1 and rank[0] == 0
    assert deployed_choice(f1, cost, ref, tolerance=0.0)[0] == 2
    t, rank = deployed_choice(f1[:2], cost[:2], ref, tolerance=0.0)  # nothing qualifies
    assert t == 1 and rank[0] == 1
    # A margin of standard errors asks more of a noisy setting than of a steady one.
    noisy = np.array([[0.75, 0.85, 0.75, 0.85], [0.8] * 4])
    assert deployed_choice(noisy, cost[:2], ref, tolerance=0.0, margin_se=0.0)[0] == 0
    assert deployed_choice(noisy, cost[:2], ref, tolerance=0.0, margin_se=1.0)[0] == 1


def test_pareto_chains_leave_out_experts_a_cheaper_one_beats(tmp_path):
    replay = load_replay(_synthetic(tmp_path / "r"))
    names = list(replay.expert_names)
    lc = LearnedCascade(candidates="pareto")
    mean_f1 = np.array([{"A": 0.5, "B": 0.4, "F": 0.9}[n] for n in names])  # B (cost 2) is beaten by the cheaper A
    chains = lc._chains(names, replay.costs, names.index("F"), mean_f1)
    assert [[names[j] for j in c] for c in chains] == [["A", "F"]]
    every = LearnedCascade()._chains(names, replay.costs, names.index("F"), mean_f1)  # the default: all
    assert len(every) == 3
    assert len(LearnedCascade(max_stages=1)._chains(names, replay.costs, names.index("F"), mean_f1)) == 2


@pytest.mark.parametrize("cls,params", [
    (LearnedCascade, {"max_stages": 2, "l2": (1.0,), "n_thresholds": 21, "seed": 3}),
    (AgreementCascade, {"max_stages": 2, "taus": (0.5, 1.0)}),
])
def test_cascades_follow_the_estimator_conventions(tmp_path, cls, params):
    # Parameters kept as given, nothing learnt in the constructor, fit returns the
    # estimator, what it learnt in trailing-underscore attributes.
    est = cls(**params)
    assert all(getattr(est, k) is v for k, v in params.items())
    assert not [a for a in vars(est) if a.endswith("_")]
    assert est.fit(load_replay(_synthetic(tmp_path / "train", seed=5))) is est
    assert all(getattr(est, k) is v for k, v in params.items())
    assert "expert_names_" in vars(est)

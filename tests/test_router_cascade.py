"""The agreement cascade: decisions by hand, and the configuration family it fits."""

from __future__ import annotations

import numpy as np
import pytest

from routing.cascades.agreement_plan import CascadePlan, answer_agreement, cascade_decide, pairwise_agreement
from routing.cascades.agreement import AgreementCascade
from routing.replay.data import load_replay


def test_agreement_is_normalised_token_f1():
    assert answer_agreement("The Eiffel Tower", "eiffel tower.") == 1.0
    assert answer_agreement("", "") == 1.0  # both abstain
    assert answer_agreement("", "Paris") == 0.0
    assert answer_agreement("in Paris France", "Paris") == pytest.approx(0.5)
    # No recorded answer is no evidence: it agrees with nothing, not even an abstention.
    assert answer_agreement(None, "") == 0.0 and answer_agreement(None, None) == 0.0


def test_cascade_decisions_and_costs_by_hand():
    # experts: 0 (cost 1), 1 (cost 2), 2 (cost 3), 3 = final (cost 40)
    answers = [
        ["Paris", "paris", "Lyon", "Nice"],  # 0 and 1 agree -> stop after two stages
        ["Paris", "Lyon", "lyon", "Nice"],  # 2 agrees with 1 -> stop after three
        ["Paris", "Lyon", "Nice", "Rome"],  # nobody agrees -> final
    ]
    costs = np.array([1.0, 2.0, 3.0, 40.0])
    quality = np.array([0.5, 0.7, 0.8, 0.9])
    agreement = pairwise_agreement(answers, [0, 1, 2])
    choice, paid = cascade_decide(agreement, (0, 1, 2), 3, quality, costs, tau=1.0, n=3)
    assert choice.tolist() == [1, 2, 3]  # the better expert of an agreeing pair answers
    assert paid.tolist() == [3.0, 6.0, 46.0]
    # tau = 0: any two answers "agree", so everyone stops after two stages.
    choice, paid = cascade_decide(agreement, (0, 1, 2), 3, quality, costs, tau=0.0, n=3)
    assert choice.tolist() == [1, 1, 1] and paid.tolist() == [3.0, 3.0, 3.0]


def test_quorum_waits_for_enough_supporters_and_gives_up_early():
    # experts: 0 (cost 1), 1 (cost 2), 2 (cost 3), 3 (cost 4), 4 = final (cost 40)
    answers = [
        ["Paris", "paris", "Paris", "Lyon", "Nice"],  # 3 agree after three stages
        ["Paris", "Lyon", "Nice", "Rome", "Oslo"],  # after stage 2 no answer can reach 3 of 4
        ["Paris", "paris", "Lyon", "lyon", "Nice"],  # two pairs of two: never three
        ["Lyon", "Paris", "paris", "Paris", "Nice"],  # the late majority wins
    ]
    costs = np.array([1.0, 2.0, 3.0, 4.0, 40.0])
    quality = np.array([0.5, 0.6, 0.7, 0.8, 0.9])
    agreement = pairwise_agreement(answers, [0, 1, 2, 3])
    choice, paid = cascade_decide(agreement, (0, 1, 2, 3), 4, quality, costs, tau=1.0, n=4, quorum=3)
    assert choice.tolist() == [2, 4, 4, 3]  # the best of the agreeing group answers
    # Row 1: three different answers after three stages, so one more stage could give an
    # answer at most 2 supporters: escalated there, the fourth stage never paid for.
    # Row 2: two groups of two can still become three until the last stage answers.
    assert paid.tolist() == [6.0, 46.0, 50.0, 10.0]
    # Quorum 2 is the "any two agree" rule.
    choice2, paid2 = cascade_decide(agreement, (0, 1, 2, 3), 4, quality, costs, tau=1.0, n=4)
    assert choice2.tolist() == [1, 4, 1, 2] and paid2.tolist() == [3.0, 50.0, 3.0, 6.0]
    with pytest.raises(ValueError, match="quorum"):
        cascade_decide(agreement, (0, 1), 4, quality, costs, tau=1.0, n=4, quorum=1)


def test_fitted_family_is_a_cost_ordered_front_ending_at_the_final_expert(squad_replay_dir):
    rs = load_replay(squad_replay_dir)
    train = rs.subset(np.arange(0, rs.n_questions, 2))
    cascade = AgreementCascade(max_stages=2).fit(train)
    configs = cascade.configs_
    assert configs[-1].stages == () and cascade.describe(len(configs) - 1) == "bert-large-ensemble-v1 only"
    staged = configs[:-1]
    assert len(staged) >= 3
    assert all(a.train_cost < b.train_cost and a.train_f1 < b.train_f1 for a, b in zip(staged, staged[1:]))
    # Replaying the family on its own training questions reproduces the stored figures.
    curve = cascade.sweep(train)
    for cfg, point in zip(configs, curve):
        assert point.cost == pytest.approx(cfg.train_cost) and point.f1 == pytest.approx(cfg.train_f1)
    # Agreement pays: somewhere on the front, F1 within 2 points of the final expert at
    # under half its cost.
    final_f1 = configs[-1].train_f1
    assert any(c.train_cost < 20 and c.train_f1 > final_f1 - 0.02 for c in staged)


def test_fixed_stages_are_validated(squad_replay_dir):
    rs = load_replay(squad_replay_dir)
    with pytest.raises(ValueError, match="at least two"):
        AgreementCascade(stages=["nlnet-single"]).fit(rs)
    cascade = AgreementCascade(stages=["r-net-plus-ensemble", "nlnet-single"]).fit(rs)
    assert all(c.stages in ((), (3, 4)) for c in cascade.configs_)


# --- the batch job's per-row steps (CascadePlan) against the offline rule -------------

_VOCAB = ["Paris", "paris", "Paris France", "in Paris, France", "Lyon", "Lyon France", "", None]


def _walk(plan: CascadePlan, row: list, names: list[str]) -> tuple[str, list[str]]:
    """One row through the cascade the way the job's stages take it: (answering expert, experts asked)."""
    asked, trail = [plan.stages[0]], []
    while asked[-1] != plan.final:
        trail.append(row[names.index(asked[-1])])
        step = plan.next_step(trail)
        if step.done:
            assert plan.stages[step.answer_from] == step.expert
            return step.expert, asked
        asked.append(step.expert)
    return plan.final, asked


@pytest.mark.parametrize(
    "quorum, tau, n_stages, given_quality",
    [(2, 0.0, 2, True), (2, 0.5, 3, True), (2, 1.0, 4, False), (3, 0.5, 3, True), (3, 0.8, 4, False), (4, 0.6, 4, True), (3, 1.0, 5, True)],
)
def test_plan_steps_give_the_choices_and_costs_of_cascade_decide(quorum, tau, n_stages, given_quality):
    rng = np.random.default_rng(1000 * quorum + 10 * n_stages + int(10 * tau))
    n_experts, n = 6, 400
    names = [f"e{j}" for j in range(n_experts)]
    order = [int(j) for j in rng.permutation(n_experts)]  # stages in no particular index order
    stages, final = order[:n_stages], order[n_stages]
    answers = [[_VOCAB[k] for k in rng.integers(len(_VOCAB), size=n_experts)] for _ in range(n)]
    if given_quality:
        quality = rng.random(n_experts)
        plan_quality = {names[j]: float(quality[j]) for j in stages}
    else:  # the config's default: later stages are better
        quality = np.zeros(n_experts)
        quality[stages] = np.arange(n_stages)
        plan_quality = None
    costs = 2.0 ** np.arange(n_experts)  # each expert one bit: `paid` says exactly who was asked
    choice, paid = cascade_decide(pairwise_agreement(answers, stages), stages, final, quality, costs, tau, n, quorum)
    plan = CascadePlan([names[j] for j in stages], names[final], tau, quorum, plan_quality)
    outcomes = {"stop": 0, "final": 0}
    for i, row in enumerate(answers):
        expert, asked = _walk(plan, row, names)
        assert expert == names[choice[i]], i
        assert sum(costs[names.index(e)] for e in asked) == paid[i], i
        outcomes["final" if expert == plan.final else "stop"] += 1
    if tau > 0:  # at tau 0 any two answers agree: every row stops
        assert all(outcomes.values())  # both ends of the rule were exercised


def test_plan_steps_in_one_call_match_row_by_row():
    plan = CascadePlan(["a", "b", "c"], "z", tau=0.5, quorum=2)
    trails = [["Paris"], ["Paris", "paris"], ["Paris", "Lyon"], ["Paris", "Lyon", None], [None, None, None], ["Lyon", "Paris", "paris"]]
    steps = plan.next_steps(trails)
    assert steps == [plan.next_step(t) for t in trails]
    assert [(s.expert, s.done) for s in steps] == [("b", False), ("b", True), ("c", False), ("z", False), ("z", False), ("c", True)]
    assert plan.route(["q1", "q2"], ["c1", "c2"]) == ["a", "a"]
    with pytest.raises(ValueError, match="trail"):
        plan.next_steps([["a", "b", "c", "d"]])
    with pytest.raises(ValueError, match="quorum"):
        CascadePlan(["a", "b"], "z", tau=0.5, quorum=3)


def test_a_fitted_setting_is_a_valid_job_router(squad_replay_dir):
    from routing.core.config import CascadeRouter

    rs = load_replay(squad_replay_dir)
    cascade = AgreementCascade(max_stages=3).fit(rs.subset(np.arange(0, rs.n_questions, 2)))
    pick = cascade.pick()
    c = cascade.configs_[pick]
    assert c.stages and c.train_f1 >= cascade.configs_[-1].train_f1 - 0.01
    assert all(o.train_cost >= c.train_cost for o in cascade.configs_ if o.train_f1 >= cascade.configs_[-1].train_f1 - 0.01)
    spec = CascadeRouter.model_validate(cascade.router_fields(pick))
    assert ">".join([*spec.stages, spec.final]) == cascade.describe(pick).split(" @")[0]
    # The job's plan from those fields decides as the fitted cascade does.
    answers = rs.answers
    choice, _ = cascade.decide(answers, pick)
    plan = CascadePlan.from_spec(spec)
    names = list(rs.expert_names)
    assert [names.index(_walk(plan, row, names)[0]) for row in answers] == choice.tolist()
    assert cascade.router_fields(len(cascade.configs_) - 1) is None  # "final only" is a fixed router


def test_the_setting_to_run_is_chosen_by_cross_validation_over_articles(squad_replay_dir):
    """pick() uses the slack whose out-of-fold F1 (each article decided by a cascade fitted
    without it) is within a point of the final expert at the lowest out-of-fold cost, and
    cv_cost_ / cv_f1_ are those out-of-fold figures, recomputed here by hand."""
    from routing.calibration.policy import deployed_choice
    from routing.replay.data import grouped_folds

    rs = load_replay(squad_replay_dir)
    slacks = (0.0, 0.01, 0.03)
    cascade = AgreementCascade(max_stages=2, slacks=slacks).fit(rs)
    assert cascade.slack_ in slacks and cascade.pick() == cascade.pick(cascade.slack_)
    f1 = np.nan_to_num(rs.f1, nan=0.0)
    out_f1 = np.zeros((len(slacks), rs.n_questions))
    out_cost = np.zeros_like(out_f1)
    folds = grouped_folds(rs, 0)
    assert len(folds) == len(set(rs.titles)) >= 2  # one held-out article per fold
    for fit_rows, val_rows in folds:
        fold = AgreementCascade(max_stages=2, final="bert-large-ensemble-v1", inner_cv=False).fit(rs.subset(fit_rows))
        _, vf1, vcost = fold.settings(rs.subset(val_rows))
        for i, s in enumerate(slacks):
            out_f1[i, val_rows], out_cost[i, val_rows] = vf1[fold.pick(s)], vcost[fold.pick(s)]
    i, _ = deployed_choice(out_f1, out_cost, f1[:, cascade.final_], 0.01)
    assert cascade.slack_ == slacks[i]
    assert cascade.cv_cost_ == pytest.approx(out_cost[i].mean()) and cascade.cv_f1_ == pytest.approx(out_f1[i].mean())
    # Without the inner cross-validation the figures are the in-sample ones of pick(tolerance).
    plain = AgreementCascade(max_stages=2, inner_cv=False).fit(rs)
    assert plain.cv_f1_ == plain.configs_[plain.pick()].train_f1 and plain.slack_ == plain.tolerance
    with pytest.raises(ValueError, match="slacks"):
        AgreementCascade(slacks=()).fit(rs)

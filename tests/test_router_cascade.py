"""The agreement cascade: decisions by hand, and the configuration family it fits."""

from __future__ import annotations

import numpy as np
import pytest

from routing.cascade import AgreementCascade, answer_agreement, cascade_decide, pairwise_agreement
from routing.replay_data import load_replay


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

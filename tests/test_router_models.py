"""Router models: the L2D surrogate, and that each model learns a real signal."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from routing.routers.baselines import ConstantRouter, KNNRouter
from routing.routers.l2d import L2DRouter, l2d_surrogate, target_costs
from routing.calibration.policy import route
from routing.routers.registry import make_router, router_from_state
from routing.routers.trunk import SharedTrunkRouter


def test_surrogate_value_and_gradient_on_a_hand_case():
    # Three experts on one question: dear-and-right, cheap-and-right, cheap-and-wrong.
    costs = torch.tensor([[0.0 + 0.5, 0.0 + 0.05, 1.0 + 0.05]])
    logits = torch.zeros(1, 3, requires_grad=True)
    loss = l2d_surrogate(logits, costs)
    # tau_j = sum of the others' costs: [1.1, 1.55, 0.55]; uniform softmax -> log 3 each.
    assert loss.item() == pytest.approx((1.1 + 1.55 + 0.55) * np.log(3), rel=1e-6)
    loss.backward()
    grad = logits.grad[0].numpy()
    # d/dr_j = p_j * sum(tau) - tau_j: most negative for the cheapest correct expert.
    np.testing.assert_allclose(grad, np.array([3.2 / 3 - 1.1, 3.2 / 3 - 1.55, 3.2 / 3 - 0.55]), rtol=1e-6)
    assert int(np.argmin(grad)) == 1 and grad[2] > 0


def test_surrogate_descent_ends_on_the_cheap_correct_expert():
    costs = torch.tensor([[0.5, 0.05, 1.05]])
    logits = torch.zeros(1, 3, requires_grad=True)
    opt = torch.optim.SGD([logits], lr=0.5)
    for _ in range(50):
        opt.zero_grad()
        l2d_surrogate(logits, costs).backward()
        opt.step()
    probs = torch.softmax(logits, 1)[0].detach().numpy()
    # The minimiser is softmax_j = tau_j / sum(tau) (the consistency identity), whose
    # argmax is the expert with the lowest cost.
    np.testing.assert_allclose(probs, np.array([1.1, 1.55, 0.55]) / 3.2, atol=1e-3)
    assert int(probs.argmax()) == 1


def test_target_costs_scale_consultation_by_the_dearest():
    t = target_costs(np.array([[1.0, 0.0], [np.nan, 1.0]]), np.array([1.0, 4.0]), cost_weight=0.2)
    np.testing.assert_allclose(t, [[0.05, 1.2], [1.05, 0.2]])


def _synthetic(n=400, seed=0):
    """Expert 0 (cheap) is right iff x0 > 0; expert 1 (dear) is always right."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 6)).astype(np.float32)
    f1 = np.stack([(X[:, 0] > 0).astype(float), np.ones(n)], axis=1)
    return X, f1, np.array([1.0, 10.0])


@pytest.mark.parametrize(
    "router",
    [
        L2DRouter(epochs=150, n_models=1, weight_decay=1e-3, dropout=0.0, hidden=(16,)),
        SharedTrunkRouter(epochs=150, n_models=1, weight_decay=1e-3, dropout=0.0, hidden=(16,)),
        KNNRouter(n_neighbors=15),
    ],
    ids=["l2d", "trunk", "knn"],
)
def test_router_learns_when_the_cheap_expert_suffices(router):
    X, f1, costs = _synthetic()
    Xt, f1t, _ = _synthetic(seed=1)
    router.fit(X, f1, costs)
    loss = router.predict_loss(Xt)
    assert loss.shape == (len(Xt), 2) and (loss >= 0).all() and (loss <= 1).all()
    # Predicted loss of the cheap expert is low exactly where it is right.
    right = Xt[:, 0] > 0
    assert loss[right, 0].mean() + 0.4 < loss[~right, 0].mean()
    # Priced so that the cheap expert wins when its predicted loss is below 0.5, the
    # policy sends (most of) the easy half to it.
    choice = route(loss, costs, lam=0.5 / 9)
    agree = (choice == 0) == right
    assert agree.mean() > 0.85


def test_l2d_native_decision_matches_policy_at_its_training_weight():
    X, f1, costs = _synthetic()
    router = L2DRouter(epochs=150, n_models=1, weight_decay=1e-3, dropout=0.0, cost_weight=0.2).fit(X, f1, costs)
    native = router.decision_scores(X).argmax(axis=1)
    # lambda in the policy's units = cost_weight / max cost.
    via_policy = route(router.predict_loss(X), costs, lam=0.2 / costs.max())
    assert (native == via_policy).mean() > 0.95


def test_training_is_seeded_and_leaves_global_rng_alone():
    X, f1, costs = _synthetic(n=100)
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = SharedTrunkRouter(epochs=20, seed=7).fit(X, f1, costs).predict_loss(X)
    after = torch.rand(1)
    assert torch.equal(before, after)
    b = SharedTrunkRouter(epochs=20, seed=7).fit(X, f1, costs).predict_loss(X)
    np.testing.assert_array_equal(a, b)
    c = SharedTrunkRouter(epochs=20, seed=8).fit(X, f1, costs).predict_loss(X)
    assert not np.array_equal(a, c)


def test_trunk_masks_uncovered_cells():
    X, f1, costs = _synthetic(n=200)
    f1 = f1.copy()
    f1[:100, 1] = np.nan  # the dear expert has no record on half the questions
    router = SharedTrunkRouter(epochs=100, n_models=1, weight_decay=1e-3, dropout=0.0).fit(X, f1, costs)
    # Masked, not counted as failures: the dear expert still looks always right.
    assert router.predict_loss(X)[:, 1].max() < 0.2


@pytest.mark.parametrize("kind", ["l2d", "trunk", "knn", "constant"])
def test_state_round_trip_gives_identical_predictions(kind):
    X, f1, costs = _synthetic(n=120)
    params = {"epochs": 10, "n_models": 2} if kind in ("l2d", "trunk") else {}
    router = make_router(kind, **params).fit(X, f1, costs)
    config, tensors = router.get_state()
    again = router_from_state(config, tensors)
    np.testing.assert_array_equal(again.predict_loss(X), router.predict_loss(X))


def test_from_state_refuses_wrong_shapes_and_kinds():
    X, f1, costs = _synthetic(n=60)
    config, tensors = make_router("trunk", epochs=5, n_models=1).fit(X, f1, costs).get_state()
    with pytest.raises(ValueError, match="shape"):
        router_from_state(config, {**tensors, "m0.heads.weight": np.zeros((3, 16), np.float32)})
    with pytest.raises(ValueError, match="tensor names"):
        router_from_state(config, {k: v for k, v in tensors.items() if "heads" not in k})
    with pytest.raises(ValueError, match="kind"):
        router_from_state({**config, "kind": "os.system"}, tensors)
    with pytest.raises(ValueError, match="params"):
        router_from_state({**config, "params": {**config["params"], "extra": 1}}, tensors)


def test_constant_router_is_the_best_fixed_expert_per_lambda():
    X, f1, costs = _synthetic()
    loss = ConstantRouter().fit(X, f1, costs).predict_loss(X[:5])
    np.testing.assert_allclose(loss, np.tile([1 - f1[:, 0].mean(), 0.0], (5, 1)))


ROUTER_CLASSES = [
    (L2DRouter, {"hidden": (8,), "epochs": 5, "n_models": 1, "seed": 3}),
    (SharedTrunkRouter, {"hidden": (8,), "epochs": 5, "n_models": 1, "loss": "mse"}),
    (KNNRouter, {"n_neighbors": 7}),
    (ConstantRouter, {}),
]


@pytest.mark.parametrize("cls,params", ROUTER_CLASSES, ids=[c.__name__ for c, _ in ROUTER_CLASSES])
def test_routers_follow_the_estimator_conventions(cls, params):
    # Constructor parameters are kept exactly as given and get_params returns them;
    # construction learns nothing; fit returns the estimator itself, and what it learnt
    # is in trailing-underscore attributes.
    router = cls(**params)
    got = router.get_params()
    for name, value in params.items():
        assert got[name] is value
    assert cls(**got).get_params() == got
    assert not [a for a in vars(router) if a.endswith("_")]
    X, f1, costs = _synthetic(n=60)
    assert router.fit(X, f1, costs) is router
    assert {"n_features_", "n_experts_"} <= set(vars(router))
    assert router.get_params() == got  # fitting leaves the parameters alone


def test_a_router_missing_a_method_cannot_be_built():
    from routing.routers.base import BaseRouter

    class NoPredict(BaseRouter):
        kind = "broken"

        def fit(self, X, f1, costs):
            return self

        def get_state(self):
            return {}, {}

        @classmethod
        def from_state(cls, config, tensors):
            return cls()

    with pytest.raises(TypeError, match="predict_loss"):
        NoPredict()

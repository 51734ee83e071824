"""Text features, layer selection by separability, and the featurizer estimator."""

from __future__ import annotations

import numpy as np
import pytest

from routing.features.featurizer import RouterFeaturizer
from routing.features.layer_selection import fisher_separability, participation_ratio, select_layers
from routing.features.text_features import TEXT_FEATURE_NAMES, text_features
from tests.tiny_models import build_tiny_qa_model


def _feature(row: np.ndarray, name: str) -> float:
    return float(row[TEXT_FEATURE_NAMES.index(name)])


def test_text_features_describe_the_pair():
    context = "The castle was built in 1066. Later it burned down. It was rebuilt by monks."
    T = text_features(
        ["When was the castle built?", "Who rebuilt it?", "Why is the sky blue?", "In what year did it burn?"],
        [context] * 4,
    )
    assert T.shape == (4, len(TEXT_FEATURE_NAMES))
    assert _feature(T[0], "qw_when") == 1.0 and _feature(T[0], "qw_what") == 0.0
    assert _feature(T[1], "qw_who") == 1.0
    assert _feature(T[2], "qw_why") == 1.0
    assert _feature(T[3], "qw_what") == 1.0 or _feature(T[3], "qw_when") == 1.0
    # Every content word of question 0 ("castle", "built") is in the context ...
    assert _feature(T[0], "overlap_unigram") == 1.0
    # ... and the best-matching sentence is the first one.
    assert _feature(T[0], "best_sentence_position") == 0.0
    # "sky", "blue" are not in the context.
    assert _feature(T[2], "overlap_unigram") == 0.0
    # Exactly one question-word slot is set per question.
    qw = [i for i, n in enumerate(TEXT_FEATURE_NAMES) if n.startswith("qw_")]
    assert (T[:, qw].sum(axis=1) == 1).all()


def _synthetic_layers(rng, n=300, d=24, good=2, n_layers=5):
    labels = rng.random((n, 3)) < 0.5
    layers = []
    for layer in range(n_layers):
        X = rng.normal(size=(n, d))
        if layer == good:
            # Class means differ along a few directions for every expert's label.
            X[:, :3] += 1.5 * labels.astype(float)
        layers.append(X)
    return layers, labels


def test_layer_selection_finds_the_separable_layer():
    rng = np.random.default_rng(0)
    for good in (0, 2, 4):
        layers, labels = _synthetic_layers(rng, good=good)
        sel = select_layers(layers, labels, n_select=1)
        assert sel.chosen == (good,)
        fisher = [s.fisher for s in sel.scores]
        assert fisher[good] > 3 * max(f for i, f in enumerate(fisher) if i != good)
        # Noise layers score about what shuffled labels score; the real one far more.
        for sc in sel.scores:
            if sc.layer == good:
                assert sc.fisher > 3 * sc.fisher_chance
            else:
                assert sc.fisher < 2 * sc.fisher_chance


def test_participation_ratio_penalises_a_collapsed_layer():
    rng = np.random.default_rng(1)
    n = 300
    labels = rng.random((n, 2)) < 0.5
    signal = labels.astype(float) @ np.ones((2, 16)) * 0.8
    iso = rng.normal(size=(n, 16)) + signal
    # Same class signal, but one huge nuisance direction dominates the variance.
    collapsed = iso.copy()
    collapsed[:, 5] *= 40.0
    assert participation_ratio(iso) > 5 * participation_ratio(collapsed)
    sel = select_layers([collapsed, iso], labels, n_select=2, pr_weight=1.0)
    assert sel.chosen == (1, 0)


def test_fisher_ignores_constant_labels():
    X = np.random.default_rng(2).normal(size=(50, 8))
    assert fisher_separability(X, np.ones((50, 2), dtype=bool)) == 0.0


def test_text_featurizer_fit_transform_and_state_round_trip():
    rng = np.random.default_rng(3)
    qs = [f"What is item {i} called?" if i % 2 else f"When did event {i} happen?" for i in range(20)]
    cs = [f"Item {i} is called thing {i}. Event {i} happened in {1900 + i}." for i in range(20)]
    f1 = rng.random((20, 3))
    fz = RouterFeaturizer().fit(qs, cs, f1)
    X = fz.transform(qs, cs)
    assert X.shape == (20, len(TEXT_FEATURE_NAMES)) and X.dtype == np.float32
    # Standardised on the training data.
    informative = X.std(axis=0) > 0
    np.testing.assert_allclose(X[:, informative].mean(axis=0), 0.0, atol=1e-5)
    config, tensors = fz.get_state()
    again = RouterFeaturizer.from_state(config, tensors)
    np.testing.assert_array_equal(again.transform(qs, cs), X)


def test_encoder_featurizer_chooses_layers_and_caches(tmp_path):
    model = build_tiny_qa_model(tmp_path / "tiny")  # 2-layer BERT: 3 hidden-state tensors
    qs = [f"Who wrote book number {i}?" for i in range(12)]
    cs = [f"Book number {i} was written by author {i % 3} in a cold winter." for i in range(12)]
    f1 = np.tile(np.array([[1.0, 0.0], [0.0, 1.0]]), (6, 1))
    fz = RouterFeaturizer(encoder=model, max_length=32, pca_components=4, cache_dir=str(tmp_path / "cache"))
    X = fz.fit_transform(qs, cs, f1)
    assert len(fz.layers_) == 1 and 0 <= fz.layers_[0] <= 2
    assert len(fz.layer_selection_.scores) == 3
    assert X.shape == (12, len(TEXT_FEATURE_NAMES) + 4)
    cached = list((tmp_path / "cache").rglob("*.npy"))
    assert len(cached) == 12 * 3  # one file per (text, layer)
    # A fresh featurizer from the saved state reads the cache and gives the same features.
    config, tensors = fz.get_state()
    again = RouterFeaturizer.from_state(config, tensors, cache_dir=str(tmp_path / "cache"))
    np.testing.assert_allclose(again.transform(qs, cs), X, rtol=1e-5, atol=1e-5)
    assert again._encoder_obj is not None and again._encoder_obj._model is None  # no forward pass needed
    # New text goes through the model and is cached too.
    again.transform(["A brand new question?"], ["A brand new context."])
    assert len(list((tmp_path / "cache").rglob("*.npy"))) == 12 * 3 + 3


def test_featurizer_refuses_mismatched_state():
    qs, cs = ["What?"] * 5, ["Context here."] * 5
    fz = RouterFeaturizer().fit(qs, cs, np.zeros((5, 2)))
    config, tensors = fz.get_state()
    bad = dict(tensors, text_mean=np.zeros(3, dtype=np.float32))
    with pytest.raises(ValueError, match="shape"):
        RouterFeaturizer.from_state(config, bad)
    with pytest.raises(ValueError, match="different version"):
        RouterFeaturizer.from_state(dict(config, text_feature_names=["x"]), tensors)

"""Router checkpoints: exact round trip, the run-time policy API, refusal of bad input."""

from __future__ import annotations

import json
import pickle
import shutil

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from pipelines.cli import main
from routing.routers.checkpoint import CheckpointError, RouterCheckpoint
from routing.core.config import CheckpointRouter
from routing.replay.data import load_replay
from routing.rules import build_router
from routing.training import train_router_checkpoint

FAST = {"epochs": 25, "n_models": 1}


@pytest.fixture(scope="module")
def replay(squad_replay_dir):
    return load_replay(squad_replay_dir)


@pytest.fixture(scope="module")
def trained(squad_replay_dir, tmp_path_factory):
    """One small checkpoint per router kind, text features only (fast)."""
    out = {}
    for kind in ("l2d", "trunk", "knn"):
        ckpt = train_router_checkpoint(squad_replay_dir, kind=kind, router_params=FAST if kind != "knn" else None)
        path = ckpt.save(tmp_path_factory.mktemp(kind) / "ckpt")
        out[kind] = (ckpt, path)
    return out


@pytest.mark.parametrize("kind", ["l2d", "trunk", "knn"])
def test_round_trip_gives_identical_routes(trained, replay, kind):
    ckpt, path = trained[kind]
    loaded = RouterCheckpoint.load(path)
    qs, cs = replay.question_texts[:80], replay.contexts[:80]
    X = ckpt.featurizer.transform(qs, cs)
    np.testing.assert_array_equal(loaded.featurizer.transform(qs, cs), X)
    np.testing.assert_array_equal(loaded.router.predict_loss(X), ckpt.router.predict_loss(X))
    for kw in ({}, {"lam": 0.01}, {"budget_per_item": 5.0}, {"accuracy_target": 0.9}):
        assert loaded.policy(**kw).route(qs, cs) == ckpt.policy(**kw).route(qs, cs)
    assert loaded.expert_names == ckpt.expert_names and loaded.reference == "bert-large-ensemble-v1"
    assert not (path / "router.pkl").exists() and {p.name for p in path.iterdir()} == {"router.json", "weights.safetensors"}


def test_policy_api_for_the_batch_job(trained, replay):
    ckpt, path = trained["trunk"]
    policy = RouterCheckpoint.load(path).policy(budget_per_item=5.0)
    routed = policy.route(replay.question_texts[:30], replay.contexts[:30])
    assert len(routed) == 30 and set(routed) <= set(policy.expert_names)
    assert policy.expert_names == list(ckpt.expert_names)
    # The budget is met on the calibration questions the checkpoint carries.
    idx = policy._ckpt.expert_names.index
    from routing.calibration.policy import route

    chosen = route(ckpt.calibration_loss, ckpt.costs, policy.lam, ckpt.candidates)
    assert ckpt.costs[chosen].mean() <= 5.0
    # Only one operating point may be asked for.
    with pytest.raises(ValueError, match="choose one"):
        ckpt.policy(budget_per_item=5.0, lam=0.1)
    # A target that the calibration sample cannot certify falls back to the reference.
    strict = ckpt.policy(accuracy_target=1.0)
    assert strict.fixed_expert == idx("bert-large-ensemble-v1")
    assert set(strict.route(["q"], ["c"])) == {"bert-large-ensemble-v1"}
    assert policy.route([], []) == []


def test_job_config_router_builds_from_a_checkpoint(trained):
    _, path = trained["knn"]
    router = build_router(CheckpointRouter(kind="checkpoint", checkpoint=str(path), budget_per_item=3.0))
    assert router.route(["Who ruled Normandy?"], ["Rollo ruled Normandy."])[0] in router.expert_names


def _copy(path, tmp_path):
    dst = tmp_path / "copy"
    shutil.copytree(path, dst)
    return dst


def _edit_json(path, fn):
    cfg = json.loads((path / "router.json").read_text())
    fn(cfg)
    (path / "router.json").write_text(json.dumps(cfg))


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda c: c.update(version=99), "format"),
        (lambda c: c.update(extra=1), "expected keys"),
        (lambda c: c["expert_names"].__setitem__(0, "../../etc/passwd"), "expert_names"),
        (lambda c: c["expert_names"].__setitem__(0, c["expert_names"][1]), "expert_names"),
        (lambda c: c.update(costs=c["costs"][:-1]), "costs"),
        (lambda c: c["costs"].__setitem__(0, -1), "costs"),
        (lambda c: c.update(reference="gpt-9"), "reference"),
        (lambda c: c.update(candidates=["nobody"]), "candidates"),
        (lambda c: c["router"].update(kind="__import__"), "kind"),
        (lambda c: c["router"]["params"].update(hidden=[10**9]), "hidden"),
        (lambda c: c["router"].update(n_features=3), "features|shape|tensor"),
        (lambda c: c["featurizer"].update(use_text="yes"), "use_text"),
        (lambda c: c["calibration"].update(n=7), "calibration"),
    ],
)
def test_malformed_json_is_refused(trained, tmp_path, mutate, message):
    _, path = trained["trunk"]
    bad = _copy(path, tmp_path)
    _edit_json(bad, mutate)
    with pytest.raises(CheckpointError, match=message):
        RouterCheckpoint.load(bad)


def test_bad_tensors_are_refused(trained, tmp_path):
    _, path = trained["trunk"]
    tensors = load_file(str(path / "weights.safetensors"))

    def attempt(new_tensors, message):
        bad = _copy(path, tmp_path / message.replace(" ", "_").replace("|", "_"))
        save_file(new_tensors, str(bad / "weights.safetensors"))
        with pytest.raises(CheckpointError, match=message):
            RouterCheckpoint.load(bad)

    key = next(k for k in tensors if k.startswith("router.") and k.endswith("weight"))
    attempt({**tensors, key: np.zeros((2, 2), np.float32)}, "shape")
    attempt({**tensors, key: tensors[key].astype(np.float64)}, "dtype")
    nan = tensors[key].copy()
    nan.flat[0] = np.nan
    attempt({**tensors, key: nan}, "non-finite")
    attempt({k: v for k, v in tensors.items() if k != "calibration.f1"}, "calibration")
    attempt({**tensors, "sneaky.payload": np.zeros(1, np.float32)}, "unexpected")
    attempt({**tensors, "calibration.f1": tensors["calibration.f1"] + 2}, r"\[0, 1\]")


def test_pickle_and_missing_files_are_refused(trained, tmp_path):
    _, path = trained["knn"]
    bad = _copy(path, tmp_path)
    (bad / "weights.safetensors").write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(CheckpointError, match="safetensors"):
        RouterCheckpoint.load(bad)
    (bad / "weights.safetensors").unlink()
    with pytest.raises(CheckpointError, match="missing"):
        RouterCheckpoint.load(bad)
    with pytest.raises(CheckpointError, match="not a router checkpoint"):
        RouterCheckpoint.load(tmp_path / "nowhere")
    (bad / "router.json").write_text('{"format": NaN}')
    with pytest.raises(CheckpointError, match="JSON"):
        RouterCheckpoint.load(bad)


def test_save_refuses_to_overwrite(trained):
    ckpt, path = trained["knn"]
    with pytest.raises(CheckpointError, match="already"):
        ckpt.save(path)


def test_train_router_cli(squad_replay_dir, tmp_path, capsys):
    out = tmp_path / "router"
    code = main(["train-router", "--profile", str(squad_replay_dir), "--output", str(out),
                 "--router", "knn", "--encoder", "none"])
    assert code == 0, capsys.readouterr().err
    ckpt = RouterCheckpoint.load(out)
    assert ckpt.info["router_kind"] == "knn" and ckpt.info["n_fit"] + ckpt.info["n_calibration"] == 473
    assert "calibrated on 142" in capsys.readouterr().out
    assert main(["train-router", "--profile", str(squad_replay_dir), "--output", str(out), "--router", "knn",
                 "--encoder", "none"]) == 1  # exists, no --overwrite

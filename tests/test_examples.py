"""Example files stay valid: configs load, the Airflow DAG compiles (and loads where
Airflow is installed)."""

import importlib.util
import py_compile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_airflow_dag_compiles():
    py_compile.compile(str(REPO / "examples" / "airflow_dag.py"), doraise=True)


@pytest.mark.skipif(importlib.util.find_spec("airflow") is None, reason="Airflow is not installed (the DAG is an example)")
def test_airflow_dag_loads():
    spec = importlib.util.spec_from_file_location("airflow_dag", REPO / "examples" / "airflow_dag.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.dag.dag_id == "routebatch_nightly"


@pytest.mark.parametrize("path", sorted((REPO / "examples").glob("*.yaml")), ids=lambda p: p.name)
def test_example_configs_load(path):
    from routing.core.config import load_config

    assert load_config(path).experts


def test_cascade_example_replays_as_its_comment_says():
    """The figures in examples/squad-cascade.yaml's header, from its own router fields."""
    import numpy as np

    from routing.cascades.agreement_plan import cascade_decide, pairwise_agreement
    from routing.core.config import load_config
    from routing.replay.data import load_replay

    cfg = load_config(REPO / "examples" / "squad-cascade.yaml")
    r = cfg.router
    assert r.kind == "cascade"
    rs = load_replay(REPO / "examples" / "data" / "squad-replay-slice", covered_only=False).uncovered_as_wrong()
    names = list(rs.expert_names)
    stages, final = [names.index(s) for s in r.stages], names.index(r.final)
    quality = np.zeros(len(names))
    quality[stages] = [r.quality[s] for s in r.stages]
    choice, paid = cascade_decide(pairwise_agreement(rs.answers, stages), stages, final, quality, rs.costs, r.agreement, rs.n_questions, r.quorum)
    f1 = np.nan_to_num(rs.f1, nan=0.0)
    assert round(float(f1[np.arange(rs.n_questions), choice].mean()), 3) == 0.774
    assert round(float(f1[:, final].mean()), 3) == 0.765
    assert round(float(paid.mean() / rs.costs[final]), 2) == 0.65

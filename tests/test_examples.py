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

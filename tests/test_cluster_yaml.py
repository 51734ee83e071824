"""cluster.yaml stays a valid cluster-launcher config (checked against the schema the
installed Ray ships), and the plan check understands its node types."""

from pathlib import Path

import pytest
import yaml

from pipelines.resources import PlanDoesNotFit, autoscaler_nodes, check_plan_fits, plan_resources
from routing.core.config import load_config

REPO = Path(__file__).resolve().parents[1]


def test_cluster_yaml_validates_against_rays_schema():
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = yaml.safe_load((REPO / "cluster.yaml").read_text())
    validate_config(prepare_config(config))  # defaults filled as `ray up` does, then the schema
    types = config["available_node_types"]
    gpu_types = [n for n, t in types.items() if t.get("resources", {}).get("GPU")]
    assert len(gpu_types) >= 2
    assert all(t.get("max_workers", 0) >= t.get("min_workers", 0) for t in types.values())
    assert any("routebatch" in c for c in config["setup_commands"])


def test_schema_check_is_real():
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = yaml.safe_load((REPO / "cluster.yaml").read_text())
    config["available_node_types"]["gpu_small"]["max_workers"] = "many"
    with pytest.raises(Exception):
        validate_config(prepare_config(config))


def test_hf_example_fits_the_cluster_only_through_its_gpu_types():
    cfg = load_config(REPO / "examples" / "hf-experts.yaml")
    plan = plan_resources(cfg)
    head_only = [{"CPU": 8.0}]
    with pytest.raises(PlanDoesNotFit):
        check_plan_fits(plan, head_only)
    check_plan_fits(plan, head_only + autoscaler_nodes(str(REPO / "cluster.yaml")))

"""Resource planning refuses plans that would stall; rule routing picks the first match."""

import pytest

from pipelines.resources import PlanDoesNotFit, check_plan_fits, plan_resources
from routing.core.config import Rule, parse_config
from routing.rules import FixedPolicy, RulePolicy


def _cfg(experts):
    return parse_config(
        {
            "input": {"path": "x", "format": "jsonl"},
            "output": {"path": "o"},
            "experts": experts,
            "router": {"kind": "fixed", "expert": experts[0]["name"]},
        }
    )


def _hf(name, **res):
    return {"name": name, "kind": "hf-extractive-qa", "model": "m", **res}


def test_gpu_expert_on_cpu_cluster_is_named():
    plan = plan_resources(_cfg([_hf("big", resources={"num_gpus": 1, "num_cpus": 1})]))
    with pytest.raises(PlanDoesNotFit) as err:
        check_plan_fits(plan, [{"CPU": 2.0}])
    assert str(err.value).startswith("experts.big:") and "GPU=1" in str(err.value)


def test_custom_gpu_class_must_exist_on_some_node():
    plan = plan_resources(_cfg([_hf("big", resources={"num_gpus": 1, "custom": {"gpu_large": 1}})]))
    with pytest.raises(PlanDoesNotFit, match="gpu_large"):
        check_plan_fits(plan, [{"CPU": 8.0, "GPU": 1.0}])
    check_plan_fits(plan, [{"CPU": 2.0}, {"CPU": 8.0, "GPU": 1.0, "gpu_large": 1.0}])


def test_minimum_pools_that_only_fit_one_by_one_are_refused():
    plan = plan_resources(
        _cfg([_hf("a", resources={"num_cpus": 1}), _hf("b", resources={"num_cpus": 1}, pool={"min_actors": 1, "max_actors": 4})])
    )
    with pytest.raises(PlanDoesNotFit, match="do not fit beside"):
        check_plan_fits(plan, [{"CPU": 2.0}])
    check_plan_fits(plan, [{"CPU": 3.0}])  # max_actors may exceed: autoscaling stops at what fits


def test_no_nodes():
    with pytest.raises(PlanDoesNotFit, match="no alive nodes"):
        check_plan_fits(plan_resources(_cfg([_hf("a")])), [])


def test_rule_router_first_match_wins_and_default():
    rules = [
        Rule(expert="long", min_context_chars=10),
        Rule(expert="when", question_regex=r"^When\b"),
    ]
    router = RulePolicy(rules, default="small")
    got = router.route(["When was it?", "When?", "Who?"], ["x" * 20, "short", "short"])
    assert got == ["long", "when", "small"]
    assert router.expert_names == ["long", "small", "when"]
    assert FixedPolicy("e").route(["a", "b"], ["c", "d"]) == ["e", "e"]

"""Config schema: strict keys, names that resolve, errors that name the field."""

from pathlib import Path

import pytest
import yaml

from routing.core.config import CheckpointRouter, ConfigError, load_config, parse_config

REPO = Path(__file__).resolve().parents[1]


def _base(**over):
    cfg = {
        "input": {"path": "in.jsonl", "format": "jsonl"},
        "output": {"path": "out"},
        "experts": [
            {"name": "small", "kind": "replay", "predictions": "p.json"},
            {"name": "big", "kind": "hf-extractive-qa", "model": "deepset/roberta-base-squad2"},
        ],
        "router": {"kind": "fixed", "expert": "small"},
    }
    cfg.update(over)
    return cfg


def test_example_configs_validate():
    for name in ("squad-replay.yaml", "hf-experts.yaml"):
        cfg = load_config(REPO / "examples" / name)
        assert cfg.experts


def test_unknown_key_is_named():
    cfg = _base()
    cfg["experts"][0]["predictons"] = "typo.json"
    with pytest.raises(ConfigError) as err:
        parse_config(cfg)
    assert "predictons" in str(err.value) and "unknown key" in str(err.value)


def test_unknown_top_level_key_is_named():
    with pytest.raises(ConfigError, match="routr"):
        parse_config(_base(routr={}))


def test_router_must_name_a_defined_expert():
    with pytest.raises(ConfigError) as err:
        parse_config(_base(router={"kind": "rule", "rules": [{"expert": "medium"}], "default": "small"}))
    assert "router.rules[0].expert" in str(err.value) and "medium" in str(err.value)


def test_stride_must_be_below_sequence_length():
    cfg = _base()
    cfg["experts"][1].update(max_seq_len=128, doc_stride=128)
    with pytest.raises(ConfigError, match="doc_stride"):
        parse_config(cfg)


def test_pool_bounds_and_duplicate_names():
    cfg = _base()
    cfg["experts"][0]["pool"] = {"min_actors": 3, "max_actors": 1}
    with pytest.raises(ConfigError, match="max_actors"):
        parse_config(cfg)
    cfg = _base()
    cfg["experts"][1]["name"] = "small"
    with pytest.raises(ConfigError, match="duplicate expert name"):
        parse_config(cfg)


def test_checkpoint_short_form_and_single_policy():
    cfg = parse_config(_base(router={"checkpoint": "r", "budget_per_item": 0.01}))
    assert isinstance(cfg.router, CheckpointRouter) and cfg.router.budget_per_item == 0.01
    with pytest.raises(ConfigError, match="choose one"):
        parse_config(_base(router={"checkpoint": "r", "budget_per_item": 0.01, "accuracy_target": 0.9}))


def test_relative_paths_resolve_against_config_file(tmp_path):
    (tmp_path / "sub").mkdir()
    path = tmp_path / "sub" / "job.yaml"
    path.write_text(yaml.safe_dump(_base()))
    cfg = load_config(path)
    assert cfg.input.path == str(tmp_path / "sub" / "in.jsonl")
    assert cfg.experts[0].predictions == str(tmp_path / "sub" / "p.json")
    assert cfg.experts[1].model == "deepset/roberta-base-squad2"  # hub ids stay hub ids


def test_config_hash_is_stable_and_sensitive():
    a, b = parse_config(_base()), parse_config(_base())
    assert a.config_hash() == b.config_hash()
    c = _base()
    c["experts"][0]["cost"] = {"usd_per_item": 0.5}
    assert parse_config(c).config_hash() != a.config_hash()


def test_not_a_mapping_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="mapping"):
        parse_config(["a"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("input: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


def _cascade(**over):
    router = {"kind": "cascade", "stages": ["a", "b", "c"], "final": "big", "agreement": 0.8}
    router.update(over)
    experts = [{"name": n, "kind": "replay", "predictions": f"{n}.json"} for n in ("a", "b", "c", "big")]
    return _base(experts=experts, router=router)


def test_cascade_router_parses_with_defaults():
    from routing.core.config import CascadeRouter

    cfg = parse_config(_cascade())
    assert isinstance(cfg.router, CascadeRouter)
    assert (cfg.router.stages, cfg.router.final, cfg.router.agreement, cfg.router.quorum, cfg.router.quality) == (
        ["a", "b", "c"], "big", 0.8, 2, None
    )
    cfg = parse_config(_cascade(quorum=3, quality={"a": 0.7, "b": 0.9, "c": 0.8}))
    assert cfg.router.quorum == 3 and cfg.router.quality["b"] == 0.9


@pytest.mark.parametrize(
    "over, field, words",
    [
        ({"stages": ["a"]}, "router.cascade.stages", "at least two"),
        ({"stages": ["a", "b", "a"]}, "router.cascade.stages", "more than once"),
        ({"final": "a"}, "router.cascade", "final: 'a' is also a stage"),
        ({"quorum": 4}, "router.cascade", "quorum: 4 is more than the 3 stages"),
        ({"quorum": 1}, "router.cascade.quorum", "greater than or equal to 2"),
        ({"agreement": 1.5}, "router.cascade.agreement", "less than or equal to 1"),
        ({"agreement": None}, "router.cascade.agreement", ""),
        ({"quality": {"a": 1, "b": 2}}, "router.cascade", "no number for stage(s) ['c']"),
        ({"quality": {"a": 1, "b": 2, "c": 3, "big": 4}}, "router.cascade", "names ['big'], which are not stages"),
        ({"quality": {"a": 1, "b": float("nan"), "c": 3}}, "router.cascade.quality.b", "finite"),
        ({"stages": ["a", "medium"]}, "router.stages[1]", "unknown expert 'medium'"),
        ({"final": "huge"}, "router.final", "unknown expert 'huge'"),
        ({"tau": 0.8}, "router.cascade.tau", "unknown key"),
    ],
)
def test_cascade_router_errors_name_the_field(over, field, words):
    cfg = _cascade(**over)
    if over.get("agreement", 0) is None:
        del cfg["router"]["agreement"]
    with pytest.raises(ConfigError) as err:
        parse_config(cfg)
    lines = str(err.value).splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{field}:") and words in lines[0], lines

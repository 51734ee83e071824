"""The cascade inside the expert stages, in process (no Ray): each stage appends its
answer to the row's trail and moves the row on; costs add up; errors mean no answer."""

from __future__ import annotations

import json

import pyarrow as pa
import pytest
import yaml

from operators.schema import OUTPUT_COLUMNS, empty_row, rows_to_table
from operators.stages import AnswerWithExpert, RouteRows, drop_context
from pipelines.batch_job import expert_stage_order
from routing.core.config import parse_config

# Answers per expert; a missing id is an expert error for that row.
PREDICTIONS = {
    "a": {"q1": "Paris", "q2": "Paris", "q3": "Paris", "q4": "Rome"},
    "b": {"q1": "paris", "q2": "Lyon", "q4": "Oslo"},  # no answer for q3
    "c": {"q1": "x", "q2": "lyon", "q3": "Paris", "q4": "Bern"},
    "big": {"q1": "big", "q2": "big", "q3": "big"},  # fails on q4
    "other": {"q1": "o", "q2": "o", "q3": "o", "q4": "o"},
}
PRICE = {"a": 1.0, "b": 2.0, "c": 4.0, "big": 8.0, "other": 16.0}


@pytest.fixture
def config(tmp_path):
    experts = []
    for name in ("other", "big", "c", "a", "b"):  # config order is not cascade order
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(PREDICTIONS[name]))
        experts.append({"name": name, "kind": "replay", "predictions": str(path), "cost": {"usd_per_item": PRICE[name]}})
    return parse_config(
        {
            "input": {"path": "in.jsonl", "format": "jsonl"},
            "output": {"path": str(tmp_path / "out")},
            "experts": experts,
            "router": {"kind": "cascade", "stages": ["a", "b", "c"], "final": "big", "agreement": 0.8},
        }
    )


def _run(config, table: pa.Table) -> list[dict]:
    table = RouteRows(config.router, [e.name for e in config.experts])(table)
    for spec in expert_stage_order(config):
        table = AnswerWithExpert(spec, cascade=config.router)(table)
    return drop_context(table).to_pylist()


def test_rows_walk_the_cascade_and_pay_for_every_expert_asked(config):
    assert [e.name for e in expert_stage_order(config)] == ["a", "b", "c", "big", "other"]
    rows = [empty_row(id=q, question="Where?", context="Somewhere.") for q in ("q1", "q2", "q3", "q4")]
    rows.append(empty_row(id="bad", error="invalid_row: question is missing or empty"))
    out = {r["id"]: r for r in _run(config, rows_to_table(rows))}
    assert list(out["q1"]) == OUTPUT_COLUMNS  # the trail is internal
    got = {q: (r["expert"], r["answer"], r["consulted"], r["cost_usd"], r["error"]) for q, r in out.items()}
    assert got == {
        "q1": ("b", "paris", "a>b", 3.0, None),  # a and b agree: the later stage answers
        "q2": ("c", "lyon", "a>b>c", 7.0, None),  # b and c agree
        # b failed on q3: no answer, which agrees with nothing, and a per-item price is not
        # charged for it; a and c then agree.
        "q3": ("c", "Paris", "a>b>c", 5.0, None),
        # Nobody agrees, and the final expert fails too: its error stays on the row.
        "q4": ("big", None, "a>b>c>big", 7.0, "expert_error: big has no recorded prediction for id 'q4'"),
        "bad": (None, None, None, 0.0, "invalid_row: question is missing or empty"),
    }
    words = 2  # "Where?" + "Somewhere."
    assert out["q2"]["input_tokens"] == 3 * words and out["q4"]["input_tokens"] == 4 * words


def test_stage_out_of_cascade_order_refuses_the_row(config):
    routed = RouteRows(config.router, [e.name for e in config.experts])(rows_to_table([empty_row(id="q1", question="Q?", context="C.")]))
    b = next(e for e in config.experts if e.name == "b")
    moved = routed.set_column(routed.schema.get_field_index("expert"), "expert", pa.array(["b"], pa.string()))
    with pytest.raises(RuntimeError, match="cascade order"):
        AnswerWithExpert(b, cascade=config.router)(moved)


def test_other_routers_leave_the_cascade_columns_empty(config):
    fixed = parse_config({**config.model_dump(mode="json"), "router": {"kind": "fixed", "expert": "big"}})
    table = RouteRows(fixed.router, [e.name for e in fixed.experts])(rows_to_table([empty_row(id="q1", question="Q?", context="C.")]))
    for spec in expert_stage_order(fixed):
        table = AnswerWithExpert(spec, cascade=None)(table)
    (row,) = drop_context(table).to_pylist()
    assert (row["expert"], row["answer"], row["consulted"], row["cost_usd"]) == ("big", "big", None, 8.0)


def test_the_endpoint_refuses_a_cascade(config, capsys):
    from pipelines import exit_codes
    from pipelines.cli import main
    from pipelines.serve.app import check_servable
    from routing.core.config import ConfigError

    with pytest.raises(ConfigError, match="router.kind: cascade runs in the batch job"):
        check_servable(config)
    path = config.output.path + ".yaml"
    with open(path, "w") as fh:
        yaml.safe_dump(config.model_dump(mode="json"), fh)
    assert main(["serve", path]) == exit_codes.CONFIG  # refused before Ray starts
    assert "router.kind: cascade" in capsys.readouterr().err

"""The whole job on local Ray: replay experts, bad rows, Parquet input, refusals."""

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from operators.schema import OUTPUT_COLUMNS
from pipelines import exit_codes
from pipelines.batch_job import run_job
from pipelines.resources import PlanDoesNotFit
from routing.core.config import ConfigError, load_config, parse_config
from routing.answers.squad import load_squad

REPO = Path(__file__).resolve().parents[1]
SLICE = REPO / "examples" / "data" / "squad-replay-slice"

pytestmark = pytest.mark.ray


def _read(out: Path) -> pa.Table:
    return pq.read_table(out)


def _replay_cfg(input_path, fmt, out, router=None, **extra):
    cfg = {
        "input": {"path": str(input_path), "format": fmt},
        "output": {"path": str(out)},
        "experts": [
            {"name": "cheap", "kind": "replay", "predictions": str(SLICE / "predictions/nlnet-single.json"), "cost": {"usd_per_item": 0.002}},
            {
                "name": "strong",
                "kind": "replay",
                "predictions": str(SLICE / "predictions/bert-large-single-v2.json"),
                "cost": {"usd_per_item": 0.01, "usd_per_1k_input_tokens": 0.1},
            },
        ],
        "router": router or {"kind": "rule", "rules": [{"expert": "strong", "min_context_chars": 1000}], "default": "cheap"},
        "execution": {"batch_size": 32},
    }
    cfg.update(extra)
    return parse_config(cfg)


def test_example_config_end_to_end(local_ray, tmp_path):
    cfg = load_config(REPO / "examples" / "squad-replay.yaml")
    summary = run_job(cfg, output=str(tmp_path / "out"), progress=False)
    gold = load_squad(SLICE / "questions.json")
    table = _read(tmp_path / "out")
    assert table.num_rows == len(gold) == summary.rows_in == summary.rows_out
    assert set(OUTPUT_COLUMNS) <= set(table.column_names)
    assert sorted(table.column("id").to_pylist()) == sorted(q.id for q in gold)
    assert summary.exit_code == exit_codes.OK and summary.rows_with_errors == 0
    written = json.loads((tmp_path / "out" / "_summary.json").read_text())
    assert written["rows_in"] == written["rows_out"] == len(gold)
    assert written["config_hash"] == cfg.config_hash()
    assert sum(e["rows"] for e in written["experts"].values()) == len(gold)


def test_rows_routed_priced_and_answered_from_recordings(local_ray, tmp_path):
    cfg = _replay_cfg(SLICE / "questions.json", "squad", tmp_path / "out")
    summary = run_job(cfg, progress=False)
    rows = _read(tmp_path / "out").to_pylist()
    gold = {q.id: q for q in load_squad(SLICE / "questions.json")}
    strong = json.loads((SLICE / "predictions/bert-large-single-v2.json").read_text())
    cheap = json.loads((SLICE / "predictions/nlnet-single.json").read_text())
    for r in rows:
        q = gold[r["id"]]
        want = "strong" if len(q.context) >= 1000 else "cheap"
        assert r["expert"] == want
        assert r["answer"] == (strong if want == "strong" else cheap)[r["id"]]
        words = len(q.question.split()) + len(q.context.split())
        assert r["input_tokens"] == words
        expected = 0.01 + 0.1 * words / 1000 if want == "strong" else 0.002
        assert r["cost_usd"] == pytest.approx(expected)
        assert r["run_id"] == summary.run_id and r["error"] is None
    per_expert = {n: t.cost_usd for n, t in summary.experts.items()}
    assert sum(per_expert.values()) == pytest.approx(sum(r["cost_usd"] for r in rows))


def test_bad_rows_are_kept_with_errors(local_ray, tmp_path):
    good = [{"id": qid, "question": "When?", "context": "Normandy is in France."} for qid in ("56ddde6b9a695914005b9628", "56ddde6b9a695914005b9629")]
    lines = [json.dumps(g).encode() for g in good]
    lines += [
        json.dumps({"id": "56ddde6b9a695914005b9628", "question": "dup?", "context": "x"}).encode(),
        json.dumps({"id": "n1", "question": None, "context": "x"}).encode(),
        json.dumps({"id": "n2", "question": "", "context": "x"}).encode(),
        json.dumps({"id": "n3", "question": 42, "context": "x"}).encode(),
        json.dumps({"question": "no id", "context": "x"}).encode(),
        b"\xc3\x28 broken utf-8",
        b"{truncated",
    ]
    src = tmp_path / "in"
    src.mkdir()
    (src / "a.jsonl").write_bytes(b"\n".join(lines))
    (src / "b.jsonl").write_bytes(json.dumps({"id": "unknown-id", "question": "q", "context": "c"}).encode())
    cfg = _replay_cfg(src, "jsonl", tmp_path / "out", router={"kind": "fixed", "expert": "cheap"})
    summary = run_job(cfg, progress=False)
    rows = _read(tmp_path / "out").to_pylist()
    assert summary.rows_in == len(rows) == 10 and summary.rows_match
    assert summary.exit_code == exit_codes.COMPLETED_WITH_ERRORS
    errors = [r["error"] for r in rows if r["error"]]
    assert len(errors) == 8
    assert summary.errors_by_kind == {"duplicate_id": 1, "expert_error": 1, "invalid_input": 2, "invalid_row": 4}
    answered = [r for r in rows if r["answer"] is not None]
    assert sorted(r["id"] for r in answered) == sorted(g["id"] for g in good)
    assert all(r["expert"] is None and r["cost_usd"] == 0 for r in rows if r["error"] and not r["error"].startswith("expert_error"))


def test_parquet_input_with_column_mapping_and_a_truncated_file(local_ray, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    gold = load_squad(SLICE / "questions.json")[:40]
    for i in range(2):
        part = gold[i * 20 : (i + 1) * 20]
        pq.write_table(
            pa.table({"qid": [q.id for q in part], "q": [q.question for q in part], "passage": [q.context for q in part], "extra": [1] * 20}),
            src / f"part-{i}.parquet",
        )
    (src / "part-9.parquet").write_bytes((src / "part-0.parquet").read_bytes()[:200])
    cfg = _replay_cfg(src, "parquet", tmp_path / "out")
    cfg = cfg.model_copy(update={"input": cfg.input.model_copy(update={"columns": cfg.input.columns.model_copy(update={"id": "qid", "question": "q", "context": "passage"})})})
    summary = run_job(cfg, progress=False)
    assert summary.rows_in == summary.rows_out == 40
    assert list(summary.unreadable_files) == [str(src / "part-9.parquet")]
    assert summary.exit_code == exit_codes.COMPLETED_WITH_ERRORS
    assert sorted(_read(tmp_path / "out").column("id").to_pylist()) == sorted(q.id for q in gold)


def test_parquet_job_whose_pools_leave_less_than_a_cpu_free_finishes(local_ray, tmp_path):
    """Regression: Ray 2.60's default Parquet reader lists files in a task that asks for
    a whole CPU; beside expert pools that hold all but a fraction of the 2 CPUs it never
    ran and the job waited for ever. It must finish, every row once, in few files."""
    import threading

    src = tmp_path / "in"
    src.mkdir()
    gold = load_squad(SLICE / "questions.json")
    for i in range(3):
        part = gold[i * 100 : (i + 1) * 100]
        pq.write_table(pa.table({"id": [q.id for q in part], "question": [q.question for q in part], "context": [q.context for q in part]}),
                       src / f"part-{i}.parquet")
    cfg = _replay_cfg(src, "parquet", tmp_path / "out")
    tight = cfg.model_copy(update={"experts": [
        e.model_copy(update={"resources": e.resources.model_copy(update={"num_cpus": 0.65})}) for e in cfg.experts
    ]})  # 2 x 0.65 + router 0.25 + dedupe 0.1 + one light task 0.25 = 1.9 of 2 CPUs
    result: dict = {}
    worker = threading.Thread(target=lambda: result.update(summary=run_job(tight, progress=False)), daemon=True)
    worker.start()
    worker.join(timeout=240)
    assert not worker.is_alive(), "the job did not finish within 240 s: a stage waits for resources the pools hold"
    summary = result["summary"]
    assert summary.rows_in == summary.rows_out == 300
    out = _read(tmp_path / "out")
    assert sorted(out.column("id").to_pylist()) == sorted(q.id for q in gold[:300])
    # Blocks are cut to batch size on the way; the writer gathers them again.
    assert len(list((tmp_path / "out").rglob("*.parquet"))) == 1


def test_output_holding_a_run_is_refused_unless_overwrite(local_ray, tmp_path):
    cfg = _replay_cfg(SLICE / "questions.json", "squad", tmp_path / "out", router={"kind": "fixed", "expert": "cheap"})
    run_job(cfg, progress=False)
    with pytest.raises(ConfigError, match="already holds a finished run"):
        run_job(cfg, progress=False)
    summary = run_job(cfg, overwrite=True, progress=False)
    assert _read(tmp_path / "out").num_rows == summary.rows_out == summary.rows_in


def test_plan_that_cannot_fit_fails_fast_naming_the_expert(local_ray, tmp_path):
    cfg = _replay_cfg(SLICE / "questions.json", "squad", tmp_path / "out")
    experts = [cfg.experts[0], cfg.experts[1].model_copy(update={"resources": cfg.experts[1].resources.model_copy(update={"num_gpus": 1.0})})]
    cfg = cfg.model_copy(update={"experts": experts})
    with pytest.raises(PlanDoesNotFit, match=r"^experts\.strong: .*GPU=1"):
        run_job(cfg, progress=False)
    assert not (tmp_path / "out").exists()


def test_tiny_hf_experts_end_to_end(local_ray, tmp_path, tiny_qa_model):
    gold = load_squad(SLICE / "questions.json")[:24]
    src = tmp_path / "in.jsonl"
    src.write_text("\n".join(json.dumps({"id": q.id, "question": q.question, "context": q.context}) for q in gold))
    hf = {"kind": "hf-extractive-qa", "model": tiny_qa_model, "batch_size": 8, "resources": {"num_cpus": 0.5}}
    cfg = parse_config(
        {
            "input": {"path": str(src), "format": "jsonl"},
            "output": {"path": str(tmp_path / "out")},
            "experts": [
                {**hf, "name": "short", "max_seq_len": 64, "doc_stride": 16, "cost": {"usd_per_gpu_hour": 3.6}},
                {**hf, "name": "long", "max_seq_len": 256, "doc_stride": 64, "null_score_threshold": 0.0,
                 "cost": {"usd_per_gpu_hour": 7.2, "usd_per_1k_input_tokens": 0.01}},
            ],
            "router": {"kind": "rule", "rules": [{"expert": "long", "min_context_chars": 700}], "default": "short"},
            "execution": {"batch_size": 8},
        }
    )
    summary = run_job(cfg, progress=False)
    rows = _read(tmp_path / "out").to_pylist()
    assert summary.rows_in == summary.rows_out == len(rows) == 24 and summary.exit_code == exit_codes.OK
    ctx = {q.id: q.context for q in gold}
    assert {r["expert"] for r in rows} == {"short", "long"}
    for r in rows:
        assert r["error"] is None and r["answer"] is not None
        assert r["answer"] == "" or r["answer"] in ctx[r["id"]]
        assert r["input_tokens"] > 0 and r["expert_seconds"] > 0
        # Cost = device seconds at the hourly price (+ token price for "long").
        per_sec = (3.6 if r["expert"] == "short" else 7.2) / 3600
        token_part = 0.01 * r["input_tokens"] / 1000 if r["expert"] == "long" else 0.0
        assert r["cost_usd"] == pytest.approx(per_sec * r["expert_seconds"] + token_part, rel=1e-6)
    # Short windows over long contexts: more tokens per row than characters / 8 would suggest.
    assert all(r["input_tokens"] >= 10 for r in rows)

"""Failure injection: an expert that fails on some inputs, one that raises, and one
that hangs. The rows it cannot answer get errors; every other row is answered; the job
finishes with rows in = rows out."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any, Sequence

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from operators import stages
from operators.runners.base import RunnerOutput
from operators.schema import empty_row, error_kind, rows_to_table
from pipelines import exit_codes
from pipelines.batch_job import run_job
from routing.core.config import ReplayExpert, parse_config
from scripted_llm import ScriptedLLM

TEMPLATE = "Context: {context}\nQuestion: {question}\nAnswer:"


def _write_jsonl(path: Path, questions: list[str]) -> list[str]:
    ids = [f"q{i}" for i in range(len(questions))]
    path.write_text("\n".join(json.dumps({"id": i, "question": q, "context": f"Context for {i}."}) for i, q in zip(ids, questions)))
    return ids


def _api_config(src: Path, out: Path, base_url: str, **execution: Any) -> Any:
    return parse_config(
        {
            "input": {"path": str(src), "format": "jsonl"},
            "output": {"path": str(out)},
            "experts": [{"name": "api", "kind": "openai-compatible", "base_url": base_url, "model": "scripted",
                         "prompt_template": TEMPLATE, "max_retries": 1, "retry_backoff_s": 0.01, "timeout_s": 120,
                         "max_concurrent_requests": 4, "cost": {"usd_per_item": 0.01}}],
            "router": {"kind": "fixed", "expert": "api"},
            "execution": {"batch_size": 4, **execution},
        }
    )


# -- an expert that fails on some inputs (HTTP 4xx / 5xx from its server) -----------------


@pytest.mark.ray
def test_rows_the_expert_fails_on_get_errors_and_the_rest_finish(local_ray, tmp_path: Path) -> None:
    questions = [f"Where is site {i}?" for i in range(36)]
    failing = {3: "POISON", 11: "BADREQ", 12: "POISON", 30: "BADREQ"}
    for i, word in failing.items():
        questions[i] = f"Is {word} site {i} here?"
    _write_jsonl(tmp_path / "in.jsonl", questions)
    with ScriptedLLM() as llm:
        summary = run_job(_api_config(tmp_path / "in.jsonl", tmp_path / "out", llm.base_url), progress=False)
    rows = {r["id"]: r for r in pq.read_table(tmp_path / "out").to_pylist()}
    assert summary.rows_in == summary.rows_out == len(rows) == 36
    assert summary.exit_code == exit_codes.COMPLETED_WITH_ERRORS
    assert summary.errors_by_kind == {"expert_error": len(failing)}
    for i in range(36):
        r = rows[f"q{i}"]
        if i in failing:
            assert r["answer"] is None and error_kind(r["error"]) == "expert_error"
            if failing[i] == "POISON":  # 5xx: retried, then given up
                assert "HTTP 500" in r["error"] and "after 2 attempts" in r["error"]
                assert llm.requests[questions[i]] == 2
            else:  # 4xx: not retried
                assert "HTTP 400" in r["error"] and "not retried" in r["error"]
                assert llm.requests[questions[i]] == 1
            assert r["cost_usd"] == 0  # a per-item price buys an answer
        else:
            assert r["error"] is None and r["answer"] == str(i) and r["cost_usd"] == pytest.approx(0.01)


# -- an expert that raises -------------------------------------------------------------------


class RaisingRunner:
    """Raises for any batch holding a question with BOOM, like a model that chokes on
    some inputs; answers the rest."""

    def __init__(self) -> None:
        self.calls = 0

    def answer(self, ids: Sequence[str], questions: Sequence[str], contexts: Sequence[str]) -> RunnerOutput:
        self.calls += 1
        if any("BOOM" in q for q in questions):
            raise RuntimeError("CUDA error: device-side assert triggered")
        n = len(ids)
        return RunnerOutput([q.upper() for q in questions], [1.0] * n, [3] * n, [1] * n)


def _batch(questions: list[str], expert: str = "x") -> pa.Table:
    return rows_to_table(
        empty_row(id=f"r{i}", question=q, context="c", expert=expert if not q.startswith("other") else "y", source="s", run_id="run")
        for i, q in enumerate(questions)
    )


def _stage(monkeypatch, runner: Any, **kwargs: Any) -> stages.AnswerWithExpert:
    monkeypatch.setattr(stages, "build_runner", lambda spec: runner)
    return stages.AnswerWithExpert(ReplayExpert(name="x", kind="replay", predictions="/dev/null"), **kwargs)


def test_an_expert_that_raises_costs_only_the_rows_it_raises_on(monkeypatch) -> None:
    runner = RaisingRunner()
    stage = _stage(monkeypatch, runner)
    out = stage(_batch(["a?", "BOOM?", "b?", "other?", "BOOM again?", "c?"])).to_pylist()
    assert out[0]["answer"] == "A?" and out[2]["answer"] == "B?" and out[5]["answer"] == "C?"
    for i in (1, 4):
        assert out[i]["answer"] is None
        assert out[i]["error"] == "expert_error: x raised RuntimeError: CUDA error: device-side assert triggered"
    assert out[3]["error"] is None and out[3]["answer"] is None  # another expert's row passes untouched
    assert runner.calls == 1 + 5  # the whole batch once, then each of its 5 rows alone


# -- an expert that hangs: execution.batch_timeout_s ------------------------------------------


class HangingRunner:
    """Never returns for questions with HANG until released."""

    def __init__(self) -> None:
        self.release = threading.Event()

    def answer(self, ids: Sequence[str], questions: Sequence[str], contexts: Sequence[str]) -> RunnerOutput:
        if any("HANG" in q for q in questions):
            self.release.wait(60)
        n = len(ids)
        return RunnerOutput(list(questions), [None] * n, [1] * n, [1] * n)


def test_a_hung_batch_times_out_and_the_next_batch_is_answered(monkeypatch) -> None:
    runner = HangingRunner()
    stage = _stage(monkeypatch, runner, batch_timeout_s=0.5)
    try:
        started = time.perf_counter()
        hung = stage(_batch(["a?", "HANG?", "b?"])).to_pylist()
        took = time.perf_counter() - started
        assert 0.5 <= took < 5
        assert all(r["answer"] is None for r in hung)
        assert all(r["error"].startswith("expert_error: timeout after 0.5 s: expert x did not answer its batch of 3 row(s)") for r in hung)
        assert all(r["expert_seconds"] >= 0 and r["cost_usd"] == 0 for r in hung)
        # The hung call is still running in the background; the stage is not blocked by it.
        assert any(t.name == "expert-x-batch" for t in threading.enumerate())
        fine = stage(_batch(["c?", "d?"])).to_pylist()
        assert [r["answer"] for r in fine] == ["c?", "d?"] and all(r["error"] is None for r in fine)
    finally:
        runner.release.set()


def test_a_large_call_is_timed_in_pieces_of_timeout_rows(monkeypatch) -> None:
    # A stage sized from the expert's routed share gets many batches' rows per call; a
    # hung request must cost only the rows of its own piece of `timeout_rows`.
    runner = HangingRunner()
    stage = _stage(monkeypatch, runner, batch_timeout_s=0.5, timeout_rows=4)
    questions = [f"q{i}?" for i in range(12)]
    questions[5] = "HANG?"
    try:
        out = stage(_batch(questions)).to_pylist()
        failed = [i for i, r in enumerate(out) if r["error"]]
        assert failed == [4, 5, 6, 7]
        assert all(out[i]["error"].startswith("expert_error: timeout after 0.5 s: expert x did not answer its batch of 4 row(s)") for i in failed)
        assert [out[i]["answer"] for i in range(12) if i not in failed] == [questions[i] for i in range(12) if i not in failed]
    finally:
        runner.release.set()


def test_call_with_timeout_returns_results_and_reraises() -> None:
    assert stages.call_with_timeout(lambda: RunnerOutput(["a"], [None], [1], [1]), 5, "t")[0] is True
    with pytest.raises(KeyError):
        stages.call_with_timeout(lambda: {}["missing"], 5, "t")
    release = threading.Event()
    finished, result = stages.call_with_timeout(lambda: release.wait(30), 0.2, "t")
    assert (finished, result) == (False, None)
    release.set()


@pytest.mark.ray
def test_a_server_that_hangs_on_some_requests_times_out_those_batches_only(local_ray, tmp_path: Path) -> None:
    questions = [f"Where is site {i}?" for i in range(24)]
    hanging = {5, 17}
    for i in hanging:
        questions[i] = f"Will HANG site {i}?"
    _write_jsonl(tmp_path / "in.jsonl", questions)
    with ScriptedLLM(hang_s=120) as llm:
        started = time.perf_counter()
        summary = run_job(_api_config(tmp_path / "in.jsonl", tmp_path / "out", llm.base_url, batch_timeout_s=3), progress=False)
        took = time.perf_counter() - started
    rows = {r["id"]: r for r in pq.read_table(tmp_path / "out").to_pylist()}
    assert took < 100  # well before the hung requests would have returned (120 s)
    assert summary.rows_in == summary.rows_out == len(rows) == 24
    assert summary.exit_code == exit_codes.COMPLETED_WITH_ERRORS
    timed_out = {rid for rid, r in rows.items() if r["error"]}
    assert {f"q{i}" for i in hanging} <= timed_out
    for rid in timed_out:
        assert rows[rid]["error"].startswith("expert_error: timeout after 3 s: expert api did not answer its batch of")
    # Only the rows that shared a batch with a hung request are lost (batches of 4).
    assert len(timed_out) <= 4 * len(hanging)
    assert all(r["answer"] == rid[1:] for rid, r in rows.items() if rid not in timed_out)
    assert summary.errors_by_kind == {"expert_error": len(timed_out)}

"""Batch fill (issue 14): the mechanism, never the timings.

An expert that gets 10 % of the rows must get calls holding about PASSES_PER_CALL of
its own full passes; every row leaves its stage exactly once, with its fill entry; the
summary's mean fill is the per-pass mean; the GPU check's dry run checks its plan."""

from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path

import pyarrow as pa

from operators.rebatch import PASSES_PER_CALL, expert_call_rows, sample_shares, starting_actors
from operators.runners.base import PassLog, RunnerOutput
from operators.schema import empty_row, rows_to_table
from operators.stages import AnswerWithExpert, CheckAndRoute
from routing.core.config import ReplayExpert, RuleRouter

REPO = Path(__file__).resolve().parents[1]


class _CountingRunner:
    """Answers every row; logs its rows in passes of `size`, like a model runner."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.calls: list[int] = []
        self.passes = PassLog()

    def answer(self, ids, questions, contexts):
        self.calls.append(len(ids))
        self.passes.record_chunks(len(ids), self.size)
        n = len(ids)
        return RunnerOutput(["a"] * n, [1.0] * n, [1] * n, [1] * n)


def _stage(name: str, runner: _CountingRunner) -> AnswerWithExpert:
    stage = AnswerWithExpert.__new__(AnswerWithExpert)
    stage.spec = ReplayExpert(name=name, kind="replay", predictions="/dev/null", batch_size=runner.size)
    stage.runner = runner
    return stage


def test_an_expert_with_a_tenth_of_the_rows_gets_calls_of_about_its_passes() -> None:
    rng = random.Random(7)
    router = RuleRouter.model_validate({"kind": "rule", "rules": [{"expert": "rare", "min_context_chars": 90}], "default": "common"})
    contexts = ["x" * (100 if rng.random() < 0.1 else 10) for _ in range(5000)]
    shares = sample_shares(router, ["rare", "common"], ["q?"] * 2000, contexts[:2000])
    assert 0.07 < shares["rare"] < 0.13
    size, batch = 16, 64
    call = expert_call_rows(batch, size, shares["rare"])
    runner = _CountingRunner(size)
    stage = _stage("rare", runner)
    dedupe_route = CheckAndRoute(router, ["rare", "common"])
    seen = []
    for lo in range(0, len(contexts) - call + 1, call):  # full calls, as the bundler cuts them
        rows = [empty_row(id=f"r{i}", question="q?", context=contexts[i], source="s", run_id="r") for i in range(lo, lo + call)]
        out = stage(dedupe_route(rows_to_table(rows)))
        seen += out.column("id").to_pylist()
        fills = [e for lst in out.column("batch_fill").to_pylist() if lst for e in lst]
        assert len(fills) == runner.calls[-1]  # one entry per answered row, none for the others
    # About PASSES_PER_CALL full passes of its own rows per call, not a tenth of one.
    mean_call = sum(runner.calls) / len(runner.calls)
    assert 0.7 * PASSES_PER_CALL * size < mean_call < 1.4 * PASSES_PER_CALL * size
    assert len(seen) == len(set(seen))  # every row out exactly once


def test_fill_entries_sum_to_the_per_pass_mean() -> None:
    runner = _CountingRunner(16)
    stage = _stage("e", runner)
    rows = [empty_row(id=f"r{i}", question="q?", context="c", source="s", run_id="r", expert="e") for i in range(20)]
    out = stage(rows_to_table(rows))
    entries = [e for lst in out.column("batch_fill").to_pylist() for e in lst]
    passes = sum(e["passes"] for e in entries)
    fill = sum(e["fill"] for e in entries)
    assert abs(passes - 2) < 1e-9  # 16 + 4
    assert abs(fill / passes - (1.0 + 0.25) / 2) < 1e-9


def test_duplicates_are_flagged_before_routing() -> None:
    router = RuleRouter.model_validate({"kind": "rule", "rules": [], "default": "a"})
    stage = CheckAndRoute(router, ["a"])
    rows = [empty_row(id="same", question="q?", context="c", source="s", run_id="r") for _ in range(2)]
    out = stage(rows_to_table(rows))
    assert out.column("expert").to_pylist() == ["a", None]
    assert out.column("error").to_pylist()[1] is not None


def test_call_size_grows_as_the_share_shrinks_and_is_bounded() -> None:
    assert expert_call_rows(64, 16, 1.0) == 128
    assert expert_call_rows(64, 16, 0.1) == 1280
    assert expert_call_rows(64, 16, 0.0) == expert_call_rows(64, 16, 0.02)


def test_a_pool_starts_no_more_actors_than_the_shard_has_calls_for_it() -> None:
    # 64 rows, 90 % to an expert with 143-row calls: one call, so one actor to start.
    assert starting_actors(2, 64, 0.9, 143) == 1
    # A long shard keeps the configured floor.
    assert starting_actors(2, 2850, 0.9, 143) == 2
    assert starting_actors(3, 300, 1.0, 100) == 3
    assert starting_actors(3, 250, 1.0, 100) == 3 and starting_actors(3, 200, 1.0, 100) == 2
    # Unknown row counts (JSONL, SQuAD) and an expert the sample never reached.
    assert starting_actors(2, None, 0.9, 143) == 2
    assert starting_actors(4, 10_000, 0.0, 64) == 1


def test_gpu_check_dry_run_checks_its_plan(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(REPO / "bench" / "gpu_check.py"), "--dry-run", "--workdir", str(tmp_path)],
        capture_output=True, text=True, timeout=300, cwd=str(REPO),
        env={**__import__("os").environ, "PYTHONPATH": str(REPO)},
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "dry run: config valid" in proc.stdout
    assert "could not measure:" in proc.stdout.splitlines()[-1]

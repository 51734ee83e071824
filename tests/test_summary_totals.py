"""`output_totals` (Arrow kernels, file by file) against a plain per-row reference.

The summary is read back from the written Parquet; its aggregation was rewritten for
memory (bench/RESULTS.md), so this pins it to the obvious row-by-row definition on
outputs with every awkward case: rows that never reached an expert, errors with and
without a kind, null answers and null prices, several files, batches split inside a file.
"""

from __future__ import annotations

import random
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from operators.schema import OUTPUT_SCHEMA, error_kind
from pipelines import summary
from pipelines.summary import ExpertTotals, output_totals


def _reference(rows: list[dict]) -> tuple[int, dict[str, ExpertTotals], dict[str, int], int]:
    experts: dict[str, ExpertTotals] = {}
    errors: dict[str, int] = {}
    answered = 0
    for r in rows:
        kind = error_kind(r["error"])
        if kind:
            errors[kind] = errors.get(kind, 0) + 1
        if r["expert"] is None:
            continue
        t = experts.setdefault(r["expert"], ExpertTotals())
        t.rows += 1
        t.errors += 1 if kind else 0
        if r["answer"] is not None:
            t.answered += 1
            answered += 1
        t.cost_usd += r["cost_usd"] or 0.0
        t.input_tokens += r["input_tokens"] or 0
        t.output_tokens += r["output_tokens"] or 0
        t.expert_seconds += r["expert_seconds"] or 0.0
    return len(rows), experts, errors, answered


def _random_rows(rng: random.Random, n: int) -> list[dict]:
    rows = []
    for i in range(n):
        rows.append(
            {
                "id": f"q{i}",
                "question": "q?",
                "source": "s",
                "expert": rng.choice(["small", "large", "x.y-z", None]),
                "answer": rng.choice(["", "an answer", None]),
                "score": rng.choice([None, 1.5]),
                "cost_usd": rng.choice([None, 0.0, 0.25, 1e-7]),
                "input_tokens": rng.choice([None, 0, 17]),
                "output_tokens": rng.choice([None, 0, 3]),
                "expert_seconds": rng.choice([None, 0.0, 0.125]),
                "error": rng.choice([None, None, "", "  : no kind", "expert_error: boom", "invalid_row: bad: really", "duplicate_id"]),
                "run_id": "r",
            }
        )
    return rows


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_output_totals_match_the_row_by_row_definition(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, seed: int) -> None:
    monkeypatch.setattr(summary, "_SUMMARY_BATCH_ROWS", 7)  # several batches per file
    rng = random.Random(seed)
    rows = _random_rows(rng, 300)
    out = tmp_path / "out"
    (out / "shard-0").mkdir(parents=True)
    for k, lo in enumerate(range(0, len(rows), 70)):
        pq.write_table(pa.Table.from_pylist(rows[lo:lo + 70], schema=OUTPUT_SCHEMA), out / "shard-0" / f"part-{k}.parquet")
    (out / "_summary.json").write_text("{}")  # files beside the output are not rows

    n, experts, errors, answered = output_totals(str(out))
    ref_n, ref_experts, ref_errors, ref_answered = _reference(rows)
    assert (n, errors, answered) == (ref_n, ref_errors, ref_answered)
    assert experts.keys() == ref_experts.keys()
    for name, want in ref_experts.items():
        got = experts[name]
        assert (got.rows, got.errors, got.answered, got.input_tokens, got.output_tokens) == (
            want.rows, want.errors, want.answered, want.input_tokens, want.output_tokens
        )
        assert got.cost_usd == pytest.approx(want.cost_usd) and got.expert_seconds == pytest.approx(want.expert_seconds)


def test_output_totals_of_an_empty_output(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    pq.write_table(OUTPUT_SCHEMA.empty_table(), out / "part-0.parquet")
    assert output_totals(str(out)) == (0, {}, {}, 0)

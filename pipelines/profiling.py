"""`routebatch profile`: run every expert on a sample, SMART-style, and write the
per-question results a router is trained from.

The sample is drawn uniformly from the whole input (reservoir sampling over the
stream, so memory holds only the sample). Experts run as one Ray actor each, on
sub-batches of the sample; after each batch the adaptive profiler
(`routing.calibration.profiling_policy`) decides which experts are still worth profiling and
whether profiling should stop altogether because more would cost more than it can
save. The output directory has the replay layout (`questions.json`,
`predictions/<expert>.json`, `costs.json`) that `train-router` and `bench-router`
read, plus `results.parquet` (one row per question and expert) and `profile.json`.
"""

from __future__ import annotations

import json
import logging
import random
import time
from dataclasses import dataclass
from typing import Any, Optional

import pyarrow as pa
import pyarrow.compute as pc

from operators.ledger import RunLedger
from operators.schema import WORK_SCHEMA, rows_to_table, empty_row
from pipelines.batch_job import inspect_input, new_run_id, ray_for, read_input_dataset
from pipelines.input_files import resolve_input
from pipelines.preflight_checks import check_model_sources
from pipelines.resources import plan_resources
from routing.core.config import ConfigError, JobConfig
from routing.calibration.profiling_policy import AdaptiveProfiler
from routing.answers.squad import exact_match, iter_squad, score_one
from routing.core.storage import join, read_bytes, strip_bom, write_bytes

log = logging.getLogger("routebatch")


@dataclass(frozen=True)
class SampleRow:
    id: str
    question: str
    context: str


def reservoir_sample(ds: Any, size: int, seed: int) -> tuple[list[SampleRow], int]:
    """A uniform sample of `size` answerable rows from a Ray dataset, and how many
    answerable rows it has, in one streaming pass (algorithm R)."""
    rng = random.Random(seed)
    sample: list[SampleRow] = []
    seen = 0
    for batch in ds.iter_batches(batch_format="pyarrow", batch_size=1024):
        ok = batch.filter(pc.is_null(batch.column("error")))
        for rid, q, c in zip(*(ok.column(n).to_pylist() for n in ("id", "question", "context"))):
            seen += 1
            if len(sample) < size:
                sample.append(SampleRow(rid, q, c))
            else:
                j = rng.randrange(seen)
                if j < size:
                    sample[j] = SampleRow(rid, q, c)
    rng.shuffle(sample)  # profiling order must not follow the input's order
    return sample, seen


def gold_answers(config: JobConfig) -> dict[str, tuple[str, ...]]:
    """Gold answers by id when the input is SQuAD JSON (empty tuple = unanswerable)."""
    if config.input.format != "squad":
        return {}
    files = resolve_input(config.input)
    gold: dict[str, tuple[str, ...]] = {}
    for path in files.paths:
        try:
            doc = json.loads(strip_bom(read_bytes(files.uri(path))))
            for q in iter_squad(doc):
                gold[q.id] = () if q.is_impossible else q.answers
        except (ValueError, KeyError, TypeError):
            continue  # an unreadable file has no rows in the sample either
    return gold


def _as_table(rows: list[SampleRow]) -> pa.Table:
    return rows_to_table(empty_row(id=r.id, question=r.question, context=r.context) for r in rows)


def _answer_all(workers: dict[str, Any], names: list[str], rows: list[SampleRow]) -> dict[str, list[dict]]:
    import ray

    table = _as_table(rows)
    refs = {n: workers[n].answer_table.remote(table) for n in names}
    return {n: ray.get(ref).select(["answer", "cost_usd", "input_tokens", "output_tokens", "expert_seconds", "error"]).to_pylist() for n, ref in refs.items()}


def _progress_line(rounds: list[dict], sampled: int, results: dict[str, dict[str, dict]], since: float, active: list[str]) -> str:
    """One line per profiling round: questions done, expert answers per second, and
    what profiling has cost so far, so a long profile shows it is moving and what it spends."""
    done = sum(r["items"] for r in rounds)
    answers = sum(r["items"] * len(r["experts"]) for r in rounds)
    spent = sum(res["cost_usd"] or 0.0 for per_id in results.values() for res in per_id.values())
    rate = answers / max(time.time() - since, 1e-9)
    return f"profiled {done}/{sampled} questions ({answers} expert answers, {rate:.1f}/s), cost so far ${spent:.6f}; active: {', '.join(active)}"


def run_profile(
    config: JobConfig,
    *,
    sample_size: int,
    output: str,
    reference: Optional[str] = None,
    target: float = 0.9,
    confidence: float = 0.95,
    batch: int = 20,
    seed: int = 0,
    adaptive: bool = True,
) -> dict:
    import ray

    names = [e.name for e in config.experts]
    if len(names) < 2:
        raise ConfigError("experts: profiling compares experts; define at least two")
    if reference is not None and reference not in names:
        raise ConfigError(f"--reference: unknown expert {reference!r} (known: {names})")
    files = resolve_input(config.input)
    check_model_sources(config.experts)
    readable, _, unreadable = inspect_input(config, files)
    # One actor per expert for the whole profile, regardless of the pools' minimums.
    profile_config = config.model_copy(
        update={"experts": [e.model_copy(update={"pool": e.pool.model_copy(update={"min_actors": 1})}) for e in config.experts]}
    )
    started = time.time()
    with ray_for(config, plan_resources(profile_config)):
        from operators.expert_worker import start_worker

        ledger = RunLedger.remote()
        ds = read_input_dataset(config, files, readable, new_run_id(), ledger)
        sample, total = reservoir_sample(ds, sample_size, seed)
        if not sample:
            raise ConfigError(f"input.path: no answerable rows at {config.input.path}")
        log.info("profiling %d of %d answerable rows on %d experts", len(sample), total, len(names))
        workers = {e.name: start_worker(e) for e in config.experts}
        batches = [sample[i : i + batch] for i in range(0, len(sample), batch)]

        results: dict[str, dict[str, dict]] = {n: {} for n in names}
        profiling_started = time.time()  # rates include the workers' start-up, which the first round waits for
        first = _answer_all(workers, names, batches[0])
        for n in names:
            for row, res in zip(batches[0], first[n]):
                results[n][row.id] = res
        mean_cost = {n: sum(r["cost_usd"] for r in first[n]) / len(first[n]) for n in names}
        ref = reference or max(names, key=lambda n: (mean_cost[n], n))
        profiler = AdaptiveProfiler(mean_cost, ref, target, confidence, total_items=total, batch=batch)

        def agree(n: str, rows: list[SampleRow]) -> list[bool]:
            return [
                results[n][r.id]["answer"] is not None
                and results[ref][r.id]["answer"] is not None
                and exact_match(results[n][r.id]["answer"], results[ref][r.id]["answer"]) == 1.0
                for r in rows
            ]

        for n in profiler.candidates:
            profiler.observe(n, agree(n, batches[0]))
        rounds = [{"items": len(batches[0]), "experts": names}]
        print(_progress_line(rounds, len(sample), results, profiling_started, names), flush=True)
        stopped = "sample exhausted"
        for rows in batches[1:]:
            if adaptive and profiler.should_stop():
                stopped = "expected saving of more profiling is below its cost"
                break
            active = [ref] + (profiler.active_models() if adaptive else list(profiler.candidates))
            out = _answer_all(workers, active, rows)
            for n in active:
                for row, res in zip(rows, out[n]):
                    results[n][row.id] = res
            for n in active[1:]:
                profiler.observe(n, agree(n, rows))
            rounds.append({"items": len(rows), "experts": active})
            print(_progress_line(rounds, len(sample), results, profiling_started, active), flush=True)
        for w in workers.values():
            ray.kill(w)

    gold = gold_answers(config)
    profiled = [r for r in sample if r.id in results[ref]]
    summary = _write_profile(output, config, profiled, results, gold, ref)
    plan = profiler.plan()
    summary.update(
        {
            "reference": ref,
            "target": target,
            "confidence": confidence,
            "sampled": len(sample),
            "profiled": len(profiled),
            "answerable_rows_in_input": total,
            "unreadable_files": {files.uri(p): r for p, r in unreadable.items()},
            "stopped": stopped,
            "rounds": rounds,
            "states": {n: profiler.state(n).value for n in profiler.candidates},
            "conformity_lower_bounds": profiler.lower_bounds(),
            "mix_plan": {"fractions": plan.fractions, "cost_per_item": plan.cost_per_item, "feasible": plan.feasible},
            "wall_seconds": time.time() - started,
        }
    )
    write_bytes(join(output, "profile.json"), json.dumps(summary, indent=2).encode())
    return summary


def _write_profile(output: str, config: JobConfig, rows: list[SampleRow], results: dict, gold: dict, ref: str) -> dict:
    """Write the replay layout. Labels are gold answers when the input has them, else
    the reference expert's answers (SMART's conformity)."""
    labels = "gold" if rows and all(r.id in gold for r in rows) else "reference"
    by_context: dict[str, list[dict]] = {}
    for r in rows:
        answers = gold[r.id] if labels == "gold" else ((results[ref][r.id]["answer"] or ""),)
        answers = tuple(a for a in answers if a)
        by_context.setdefault(r.context, []).append(
            {"id": r.id, "question": r.question, "is_impossible": not answers, "answers": [{"text": a, "answer_start": r.context.find(a)} for a in answers]}
        )
    doc = {"version": "v2.0", "data": [{"title": "profile", "paragraphs": [{"context": c, "qas": qas} for c, qas in by_context.items()]}]}
    write_bytes(join(output, "questions.json"), json.dumps(doc, ensure_ascii=False).encode())

    table_rows, costs, scores = [], {}, {}
    for name, per_id in results.items():
        preds = {rid: res["answer"] or "" for rid, res in per_id.items() if res["error"] is None}
        write_bytes(join(output, "predictions", f"{name}.json"), json.dumps(preds, ensure_ascii=False, indent=0).encode())
        f1s = []
        for rid, res in per_id.items():
            golds = gold.get(rid, ()) if labels == "gold" else ((results[ref][rid]["answer"] or ""),)
            # An expert that failed on a question did not abstain: scoring its missing answer
            # as the empty string would credit it on every unanswerable question it could not
            # read (a replay recorded only for answerable ones would look near-perfect).
            em, f1 = (0.0, 0.0) if res["error"] is not None else score_one(res["answer"], golds)
            f1s.append(f1)
            table_rows.append({"id": rid, "expert": name, **res, "em": em, "f1": f1})
        costs[name] = {"cost": sum(r["cost_usd"] for r in per_id.values()) / max(len(per_id), 1), "items": len(per_id)}
        scores[name] = {"f1": sum(f1s) / max(len(f1s), 1), "items": len(f1s)}
    write_bytes(join(output, "costs.json"), json.dumps({"unit": "USD per question (measured)", "experts": costs}, indent=2).encode())
    sink = pa.BufferOutputStream()
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(table_rows), sink)
    write_bytes(join(output, "results.parquet"), sink.getvalue().to_pybytes())
    return {"labels": labels, "experts": {n: {**costs[n], **scores[n]} for n in results}}

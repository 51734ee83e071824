"""The figures of a run report, computed from what the run wrote (Parquet, summary).

Everything the HTML page shows, plots included, is drawn from the dictionary built
here, and the same dictionary is written beside the page as `report.json`: a reader
(or a test) can check any number on the page against the run's rows without parsing
HTML, and the page can never show a figure the JSON does not hold.
"""

from __future__ import annotations

import json
import math
import time
from typing import Any, Optional

import numpy as np

from operators.schema import error_kind
from pipelines.shards import read_run_record
from pipelines.summary import NotRunOutput, open_output, read_summary
from routing.answers.squad import load_squad, score_one
from routing.core.storage import exists, join, read_bytes
from routing.replay.metrics import upper_hull as replay_upper_hull

_COLUMNS = ("id", "expert", "answer", "error", "cost_usd", "input_tokens", "output_tokens", "expert_seconds")
THROUGHPUT_BINS = 30
LATENCY_BINS = 20


class ReportError(ValueError):
    """The run directory (or a file named for the report) cannot be reported on."""


def read_run_output(run_dir: str) -> dict[str, np.ndarray]:
    """The run's rows, as one array per column (only the small columns)."""
    try:
        dataset = open_output(run_dir, needs="expert")
    except NotRunOutput as exc:
        raise ReportError(str(exc)) from None
    # Runs written before `answered_at` existed still get a report, without the time plot.
    columns = [c for c in (*_COLUMNS, "answered_at", "consulted") if c in dataset.schema.names]
    table = dataset.to_table(columns=columns)
    out = {c: np.array(table.column(c).to_pylist(), dtype=object) for c in ("id", "expert", "answer", "error")}
    # Cascade runs: which experts each row was asked; None everywhere for other routers.
    out["consulted"] = np.array(table.column("consulted").to_pylist() if "consulted" in columns else [None] * table.num_rows, dtype=object)
    for c in ("cost_usd", "expert_seconds", "answered_at"):
        if c in columns:
            out[c] = table.column(c).to_numpy(zero_copy_only=False).astype(np.float64)
    for c in ("input_tokens", "output_tokens"):
        out[c] = np.nan_to_num(table.column(c).to_numpy(zero_copy_only=False).astype(np.float64)).astype(np.int64)
    out["cost_usd"] = np.nan_to_num(out["cost_usd"])
    return out


def _percentiles(values: np.ndarray) -> dict[str, float]:
    if len(values) == 0:
        return {"mean": 0.0, "p50": 0.0, "p90": 0.0, "p99": 0.0, "max": 0.0}
    p50, p90, p99 = np.percentile(values, [50, 90, 99])
    return {"mean": float(values.mean()), "p50": float(p50), "p90": float(p90), "p99": float(p99), "max": float(values.max())}


def _histogram(values: np.ndarray, bins: int) -> dict[str, list]:
    """Counts over log-spaced edges: per-row seconds span orders of magnitude (a cached
    lookup next to a long generation), which linear bins would squash into one bar."""
    positive = values[values > 0]
    if len(positive) == 0:
        return {"edges": [], "counts": []}
    lo, hi = positive.min(), positive.max()
    if hi <= lo:
        hi = lo * 1.0001
    edges = np.geomspace(lo, hi, bins + 1)
    counts, _ = np.histogram(positive, bins=edges)
    return {"edges": [float(e) for e in edges], "counts": [int(c) for c in counts]}


def expert_figures(rows: dict[str, np.ndarray]) -> dict[str, dict[str, Any]]:
    experts: dict[str, dict[str, Any]] = {}
    routed = np.array([e is not None for e in rows["expert"]], dtype=bool)
    n_routed = int(routed.sum())
    kinds = np.array([error_kind(e) for e in rows["error"]], dtype=object)
    for name in sorted({e for e in rows["expert"] if e is not None}):
        mine = rows["expert"] == name
        n = int(mine.sum())
        seconds = np.nan_to_num(rows["expert_seconds"][mine])
        cost = float(rows["cost_usd"][mine].sum())
        experts[name] = {
            "rows": n,
            "share_of_routed": n / n_routed if n_routed else 0.0,
            "answered": int(sum(a is not None for a in rows["answer"][mine])),
            "errors": int(sum(k is not None for k in kinds[mine])),
            "cost_usd": cost,
            "mean_cost_per_row_usd": cost / n if n else 0.0,
            "input_tokens": int(rows["input_tokens"][mine].sum()),
            "output_tokens": int(rows["output_tokens"][mine].sum()),
            "expert_seconds": {"total": float(seconds.sum()), **_percentiles(seconds)},
            "expert_seconds_histogram": _histogram(seconds, LATENCY_BINS),
        }
    return experts


def throughput(rows: dict[str, np.ndarray], started_at: Optional[float]) -> dict[str, Any]:
    """Rows answered per second over the run, from each row's `answered_at`.

    Time runs from the first answer, not from the run's start: start-up (Ray, actors,
    model loading) would otherwise flatten the plot of a short run into one bar at the
    end; how long start-up took is reported beside it instead."""
    if "answered_at" not in rows:
        return {"available": False, "note": "this run's rows carry no answered_at timestamps (written by an older routebatch)"}
    t = rows["answered_at"][~np.isnan(rows["answered_at"])]
    if len(t) == 0:
        return {"available": False, "note": "no row reached an expert"}
    origin = float(t.min())
    rel = t - origin
    span = max(float(rel.max()), 1e-3)
    width = span / THROUGHPUT_BINS
    counts, edges = np.histogram(rel, bins=THROUGHPUT_BINS, range=(0.0, span))
    return {
        "available": True,
        "first_answer_unix": origin,
        "first_answer_after_start_s": origin - started_at if started_at is not None else None,
        "answering_seconds": float(rel.max()),
        "bin_seconds": width,
        "bin_starts_s": [float(e) for e in edges[:-1]],
        "rows_per_bin": [int(c) for c in counts],
        "rows_per_second": [float(c / width) for c in counts],
        "answered_rows": int(len(t)),
        "mean_rows_per_second_while_answering": float(len(t) / max(float(rel.max()), 1e-9)),
    }


def _gold_by_id(gold_path: str) -> dict[str, tuple[str, ...]]:
    try:
        questions = load_squad(gold_path)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ReportError(f"--gold: cannot read SQuAD JSON from {gold_path} ({exc})") from None
    return {q.id: (() if q.is_impossible else q.answers) for q in questions}


def run_quality(rows: dict[str, np.ndarray], gold: dict[str, tuple[str, ...]]) -> dict[str, Any]:
    """EM/F1 of the run's answers on the questions the gold file and the run share
    (a row with an error counts as an empty answer, as the official script does)."""
    seen: set[str] = set()
    total_em = total_f1 = 0.0
    per_expert: dict[str, list[float]] = {}
    for rid, answer, expert in zip(rows["id"], rows["answer"], rows["expert"]):
        if rid is None or rid not in gold or rid in seen:
            continue  # later duplicates were never answered; questions outside the gold are not scored
        seen.add(rid)
        em, f1 = score_one(answer, gold[rid])
        total_em += em
        total_f1 += f1
        acc = per_expert.setdefault(expert or "(not routed)", [0, 0.0, 0.0])
        acc[0] += 1
        acc[1] += em
        acc[2] += f1
    n = len(seen)
    return {
        "scored": n,
        "gold_questions_not_in_run": len(set(gold) - seen),
        "em": total_em / n if n else 0.0,
        "f1": total_f1 / n if n else 0.0,
        "per_expert": {k: {"scored": int(c), "em": em / c, "f1": f1 / c} for k, (c, em, f1) in sorted(per_expert.items())},
    }


def profile_points(profile_dir: str, gold: dict[str, tuple[str, ...]]) -> dict[str, Any]:
    """Each expert's (cost per question, F1) on a profile: the same questions for every
    expert, so the points are comparable (the run's own per-expert F1 is not: each
    expert there saw only the questions routed to it)."""
    costs_path = join(profile_dir, "costs.json")
    if not exists(costs_path):
        raise ReportError(f"--profile: {profile_dir} has no costs.json; give a directory written by `routebatch profile`")
    costs_doc = json.loads(read_bytes(costs_path))
    unit = str(costs_doc.get("unit", ""))
    if "USD" not in unit:
        return {"available": False, "note": f"the profile's costs are in '{unit}', not USD, so they cannot share axes with the run"}
    ids = [qid for qid in _profile_ids(profile_dir) if qid in gold]
    points = []
    for name, spec in sorted(costs_doc.get("experts", {}).items()):
        pred_path = join(profile_dir, "predictions", f"{name}.json")
        if not ids or not exists(pred_path):
            continue
        preds = json.loads(read_bytes(pred_path))
        # No prediction means the expert failed there (the profile writes only answers):
        # wrong, as routing/replay_data counts uncovered cells, never a free abstention.
        f1 = sum(score_one(preds[qid], gold[qid])[1] if qid in preds else 0.0 for qid in ids) / len(ids)
        points.append({"expert": name, "cost_per_row_usd": float(spec["cost"]), "f1": f1, "questions": len(ids)})
    if not points:
        return {"available": False, "note": "no profiled question has a gold answer"}
    return {"available": True, "source": profile_dir, "points": points, "hull": upper_hull(points)}


def _profile_ids(profile_dir: str) -> list[str]:
    doc = json.loads(read_bytes(join(profile_dir, "questions.json")))
    return [str(qa["id"]) for a in doc["data"] for p in a["paragraphs"] for qa in p["qas"]]


def upper_hull(points: list[dict[str, Any]]) -> list[str]:
    """Names of the points on the cost/F1 frontier, cheapest first: each costs more
    than the previous and buys more F1, and none lies under the line joining its
    neighbours (mixing those two would do better for the same money). The frontier is
    the one the routers' random-mix baseline uses, read off the profile's points."""
    costs = np.array([p["cost_per_row_usd"] for p in points], dtype=np.float64)
    f1 = np.array([p["f1"] for p in points], dtype=np.float64)
    return [points[j]["expert"] for j in replay_upper_hull(costs, f1)]


def hull_f1_at(frontier: dict[str, Any], cost: float) -> Optional[float]:
    """F1 of the single-expert frontier at `cost`: what sending each question at random
    to one of the two neighbouring frontier experts, in the proportion that spends
    `cost`, would score on average. None outside the frontier's cost range."""
    pts = [next(p for p in frontier["points"] if p["expert"] == n) for n in frontier.get("hull", [])]
    for a, b in zip(pts, pts[1:]):
        if a["cost_per_row_usd"] <= cost <= b["cost_per_row_usd"]:
            w = (cost - a["cost_per_row_usd"]) / (b["cost_per_row_usd"] - a["cost_per_row_usd"])
            return a["f1"] + w * (b["f1"] - a["f1"])
    if len(pts) == 1 and abs(pts[0]["cost_per_row_usd"] - cost) < 1e-12:
        return pts[0]["f1"]
    return None


PROFILE_COMMAND = "routebatch profile CONFIG --sample 200 --output PROFILE_DIR"


def _no_comparison(has_gold: bool, profile_note: Optional[str]) -> dict[str, Any]:
    give = "--profile PROFILE_DIR" if has_gold else "--gold SQUAD_JSON --profile PROFILE_DIR"
    note = (
        "no best single expert to compare with: in a routed run each expert answered different "
        f"questions, so their F1 and cost are not comparable. Profile every expert on the same questions "
        f"(`{PROFILE_COMMAND}`) and give {give}"
    )
    if profile_note:
        note += f" (the profile given: {profile_note})"
    return {"expert": None, "comparable": False, "note": note}


def best_single_expert(
    experts: dict[str, dict[str, Any]], quality: Optional[dict], profile: Optional[dict], routed_rows: int,
    cascade: bool = False,
) -> dict[str, Any]:
    """The single expert the run is compared with, how it was chosen, and what running
    it on every routed row would have cost (estimated, and the estimate explained).

    Only a profile (every expert on the same questions, with gold answers) can name it:
    an expert's F1 on the rows a router sent it says how hard those rows were as much as
    how good the expert is, so choosing by it once crowned a weak expert and made a
    cheap routed run look dear. Without one the result says so, with the command that
    makes the comparison possible, and carries no figure.

    In a `cascade` run a row's cost is that of every expert it was asked, so an
    expert's mean cost per row in the run is not its own: the profile's cost is used.
    """
    if quality is None or profile is None or not profile.get("available"):
        return _no_comparison(quality is not None, (profile or {}).get("note"))
    best = max(profile["points"], key=lambda p: (p["f1"], -p["cost_per_row_usd"]))
    name, f1 = best["expert"], best["f1"]
    chosen_by = f"highest F1 in the profile ({best['questions']} questions, same for every expert)"
    why = "answered no row in this run" if not cascade else "has no cost of its own in a cascade run (rows paid for every expert asked)"
    if name in experts and experts[name]["rows"] and not cascade:
        per_row = experts[name]["mean_cost_per_row_usd"]
        how = f"{name}'s measured mean cost per row in this run ({experts[name]['rows']} rows) x {routed_rows} routed rows"
    else:
        per_row = best["cost_per_row_usd"]
        how = f"{name} {why}: its measured cost per question in the profile x {routed_rows} routed rows"
    return {
        "expert": name,
        "comparable": True,
        "chosen_by": chosen_by,
        "f1": f1,
        "cost_per_row_usd": per_row,
        "rows": routed_rows,
        "estimated_total_usd": per_row * routed_rows,
        "how_estimated": how,
    }


def compute_report(run_dir: str, *, gold: Optional[str] = None, profile: Optional[str] = None) -> dict[str, Any]:
    """All figures of the report for one run directory."""
    summary = read_summary(run_dir)
    record = read_run_record(run_dir) or {}
    rows = read_run_output(run_dir)
    n = len(rows["expert"])
    routed = int(sum(e is not None for e in rows["expert"]))
    experts = expert_figures(rows)
    # Mean batch fill per expert, as the run summary computed it from the output's
    # batch_fill column (None for runs from before it was recorded).
    for name, figures in experts.items():
        figures["mean_batch_fill"] = ((summary or {}).get("experts", {}).get(name) or {}).get("mean_batch_fill")
    errors: dict[str, int] = {}
    for e in rows["error"]:
        kind = error_kind(e)
        if kind:
            errors[kind] = errors.get(kind, 0) + 1
    gold_answers = _gold_by_id(gold) if gold else None
    quality = run_quality(rows, gold_answers) if gold_answers is not None else None
    # Profile points are F1 against the gold answers; without gold there is nothing to plot.
    prof = profile_points(profile, gold_answers) if profile and gold_answers is not None else None
    total = float(rows["cost_usd"].sum())
    cascade = any(c is not None for c in rows["consulted"])
    baseline = best_single_expert(experts, quality, prof, routed, cascade)
    if baseline["comparable"] and baseline["estimated_total_usd"]:
        est = baseline["estimated_total_usd"]
        baseline["saving_usd"] = est - total
        baseline["saving_fraction"] = (est - total) / est if est > 0 else 0.0
    report: dict[str, Any] = {
        "run_dir": run_dir,
        "run_id": (summary or {}).get("run_id") or record.get("run_id"),
        "status": (summary or {}).get("status", "no _summary.json (unfinished run?)"),
        "generated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "rows": {
            "total": n,
            "routed": routed,
            "answered": int(sum(a is not None for a in rows["answer"])),
            "with_errors": int(sum(errors.values())),
        },
        "experts": experts,
        "cost": {"total_usd": total, "per_routed_row_usd": total / routed if routed else 0.0, "best_single": baseline},
        "throughput": throughput(rows, record.get("started_at")),
        "errors_by_kind": dict(sorted(errors.items())),
        "wall_seconds": (summary or {}).get("wall_seconds"),
        "quality": None,
    }
    if quality is not None:
        quality["gold"] = gold
        frontier: dict[str, Any] = {"run_point": {"cost_per_row_usd": report["cost"]["per_routed_row_usd"], "f1": quality["f1"]}}
        if prof is not None and prof.get("available"):
            frontier.update({"source": "profile", "points": prof["points"], "hull": prof["hull"], "profile": profile})
        else:
            frontier.update(
                {
                    "source": "run",
                    "points": [
                        {"expert": k, "cost_per_row_usd": experts[k]["mean_cost_per_row_usd"], "f1": v["f1"], "questions": v["scored"]}
                        for k, v in quality["per_expert"].items() if k in experts
                    ],
                    "note": (prof or {}).get("note")
                    or "per-expert points are each expert's F1 on the rows routed to it, not on every question: "
                    "give --profile DIR (from `routebatch profile`) for comparable points",
                }
            )
            frontier["hull"] = upper_hull(frontier["points"]) if frontier["points"] else []
        frontier["hull_f1_at_run_cost"] = hull_f1_at(frontier, frontier["run_point"]["cost_per_row_usd"])
        quality["frontier"] = frontier
        report["quality"] = quality
    return _finite(report)


def _finite(value: Any) -> Any:
    """JSON has no NaN or infinity; a figure that is not a number becomes null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def report_paths(run_dir: str, output: Optional[str]) -> tuple[str, str]:
    """(report.html, report.json). By default both go to RUN_DIR/_report/: a file
    without the leading underscore beside the Parquet would be taken for a Parquet
    file by every reader of the run directory (pyarrow skips only `_` and `.` names)."""
    html = output or join(run_dir, "_report", "report.html")
    stem = html[: -len(".html")] if html.endswith(".html") else html
    return html, stem + ".json"

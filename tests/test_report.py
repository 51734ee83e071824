"""The run report: its figures (report.json) against the run's Parquet, the choice and
costing of the best single expert, the frontier, and a page that needs nothing outside
itself. One test runs `routebatch run` on local Ray and reads the report it leaves."""

import base64
import json
import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from operators.schema import OUTPUT_SCHEMA
from pipelines.cli import main as cli
from pipelines.reports.write import report_after_run, write_report
from pipelines.reports.data import profile_points, upper_hull
from pipelines.cli.score import read_answers
from pipelines.summary import count_rows
from routing.answers.squad import load_squad, score_predictions

REPO = Path(__file__).resolve().parents[1]
SLICE = REPO / "examples" / "data" / "squad-replay-slice"
GOLD = SLICE / "questions.json"


def _fake_run(tmp: Path, n: int = 60) -> tuple[Path, list[dict]]:
    """A run directory as the batch job writes it, with known rows: three experts at
    different prices, some errors, answers from recorded predictions."""
    gold = load_squad(GOLD)[:n]
    preds = {name: json.loads((SLICE / "predictions" / f"{name}.json").read_text()) for name in ("nlnet-single", "bert-large-single-v2")}
    rows = []
    for i, q in enumerate(gold):
        expert = "bert-large-single-v2" if i % 3 == 0 else "nlnet-single"
        error = "expert_error: boom" if i % 17 == 5 else None
        rows.append(
            {
                "id": q.id, "question": q.question, "source": "x", "expert": expert,
                "answer": None if error else preds[expert].get(q.id, ""), "score": None,
                "cost_usd": 0.001 if expert.startswith("bert") else 0.0002,
                "input_tokens": 100 + i, "output_tokens": 3, "expert_seconds": 0.001 * (1 + i % 5),
                "answered_at": 1000.0 + i * 0.5, "error": error, "run_id": "r1",
            }
        )
    rows.append({**rows[0], "id": "bad-row", "expert": None, "answer": None, "cost_usd": 0.0, "input_tokens": 0, "output_tokens": 0,
                 "expert_seconds": 0.0, "answered_at": None, "error": "invalid_row: question is missing"})
    run = tmp / "run"
    (run / "shard-00000").mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=OUTPUT_SCHEMA), run / "shard-00000" / "part-0.parquet")
    (run / "_summary.json").write_text(json.dumps({"run_id": "r1", "status": "completed with errors", "wall_seconds": 40.0}))
    (run / "_run.json").write_text(json.dumps({"run_id": "r1", "started_at": 990.0}))
    return run, rows


def _profile_dir(tmp: Path, ids: list[str], costs: dict[str, float]) -> Path:
    prof = tmp / "profile"
    (prof / "predictions").mkdir(parents=True)
    doc = json.loads(GOLD.read_text())
    wanted = set(ids)
    for art in doc["data"]:
        for p in art["paragraphs"]:
            p["qas"] = [qa for qa in p["qas"] if qa["id"] in wanted]
    (prof / "questions.json").write_text(json.dumps(doc))
    for name in costs:
        preds = json.loads((SLICE / "predictions" / f"{name}.json").read_text())
        (prof / "predictions" / f"{name}.json").write_text(json.dumps({k: v for k, v in preds.items() if k in wanted}))
    (prof / "costs.json").write_text(json.dumps({"unit": "USD per question (measured)", "experts": {n: {"cost": c} for n, c in costs.items()}}))
    return prof


def test_figures_match_the_rows(tmp_path):
    run, rows = _fake_run(tmp_path)
    html_path, json_path, r = write_report(str(run), gold=str(GOLD))
    assert json.loads(Path(json_path).read_text()) == r
    assert r["rows"] == {"total": len(rows), "routed": len(rows) - 1, "answered": sum(x["answer"] is not None for x in rows),
                         "with_errors": sum(x["error"] is not None for x in rows)}
    for name in ("nlnet-single", "bert-large-single-v2"):
        mine = [x for x in rows if x["expert"] == name]
        e = r["experts"][name]
        assert e["rows"] == len(mine) and e["errors"] == sum(x["error"] is not None for x in mine)
        assert e["cost_usd"] == pytest.approx(sum(x["cost_usd"] for x in mine))
        assert e["input_tokens"] == sum(x["input_tokens"] for x in mine)
        assert e["expert_seconds"]["p50"] == pytest.approx(np.percentile([x["expert_seconds"] for x in mine], 50))
        assert sum(e["expert_seconds_histogram"]["counts"]) == len(mine)
    assert r["cost"]["total_usd"] == pytest.approx(sum(x["cost_usd"] for x in rows))
    assert r["errors_by_kind"] == {"expert_error": 4, "invalid_row": 1}
    t = r["throughput"]
    assert sum(t["rows_per_bin"]) == len(rows) - 1 and t["answering_seconds"] == pytest.approx(0.5 * 59)
    assert t["first_answer_after_start_s"] == pytest.approx(10.0)
    # F1 as `routebatch score` computes it, on the gold questions the run holds.
    answers, _ = read_answers(str(run))
    gold = [q for q in load_squad(GOLD) if q.id in answers]
    assert r["quality"]["f1"] == pytest.approx(score_predictions(gold, answers).as_dict()["f1"])
    assert r["quality"]["scored"] == len(gold) == 60


@pytest.mark.parametrize("with_gold", [False, True])
def test_without_a_profile_no_best_single_expert_is_named(tmp_path, with_gold):
    """Each expert of a routed run answered different questions: comparing their F1 (or
    pricing the run against one of them) is no comparison, so the report names none,
    shows no saving, and says which command gives the comparison."""
    from pipelines.reports.html import headline_sentence as headline, render_html

    run, rows = _fake_run(tmp_path)
    _, _, r = write_report(str(run), gold=str(GOLD) if with_gold else None)
    best = r["cost"]["best_single"]
    assert best["expert"] is None and best["comparable"] is False
    assert "saving_fraction" not in best and "estimated_total_usd" not in best
    assert "routebatch profile CONFIG" in best["note"] and "--profile PROFILE_DIR" in best["note"]
    assert ("--gold SQUAD_JSON" in best["note"]) is (not with_gold)
    line = headline(r)
    assert not any(name in line for name in r["experts"]) and "est." not in line and "%" not in line
    assert "no best single expert to compare with" in line and "routebatch profile" in line
    page = render_html(r)
    assert "Best single expert:" not in page and "on everything (est.)" not in page
    assert (r["quality"] is None) is (not with_gold)


def test_a_profile_in_relative_units_gives_no_comparison_and_says_why(tmp_path):
    run, rows = _fake_run(tmp_path)
    prof = _profile_dir(tmp_path, [x["id"] for x in rows[:20]], {"nlnet-single": 2.0, "bert-large-single-v2": 10.0})
    (prof / "costs.json").write_text(json.dumps({"unit": "relative", "experts": {"nlnet-single": {"cost": 2.0}, "bert-large-single-v2": {"cost": 10.0}}}))
    _, _, r = write_report(str(run), gold=str(GOLD), profile=str(prof))
    best = r["cost"]["best_single"]
    assert best["expert"] is None and "not USD" in best["note"]


def test_profile_gives_comparable_points_and_the_best_by_f1(tmp_path):
    run, rows = _fake_run(tmp_path)
    ids = [x["id"] for x in rows[:40]]
    costs = {"nlnet-single": 0.0002, "bert-large-single-v2": 0.001, "bidaf-self-attention-elmo": 0.0003}
    prof = _profile_dir(tmp_path, ids, costs)
    _, _, r = write_report(str(run), gold=str(GOLD), profile=str(prof))
    fr = r["quality"]["frontier"]
    assert fr["source"] == "profile" and {p["expert"] for p in fr["points"]} == set(costs)
    gold = {q.id: q for q in load_squad(GOLD)}
    for p in fr["points"]:
        preds = json.loads((prof / "predictions" / f"{p['expert']}.json").read_text())
        expect = score_predictions([gold[i] for i in ids], preds).as_dict()["f1"]
        assert p["f1"] == pytest.approx(expect) and p["questions"] == 40
    best = r["cost"]["best_single"]
    top = max(fr["points"], key=lambda p: p["f1"])
    assert best["expert"] == top["expert"] and best["f1"] == pytest.approx(top["f1"])
    if best["expert"] == "bidaf-self-attention-elmo":  # answered nothing in the run: costed from the profile
        assert best["cost_per_row_usd"] == pytest.approx(0.0003)
    assert fr["run_point"]["f1"] == pytest.approx(r["quality"]["f1"])


def test_a_question_an_expert_could_not_answer_in_the_profile_counts_as_wrong(tmp_path):
    """r-net-plus-ensemble was recorded on answerable questions only. Scoring its missing
    answers as empty would credit it with every unanswerable question and crown it."""
    ids = [q.id for q in load_squad(GOLD)]
    prof = _profile_dir(tmp_path, ids, {"r-net-plus-ensemble": 0.0003, "bert-large-single-v2": 0.001})
    points = {p["expert"]: p for p in profile_points(str(prof), {q.id: (() if q.is_impossible else q.answers) for q in load_squad(GOLD)})["points"]}
    rnet = json.loads((SLICE / "predictions" / "r-net-plus-ensemble.json").read_text())
    gold = {q.id: q for q in load_squad(GOLD)}
    covered_f1_sum = score_predictions([gold[i] for i in rnet], rnet).f1
    assert points["r-net-plus-ensemble"]["f1"] == pytest.approx(covered_f1_sum / len(ids))
    assert points["bert-large-single-v2"]["f1"] > points["r-net-plus-ensemble"]["f1"]


def test_the_example_profile_is_the_slice_profiled():
    """The profile the README's first report uses holds every expert's recorded answer
    to every question of the slice, and nothing else."""
    prof = SLICE / "profile"
    assert sorted(q.id for q in load_squad(prof / "questions.json")) == sorted(q.id for q in load_squad(GOLD))
    costs = json.loads((prof / "costs.json").read_text())
    assert "USD" in costs["unit"]
    for name in costs["experts"]:
        assert json.loads((prof / "predictions" / f"{name}.json").read_text()) == json.loads((SLICE / "predictions" / f"{name}.json").read_text())


@pytest.mark.ray
def test_the_first_example_reports_the_best_experts_quality_for_less(local_ray, tmp_path):
    """The README's first job and report: the routed run against the best single expert
    on the same questions (the shipped profile), within a point of its F1, for less."""
    out = tmp_path / "out"
    assert cli(["run", str(REPO / "examples" / "squad-cascade.yaml"), "--output", str(out), "--no-progress"]) == 0
    _, _, r = write_report(str(out), gold=str(GOLD), profile=str(SLICE / "profile"))
    best = r["cost"]["best_single"]
    assert best["expert"] == "bert-large-single-v2" and best["comparable"]
    assert r["quality"]["f1"] >= best["f1"] - 0.01
    assert 0 < r["cost"]["total_usd"] < best["estimated_total_usd"]


def test_upper_hull_keeps_only_points_worth_their_price():
    pts = [
        {"expert": "a", "cost_per_row_usd": 1.0, "f1": 0.5},
        {"expert": "b", "cost_per_row_usd": 2.0, "f1": 0.55},  # under the a-c line
        {"expert": "c", "cost_per_row_usd": 3.0, "f1": 0.8},
        {"expert": "d", "cost_per_row_usd": 4.0, "f1": 0.7},  # dearer and worse than c
    ]
    assert upper_hull(pts) == ["a", "c"]


def test_page_is_self_contained_and_does_not_break_readers_of_the_run(tmp_path):
    run, rows = _fake_run(tmp_path)
    line = report_after_run(str(run))
    html_path = run / "_report" / "report.html"
    assert str(html_path) in line and html_path.exists()
    page = html_path.read_text()
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert len(images) >= 4
    assert all(base64.b64decode(i)[:8] == b"\x89PNG\r\n\x1a\n" for i in images)
    assert not re.search(r'(src|href)="(?!data:)', page)  # nothing fetched from outside
    # The report lives where Parquet readers do not look: the run still reads as before.
    assert count_rows(str(run)) == len(rows)
    assert len(read_answers(str(run))[0]) == len(rows)


@pytest.mark.ray
def test_run_command_writes_a_report_that_matches_its_parquet(local_ray, tmp_path, capsys):
    gold = load_squad(GOLD)[:40]
    lines = [json.dumps({"id": q.id, "question": q.question, "context": q.context}) for q in gold]
    lines += [json.dumps({"id": "no-question", "context": "c"}), lines[0], json.dumps({"id": "unknown", "question": "q?", "context": "c"})]
    (tmp_path / "in.jsonl").write_text("\n".join(lines) + "\n")
    cfg = (REPO / "examples" / "squad-replay.yaml").read_text()
    cfg = cfg.replace("data/squad-replay-slice/questions.json   # relative to this file", str(tmp_path / "in.jsonl"))
    cfg = cfg.replace("format: squad", "format: jsonl").replace("data/squad-replay-slice/", str(SLICE) + "/")
    (tmp_path / "job.yaml").write_text(cfg)
    out = tmp_path / "out"
    code = cli(["run", str(tmp_path / "job.yaml"), "--output", str(out), "--no-progress"])
    printed = capsys.readouterr().out
    assert code == 4  # completed with row errors
    assert f"report: {out / '_report' / 'report.html'}" in printed
    r = json.loads((out / "_report" / "report.json").read_text())
    table = pq.read_table(out).to_pylist()
    assert r["rows"]["total"] == len(table) == len(lines)
    for name, e in r["experts"].items():
        mine = [x for x in table if x["expert"] == name]
        assert e["rows"] == len(mine) and e["cost_usd"] == pytest.approx(sum(x["cost_usd"] for x in mine))
    assert r["errors_by_kind"] == {"duplicate_id": 1, "expert_error": 1, "invalid_row": 1}
    assert sum(r["throughput"]["rows_per_bin"]) == sum(x["answered_at"] is not None for x in table) == len(table) - 2
    summary = json.loads((out / "_summary.json").read_text())
    assert r["cost"]["total_usd"] == pytest.approx(summary["total_cost_usd"])


def test_hostile_names_and_paths_are_escaped_in_the_page(tmp_path):
    # The page is a Jinja2 template with autoescape on: an expert name, an error kind or
    # a run path that holds markup must come out as text, never as markup.
    from pipelines.reports.html import render_html

    run, rows = _fake_run(tmp_path)
    _, _, r = write_report(str(run), gold=str(GOLD))
    evil = "<script>alert(1)</script>\"'&"
    r = json.loads(json.dumps(r))
    r["run_dir"] = "/tmp/" + evil
    r["experts"] = {evil + name: e for name, e in r["experts"].items()}
    r["errors_by_kind"] = {evil: 3}
    page = render_html(r)
    assert "<script>" not in page and evil not in page
    escaped = "&lt;script&gt;alert(1)&lt;/script&gt;&#34;&#39;&amp;"
    assert page.count(escaped) >= 1 + len(r["experts"]) + 1  # the path, each expert's rows, the error kind
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")

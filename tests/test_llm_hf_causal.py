"""The local causal-LM expert on a tiny trained Llama: token counts, left padding, bad rows."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Iterator

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from operators.runners.hf_causal import HFCausalLMRunner
from operators.stages import build_runner
from routing.core.config import HFCausalLMExpert
from routing.answers.prompting import extract_answer, render_prompt
from tiny_models import TINY_LM_TEMPLATE, tiny_lm_examples

MAX_NEW = 12


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread() -> Iterator[None]:
    # Tiny models are all overhead; on the shared 2-core machines one thread is faster.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def spec_for(model: str, **overrides: Any) -> HFCausalLMExpert:
    fields: dict[str, Any] = dict(
        kind="hf-causal-lm", name="tiny-lm", model=model, prompt_template=TINY_LM_TEMPLATE,
        max_new_tokens=MAX_NEW, batch_size=4,
    )
    fields.update(overrides)
    return HFCausalLMExpert(**fields)


@pytest.fixture(scope="module")
def rows() -> tuple[list[str], list[str], list[str]]:
    examples = tiny_lm_examples(6, seed=99)
    return [f"q{i}" for i in range(6)], [q for _, q, _ in examples], [c for c, _, _ in examples]


@pytest.fixture(scope="module")
def runner(tiny_causal_lm: str) -> HFCausalLMRunner:
    return HFCausalLMRunner(spec_for(tiny_causal_lm))


def reference_generation(model_dir: str, prompt: str, max_new: int) -> tuple[list[int], list[int], bool]:
    """(prompt ids, generated ids, stopped at EOS) from a hand-written greedy loop on one
    unpadded prompt: an implementation independent of the runner and of generate()."""
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    ids = tokenizer(prompt)["input_ids"]
    out: list[int] = []
    with torch.inference_mode():
        for _ in range(max_new):
            logits = model(input_ids=torch.tensor([ids + out])).logits[0, -1]
            out.append(int(logits.argmax()))
            if out[-1] == tokenizer.eos_token_id:
                return ids, out, True
    return ids, out, False


def test_tokens_and_answers_match_an_independent_greedy_loop(runner: HFCausalLMRunner, tiny_causal_lm: str, rows) -> None:
    ids, questions, contexts = rows
    out = runner.answer(ids, questions, contexts)
    assert out.errors == [None] * len(ids)
    tokenizer = AutoTokenizer.from_pretrained(tiny_causal_lm)
    stopped = 0
    for k in range(len(ids)):
        prompt = render_prompt(TINY_LM_TEMPLATE, questions[k], contexts[k])
        prompt_ids, generated, at_eos = reference_generation(tiny_causal_lm, prompt, MAX_NEW)
        assert out.input_tokens[k] == len(prompt_ids)
        # Completion tokens: everything generated, the EOS included when it came.
        assert out.output_tokens[k] == len(generated)
        text = tokenizer.decode(generated[:-1] if at_eos else generated, skip_special_tokens=True)
        assert out.answers[k] == extract_answer(text)
        assert out.scores[k] is not None and out.scores[k] <= 0.0
        stopped += at_eos
    # The tiny LM was trained to end answers with EOS, so the EOS path is exercised...
    assert stopped >= 1
    # ...and the answers differ in length, so batches mix finished and running rows.
    assert len(set(out.output_tokens)) > 1


def test_left_padding_batch_of_one_and_of_four_agree(tiny_causal_lm: str, rows) -> None:
    ids, questions, contexts = rows
    one = HFCausalLMRunner(spec_for(tiny_causal_lm, batch_size=1)).answer(ids, questions, contexts)
    four = HFCausalLMRunner(spec_for(tiny_causal_lm, batch_size=4)).answer(ids, questions, contexts)
    lengths = {len(render_prompt(TINY_LM_TEMPLATE, q, c)) for q, c in zip(questions, contexts)}
    assert len(lengths) > 1, "prompts of one length would need no padding"
    assert one.answers == four.answers
    assert one.input_tokens == four.input_tokens and one.output_tokens == four.output_tokens
    assert four.scores == pytest.approx(one.scores, abs=1e-4)


def test_bad_rows_get_errors_and_do_not_disturb_the_others(runner: HFCausalLMRunner, rows) -> None:
    ids, questions, contexts = rows
    clean = runner.answer(ids[:2], questions[:2], contexts[:2])
    mixed = runner.answer(
        ["a", "b", "c", "d", "e"],
        [questions[0], None, "   ", questions[1], "What?"],
        [contexts[0], contexts[0], contexts[0], contexts[1], ""],
    )
    assert mixed.answers[0] == clean.answers[0] and mixed.answers[3] == clean.answers[1]
    assert mixed.input_tokens[0] == clean.input_tokens[0] and mixed.output_tokens[3] == clean.output_tokens[1]
    assert mixed.errors[0] is None and mixed.errors[3] is None
    for k, field in ((1, "question"), (2, "question"), (4, "context")):
        assert mixed.answers[k] is None and mixed.input_tokens[k] == mixed.output_tokens[k] == 0
        assert mixed.errors[k] == f"invalid_row: {field} is missing or empty"


def test_prompt_longer_than_the_model_context_is_a_row_error(runner: HFCausalLMRunner, rows) -> None:
    ids, questions, contexts = rows
    too_long = " ".join([contexts[0]] * 40)
    out = runner.answer(["long", "ok"], [questions[0], questions[1]], [too_long, contexts[1]])
    assert out.answers[0] is None and out.errors[0] is not None
    assert out.errors[0].startswith("expert_error: tiny-lm: prompt has ") and "256-token context" in out.errors[0]
    assert out.errors[1] is None and out.answers[1] is not None


def test_max_new_tokens_bounds_every_completion(tiny_causal_lm: str, rows) -> None:
    ids, questions, contexts = rows
    out = HFCausalLMRunner(spec_for(tiny_causal_lm, max_new_tokens=1)).answer(ids, questions, contexts)
    assert out.output_tokens == [1] * len(ids)


def test_chat_template_wraps_the_prompt_and_is_counted(tiny_causal_lm: str, rows) -> None:
    ids, questions, contexts = rows
    chat = HFCausalLMRunner(spec_for(tiny_causal_lm, chat_template=True))
    plain = HFCausalLMRunner(spec_for(tiny_causal_lm))
    text = chat.prompt_text(questions[0], contexts[0])
    assert text.startswith("<|user|> ") and text.endswith("<|assistant|>")
    assert render_prompt(TINY_LM_TEMPLATE, questions[0], contexts[0]) in text
    tokenizer = chat.tokenizer
    chat_ids = chat.prompt_ids(questions[0], contexts[0])
    assert chat_ids[0] == tokenizer.convert_tokens_to_ids("<|user|>")
    assert chat_ids[-1] == tokenizer.convert_tokens_to_ids("<|assistant|>")
    out_chat = chat.answer(ids[:1], questions[:1], contexts[:1])
    out_plain = plain.answer(ids[:1], questions[:1], contexts[:1])
    assert out_chat.input_tokens[0] == len(chat_ids) > out_plain.input_tokens[0]


def _variant(tiny_causal_lm: str, dest: Path, **tokenizer_changes: Any) -> str:
    """The same weights with a changed tokenizer (files written afresh, not patched)."""
    dest.mkdir()
    for f in Path(tiny_causal_lm).iterdir():
        if f.name in ("config.json", "generation_config.json") or f.suffix == ".safetensors":
            shutil.copy(f, dest / f.name)
    tokenizer = AutoTokenizer.from_pretrained(tiny_causal_lm)
    for name, value in tokenizer_changes.items():
        setattr(tokenizer, name, value)
    tokenizer.save_pretrained(dest)
    return str(dest)


def test_missing_pad_token_falls_back_to_eos(tiny_causal_lm: str, tmp_path: Path, rows) -> None:
    ids, questions, contexts = rows
    no_pad = _variant(tiny_causal_lm, tmp_path / "no_pad", pad_token=None)
    assert AutoTokenizer.from_pretrained(no_pad).pad_token_id is None
    runner = HFCausalLMRunner(spec_for(no_pad, batch_size=6))
    assert runner.tokenizer.pad_token_id == runner.tokenizer.eos_token_id
    assert runner.tokenizer.padding_side == "left"
    batched = runner.answer(ids, questions, contexts)
    single = HFCausalLMRunner(spec_for(tiny_causal_lm, batch_size=1)).answer(ids, questions, contexts)
    assert batched.answers == single.answers and batched.output_tokens == single.output_tokens


def test_chat_template_without_one_in_the_tokenizer_is_refused(tiny_causal_lm: str, tmp_path: Path) -> None:
    bare = _variant(tiny_causal_lm, tmp_path / "bare", chat_template=None)
    with pytest.raises(ValueError, match=r"experts\.tiny-lm\.chat_template: .*has no chat template"):
        HFCausalLMRunner(spec_for(bare, chat_template=True))


def test_build_runner_dispatches_on_kind(tiny_causal_lm: str) -> None:
    assert isinstance(build_runner(spec_for(tiny_causal_lm)), HFCausalLMRunner)

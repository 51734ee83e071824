"""The Hugging Face QA runner on a tiny random BERT: windows, batching, errors, null rule."""

from __future__ import annotations

from typing import Any, Optional

import numpy as np
import pytest
import torch

from operators.runners import hf_qa
from operators.runners.hf_qa import HFExtractiveQARunner
from operators.runners.qa_windows import encode_windows
from routing.core.config import HFExtractiveQAExpert

SENTENCES = [
    "The observatory on the ridge was finished in {n} after a decade of work.",
    "Its largest mirror measures {n} centimetres and was ground by hand.",
    "Visitors reach the dome by a railway that climbs {n} metres in one hour.",
    "Astronomers catalogued {n} variable stars during the first survey.",
]


def make_context(n_sentences: int) -> str:
    return " ".join(SENTENCES[i % len(SENTENCES)].format(n=1800 + 7 * i) for i in range(n_sentences))


def spec_for(model: str, **overrides: Any) -> HFExtractiveQAExpert:
    fields: dict[str, Any] = dict(
        kind="hf-extractive-qa", name="tiny", model=model, max_seq_len=64, doc_stride=16, batch_size=8
    )
    fields.update(overrides)
    return HFExtractiveQAExpert(**fields)


@pytest.fixture(scope="module")
def runner(tiny_qa_model: str) -> HFExtractiveQARunner:
    return HFExtractiveQARunner(spec_for(tiny_qa_model))


def mixed_rows(k: int = 6) -> tuple[list[str], list[str], list[str]]:
    """Rows of different lengths, so windows of one batch need padding."""
    questions = ["When was the observatory finished?", "  How large is the mirror?", "Who?",
                 "How many stars were catalogued in the survey?", "How high does the railway climb?",
                 "What is on the ridge?"][:k]
    contexts = [make_context(n) for n in (2, 9, 1, 25, 4, 14)][:k]
    return [f"q{i}" for i in range(k)], questions, contexts


def test_long_context_is_windowed_and_answer_is_a_substring(runner: HFExtractiveQARunner) -> None:
    context = make_context(60)
    assert len(context) > 3000
    question = "When was the observatory finished?"
    windows = encode_windows(runner.tokenizer, [question], [context], max_seq_len=64, doc_stride=16)
    assert len(windows) > 10
    assert all(w.n_tokens <= 64 for w in windows)
    # Consecutive windows overlap, so no answer is lost at a window boundary.
    for a, b in zip(windows, windows[1:]):
        assert b.offsets[b.context_mask][0][0] < a.offsets[a.context_mask][-1][1]
    out = runner.answer(["a"], [question], [context])
    assert out.errors == [None]
    answer = out.answers[0]
    assert answer and answer in context
    assert out.input_tokens[0] == sum(w.n_tokens for w in windows) > 64
    assert 1 <= out.output_tokens[0] <= runner.spec.max_answer_len
    assert out.scores[0] is not None and np.isfinite(out.scores[0])


@pytest.mark.parametrize("fixture", ["tiny_qa_model", "tiny_qa_model_left"])
def test_context_tokens_and_offsets_line_up(fixture: str, request: pytest.FixtureRequest) -> None:
    """Whichever side the question goes, context-marked tokens are exactly the context."""
    tokenizer = HFExtractiveQARunner(spec_for(request.getfixturevalue(fixture))).tokenizer
    context = make_context(12)
    question = "How large is the mirror ridge?"
    windows = encode_windows(tokenizer, [question], [context], max_seq_len=64, doc_stride=16)
    covered = np.zeros(len(context), dtype=bool)
    for w in windows:
        ids = w.features["input_ids"]
        for t in np.flatnonzero(w.context_mask):
            start, end = w.offsets[t]
            piece = tokenizer.convert_ids_to_tokens(ids[t]).removeprefix("##")
            assert context[start:end].lower() == piece
            covered[start:end] = True
        # The whole question is in every window, outside the context mask.
        q_ids = tokenizer(question, add_special_tokens=False)["input_ids"]
        non_context = [i for i, m in zip(ids, w.context_mask) if not m]
        assert all(q in non_context for q in q_ids)
    assert all(covered[i] for i, ch in enumerate(context) if not ch.isspace())


def test_input_tokens_grow_with_context_length(runner: HFExtractiveQARunner) -> None:
    contexts = [make_context(n) for n in (1, 3, 10, 30)]
    out = runner.answer([str(i) for i in range(4)], ["How large is the mirror?"] * 4, contexts)
    assert out.errors == [None] * 4
    assert out.input_tokens == sorted(out.input_tokens)
    assert len(set(out.input_tokens)) == 4
    for answer, context in zip(out.answers, contexts):
        assert answer and answer in context


def test_bad_rows_get_errors_and_the_rest_are_answered(runner: HFExtractiveQARunner) -> None:
    long_question = "why " * 200  # leaves no room for context in a 64-token window
    ids = ["ok1", "empty_ctx", "none_q", "blank_ctx", "long_q", "ok2"]
    questions: list[Optional[str]] = ["What is on the ridge?", "Who?", None, "Who?", long_question, "How large?"]
    contexts: list[Optional[str]] = [make_context(3), "", make_context(2), "   \n", make_context(2), make_context(5)]
    out = runner.answer(ids, questions, contexts)  # type: ignore[arg-type]
    bad = {1, 2, 3, 4}
    for i in range(len(ids)):
        if i in bad:
            assert out.errors[i] and out.answers[i] is None and out.scores[i] is None
            assert out.input_tokens[i] == 0 and out.output_tokens[i] == 0
        else:
            assert out.errors[i] is None
            assert out.answers[i] and out.answers[i] in contexts[i]  # type: ignore[operator]
            assert out.input_tokens[i] > 0
    assert "context" in out.errors[1] and "question" in out.errors[2]
    assert "tokenise" in out.errors[4]
    # The good rows get the same answers as when they come alone.
    alone = runner.answer(["ok1", "ok2"], [questions[0], questions[5]], [contexts[0], contexts[5]])  # type: ignore[list-item]
    assert [out.answers[0], out.answers[5]] == alone.answers


@pytest.mark.parametrize("fixture", ["tiny_qa_model", "tiny_qa_model_left"])
def test_batch_size_does_not_change_answers(fixture: str, request: pytest.FixtureRequest) -> None:
    model = request.getfixturevalue(fixture)
    ids, questions, contexts = mixed_rows()
    one = HFExtractiveQARunner(spec_for(model, batch_size=1)).answer(ids, questions, contexts)
    eight = HFExtractiveQARunner(spec_for(model, batch_size=8)).answer(ids, questions, contexts)
    assert one.errors == eight.errors == [None] * len(ids)
    assert one.answers == eight.answers
    assert one.output_tokens == eight.output_tokens
    assert one.input_tokens == eight.input_tokens
    np.testing.assert_allclose(one.scores, eight.scores, rtol=1e-5, atol=1e-5)
    for answer, context in zip(one.answers, contexts):
        assert answer and answer in context


def test_leading_question_whitespace_is_stripped(runner: HFExtractiveQARunner, monkeypatch: pytest.MonkeyPatch) -> None:
    # BERT's tokenizer drops the white space itself, so watch what reaches the tokenizer:
    # byte-level BPE tokenizers (RoBERTa) would otherwise spend a token on it.
    seen: list[str] = []
    real = hf_qa.encode_windows

    def spy(tokenizer: Any, questions: list[str], contexts: list[str], **kwargs: Any) -> Any:
        seen.extend(questions)
        return real(tokenizer, questions, contexts, **kwargs)

    monkeypatch.setattr(hf_qa, "encode_windows", spy)
    context = make_context(6)
    plain = runner.answer(["a"], ["How large is the mirror?"], [context])
    padded = runner.answer(["a"], ["   \t How large is the mirror?  "], [context])
    assert seen == ["How large is the mirror?", "How large is the mirror?  "]
    assert plain.answers == padded.answers and plain.input_tokens == padded.input_tokens


def test_null_threshold_flips_answers(tiny_qa_model: str) -> None:
    ids, questions, contexts = mixed_rows()
    always = HFExtractiveQARunner(spec_for(tiny_qa_model, null_score_threshold=None)).answer(ids, questions, contexts)
    never = HFExtractiveQARunner(spec_for(tiny_qa_model, null_score_threshold=1e9)).answer(ids, questions, contexts)
    empty = HFExtractiveQARunner(spec_for(tiny_qa_model, null_score_threshold=-1e9)).answer(ids, questions, contexts)
    assert all(a for a in always.answers) and never.answers == always.answers
    assert empty.answers == [""] * len(ids)
    assert empty.output_tokens == [0] * len(ids)
    assert empty.input_tokens == always.input_tokens
    assert all(s is not None and np.isfinite(s) for s in empty.scores)

    # The rule is exactly "null - best > threshold": straddle the row's own margin.
    margin = empty.scores[0] - always.scores[0]  # type: ignore[operator]
    below = HFExtractiveQARunner(spec_for(tiny_qa_model, null_score_threshold=margin - 1e-3))
    above = HFExtractiveQARunner(spec_for(tiny_qa_model, null_score_threshold=margin + 1e-3))
    assert below.answer(ids[:1], questions[:1], contexts[:1]).answers == [""]
    assert above.answer(ids[:1], questions[:1], contexts[:1]).answers == always.answers[:1]


def test_runs_under_inference_mode_on_cpu(runner: HFExtractiveQARunner) -> None:
    seen: list[tuple[bool, str]] = []

    def record(module: torch.nn.Module, args: Any, kwargs: dict[str, Any]) -> None:
        seen.append((torch.is_inference_mode_enabled(), str(kwargs["input_ids"].device)))

    handle = runner.model.register_forward_pre_hook(record, with_kwargs=True)
    try:
        ids, questions, contexts = mixed_rows()
        runner.answer(ids, questions, contexts)
    finally:
        handle.remove()
    assert runner.device.type == "cpu" and not runner.model.training
    assert seen and all(mode and device == "cpu" for mode, device in seen)
    # Windows are run in chunks of batch_size: more windows than one chunk => several calls.
    n_windows = len(encode_windows(runner.tokenizer, questions, contexts, max_seq_len=64, doc_stride=16))
    assert len(seen) == -(-n_windows // runner.spec.batch_size)


def test_model_errors_propagate(runner: HFExtractiveQARunner, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("CUDA out of memory (simulated)")

    monkeypatch.setattr(runner.model, "forward", broken)
    with pytest.raises(RuntimeError, match="simulated"):
        runner.answer(["a"], ["What?"], [make_context(2)])


def test_empty_batch(runner: HFExtractiveQARunner) -> None:
    out = runner.answer([], [], [])
    assert out.answers == [] and out.errors == [] and out.input_tokens == []


def test_mismatched_columns_are_rejected(runner: HFExtractiveQARunner) -> None:
    with pytest.raises(ValueError, match="length"):
        runner.answer(["a", "b"], ["q"], ["c", "d"])


def test_slow_tokenizer_is_refused(tiny_qa_model: str, monkeypatch: pytest.MonkeyPatch) -> None:
    class SlowTokenizer:
        is_fast = False

    monkeypatch.setattr(hf_qa.AutoTokenizer, "from_pretrained", lambda *a, **k: SlowTokenizer())
    with pytest.raises(ValueError, match="fast"):
        HFExtractiveQARunner(spec_for(tiny_qa_model))

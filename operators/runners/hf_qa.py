"""The Hugging Face extractive-QA expert: any `AutoModelForQuestionAnswering` checkpoint.

Built once per actor (loading is the expensive part), then called once per batch. The
answer is decoded by `routing.answers.spans`, so what this module owns is the model side:
loading, device placement, windowing long contexts, and running windows in batches.
"""

from __future__ import annotations

import logging
import sys
from collections import defaultdict
from typing import Optional, Sequence

import torch
from transformers import AutoModelForQuestionAnswering, AutoTokenizer

from operators.runners.qa_windows import EncodedWindow, encode_windows, pad_batch, unpad
from operators.runners.base import PassLog, RunnerOutput, check_batch_lengths, unusable_reason
from routing.core.config import HFExtractiveQAExpert
from routing.answers.spans import SpanAnswer, Window, decode_spans

log = logging.getLogger(__name__)


def select_device() -> torch.device:
    """The GPU if this process can see one, else the CPU.

    Inside a Ray actor, CUDA_VISIBLE_DEVICES is exactly the set Ray assigned (empty for
    an actor that asked for no GPU), so `cuda:0` is always the actor's own GPU.
    """
    if not torch.cuda.is_available():
        return torch.device("cpu")
    ray = sys.modules.get("ray")  # only ever imported by the caller: no Ray dependency here
    if ray is not None and getattr(ray, "is_initialized", lambda: False)():
        log.info("Ray assigned GPU ids %s to this actor; using cuda:0", ray.get_gpu_ids())
    return torch.device("cuda:0")


class HFExtractiveQARunner:
    """`ExpertRunner` for extractive readers (BERT, RoBERTa, DeBERTa, ... fine-tuned on SQuAD)."""

    def __init__(self, spec: HFExtractiveQAExpert, *, device: Optional[str] = None) -> None:
        self.spec = spec
        self.passes = PassLog()  # windows per forward pass against spec.batch_size
        load_args = dict(revision=spec.revision, trust_remote_code=spec.trust_remote_code)
        self.tokenizer = AutoTokenizer.from_pretrained(spec.model, **load_args)
        if not getattr(self.tokenizer, "is_fast", False):
            # Offsets into the original context come only from the Rust tokenizers.
            raise ValueError(
                f"expert {spec.name!r}: model {spec.model!r} has no fast tokenizer; extractive QA "
                "needs offset mappings, which only fast (tokenizers-backed) tokenizers provide"
            )
        self.device = torch.device(device) if device is not None else select_device()
        self.model = AutoModelForQuestionAnswering.from_pretrained(spec.model, **load_args)
        self.model.to(self.device)
        self.model.eval()
        log.info("expert %s: loaded %s on %s", spec.name, spec.model, self.device)

    def answer(
        self, ids: Sequence[str], questions: Sequence[str], contexts: Sequence[str]
    ) -> RunnerOutput:
        n = check_batch_lengths(ids, questions, contexts)
        errors: list[Optional[str]] = [unusable_reason(q, c) for q, c in zip(questions, contexts)]
        usable = [i for i in range(n) if errors[i] is None]
        # Leading white space in a question only wastes window room (as in HF's scripts).
        stripped = {i: questions[i].lstrip() for i in usable}
        windows = self._encode(usable, stripped, contexts, errors)

        per_row = self._run_model(windows)
        answers: list[Optional[str]] = [None] * n
        scores: list[Optional[float]] = [None] * n
        input_tokens = [0] * n
        output_tokens = [0] * n
        for i in usable:
            if errors[i] is not None:
                continue
            row_windows = per_row.get(i, [])
            decoded = self._decode(row_windows, contexts[i])
            answers[i] = decoded.text
            scores[i] = decoded.score
            input_tokens[i] = sum(w.n_tokens for w, _ in row_windows)
            output_tokens[i] = decoded.n_tokens
        return RunnerOutput(answers, scores, input_tokens, output_tokens, errors)

    def _encode(
        self,
        usable: list[int],
        questions: dict[int, str],
        contexts: Sequence[str],
        errors: list[Optional[str]],
    ) -> list[EncodedWindow]:
        """Windows for all usable rows, tagged with their index in the batch.

        Tokenising the batch at once is fastest, but one bad row (e.g. a question too
        long to leave room for any context) makes the tokenizer fail for all; then retry
        row by row so only that row gets an error.
        """
        def encode(rows: list[int]) -> list[EncodedWindow]:
            found = encode_windows(
                self.tokenizer,
                [questions[i] for i in rows],
                [contexts[i] for i in rows],
                max_seq_len=self.spec.max_seq_len,
                doc_stride=self.spec.doc_stride,
            )
            return [EncodedWindow(rows[w.row], w.features, w.offsets, w.context_mask, w.cls_index) for w in found]

        try:
            return encode(usable)
        except Exception:  # the Rust tokenizer raises plain Exception subclasses
            pass
        windows: list[EncodedWindow] = []
        for i in usable:
            try:
                windows.extend(encode([i]))
            except Exception as exc:
                errors[i] = self._tokenise_error(questions[i], exc)
        return windows

    def _tokenise_error(self, question: str, exc: Exception) -> str:
        """The row's error when its pair cannot be cut into windows.

        The usual cause is a question so long that a `max_seq_len` window has no room
        left for context (the tokenizer only says "Sequence to truncate too short"),
        so the message counts the question's tokens and names the setting to change.
        """
        n_question = len(self.tokenizer(question, add_special_tokens=False)["input_ids"])
        if n_question + self.tokenizer.num_special_tokens_to_add(pair=True) >= self.spec.max_seq_len:
            detail = (
                f"the question has {n_question} tokens, which leaves no room for context in a "
                f"max_seq_len={self.spec.max_seq_len} window; shorten the question or raise "
                f"experts.{self.spec.name}.max_seq_len"
            )
        else:
            detail = f"{type(exc).__name__}: {exc}"
        return f"expert_error: {self.spec.name}: cannot tokenise this question/context pair: {detail}"[:500]

    def _run_model(
        self, windows: list[EncodedWindow]
    ) -> dict[int, list[tuple[EncodedWindow, Window]]]:
        """Logits for every window, `spec.batch_size` windows per forward pass.

        Model errors propagate on purpose: a failing batch is the expert stage's to
        report, and swallowing it here would turn a broken model into empty answers.
        """
        size = self.spec.batch_size
        # Forward passes take windows in order of length, not in input order: a chunk is
        # padded to its longest window, and in input order a short window often shares
        # a chunk with a long one. On SQuAD-like rows (64 per call, 16 per pass) this cut
        # the padded tokens from ~39% to ~13% above the real ones (bench/RESULTS.md).
        # Padding is on the right and masked, so which windows share a pass does not
        # change a window's logits (test_batch_size_does_not_change_answers).
        order = sorted(range(len(windows)), key=lambda k: windows[k].n_tokens)
        decoded: list[Optional[Window]] = [None] * len(windows)
        with torch.inference_mode():
            for lo in range(0, len(order), size):
                picked = order[lo:lo + size]
                chunk = [windows[k] for k in picked]
                batch = {k: v.to(self.device) for k, v in pad_batch(self.tokenizer, chunk).items()}
                out = self.model(**batch)
                self.passes.record(len(chunk), size)
                starts = out.start_logits.float().cpu().numpy()
                ends = out.end_logits.float().cpu().numpy()
                for j, (k, w) in enumerate(zip(picked, chunk)):
                    decoded[k] = Window(
                        start_logits=unpad(starts[j], w.n_tokens),
                        end_logits=unpad(ends[j], w.n_tokens),
                        offsets=w.offsets,
                        context_mask=w.context_mask,
                        cls_index=w.cls_index,
                    )
        # Back in input order, so each row's windows stay in context order: span
        # decoding breaks ties by window index.
        per_row: dict[int, list[tuple[EncodedWindow, Window]]] = defaultdict(list)
        for w, win in zip(windows, decoded):
            assert win is not None
            per_row[w.row].append((w, win))
        return per_row

    def _decode(self, row_windows: list[tuple[EncodedWindow, Window]], context: str) -> SpanAnswer:
        return decode_spans(
            [w for _, w in row_windows],
            context,
            max_answer_len=self.spec.max_answer_len,
            n_best=self.spec.n_best,
            null_score_threshold=self.spec.null_score_threshold,
        )


__all__ = ["HFExtractiveQARunner", "select_device"]

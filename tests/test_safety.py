"""Safety: no remote code unless an expert opts in, router checkpoints that are never
unpickled, and credentials that appear in none of a job's outputs or logs."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import sys
from pathlib import Path
from typing import Any, Iterator

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from safetensors.numpy import load_file, save_file

from pipelines import exit_codes
from pipelines.cli import main
from local_cluster import run_cli, short_temp_dir
from scripted_llm import ScriptedLLM

REPO = Path(__file__).resolve().parents[1]
SLICE = REPO / "examples" / "data" / "squad-replay-slice"


# -- trust_remote_code -------------------------------------------------------------------


class Recorder:
    """Wraps a `from_pretrained`, recording the keyword arguments of every call."""

    def __init__(self, real: Any) -> None:
        self.real = real
        self.calls: list[dict[str, Any]] = []

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.calls.append(kwargs)
        return self.real(*args, **kwargs)


@pytest.mark.parametrize("opt_in", [False, True])
def test_extractive_runner_passes_trust_remote_code_through(tiny_qa_model: str, monkeypatch, opt_in: bool) -> None:
    from operators.runners import hf_qa
    from routing.core.config import HFExtractiveQAExpert

    tokenizer = Recorder(hf_qa.AutoTokenizer.from_pretrained)
    model = Recorder(hf_qa.AutoModelForQuestionAnswering.from_pretrained)
    monkeypatch.setattr(hf_qa.AutoTokenizer, "from_pretrained", tokenizer)
    monkeypatch.setattr(hf_qa.AutoModelForQuestionAnswering, "from_pretrained", model)
    fields: dict[str, Any] = {"kind": "hf-extractive-qa", "name": "r", "model": tiny_qa_model}
    if opt_in:
        fields["trust_remote_code"] = True
    hf_qa.HFExtractiveQARunner(HFExtractiveQAExpert(**fields))
    assert tokenizer.calls and model.calls
    assert all(call["trust_remote_code"] is opt_in for call in tokenizer.calls + model.calls)


class _Loaded(Exception):
    pass


@pytest.mark.parametrize("opt_in", [False, True])
def test_causal_runner_passes_trust_remote_code_through(tiny_qa_model: str, monkeypatch, opt_in: bool) -> None:
    """The model load is stopped once its arguments are recorded: what matters is the
    flag that would reach transformers, not the generation."""
    from operators.runners import hf_causal
    from routing.core.config import HFCausalLMExpert

    tokenizer = Recorder(hf_causal.AutoTokenizer.from_pretrained)
    seen: list[dict[str, Any]] = []

    def model(*args: Any, **kwargs: Any) -> Any:
        seen.append(kwargs)
        raise _Loaded

    monkeypatch.setattr(hf_causal.AutoTokenizer, "from_pretrained", tokenizer)
    monkeypatch.setattr(hf_causal.AutoModelForCausalLM, "from_pretrained", model)
    fields: dict[str, Any] = {"kind": "hf-causal-lm", "name": "g", "model": tiny_qa_model}
    if opt_in:
        fields["trust_remote_code"] = True
    with pytest.raises(_Loaded):
        hf_causal.HFCausalLMRunner(HFCausalLMExpert(**fields))
    assert [c["trust_remote_code"] for c in tokenizer.calls + seen] == [opt_in, opt_in]


def test_router_encoder_never_trusts_remote_code(monkeypatch) -> None:
    import transformers

    from routing.features.encoder import LayerEncoder
    from tiny_models import minilm_dir

    recorders = {}
    for cls in (transformers.AutoTokenizer, transformers.AutoModel, transformers.AutoConfig):
        recorders[cls.__name__] = Recorder(cls.from_pretrained)
        monkeypatch.setattr(cls, "from_pretrained", recorders[cls.__name__])
    encoder = LayerEncoder(minilm_dir())
    encoder._load()
    assert encoder.n_layers == 7
    for name, rec in recorders.items():
        assert rec.calls, name
        assert all(call.get("trust_remote_code") is False for call in rec.calls), (name, rec.calls)


def test_a_model_folder_shipping_code_does_not_run_it(tiny_qa_model: str, tmp_path: Path) -> None:
    """A model folder whose config points at code of its own (`auto_map`): without the
    opt-in, that code is never imported."""
    from operators.runners.hf_qa import HFExtractiveQARunner
    from routing.core.config import HFExtractiveQAExpert

    folder = tmp_path / "model"
    shutil.copytree(tiny_qa_model, folder)
    sentinel = tmp_path / "remote-code-ran"
    (folder / "evil.py").write_text(
        f"open({str(sentinel)!r}, 'w').write('ran')\n"
        "from transformers import BertForQuestionAnswering as EvilModel, BertConfig as EvilConfig\n"
    )
    for name in ("config.json", "tokenizer_config.json"):
        data = json.loads((folder / name).read_text())
        data["auto_map"] = {"AutoConfig": "evil.EvilConfig", "AutoModelForQuestionAnswering": "evil.EvilModel",
                            "AutoTokenizer": ["evil.EvilModel", None]}
        (folder / name).write_text(json.dumps(data))
    try:
        runner = HFExtractiveQARunner(HFExtractiveQAExpert(kind="hf-extractive-qa", name="r", model=str(folder)))
    except ValueError as exc:  # transformers may refuse outright instead of falling back
        assert "trust_remote_code" in str(exc)
    else:
        assert type(runner.model).__module__.startswith("transformers.")
    assert not sentinel.exists()


# -- router checkpoints: refused, never unpickled ------------------------------------------


class _Payload:
    """Unpickling this creates a file: proof that something ran pickle on it."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self) -> tuple:
        return (open, (self.path, "w"))


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("router") / "ckpt"
    rc = main(["train-router", "--profile", str(SLICE), "--output", str(out), "--encoder", "none", "--all-questions", "--router", "knn"])
    assert rc == 0
    return out


def _job_with_checkpoint(tmp_path: Path, ckpt: Path, experts: list[str] | None = None) -> str:
    costs = json.loads((SLICE / "costs.json").read_text())["experts"]
    cfg = {
        "input": {"path": str(SLICE / "questions.json"), "format": "squad"},
        "output": {"path": str(tmp_path / "out")},
        "experts": [{"name": n, "kind": "replay", "predictions": str(SLICE / "predictions" / f"{n}.json")} for n in (experts or costs)],
        "router": {"checkpoint": str(ckpt), "budget_per_item": 1.0},
    }
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


def _copy(ckpt: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "ckpt"
    shutil.copytree(ckpt, dst)
    return dst


def _validate(capsys, config: str) -> tuple[int, str]:
    rc = main(["validate", config])
    return rc, capsys.readouterr().err


def test_stray_pickles_beside_a_good_checkpoint_are_never_loaded(checkpoint: Path, tmp_path: Path, capsys) -> None:
    import torch

    ckpt = _copy(checkpoint, tmp_path)
    sentinel = tmp_path / "unpickled"
    (ckpt / "router.pkl").write_bytes(pickle.dumps(_Payload(sentinel)))
    torch.save({"state": _Payload(sentinel)}, ckpt / "pytorch_model.bin")
    rc, err = _validate(capsys, _job_with_checkpoint(tmp_path, ckpt))
    assert rc == exit_codes.OK, err
    assert not sentinel.exists()
    # Control: the payload does run when something unpickles it.
    pickle.loads((ckpt / "router.pkl").read_bytes())
    assert sentinel.exists()


@pytest.mark.parametrize("problem", ["pickle as weights", "malformed json", "wrong tensor shape", "pickle as json"])
def test_a_bad_checkpoint_is_refused_before_compute_and_never_unpickled(checkpoint: Path, tmp_path: Path, capsys, problem: str) -> None:
    ckpt = _copy(checkpoint, tmp_path)
    sentinel = tmp_path / "unpickled"
    if problem == "pickle as weights":
        (ckpt / "weights.safetensors").write_bytes(pickle.dumps(_Payload(sentinel)))
        expect = "not a readable safetensors file"
    elif problem == "pickle as json":
        (ckpt / "router.json").write_bytes(pickle.dumps(_Payload(sentinel), protocol=0))
        expect = "not valid JSON"
    elif problem == "malformed json":
        (ckpt / "router.json").write_text((ckpt / "router.json").read_text()[:-40])
        expect = "not valid JSON"
    else:
        tensors = load_file(str(ckpt / "weights.safetensors"))
        key = next(k for k in sorted(tensors) if k.startswith("router."))
        tensors[key] = tensors[key].reshape(-1)[:-1].copy() if tensors[key].size > 1 else tensors[key].repeat(3)
        save_file(tensors, str(ckpt / "weights.safetensors"))
        expect = "router.checkpoint: refused:"
    rc, err = _validate(capsys, _job_with_checkpoint(tmp_path, ckpt))
    assert rc == exit_codes.CONFIG
    lines = [line for line in err.splitlines() if line.startswith("router.checkpoint:")]
    assert len(lines) == 1 and expect in lines[0] and "Traceback" not in err, err
    assert "train-router" in lines[0]  # the fix
    assert not sentinel.exists()
    assert not (tmp_path / "out").exists()


def test_a_checkpoint_for_other_experts_is_refused(checkpoint: Path, tmp_path: Path, capsys) -> None:
    rc, err = _validate(capsys, _job_with_checkpoint(tmp_path, checkpoint, experts=["nlnet-single", "bert-large-single-v2"]))
    assert rc == exit_codes.CONFIG
    line = next(line for line in err.splitlines() if line.startswith("router.checkpoint:"))
    assert "routes to expert(s)" in line and "bidaf-self-attention-elmo" in line and "add them under experts" in line


# -- secrets: nowhere in any output of a job ----------------------------------------------


S3_KEY_ID = "AKIAPLANTED" + os.urandom(4).hex().upper()
S3_SECRET = "planted/S3+secret" + os.urandom(10).hex()
API_KEY = "sk-planted-" + os.urandom(12).hex()
KEY_ENV = "ROUTEBATCH_SAFETY_API_KEY"


@pytest.fixture
def s3_store() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


def _all_files(folder: Path) -> Iterator[Path]:
    for path in folder.rglob("*"):
        if path.is_file() and not path.is_symlink():
            yield path


@pytest.mark.ray
def test_credentials_appear_in_no_output_log_or_error(s3_store: str, tmp_path: Path, monkeypatch) -> None:
    """A whole job through the CLI, reading and writing S3 with a planted secret key
    and asking an API expert with a planted key, some of whose requests fail with the
    key echoed back by the server. Then every byte the run left is searched: Parquet
    cells and files, _summary.json, _run.json, _shards/*.json, stdout, stderr, and
    every file of the Ray session the job started."""
    import boto3

    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_store)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", S3_KEY_ID)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", S3_SECRET)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv(KEY_ENV, API_KEY)
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="rb-in")
    s3.create_bucket(Bucket="rb-out")
    questions = [f"Where is place {i}?" for i in range(30)] + ["Why LEAK this?", "Is BADREQ fine?", "Does POISON hurt?"]
    lines = [json.dumps({"id": f"q{i}", "question": q, "context": f"Place {i} lies north."}) for i, q in enumerate(questions)]
    s3.put_object(Bucket="rb-in", Key="q/part-0.jsonl", Body="\n".join(lines).encode())

    ray_tmp = short_temp_dir("rbsafe")
    try:
        with ScriptedLLM(api_key=API_KEY) as llm:
            cfg = {
                "input": {"path": "s3://rb-in/q/", "format": "jsonl"},
                "output": {"path": "s3://rb-out/run"},
                "experts": [{"name": "api", "kind": "openai-compatible", "base_url": llm.base_url, "model": "scripted",
                             "api_key_env": KEY_ENV, "max_retries": 1, "retry_backoff_s": 0.01, "timeout_s": 20,
                             "prompt_template": "Context: {context}\nQuestion: {question}\nAnswer:"}],
                "router": {"kind": "fixed", "expert": "api"},
                "ray": {"num_cpus": 2, "num_gpus": 0},
                "execution": {"batch_size": 8},
            }
            (tmp_path / "job.yaml").write_text(yaml.safe_dump(cfg))
            # The job's Ray lives under ray_tmp and is ended even if the run times out.
            proc = run_cli(
                [sys.executable, "-m", "pipelines.cli", "run", str(tmp_path / "job.yaml"), "--no-progress", "--json"],
                ray_tmp=ray_tmp, cwd=REPO, capture_output=True, text=True, timeout=400,
            )
        assert proc.returncode == exit_codes.COMPLETED_WITH_ERRORS, proc.stderr[-3000:]
        assert llm.bad_auth == 0 and llm.requests["Why LEAK this?"] == 2  # the key was sent, and echoed back twice

        texts: dict[str, bytes] = {"stdout": proc.stdout.encode(), "stderr": proc.stderr.encode()}
        keys = [o["Key"] for o in s3.list_objects_v2(Bucket="rb-out", Prefix="run/")["Contents"]]
        for key in keys:
            texts[f"s3://rb-out/{key}"] = s3.get_object(Bucket="rb-out", Key=key)["Body"].read()
        assert "run/_summary.json" in keys and "run/_run.json" in keys
        assert any(k.startswith("run/_shards/") for k in keys) and any(k.endswith(".parquet") for k in keys)
        rows = []
        for key in keys:
            if key.endswith(".parquet"):
                table = pq.read_table(pa.BufferReader(texts[f"s3://rb-out/{key}"]))
                rows += table.to_pylist()
                texts[f"cells of {key}"] = json.dumps(table.to_pylist(), default=str).encode()
        ray_files = list(_all_files(ray_tmp))
        assert any(p.name.startswith("raylet") for p in ray_files), "the job's Ray session logs were not found"
        for path in ray_files:
            texts[str(path)] = path.read_bytes()

        secrets = {"S3 secret key": S3_SECRET, "API key": API_KEY}
        for where, data in texts.items():
            for name, secret in secrets.items():
                assert secret.encode() not in data, f"{name} leaked into {where}"
                assert secret.encode("utf-16-le") not in data, f"{name} leaked into {where}"

        # The run really met the secret where it could have leaked: the server echoed
        # the key, and the row's error shows it masked.
        by_question = {r["question"]: r for r in rows}
        assert len(rows) == len(questions)
        assert "upstream refused credentials Bearer ***" in by_question["Why LEAK this?"]["error"]
        assert "HTTP 400" in by_question["Is BADREQ fine?"]["error"] and "***" in by_question["Is BADREQ fine?"]["error"]
        assert "HTTP 500" in by_question["Does POISON hurt?"]["error"]
        assert all(r["error"] is None and r["answer"] for q, r in by_question.items() if q in questions[:30])
        summary = json.loads(texts["s3://rb-out/run/_summary.json"])
        assert summary["errors_by_kind"] == {"expert_error": 3} and summary["rows_in"] == summary["rows_out"] == 33
        assert summary["config"]["experts"][0]["api_key_env"] == KEY_ENV  # the name is kept, never the value
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)

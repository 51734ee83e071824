"""Every misconfiguration a user can make fails before any compute, through the
command line: exit code 3, one stderr line that starts with the config field and says
the fix, no traceback, and nothing written at the output.

Most cases call the CLI's `main` in-process (the same function `python -m
pipelines.cli` runs, so exit code and stderr are what a scheduler sees); three run
it as a real subprocess to cover the entry point itself: a schema error, a plan that
cannot fit a freshly started Ray, and an S3 bucket the credentials may not read.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import pytest
import yaml

from local_cluster import run_cli
from pipelines import exit_codes
from pipelines.cli import main

REPO = Path(__file__).resolve().parents[1]
SLICE = REPO / "examples" / "data" / "squad-replay-slice"
S3_SECRET = "planted-s3-secret-" + os.urandom(6).hex()


def base_config(out: Path | str) -> dict[str, Any]:
    return {
        "input": {"path": str(SLICE / "questions.json"), "format": "squad"},
        "output": {"path": str(out)},
        "experts": [{"name": "rec", "kind": "replay", "predictions": str(SLICE / "predictions" / "nlnet-single.json")}],
        "router": {"kind": "fixed", "expert": "rec"},
        "ray": {"num_cpus": 2, "num_gpus": 0},
    }


def write_config(tmp_path: Path, cfg: dict[str, Any], name: str = "job.yaml") -> str:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


def snapshot(path: Path) -> Optional[dict[str, tuple[int, int]]]:
    """What lies at a local output path, to the byte and modification time."""
    if not path.exists():
        return None
    if path.is_file():
        return {"": (path.stat().st_size, path.stat().st_mtime_ns)}
    return {str(p.relative_to(path)): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(path.rglob("*"))}


def the_error_line(err: str, field: str) -> str:
    """The one line of stderr that starts with the field; no traceback anywhere."""
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith(field)]
    assert len(lines) == 1, f"expected one line starting with {field!r}:\n{err}"
    return lines[0]


def refused(capsys: pytest.CaptureFixture[str], argv: list[str], field: str, *fix: str) -> str:
    rc = main(argv)
    captured = capsys.readouterr()
    assert rc == exit_codes.CONFIG, captured.err
    line = the_error_line(captured.err, field)
    for words in fix:
        assert words in line, (words, line)
    return line


Mutation = Callable[[dict[str, Any], Path], None]


def _unknown_fixed(cfg: dict, tmp: Path) -> None:
    cfg["router"] = {"kind": "fixed", "expert": "nobody"}


def _unknown_in_rule(cfg: dict, tmp: Path) -> None:
    cfg["router"] = {"kind": "rule", "rules": [{"expert": "rec", "max_context_chars": 10}, {"expert": "ghost"}], "default": "rec"}


def _missing_model(cfg: dict, tmp: Path) -> None:
    cfg["experts"].append({"name": "reader", "kind": "hf-extractive-qa", "model": str(tmp / "no-such-model")})


def _empty_model_dir(cfg: dict, tmp: Path) -> None:
    (tmp / "empty-model").mkdir()
    (tmp / "empty-model" / "README.md").write_text("weights to come")
    cfg["experts"].append({"name": "reader", "kind": "hf-causal-lm", "model": str(tmp / "empty-model")})


def _missing_predictions(cfg: dict, tmp: Path) -> None:
    cfg["experts"][0]["predictions"] = str(tmp / "nowhere.json")


def _missing_input(cfg: dict, tmp: Path) -> None:
    cfg["input"]["path"] = str(tmp / "no-such-dir" / "*.parquet")


def _unset_api_key(cfg: dict, tmp: Path) -> None:
    os.environ.pop("ROUTEBATCH_TEST_UNSET_KEY", None)
    cfg["experts"].append({"name": "api", "kind": "openai-compatible", "base_url": "http://127.0.0.1:9/v1", "model": "m",
                           "api_key_env": "ROUTEBATCH_TEST_UNSET_KEY"})


def _finished_run_at_output(cfg: dict, tmp: Path) -> None:
    out = Path(cfg["output"]["path"])
    out.mkdir()
    (out / "_summary.json").write_text('{"run_id": "earlier"}')
    (out / "part-0.parquet").write_bytes(b"an earlier run's rows")


def _unfinished_run_at_output(cfg: dict, tmp: Path) -> None:
    out = Path(cfg["output"]["path"])
    (out / "_shards").mkdir(parents=True)
    (out / "_run.json").write_text('{"run_id": "20260101T000000Z-abc123", "config_hash": "x", "attempts": 1}')


def _output_is_a_file(cfg: dict, tmp: Path) -> None:
    Path(cfg["output"]["path"]).write_text("not a folder")


CASES: dict[str, tuple[Mutation, str, tuple[str, ...]]] = {
    "unknown expert (fixed)": (_unknown_fixed, "router.expert:", ("unknown expert 'nobody'", "define it under experts")),
    "unknown expert (rule)": (_unknown_in_rule, "router.rules[1].expert:", ("unknown expert 'ghost'", "define it under experts")),
    "missing model path": (_missing_model, "experts.reader.model:", ("does not exist", "use a hub id")),
    "model folder without a model": (_empty_model_dir, "experts.reader.model:", ("config.json missing", "save_pretrained")),
    "missing predictions": (_missing_predictions, "experts.rec.predictions:", ("does not exist", "point it at")),
    "missing input": (_missing_input, "input.path:", ("no squad files found",)),
    "unset API key variable": (_unset_api_key, "experts.api.api_key_env:", ("ROUTEBATCH_TEST_UNSET_KEY is not set", "export the API key")),
    "output holds a finished run": (_finished_run_at_output, "output.path:", ("already holds a finished run", "choose a new output path", "overwrite")),
    "output holds an unfinished run": (_unfinished_run_at_output, "output.path:", ("unfinished run", "--resume")),
    "output is a file": (_output_is_a_file, "output.path:", ("is a file", "directory")),
}


@pytest.mark.parametrize("command", ["validate", "run"])
@pytest.mark.parametrize("case", list(CASES))
def test_misconfiguration_is_one_line_naming_the_field(case: str, command: str, tmp_path: Path, capsys) -> None:
    mutate, field, fix = CASES[case]
    out = tmp_path / "out"
    cfg = base_config(out)
    mutate(cfg, tmp_path)
    before = snapshot(out)
    argv = [command, write_config(tmp_path, cfg)] + (["--no-progress"] if command == "run" else [])
    refused(capsys, argv, field, *fix)
    assert snapshot(out) == before  # nothing written, nothing replaced


def test_a_config_error_through_the_real_entry_point(tmp_path: Path) -> None:
    cfg = base_config(tmp_path / "out")
    _unknown_fixed(cfg, tmp_path)
    proc = subprocess.run([sys.executable, "-m", "pipelines.cli", "validate", write_config(tmp_path, cfg)],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == exit_codes.CONFIG
    assert "define it under experts" in the_error_line(proc.stderr, "router.expert:")
    assert not (tmp_path / "out").exists()


# -- resources the cluster does not have -------------------------------------------------


@pytest.mark.ray
@pytest.mark.parametrize(
    ("resources", "needs"),
    [({"num_gpus": 1}, "GPU=1"), ({"num_cpus": 1, "custom": {"gpu_a100": 1}}, "gpu_a100=1"), ({"num_cpus": 64}, "CPU=64")],
)
def test_resources_nobody_has_fail_before_anything_is_written(local_ray, tmp_path: Path, capsys, resources, needs) -> None:
    cfg = base_config(tmp_path / "out")
    cfg["experts"][0]["resources"] = resources
    line = refused(capsys, ["run", write_config(tmp_path, cfg), "--no-progress"], "experts.rec:", needs, "experts.rec.resources")
    assert "no node has that much" in line
    assert not (tmp_path / "out").exists()


@pytest.mark.ray
def test_a_gpu_plan_on_a_cpu_only_ray_started_by_the_job(tmp_path: Path) -> None:
    """The whole path: the CLI starts its own Ray (0 GPUs), sees the plan cannot fit,
    stops Ray and exits 3 without having written anything."""
    cfg = base_config(tmp_path / "out")
    cfg["experts"][0]["resources"] = {"num_gpus": 0.5}
    proc = run_cli([sys.executable, "-m", "pipelines.cli", "run", write_config(tmp_path, cfg), "--no-progress"],
                   cwd=REPO, capture_output=True, text=True, timeout=300)  # its Ray is ended even on a timeout
    assert proc.returncode == exit_codes.CONFIG, proc.stderr[-3000:]
    line = the_error_line(proc.stderr, "experts.rec:")
    assert "GPU=0.5" in line and "lower experts.rec.resources" in line
    assert not (tmp_path / "out").exists()


# -- S3: buckets that do not exist, and buckets these credentials may not read ----------


@pytest.fixture(scope="module")
def s3() -> Iterator[dict[str, str]]:
    """A loopback S3 server with one readable bucket, and an IAM user without any
    permission whose keys the job runs with (moto enforces IAM only inside
    `enable_iam_authentication`)."""
    import boto3
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    host, port = server.get_host_and_port()
    names = ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")
    saved = {k: os.environ.get(k) for k in names}
    os.environ.update({"AWS_ENDPOINT_URL": f"http://{host}:{port}", "AWS_ACCESS_KEY_ID": "admin-key-id",
                       "AWS_SECRET_ACCESS_KEY": S3_SECRET, "AWS_DEFAULT_REGION": "us-east-1"})
    client = boto3.client("s3")
    client.create_bucket(Bucket="rb-data")
    client.put_object(Bucket="rb-data", Key="q/questions.json", Body=(SLICE / "questions.json").read_bytes())
    client.put_object(Bucket="rb-data", Key="preds/nlnet.json", Body=(SLICE / "predictions" / "nlnet-single.json").read_bytes())
    iam = boto3.client("iam")
    iam.create_user(UserName="no-permissions")
    key = iam.create_access_key(UserName="no-permissions")["AccessKey"]
    yield {"endpoint": f"http://{host}:{port}", "denied_id": key["AccessKeyId"], "denied_secret": key["SecretAccessKey"]}
    server.stop()
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


def _s3_config(**changes: Any) -> dict[str, Any]:
    cfg = base_config("s3://rb-data/out/run1")
    cfg["input"]["path"] = "s3://rb-data/q/"
    cfg["experts"][0]["predictions"] = "s3://rb-data/preds/nlnet.json"
    for section, values in changes.items():
        cfg[section].update(values)
    return cfg


def _s3_keys(prefix: str) -> list[str]:
    import boto3

    listed = boto3.client("s3").list_objects_v2(Bucket="rb-data", Prefix=prefix)
    return [o["Key"] for o in listed.get("Contents", [])]


S3_CASES = {
    "no such input bucket": ({"input": {"path": "s3://no-such-bucket-rb/q/"}}, "input.path:", ("does not exist", "check the path")),
    "no such output bucket": ({"output": {"path": "s3://no-such-bucket-rb/out"}}, "output.path:", ("bucket no-such-bucket-rb does not exist", "create it")),
    "no such predictions": ({}, "experts.rec.predictions:", ("does not exist",)),
}


@pytest.mark.parametrize("case", list(S3_CASES))
def test_s3_paths_that_do_not_exist(s3, case: str, tmp_path: Path, capsys) -> None:
    changes, field, fix = S3_CASES[case]
    cfg = _s3_config(**changes)
    if case == "no such predictions":
        cfg["experts"][0]["predictions"] = "s3://rb-data/preds/missing.json"
    for command in ("validate", "run"):
        line = refused(capsys, [command, write_config(tmp_path, cfg)], field, *fix)
        assert S3_SECRET not in line
    assert _s3_keys("out/") == []


@pytest.mark.parametrize("target", ["input", "output", "predictions"])
def test_s3_access_denied_names_the_field(s3, target: str, tmp_path: Path, capsys, monkeypatch) -> None:
    """The data is there; these credentials may not touch it. The store's own reason
    (ACCESS_DENIED) is passed on, the credentials never are."""
    from moto.core.authorization import enable_iam_authentication

    cfg = _s3_config()
    field = {"input": "input.path:", "output": "output.path:", "predictions": "experts.rec.predictions:"}[target]
    if target != "input":  # only the target is on S3; everything else is local and fine
        cfg["input"]["path"] = str(SLICE / "questions.json")
    if target != "predictions":
        cfg["experts"][0]["predictions"] = str(SLICE / "predictions" / "nlnet-single.json")
    if target != "output":
        cfg["output"]["path"] = str(tmp_path / "out")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3["denied_id"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3["denied_secret"])
    with enable_iam_authentication():
        line = refused(capsys, ["run", write_config(tmp_path, cfg)], field, "ACCESS_DENIED", "credentials")
    assert s3["denied_secret"] not in line and S3_SECRET not in line
    assert _s3_keys("out/") == [] and not (tmp_path / "out").exists()


def test_s3_access_denied_through_the_real_entry_point(s3, tmp_path: Path) -> None:
    from moto.core.authorization import enable_iam_authentication

    cfg = _s3_config()
    env = {**os.environ, "AWS_ACCESS_KEY_ID": s3["denied_id"], "AWS_SECRET_ACCESS_KEY": s3["denied_secret"]}
    with enable_iam_authentication():
        proc = run_cli([sys.executable, "-m", "pipelines.cli", "run", write_config(tmp_path, cfg), "--no-progress"],
                       cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == exit_codes.CONFIG, proc.stderr[-3000:]
    line = the_error_line(proc.stderr, "input.path:")
    assert "ACCESS_DENIED" in line and "rb-data" in line
    assert s3["denied_secret"] not in proc.stderr + proc.stdout
    assert _s3_keys("out/") == []

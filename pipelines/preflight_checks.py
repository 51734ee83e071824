"""Checks of the places a job reads and writes, made before Ray starts.

`preflight` (pipelines/batch_job.py) calls these so that a path that cannot work
fails as one line that names the config field and the fix, in seconds, instead of as
a traceback from inside an actor minutes later (an empty model folder took a minute
and a Ray start to fail that way), or as an output that cannot be written after
every row was computed (a missing output bucket). Storage errors are reported with
the store's own reason, which names the bucket and key but never a credential:
credentials come from the standard AWS chain and are never formatted into text.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import pyarrow.fs as pafs

from routing.core.config import CheckpointRouter, ConfigError, LearnedCascadeRouter
from routing.core.storage import exists, filesystem_and_path, is_s3, join

# What `save_pretrained` always writes into a model folder.
MODEL_CONFIG_FILE = "config.json"


def _reason(exc: OSError) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def check_exists(field: str, uri: str, fix: str) -> None:
    """ConfigError unless `uri` exists and these credentials may look at it."""
    try:
        found = exists(uri)
    except OSError as exc:
        raise ConfigError(
            f"{field}: cannot read {uri} ({_reason(exc)}); check the path and that these credentials may read it"
        ) from None
    if not found:
        raise ConfigError(f"{field}: {uri} does not exist; {fix}")


def check_local_model(field: str, model: str) -> None:
    """A local model folder must exist and hold a saved model, not just be a folder."""
    if not os.path.isdir(model):
        raise ConfigError(f"{field}: local model directory {model} does not exist; use a hub id or a saved model directory")
    if not os.path.isfile(os.path.join(model, MODEL_CONFIG_FILE)):
        raise ConfigError(
            f"{field}: {model} holds no saved model ({MODEL_CONFIG_FILE} missing); point it at a directory "
            "written by save_pretrained, or use a hub id"
        )


def check_model_sources(experts: Sequence[object]) -> None:
    """Every local model an expert loads is where its config says, with what loading it
    needs installed: a saved model folder, an installed weight package (`package:NAME`),
    a GGUF file in its folder and the `gguf`/`accelerate` packages that read it. Called
    before Ray starts by the job, `validate`, `profile` and `serve`."""
    from routing.core.config import HFCausalLMExpert, HFExtractiveQAExpert
    from routing.core.model_sources import ModelSourceError, check_local_source

    for e in experts:
        field = f"experts.{e.name}.model"
        if isinstance(e, HFCausalLMExpert):
            try:
                folder = check_local_source(field, e.model, e.gguf_file)
            except ModelSourceError as exc:
                raise ConfigError(str(exc)) from None
            if folder is not None and e.gguf_file is None:
                check_local_model(field, folder)
        elif isinstance(e, HFExtractiveQAExpert) and e.model.startswith(("/", ".", "~")):
            check_local_model(field, e.model)


def check_output_location(output: str) -> None:
    """The output's bucket (S3) or parent folder (local) must exist and be reachable.

    Without this a missing bucket is found only when the first shard is written, after
    its rows were computed and paid for."""
    fs, path = filesystem_and_path(output)
    if is_s3(output):
        bucket = path.split("/", 1)[0]
        try:
            info = fs.get_file_info(bucket)
            # Also reach into the prefix: a bucket may be visible while its keys are not.
            exists(join(output, "_summary.json"))
        except OSError as exc:
            raise ConfigError(
                f"output.path: cannot reach {output} ({_reason(exc)}); check the path and that these credentials may write there"
            ) from None
        if info.type == pafs.FileType.NotFound:
            raise ConfigError(f"output.path: bucket {bucket} does not exist; create it, or point output.path at a bucket that does")
        return
    target = Path(path)
    if target.is_file():
        raise ConfigError(f"output.path: {output} is a file; point output.path at a directory (it is created if missing)")
    ancestor = next((p for p in (target, *target.parents) if p.exists()), None)
    if ancestor is None or not ancestor.is_dir() or not os.access(ancestor, os.W_OK | os.X_OK):
        raise ConfigError(f"output.path: cannot create {output} (no writable folder above it); choose a writable location")


def check_router_checkpoint(router: CheckpointRouter | LearnedCascadeRouter, expert_names: Sequence[str]) -> None:
    """A local checkpoint is loaded here, with the same validation the router actor
    uses (JSON schema, safetensors only, tensor names, shapes and values), and the
    experts it routes to must all be defined: otherwise the router actor fails inside
    Ray, after the cluster started."""
    check_exists(
        "router.checkpoint",
        join(router.checkpoint, "router.json"),
        "train a router with `routebatch train-router` and point router.checkpoint at its output",
    )
    if isinstance(router, LearnedCascadeRouter):
        _check_learned_cascade(router, expert_names)
        return
    if is_s3(router.checkpoint):
        return
    from routing.routers.checkpoint import CheckpointError, RouterCheckpoint

    try:
        checkpoint = RouterCheckpoint.load(router.checkpoint)
    except CheckpointError as exc:
        raise ConfigError(
            f"router.checkpoint: refused: {' '.join(str(exc).split())}; retrain it with `routebatch train-router` "
            "or point router.checkpoint at a checkpoint it wrote"
        ) from None
    unknown = sorted(set(checkpoint.expert_names) - set(expert_names))
    if unknown:
        raise ConfigError(
            f"router.checkpoint: the router routes to expert(s) {unknown} that experts does not define; "
            "add them under experts with these names, or train a router for the experts you have"
        )


def _check_learned_cascade(router: LearnedCascadeRouter, expert_names: Sequence[str]) -> None:
    """The driver reads a learned cascade's checkpoint to lay out the expert stages in
    chain order, so it must be local and valid, and every chain expert defined."""
    if is_s3(router.checkpoint):
        raise ConfigError(
            "router.checkpoint: a learned cascade is read by the driver to order the expert stages; "
            "copy the checkpoint directory (two small files) to a local path and point router.checkpoint there"
        )
    from routing.cascades.checkpoint import checkpoint_format, plan_from_spec
    from routing.core.checkpoint_files import CheckpointError

    try:
        plan = plan_from_spec(router)
    except CheckpointError as exc:
        hint = ""
        if checkpoint_format(router.checkpoint) == "routebatch-router":
            hint = " (this is a pre-answer router checkpoint: use router.kind: checkpoint for it)"
        raise ConfigError(
            f"router.checkpoint: refused: {' '.join(str(exc).split())}{hint}; write one with "
            "`routebatch train-router --router learned-cascade` and point router.checkpoint at it"
        ) from None
    unknown = [n for n in plan.expert_names if n not in set(expert_names)]
    if unknown:
        raise ConfigError(
            f"router.checkpoint: the learned cascade asks expert(s) {unknown} that experts does not define; "
            f"its chain is {' > '.join(plan.expert_names)}: define those experts, or train a cascade for the experts you have"
        )

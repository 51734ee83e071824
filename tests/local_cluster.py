"""Start and stop Ray clusters and CLI runs of a test's own, and end all their processes.

`ray stop --force` (what Ray's test helpers use) ends every Ray process on the
machine, other tests' and users' included; these helpers end only the processes of the
cluster a test started, found by marks that only that cluster's processes carry in
their command lines: its temp dir (every daemon names its session dir) and its GCS
port (the GCS as `--gcs_server_port=PORT`, every other daemon and any node that joins
it as `...:PORT`). Workers rename themselves `ray::...` and lose their arguments, so
the descendants of the marked processes are ended with them.

A run in a child process gets a temp dir of its own (`RAY_TMPDIR`) for the same
reason: if the child is killed, or times out, the Ray it started can still be found
and ended, instead of outliving the test re-parented to PID 1.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
from pathlib import Path
from typing import Optional

import psutil


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def short_temp_dir(prefix: str) -> Path:
    """A fresh dir directly under /tmp: Ray's socket paths must fit in 107 bytes,
    which pytest's tmp_path does not leave room for."""
    return Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))


def _marked(cmdline: list[str], port: Optional[int], temp_dir: Optional[str]) -> bool:
    for part in cmdline:
        if temp_dir is not None and temp_dir in part:
            return True
        if port is not None and (part.endswith(f":{port}") or f":{port} " in part or part == f"--gcs_server_port={port}"):
            return True
    return False


def processes_of(port: Optional[int] = None, temp_dir: Optional[Path] = None) -> list[psutil.Process]:
    """The processes of one cluster (by its GCS port and/or its temp dir) and all
    their descendants."""
    mark_dir = str(temp_dir) if temp_dir is not None else None
    found: dict[int, psutil.Process] = {}
    for proc in psutil.process_iter(["cmdline"]):
        try:
            if proc.pid != os.getpid() and _marked(proc.info["cmdline"] or [], port, mark_dir):
                found[proc.pid] = proc
                for child in proc.children(recursive=True):
                    found[child.pid] = child
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    found.pop(os.getpid(), None)
    return list(found.values())


def end_processes(procs: list[psutil.Process], timeout: float = 10) -> None:
    """SIGTERM (Ray's daemons shut down cleanly on it), then SIGKILL what is left."""
    for p in procs:
        try:
            p.send_signal(signal.SIGTERM)
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(procs, timeout=timeout)
    for p in alive:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive, timeout=timeout)


def stop_cluster(port: Optional[int] = None, temp_dir: Optional[Path] = None) -> None:
    """End every process of the cluster with this GCS port and/or temp dir."""
    end_processes(processes_of(port, temp_dir))


def run_cli(cmd: list[str], *, ray_tmp: Optional[Path] = None, env: Optional[dict] = None, **kwargs) -> subprocess.CompletedProcess:
    """`subprocess.run(cmd, ...)` whose Ray (if it starts one) lives under a temp dir of
    its own, and is ended afterwards whatever happened: a finished run has already
    stopped it, a killed or timed-out one (TimeoutExpired is re-raised) has not.
    With `ray_tmp` given, the caller keeps the dir (to read its logs) and removes it."""
    own_dir = ray_tmp is None
    ray_tmp = short_temp_dir("rbcli") if own_dir else ray_tmp
    env = {**(os.environ if env is None else env), "RAY_TMPDIR": str(ray_tmp)}
    try:
        return subprocess.run(cmd, env=env, **kwargs)
    finally:
        stop_cluster(temp_dir=ray_tmp)
        if own_dir:
            shutil.rmtree(ray_tmp, ignore_errors=True)

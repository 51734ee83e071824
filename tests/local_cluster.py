"""Start and stop a Ray head of a test's own, on a port of its own.

`ray stop --force` (what Ray's test helpers use) ends every Ray process on the
machine, other tests' and users' included; these helpers end only the processes that
belong to the head they started, found by its port in their command lines."""

from __future__ import annotations

import signal
import socket

import psutil


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def processes_of(port: int) -> list[psutil.Process]:
    mark = f":{port}"
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        try:
            if any(mark in part for part in proc.info["cmdline"] or []):
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


def stop_cluster(port: int) -> None:
    procs = processes_of(port)
    for p in procs:
        try:
            p.send_signal(signal.SIGTERM)
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(procs, timeout=10)
    for p in alive:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass

"""Fixtures shared by the whole suite."""

from __future__ import annotations

import importlib.util
import os
import sys
import time
import uuid
from pathlib import Path

import psutil
import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
# The reference data ships in the repository (data/README.md); ROUTEBATCH_DATA may point
# at another copy of the same layout.
REFERENCE_DATA = Path(os.environ.get("ROUTEBATCH_DATA", REPO_ROOT / "data"))

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


# -- the suite leaves no Ray process behind -----------------------------------------------
#
# Ray's daemons outlive the process that started them (`ray start` detaches them; a
# killed driver's may linger, re-parented to PID 1), so a test that forgets to stop its
# cluster leaves a gcs_server and a raylet running after the run. At session end this
# check fails the run if a Ray process that this session started is still alive.
#
# "Started by this session" must not include anything else on the machine: other
# sessions and users run Ray here at the same time, so a plain before/after PID diff
# would blame (and could end) their clusters. Every process the suite starts inherits
# the environment, so this session puts a token of its own in it, and a process counts
# as ours only if it carries that token (or descends from this process) and was not
# already running when the session started.

SESSION_ENV = "ROUTEBATCH_TEST_SESSION"
SESSION_TOKEN = f"{os.getpid()}-{uuid.uuid4().hex[:12]}"
os.environ[SESSION_ENV] = SESSION_TOKEN  # at import, before any test can start a process
_RAY_SPEC = importlib.util.find_spec("ray")  # where Ray lives, without importing it (slow)
RAY_DIR = str(Path(next(iter(_RAY_SPEC.submodule_search_locations)))) + os.sep if _RAY_SPEC else None
LEAK_GRACE_S = 30.0  # ray.shutdown() and SIGTERM end a node's processes over a few seconds


def _is_ray_process(info: dict) -> bool:
    """gcs_server, raylet, Ray's Python daemons (dashboard, agents, log monitor,
    autoscaler) and workers, which rename themselves `ray::...`."""
    name, cmdline = info.get("name") or "", info.get("cmdline") or []
    if name in ("gcs_server", "raylet") or name.startswith("ray::") or (cmdline and cmdline[0].startswith("ray::")):
        return True
    return RAY_DIR is not None and any(part.startswith(RAY_DIR) for part in cmdline)


def _ray_processes() -> dict[tuple[int, float], psutil.Process]:
    found = {}
    for proc in psutil.process_iter(["name", "cmdline", "create_time"]):
        try:
            if _is_ray_process(proc.info):
                found[(proc.pid, proc.info["create_time"])] = proc
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


def _started_by_this_session(proc: psutil.Process) -> bool:
    try:
        if proc.environ().get(SESSION_ENV) == SESSION_TOKEN:
            return True
        return any(p.pid == os.getpid() for p in proc.parents())
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return False


def _alive(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


RAY_BEFORE = set(_ray_processes())


def leaked_ray_processes(grace_s: float = LEAK_GRACE_S) -> list[psutil.Process]:
    """Ray processes this session started that are still alive after `grace_s`."""
    deadline = time.monotonic() + grace_s
    while True:
        ours = [p for key, p in _ray_processes().items() if key not in RAY_BEFORE and _started_by_this_session(p)]
        ours = [p for p in ours if _alive(p)]
        if not ours or time.monotonic() > deadline:
            return ours
        time.sleep(0.5)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Fail the run when the suite left a Ray process running, name each one, and end
    them (they are this session's, by the token in their environment)."""
    leaked = leaked_ray_processes()
    if not leaked:
        return
    lines = [f"{len(leaked)} Ray process(es) started by this test session still run after it:"]
    for p in leaked:
        try:
            lines.append(f"  pid {p.pid} (parent {p.ppid()}): {' '.join(p.cmdline())[:200]}")
        except psutil.Error:
            lines.append(f"  pid {p.pid}")
    lines.append("a test that starts a Ray cluster, a server or a subprocess must end it, also when it fails; ending them now")
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    for line in lines:
        if reporter is not None:
            reporter.write_line(line, red=True)
        else:
            print(line, file=sys.stderr)
    for p in leaked:
        try:
            p.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(leaked, timeout=10)
    session.exitstatus = pytest.ExitCode.TESTS_FAILED


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

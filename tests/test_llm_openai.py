"""The OpenAI-compatible expert against a scripted server on 127.0.0.1: bounded
concurrency, retries, per-row failures, token pricing through a whole job, and an API
key that never leaves the Authorization header."""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import threading
import time
from collections import Counter
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Iterator

import pyarrow.parquet as pq
import pytest
from transformers import AutoTokenizer

from operators.runners.openai_compat import (
    MAX_RETRY_AFTER_S,
    MissingApiKey,
    OpenAICompatibleRunner,
    api_key_problem,
    backoff_delay,
    parse_retry_after,
)
from operators.stages import build_runner
from pipelines import exit_codes
from pipelines.batch_job import run_job
from routing.core.config import ConfigError, OpenAICompatibleExpert, parse_config
from routing.answers.prompting import render_prompt
from tiny_models import tiny_lm_examples

KEY_ENV = "ROUTEBATCH_TEST_LLM_KEY"
# Planted secret: if this string shows up in any output, log or message, the key leaked.
PLANTED_KEY = "sk-planted-" + os.urandom(12).hex()
TEMPLATE = "Context: {context}\nQuestion: {question}\nAnswer:"


@pytest.fixture(scope="module", autouse=True)
def api_key_in_environment() -> Iterator[None]:
    """Set before `local_ray` starts (module autouse fixtures come first), so Ray's
    workers inherit it the way a real job's workers inherit the driver's environment."""
    previous = os.environ.get(KEY_ENV)
    os.environ[KEY_ENV] = PLANTED_KEY
    yield
    if previous is None:
        os.environ.pop(KEY_ENV, None)
    else:
        os.environ[KEY_ENV] = previous


# -- the scripted server ---------------------------------------------------------------


def scripted_answer(question: str) -> str:
    """What the server answers: the question's last word, decorated the way chat models
    decorate answers, so extraction is exercised too."""
    return f"Answer: **{question.rstrip('?').split()[-1]}**"


class ScriptedServer:
    """An OpenAI-style server whose behaviour is chosen by markers in the question.

    FLAKY: 429 (Retry-After: 0), then 503, then success. POISON: always 500.
    BADREQ: 400 (not retryable). LEAK: 503 with the caller's Authorization header echoed
    in the error body. SLOW: answers after `slow_s`. MALFORMED: 200 with no choices.
    NOUSAGE: 200 without a usage block. Everything else: 200 with real `usage`.
    """

    def __init__(self, delay_s: float = 0.0, slow_s: float = 1.0, drop_idle: bool = False) -> None:
        self.delay_s = delay_s
        self.slow_s = slow_s
        self.drop_idle = drop_idle
        self.connections = 0
        self.lock = threading.Lock()
        self.in_flight = 0
        self.max_in_flight = 0
        self.attempts: Counter[str] = Counter()
        self.paths: Counter[str] = Counter()
        self.unauthorised = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:  # keep test output quiet
                pass

            def setup(self) -> None:
                super().setup()
                with server.lock:
                    server.connections += 1

            def do_POST(self) -> None:
                with server.lock:
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                try:
                    status, body, headers = server.respond(self)
                    data = json.dumps(body).encode()
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    for k, v in headers.items():
                        self.send_header(k, v)
                    self.end_headers()
                    self.wfile.write(data)
                    self.wfile.flush()
                    # Like a server whose idle timeout ends a keep-alive connection
                    # without saying so in a Connection: close header.
                    self.close_connection = server.drop_idle
                finally:
                    with server.lock:
                        server.in_flight -= 1

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def respond(self, handler: BaseHTTPRequestHandler) -> tuple[int, dict, dict]:
        length = int(handler.headers.get("Content-Length", 0))
        request = json.loads(handler.rfile.read(length))
        auth = handler.headers.get("Authorization", "")
        with self.lock:
            self.paths[handler.path] += 1
        if auth != f"Bearer {PLANTED_KEY}":
            with self.lock:
                self.unauthorised += 1
            return 401, {"error": {"message": "Incorrect API key provided"}}, {}
        if handler.path.endswith("/chat/completions"):
            prompt = request["messages"][0]["content"]
        else:
            prompt = request["prompt"]
        match = re.search(r"Question: (.*)\n", prompt)
        question = match.group(1) if match else ""
        with self.lock:
            self.attempts[question] += 1
            attempt = self.attempts[question]
        time.sleep(self.delay_s)
        if "FLAKY" in question and attempt == 1:
            return 429, {"error": {"message": "Rate limit reached"}}, {"Retry-After": "0"}
        if "FLAKY" in question and attempt == 2:
            return 503, {"error": {"message": "overloaded"}}, {}
        if "POISON" in question:
            return 500, {"error": {"message": "internal error"}}, {}
        if "BADREQ" in question:
            return 400, {"error": {"message": "max_tokens is too large"}}, {}
        if "LEAK" in question:
            return 503, {"error": {"message": f"upstream refused credentials {auth}"}}, {}
        if "SLOW" in question:
            time.sleep(self.slow_s)
        if "MALFORMED" in question:
            return 200, {"id": "x", "choices": []}, {}
        content = scripted_answer(question)
        if handler.path.endswith("/chat/completions"):
            choice = {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}
        else:
            choice = {"index": 0, "text": " " + content, "finish_reason": "stop"}
        body: dict[str, Any] = {"id": "cmpl-1", "object": "chat.completion", "model": request["model"], "choices": [choice]}
        if "NOUSAGE" not in question:
            # Real usage fields, computed from what was sent, so the test can recompute them.
            body["usage"] = {
                "prompt_tokens": len(prompt.split()),
                "completion_tokens": len(content.split()) + 1,
                "total_tokens": len(prompt.split()) + len(content.split()) + 1,
            }
        return 200, body, {}

    def __enter__(self) -> "ScriptedServer":
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server() -> Iterator[ScriptedServer]:
    with ScriptedServer() as s:
        yield s


def spec_for(base_url: str, **overrides: Any) -> OpenAICompatibleExpert:
    fields: dict[str, Any] = dict(
        kind="openai-compatible", name="remote", base_url=base_url, model="scripted-1",
        api_key_env=KEY_ENV, prompt_template=TEMPLATE, max_retries=2, retry_backoff_s=0.01,
        max_concurrent_requests=4, timeout_s=5,
    )
    fields.update(overrides)
    return OpenAICompatibleExpert(**fields)


class RecordingSleep:
    def __init__(self) -> None:
        self.delays: list[float] = []
        self.lock = threading.Lock()

    def __call__(self, seconds: float) -> None:
        with self.lock:
            self.delays.append(seconds)


def expected_usage(question: str, context: str) -> tuple[int, int]:
    prompt = render_prompt(TEMPLATE, question, context)
    return len(prompt.split()), len(scripted_answer(question).split()) + 1


# -- concurrency, retries, failures ------------------------------------------------------


def test_concurrency_never_exceeds_the_limit_and_usage_is_the_rows_tokens() -> None:
    with ScriptedServer(delay_s=0.1) as server:
        runner = OpenAICompatibleRunner(spec_for(server.base_url, max_concurrent_requests=3))
        questions = [f"Where is site number {i}?" for i in range(12)]
        contexts = [f"Site {i} lies north of the river." for i in range(12)]
        out = runner.answer([f"q{i}" for i in range(12)], questions, contexts)
        runner.close()
    assert server.max_in_flight == 3  # reached, and never passed
    assert out.errors == [None] * 12
    assert out.answers == [q.rstrip("?").split()[-1] for q in questions]
    for k, (q, c) in enumerate(zip(questions, contexts)):
        assert (out.input_tokens[k], out.output_tokens[k]) == expected_usage(q, c)
    assert server.paths == Counter({"/v1/chat/completions": 12})
    assert server.unauthorised == 0


def test_429_and_5xx_are_retried_with_backoff_until_success(server: ScriptedServer) -> None:
    sleep = RecordingSleep()
    runner = OpenAICompatibleRunner(spec_for(server.base_url, retry_backoff_s=0.2), sleep=sleep, seed=1)
    out = runner.answer(["a", "b"], ["Is FLAKY near the mill?", "Who owns the mill?"], ["ctx one", "ctx two"])
    assert out.errors == [None, None]
    assert out.answers == ["mill", "mill"]
    assert server.attempts["Is FLAKY near the mill?"] == 3 and server.attempts["Who owns the mill?"] == 1
    # First pause: the server's Retry-After (0). Second: backoff for retry 1, i.e. a
    # random point in [0.5, 1] x 0.2 x 2.
    assert len(sleep.delays) == 2
    assert sleep.delays[0] == 0.0
    assert 0.2 <= sleep.delays[1] <= 0.4
    assert (out.input_tokens[0], out.output_tokens[0]) == expected_usage("Is FLAKY near the mill?", "ctx one")


def test_a_row_that_keeps_failing_becomes_that_rows_error_only(server: ScriptedServer) -> None:
    sleep = RecordingSleep()
    runner = OpenAICompatibleRunner(spec_for(server.base_url, max_retries=2), sleep=sleep)
    questions = ["Who built the POISON tower?", "Who built the bridge?", "Why BADREQ here?", "When was it built?"]
    out = runner.answer(["p", "ok1", "bad", "ok2"], questions, ["c"] * 4)
    assert out.answers[1] == "bridge" and out.answers[3] == "built"
    assert out.errors[1] is None and out.errors[3] is None
    assert out.answers[0] is None and out.input_tokens[0] == out.output_tokens[0] == 0
    assert out.errors[0] == "expert_error: remote: request failed after 3 attempts: HTTP 500: internal error"
    assert server.attempts["Who built the POISON tower?"] == 3
    # A 400 will not get better: one attempt, and the server's reason in the error.
    assert out.errors[2] == "expert_error: remote: request failed (not retried): HTTP 400: max_tokens is too large"
    assert server.attempts["Why BADREQ here?"] == 1
    assert len(sleep.delays) == 2


def test_a_keep_alive_connection_closed_by_the_server_is_reopened_without_a_retry() -> None:
    with ScriptedServer(drop_idle=True) as server:
        sleep = RecordingSleep()
        runner = OpenAICompatibleRunner(spec_for(server.base_url, max_retries=0, max_concurrent_requests=1), sleep=sleep)
        out = runner.answer(["a", "b", "c"], ["Who came first?", "Who came second?", "Who came third?"], ["c"] * 3)
    assert out.errors == [None, None, None] and out.answers == ["first", "second", "third"]
    assert server.connections == 3 and sleep.delays == []


def test_connection_refused_is_retried_then_reported() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # free once closed: nothing listens there
    sleep = RecordingSleep()
    runner = OpenAICompatibleRunner(spec_for(f"http://127.0.0.1:{port}/v1", max_retries=3), sleep=sleep)
    out = runner.answer(["a"], ["Who?"], ["ctx"])
    assert out.answers == [None]
    assert out.errors[0].startswith("expert_error: remote: request failed after 4 attempts: connection failed (ConnectionRefusedError")
    # Doubling from retry_backoff_s (0.01), each pause a random point in [0.5, 1] x its ceiling.
    assert len(sleep.delays) == 3
    for attempt, delay in enumerate(sleep.delays):
        assert 0.005 * 2 ** attempt <= delay <= 0.01 * 2 ** attempt


def test_a_slow_server_times_out_per_request() -> None:
    with ScriptedServer(slow_s=1.5) as server:
        runner = OpenAICompatibleRunner(spec_for(server.base_url, timeout_s=0.3, max_retries=1), sleep=RecordingSleep())
        started = time.perf_counter()
        out = runner.answer(["s", "f"], ["Is it SLOW today?", "Is it fast?"], ["c", "c"])
        elapsed = time.perf_counter() - started
    assert out.errors[0].startswith("expert_error: remote: request failed after 2 attempts: connection failed (TimeoutError")
    assert out.errors[1] is None and out.answers[1] == "fast"
    assert elapsed < 1.5  # two 0.3 s timeouts, not the server's 1.5 s


def test_completions_api_malformed_replies_and_missing_usage(server: ScriptedServer, caplog: pytest.LogCaptureFixture) -> None:
    runner = OpenAICompatibleRunner(spec_for(server.base_url, api="completions"))
    with caplog.at_level(logging.WARNING, logger="operators.runners.openai_compat"):
        out = runner.answer(
            ["a", "m", "n"],
            ["Who rang the bell?", "Is it MALFORMED now?", "Is NOUSAGE counted?"],
            ["The warden rang the bell.", "c", "Counted by words here."],
        )
    assert server.paths == Counter({"/v1/completions": 3})
    assert out.answers[0] == "bell" and out.errors[0] is None
    assert out.errors[1].startswith("expert_error: remote: malformed response (IndexError")
    assert server.attempts["Is it MALFORMED now?"] == 1
    # No usage from the server: whitespace words of prompt and completion, with a warning.
    prompt = render_prompt(TEMPLATE, "Is NOUSAGE counted?", "Counted by words here.")
    assert out.answers[2] == "counted"
    assert (out.input_tokens[2], out.output_tokens[2]) == (len(prompt.split()), len(scripted_answer("Is NOUSAGE counted?").split()))
    assert "reported no usage" in caplog.text


def test_retry_after_and_backoff_rules() -> None:
    import random

    assert parse_retry_after("2") == 2.0
    assert parse_retry_after(" 0 ") == 0.0
    assert parse_retry_after("-5") == 0.0
    assert parse_retry_after("86400") == MAX_RETRY_AFTER_S
    assert parse_retry_after("soon") is None and parse_retry_after(None) is None
    now = time.time()
    assert parse_retry_after(formatdate(now + 30, usegmt=True), now=now) == pytest.approx(30, abs=1.0)
    rng = random.Random(0)
    for attempt in range(6):
        delay = backoff_delay(attempt, 0.5, rng)
        ceiling = min(0.5 * 2 ** attempt, 30.0)
        assert ceiling / 2 <= delay <= ceiling
    assert backoff_delay(3, 0.5, rng, retry_after=7.0) == 7.0


# -- the key ---------------------------------------------------------------------------


def test_missing_key_variable_is_named_without_any_value(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(KEY_ENV, raising=False)
    spec = spec_for("http://127.0.0.1:9/v1")
    with pytest.raises(MissingApiKey) as err:
        OpenAICompatibleRunner(spec)
    assert str(err.value) == (
        f"experts.remote.api_key_env: environment variable {KEY_ENV} is not set (or empty); "
        "export the API key in it before starting the job"
    )
    assert api_key_problem(spec, {KEY_ENV: ""}) is not None and api_key_problem(spec, {KEY_ENV: "x"}) is None
    # No api_key_env (a local vLLM, say): no key needed, none sent.
    assert api_key_problem(spec.model_copy(update={"api_key_env": None})) is None


def test_a_key_pasted_into_the_config_is_refused_without_being_echoed() -> None:
    cfg = {
        "input": {"path": "in.jsonl", "format": "jsonl"},
        "output": {"path": "out"},
        "experts": [{"name": "remote", "kind": "openai-compatible", "base_url": "https://api.example.com/v1",
                     "model": "m", "api_key_env": PLANTED_KEY}],
        "router": {"kind": "fixed", "expert": "remote"},
    }
    with pytest.raises(ConfigError) as err:
        parse_config(cfg)
    assert "experts.0.openai-compatible.api_key_env" in str(err.value) and "NAME of an environment variable" in str(err.value)
    assert PLANTED_KEY not in str(err.value)
    with pytest.raises(ValueError) as direct:
        OpenAICompatibleExpert(kind="openai-compatible", name="r", base_url="http://h/v1", model="m", api_key_env=PLANTED_KEY)
    assert PLANTED_KEY not in str(direct.value)
    for looks_like_key in ("sk-abc", "Bearer_x", "AbCdEfGh1234567890XyZw98", "A" * 65, "has space", "1ABC"):
        with pytest.raises(ValueError):
            OpenAICompatibleExpert(kind="openai-compatible", name="r", base_url="http://h/v1", model="m", api_key_env=looks_like_key)
    for name in ("OPENAI_API_KEY", "_K", "vllm_token"):
        assert OpenAICompatibleExpert(kind="openai-compatible", name="r", base_url="http://h/v1", model="m", api_key_env=name).api_key_env == name


def test_key_is_sent_but_redacted_from_errors_logs_and_reprs(server: ScriptedServer, caplog: pytest.LogCaptureFixture) -> None:
    spec = spec_for(server.base_url, max_retries=1)
    with caplog.at_level(logging.DEBUG):
        runner = build_runner(spec)
        assert isinstance(runner, OpenAICompatibleRunner)
        out = runner.answer(["l", "ok"], ["Does LEAK echo it?", "Who signed?"], ["c", "The mayor signed."])
    assert server.unauthorised == 0  # the right key went out in the header
    assert out.answers[1] == "signed"
    assert out.errors[0].startswith("expert_error: remote: request failed after 2 attempts: HTTP 503: upstream refused credentials Bearer ***")
    texts = [out.errors[0], repr(runner), str(runner), repr(spec), spec.model_dump_json(), caplog.text]
    assert "retry 1" in caplog.text  # the retry was logged (redacted)...
    for text in texts:
        assert PLANTED_KEY not in text  # ...and nothing anywhere holds the key
    assert PLANTED_KEY not in json.dumps(vars(spec), default=str)


# -- a whole job -------------------------------------------------------------------------


def _ray_log_files() -> list[Path]:
    import ray

    try:
        logs = Path(ray._private.worker._global_node.get_logs_dir_path())  # noqa: SLF001 - test only
    except Exception:  # noqa: BLE001 - layout of a private API; fall back to the default
        logs = Path("/tmp/ray/session_latest/logs")
    return [p for p in logs.rglob("*") if p.is_file()]


@pytest.mark.ray
def test_job_mixing_a_local_lm_and_an_endpoint_prices_tokens_and_keeps_the_key_secret(
    local_ray, tmp_path: Path, tiny_causal_lm: str, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture
) -> None:
    examples = tiny_lm_examples(8, seed=5)
    rows = []
    for i, (context, question, _) in enumerate(examples):
        remote = i % 2 == 1
        rows.append({"id": f"r{i}", "question": ("Remote: " if remote else "") + question, "context": context})
    rows += [
        {"id": "flaky", "question": "Remote: is FLAKY the keeper?", "context": examples[0][0]},
        {"id": "poison", "question": "Remote: is POISON the keeper?", "context": examples[1][0]},
        {"id": "leak", "question": "Remote: does LEAK echo?", "context": examples[2][0]},
    ]
    src = tmp_path / "in.jsonl"
    src.write_text("\n".join(json.dumps(r) for r in rows))
    prices_remote = {"usd_per_1k_input_tokens": 0.15, "usd_per_1k_output_tokens": 0.6}
    prices_local = {"usd_per_gpu_hour": 3.6, "usd_per_1k_input_tokens": 0.01, "usd_per_1k_output_tokens": 0.02}
    with ScriptedServer() as server, caplog.at_level(logging.INFO):
        cfg = parse_config(
            {
                "input": {"path": str(src), "format": "jsonl"},
                "output": {"path": str(tmp_path / "out")},
                "experts": [
                    {"name": "local", "kind": "hf-causal-lm", "model": tiny_causal_lm, "prompt_template": TEMPLATE,
                     "max_new_tokens": 8, "batch_size": 4, "resources": {"num_cpus": 0.5}, "cost": prices_local},
                    {"name": "remote", "kind": "openai-compatible", "base_url": server.base_url, "model": "scripted-1",
                     "api_key_env": KEY_ENV, "prompt_template": TEMPLATE, "max_concurrent_requests": 2,
                     "max_retries": 2, "retry_backoff_s": 0.01, "timeout_s": 10, "cost": prices_remote},
                ],
                "router": {"kind": "rule", "rules": [{"expert": "remote", "question_regex": "^Remote:"}], "default": "local"},
                "execution": {"batch_size": 4},
            }
        )
        summary = run_job(cfg, progress=False)
    out_dir = tmp_path / "out"
    table = pq.read_table(out_dir).to_pylist()
    by_id = {r["id"]: r for r in table}
    assert summary.rows_in == summary.rows_out == len(table) == len(rows)
    assert summary.exit_code == exit_codes.COMPLETED_WITH_ERRORS
    assert summary.errors_by_kind == {"expert_error": 2}
    tokenizer = AutoTokenizer.from_pretrained(tiny_causal_lm)
    for r in rows:
        got = by_id[r["id"]]
        if r["id"] in ("poison", "leak"):
            assert got["expert"] == "remote" and got["answer"] is None
            assert got["error"].startswith("expert_error: remote: request failed after 3 attempts: HTTP ")
            assert got["cost_usd"] == 0.0 and got["input_tokens"] == got["output_tokens"] == 0
            continue
        assert got["error"] is None and got["answer"] is not None
        if r["question"].startswith("Remote:"):
            assert got["expert"] == "remote"
            assert (got["input_tokens"], got["output_tokens"]) == expected_usage(r["question"], r["context"])
            assert got["answer"] == r["question"].rstrip("?").split()[-1]
            want = 0.15 * got["input_tokens"] / 1000 + 0.6 * got["output_tokens"] / 1000
        else:
            assert got["expert"] == "local"
            prompt_ids = tokenizer(render_prompt(TEMPLATE, r["question"], r["context"]))["input_ids"]
            assert got["input_tokens"] == len(prompt_ids)
            assert 1 <= got["output_tokens"] <= 8 and got["expert_seconds"] > 0
            want = (0.01 * got["input_tokens"] + 0.02 * got["output_tokens"]) / 1000 + 3.6 / 3600 * got["expert_seconds"]
        assert got["cost_usd"] == pytest.approx(want, rel=1e-9, abs=1e-12)
    assert server.attempts["Remote: is FLAKY the keeper?"] == 3
    assert server.attempts["Remote: is POISON the keeper?"] == 3
    assert server.max_in_flight <= 2 and server.unauthorised == 0
    assert summary.total_cost_usd == pytest.approx(sum(r["cost_usd"] for r in table))
    assert set(summary.experts) == {"local", "remote"}

    # The planted key: nowhere in the outputs, the summary, the driver's logs and
    # output, or the Ray workers' log files.
    for f in out_dir.rglob("*"):
        if f.is_file():
            assert PLANTED_KEY.encode() not in f.read_bytes(), f
    written = json.loads((out_dir / "_summary.json").read_text())
    assert written["config"]["experts"][1]["api_key_env"] == KEY_ENV
    captured = capfd.readouterr()
    assert PLANTED_KEY not in caplog.text + captured.out + captured.err
    for f in _ray_log_files():
        assert PLANTED_KEY.encode() not in f.read_bytes(), f

"""The OpenAI-compatible runner's HTTP layer: urllib3's pool (today) against the
hand-written per-thread `http.client` connections it replaced (loaded from a git
revision), on one local keep-alive server started here.

Each round sends `--rows` questions through `runner.answer` with
`max_concurrent_requests` threads; printed: requests/s and per-request latency
percentiles (measured inside `_post`) for both, interleaved so machine noise hits
both alike. A second part checks the error path: connection refused, per-row text.

    PYTHONPATH=$PWD python bench/openai_http.py --baseline-rev c9e74a0
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from operators.runners import openai_compat
from routing.core.config import OpenAICompatibleExpert

KEY_ENV = "ROUTEBATCH_BENCH_KEY"
os.environ[KEY_ENV] = "sk-bench-key"


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body leave in two writes; without this, Nagle's algorithm against
    # the client's delayed ACK adds ~40 ms to every response and hides both clients.
    disable_nagle_algorithm = True
    delay_s = 0.0

    def log_message(self, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        request = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
        if self.delay_s:
            time.sleep(self.delay_s)
        prompt = request["messages"][0]["content"]
        body = json.dumps({
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "Answer: river"}}],
            "usage": {"prompt_tokens": len(prompt.split()), "completion_tokens": 2},
        }).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def load_baseline(rev: str) -> Any:
    source = subprocess.run(["git", "show", f"{rev}:operators/openai_compat.py"], check=True, capture_output=True, text=True).stdout
    # The baseline predates the move of the runners into operators/runners/ and of the
    # config into routing/core/: point its imports at where those modules live now.
    for old, new in (("operators.runner_base", "operators.runners.base"), ("routing.config", "routing.core.config"),
                     ("routing.prompting", "routing.answers.prompting")):
        source = source.replace(f"from {old} import", f"from {new} import")
    path = os.path.join(tempfile.mkdtemp(), "openai_compat_baseline.py")
    with open(path, "w") as f:
        f.write(source)
    spec = importlib.util.spec_from_file_location("openai_compat_baseline", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def make_spec(base_url: str, concurrency: int) -> OpenAICompatibleExpert:
    return OpenAICompatibleExpert(
        kind="openai-compatible", name="bench", base_url=base_url, model="m", api_key_env=KEY_ENV,
        prompt_template="Context: {context}\nQuestion: {question}\nAnswer:", max_retries=0,
        max_concurrent_requests=concurrency, timeout_s=10,
    )


def timed_runner(module: Any, spec: OpenAICompatibleExpert) -> tuple[Any, list[float]]:
    runner = module.OpenAICompatibleRunner(spec)
    latencies: list[float] = []
    lock = threading.Lock()
    post = runner._post

    def timed(payload: bytes) -> bytes:
        start = time.perf_counter()
        try:
            return post(payload)
        finally:
            with lock:
                latencies.append(time.perf_counter() - start)

    runner._post = timed
    return runner, latencies


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--baseline-rev", default="c9e74a0")
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--delay-ms", type=float, default=0.0, help="server think time per request")
    args = parser.parse_args()
    Handler.delay_s = args.delay_ms / 1000
    baseline = load_baseline(args.baseline_rev)
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    questions = [f"Where is site {i}?" for i in range(args.rows)]
    contexts = ["Site lies north of the river."] * args.rows
    ids = [str(i) for i in range(args.rows)]
    print(f"rows={args.rows} rounds={args.rounds} server delay={args.delay_ms} ms")
    for concurrency in args.concurrency:
        results: dict[str, list[float]] = {"http.client (before)": [], "urllib3 (now)": []}
        lat: dict[str, list[float]] = {k: [] for k in results}
        for _ in range(args.rounds):
            for name, module in (("http.client (before)", baseline), ("urllib3 (now)", openai_compat)):
                runner, latencies = timed_runner(module, make_spec(url, concurrency))
                start = time.perf_counter()
                out = runner.answer(ids, questions, contexts)
                elapsed = time.perf_counter() - start
                runner.close()
                assert out.errors == [None] * args.rows, out.errors[:3]
                results[name].append(args.rows / elapsed)
                lat[name].extend(latencies)
        for name in results:
            q = statistics.quantiles(lat[name], n=100)
            print(f"concurrency={concurrency:2d} {name:22s} req/s per round {[round(r) for r in results[name]]}"
                  f"  median {statistics.median(results[name]):6.0f}  latency p50 {q[49]*1e3:.2f} ms p99 {q[98]*1e3:.2f} ms")
    httpd.shutdown()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for name, module in (("http.client (before)", baseline), ("urllib3 (now)", openai_compat)):
        runner = module.OpenAICompatibleRunner(make_spec(f"http://127.0.0.1:{port}/v1", 1))
        print(f"refused, {name}: {runner.answer(['a'], ['Who?'], ['c']).errors[0]}")
        runner.close()


if __name__ == "__main__":
    main()

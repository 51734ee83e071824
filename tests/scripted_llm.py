"""A tiny OpenAI-style server on 127.0.0.1 whose failures are chosen by words in the
question, for failure-injection and secret-leak tests of whole jobs.

POISON: HTTP 500 every time. BADREQ: HTTP 400 (not retried). LEAK: HTTP 503 whose
error message repeats the caller's Authorization header, as a careless proxy might.
HANG: no answer until the server stops (or `hang_s` passes). Anything else: 200 with
the question's last word as the answer and a `usage` block.
"""

from __future__ import annotations

import json
import re
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Optional


class ScriptedLLM:
    def __init__(self, api_key: Optional[str] = None, hang_s: float = 120.0) -> None:
        self.api_key = api_key
        self.hang_s = hang_s
        self.stopping = threading.Event()
        self.lock = threading.Lock()
        self.requests: Counter[str] = Counter()
        self.bad_auth = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                request = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                status, body = server.respond(request, self.headers.get("Authorization", ""))
                data = json.dumps(body).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:
                    pass  # the client gave up on a hung request

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def respond(self, request: dict, auth: str) -> tuple[int, dict]:
        prompt = request["messages"][0]["content"] if "messages" in request else request["prompt"]
        match = re.search(r"Question: (.*)", prompt)
        question = match.group(1).strip() if match else ""
        with self.lock:
            self.requests[question] += 1
        if self.api_key is not None and auth != f"Bearer {self.api_key}":
            with self.lock:
                self.bad_auth += 1
            return 401, {"error": {"message": "Incorrect API key provided"}}
        if "POISON" in question:
            return 500, {"error": {"message": "internal error"}}
        if "BADREQ" in question:
            return 400, {"error": {"message": f"bad request from {auth}"}}
        if "LEAK" in question:
            return 503, {"error": {"message": f"upstream refused credentials {auth}"}}
        if "HANG" in question:
            self.stopping.wait(self.hang_s)
        answer = question.rstrip("?").split()[-1] if question.split() else ""
        return 200, {
            "id": "cmpl-1",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": f"Answer: {answer}"}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": len(prompt.split()), "completion_tokens": 2, "total_tokens": len(prompt.split()) + 2},
        }

    def __enter__(self) -> "ScriptedLLM":
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stopping.set()  # release hung requests
        self.httpd.shutdown()
        self.httpd.server_close()

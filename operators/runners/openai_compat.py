"""The remote generative expert: a model behind an OpenAI-compatible HTTP API.

One actor keeps a small pool of threads and one urllib3 connection pool of the same
size, so at most `max_concurrent_requests` requests are in flight per actor and
keep-alive connections (and their TLS sessions) are reused across questions. urllib3
(a declared dependency, also what boto3 runs on) owns the connections, including
replacing one the server closed while it sat idle; the retry policy stays here,
because it must count attempts per row, honour a capped Retry-After, and sleep
through an injectable clock (docs/library-decisions.md has the measurements).

Failures are per row. A 429, a 5xx or a failed connection is retried with
exponential backoff and jitter (or after the server's Retry-After); a request that
still fails becomes that row's `expert_error`, and the rest of the batch is answered.

The API key is read from the environment variable the config names, kept in one
private attribute, sent only in the Authorization header, and removed from any text
(server error bodies included) before that text can reach an error column or a log.
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any, Callable, Mapping, Optional, Sequence
from urllib.parse import urlsplit

import urllib3
from urllib3.exceptions import HTTPError as _Urllib3Error
from urllib3.exceptions import ProtocolError

from operators.runners.base import PassLog, RunnerOutput, check_batch_lengths, unusable_reason
from routing.core.config import OpenAICompatibleExpert
from routing.answers.prompting import extract_answer, render_prompt

log = logging.getLogger(__name__)

# A server asking for a longer pause than this holds a whole actor for too long; wait
# this much, and let the retry count bound the total.
MAX_RETRY_AFTER_S = 60.0
# Exponential backoff stops doubling here.
MAX_BACKOFF_S = 30.0
RETRYABLE_STATUS = frozenset({408, 409, 429})  # plus every 5xx
# Connections a server may have closed while idle; resent once on a fresh connection
# without spending a retry, since no request reached the server.
_STALE_CONNECTION = (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError)


class MissingApiKey(ValueError):
    """The environment variable named by `api_key_env` is unset or empty."""


def api_key_problem(spec: OpenAICompatibleExpert, environ: Mapping[str, str] = os.environ) -> Optional[str]:
    """Why the expert's key cannot be read here, or None. Names the variable, never a value.

    Exposed so a driver can check before starting a cluster (the workers read the same
    variable; on a multi-node cluster it must be set there too).
    """
    if spec.api_key_env is None:
        return None
    if not environ.get(spec.api_key_env):
        return (
            f"experts.{spec.name}.api_key_env: environment variable {spec.api_key_env} is not set "
            "(or empty); export the API key in it before starting the job"
        )
    return None


def is_retryable(status: int) -> bool:
    return status in RETRYABLE_STATUS or 500 <= status <= 599


def parse_retry_after(value: Optional[str], now: Optional[float] = None) -> Optional[float]:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date), capped."""
    if value is None or not value.strip():
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when is None:
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    if seconds != seconds:  # NaN
        return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_S)


def backoff_delay(attempt: int, base_s: float, rng: random.Random, retry_after: Optional[float] = None) -> float:
    """Pause before retry number `attempt` (0 = the first retry).

    The server's Retry-After wins when given. Otherwise `base_s * 2**attempt`
    (capped), of which a random half is kept: many actors hitting the same rate limit
    at once must not all come back in the same instant.
    """
    if retry_after is not None:
        return retry_after
    ceiling = min(base_s * (2 ** attempt), MAX_BACKOFF_S)
    return ceiling * (0.5 + 0.5 * rng.random())


@dataclass
class RowResult:
    answer: Optional[str]
    input_tokens: int
    output_tokens: int
    error: Optional[str]
    attempts: int


class _HttpFailure(Exception):
    """A request that got no usable response; `retryable` says whether to try again."""

    def __init__(self, detail: str, retryable: bool, retry_after: Optional[float] = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.retryable = retryable
        self.retry_after = retry_after


class OpenAICompatibleRunner:
    """`ExpertRunner` for `/chat/completions` or `/completions` endpoints."""

    def __init__(
        self,
        spec: OpenAICompatibleExpert,
        *,
        environ: Mapping[str, str] = os.environ,
        sleep: Callable[[float], None] = time.sleep,
        seed: Optional[int] = None,
    ) -> None:
        self.spec = spec
        # Request waves: max_concurrent_requests requests in flight at once is a full one.
        self.passes = PassLog()
        problem = api_key_problem(spec, environ)
        if problem is not None:
            raise MissingApiKey(problem)
        self.__key: Optional[str] = environ[spec.api_key_env] if spec.api_key_env else None
        url = urlsplit(spec.base_url)
        suffix = "/chat/completions" if spec.api == "chat" else "/completions"
        self._path = url.path.rstrip("/") + suffix
        self._sleep = sleep
        self._rng = random.Random(seed)
        self._rng_lock = threading.Lock()
        # One connection per worker thread at most (block=True never waits: the thread
        # pool below is the same size). retries=False: urllib3 raises every failure
        # to `_post`, and the retry loop in `answer_one` decides.
        self._http = urllib3.connection_from_url(
            spec.base_url,
            maxsize=spec.max_concurrent_requests,
            block=True,
            timeout=urllib3.Timeout(connect=spec.timeout_s, read=spec.timeout_s),
            retries=False,
        )
        self._pool = ThreadPoolExecutor(
            max_workers=spec.max_concurrent_requests, thread_name_prefix=f"expert-{spec.name}"
        )
        self._warned_no_usage = False

    def __repr__(self) -> str:
        # Spelled out so no future attribute (the key above all) can slip into a repr.
        return f"OpenAICompatibleRunner(expert={self.spec.name!r}, base_url={self.spec.base_url!r}, model={self.spec.model!r})"

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        self._http.close()

    # -- the batch ----------------------------------------------------------------------

    def answer(
        self, ids: Sequence[str], questions: Sequence[str], contexts: Sequence[str]
    ) -> RunnerOutput:
        n = check_batch_lengths(ids, questions, contexts)
        results = list(self._pool.map(self.answer_one, questions, contexts))
        self.passes.record_chunks(n, self.spec.max_concurrent_requests)
        return RunnerOutput(
            answers=[r.answer for r in results],
            scores=[None] * n,
            input_tokens=[r.input_tokens for r in results],
            output_tokens=[r.output_tokens for r in results],
            errors=[r.error for r in results],
        )

    def request_body(self, question: str, context: str) -> dict[str, Any]:
        prompt = render_prompt(self.spec.prompt_template, question, context)
        body: dict[str, Any] = {
            "model": self.spec.model,
            "max_tokens": self.spec.max_tokens,
            "temperature": self.spec.temperature,
        }
        if self.spec.api == "chat":
            body["messages"] = [{"role": "user", "content": prompt}]
        else:
            body["prompt"] = prompt
        return body

    def answer_one(self, question: object, context: object) -> RowResult:
        """One row, with retries. Never raises for anything the server or network does."""
        problem = unusable_reason(question, context)
        if problem:
            return RowResult(None, 0, 0, problem, 0)
        payload = json.dumps(self.request_body(question, context)).encode()
        attempts = 0
        while True:
            attempts += 1
            try:
                return self._parse(self._post(payload), payload, attempts)
            except _HttpFailure as failure:
                retry = failure.retryable and attempts <= self.spec.max_retries
                if not retry:
                    what = f"after {attempts} attempts" if attempts > 1 else "(not retried)"
                    detail = self._redact(failure.detail)
                    msg = f"expert_error: {self.spec.name}: request failed {what}: {detail}"
                    return RowResult(None, 0, 0, msg[:500], attempts)
                with self._rng_lock:
                    delay = backoff_delay(attempts - 1, self.spec.retry_backoff_s, self._rng, failure.retry_after)
                log.debug("expert %s: %s; retry %d in %.2fs", self.spec.name, self._redact(failure.detail), attempts, delay)
                self._sleep(delay)

    # -- HTTP -----------------------------------------------------------------------------

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self.__key:
            headers["Authorization"] = f"Bearer {self.__key}"
        return headers

    def _post(self, payload: bytes) -> bytes:
        """POST once (plus one silent resend when a kept-alive connection turns out closed).

        urllib3 already drops a pooled connection it can see was closed; the resend
        covers the race where the server closes it just as the request goes out, so
        no request reached the server and no retry is spent. Returns the body of a 200
        response; raises _HttpFailure for anything else.
        """
        for resend in (False, True):
            try:
                response = self._http.urlopen(
                    "POST", self._path, body=payload, headers=self._headers(),
                    retries=False, redirect=False, assert_same_host=False, preload_content=True,
                )
            except (_Urllib3Error, OSError, http.client.HTTPException) as exc:  # refused, timed out, DNS, TLS
                cause = _root_cause(exc)
                if isinstance(exc, ProtocolError) and isinstance(cause, _STALE_CONNECTION) and not resend:
                    continue
                raise _HttpFailure(f"connection failed ({type(cause).__name__}: {cause})", retryable=True) from None
            if response.status == 200:
                return response.data
            raise _HttpFailure(
                f"HTTP {response.status}{_error_message(response.data)}",
                retryable=is_retryable(response.status),
                retry_after=parse_retry_after(response.headers.get("Retry-After")),
            )
        raise AssertionError("unreachable")  # pragma: no cover

    def _parse(self, body: bytes, payload: bytes, attempts: int) -> RowResult:
        try:
            data = json.loads(body)
            choice = data["choices"][0]
            text = choice["message"]["content"] if self.spec.api == "chat" else choice["text"]
            if text is None:  # e.g. a refusal or a tool call instead of text
                text = ""
            if not isinstance(text, str):
                raise TypeError(f"completion is {type(text).__name__}, not text")
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            # A 200 with a body we cannot read will not improve on a retry.
            msg = f"expert_error: {self.spec.name}: malformed response ({type(exc).__name__}: {self._redact(str(exc))})"[:500]
            return RowResult(None, 0, 0, msg, attempts)
        tokens_in, tokens_out = _usage(data.get("usage"))
        if tokens_in is None or tokens_out is None:
            # Some servers omit `usage`; whitespace words keep per-token prices meaningful
            # (as for replayed experts) instead of silently charging nothing.
            if not self._warned_no_usage:
                log.warning("expert %s: server reported no usage; counting whitespace words instead of tokens", self.spec.name)
                self._warned_no_usage = True
            request = json.loads(payload)
            prompt = request.get("prompt") or request["messages"][0]["content"]
            tokens_in = len(prompt.split()) if tokens_in is None else tokens_in
            tokens_out = len(text.split()) if tokens_out is None else tokens_out
        return RowResult(extract_answer(text), tokens_in, tokens_out, None, attempts)

    def _redact(self, text: str) -> str:
        if self.__key:
            text = text.replace(self.__key, "***")
        return text


def _root_cause(exc: BaseException) -> BaseException:
    """The socket-level error under urllib3's wrappers, so error texts name what failed
    (ConnectionRefusedError, TimeoutError, ...) the way they did before urllib3."""
    seen = 0
    while seen < 5:
        seen += 1
        if isinstance(exc, ProtocolError) and len(exc.args) > 1 and isinstance(exc.args[1], BaseException):
            exc = exc.args[1]
        elif isinstance(exc, _Urllib3Error) and exc.__cause__ is not None:
            exc = exc.__cause__
        else:
            break
    return exc


def _usage(usage: object) -> tuple[Optional[int], Optional[int]]:
    if not isinstance(usage, dict):
        return None, None

    def count(name: str) -> Optional[int]:
        value = usage.get(name)
        return int(value) if isinstance(value, (int, float)) and value >= 0 else None

    return count("prompt_tokens"), count("completion_tokens")


def _error_message(body: bytes) -> str:
    """A short reason from an error body (OpenAI style `{"error": {"message": ...}}`)."""
    try:
        data = json.loads(body)
        message = data["error"]["message"] if isinstance(data.get("error"), dict) else data.get("error") or data.get("message")
    except (ValueError, AttributeError, KeyError, TypeError):
        message = body.decode("utf-8", "replace")
    if not message:
        return ""
    # Not shortened here: the caller redacts the key first and shortens afterwards, so a
    # cut can never leave part of a key behind.
    return ": " + " ".join(str(message).split())


__all__ = [
    "MissingApiKey",
    "OpenAICompatibleRunner",
    "RowResult",
    "api_key_problem",
    "backoff_delay",
    "is_retryable",
    "parse_retry_after",
]

"""What the online endpoint accepts, decided without Ray or HTTP machinery.

The endpoint must answer every bad request with a 4xx that says what is wrong, and
never let one reach the router or an expert: a malformed item there would surface as a
500 or, worse, as a per-row expert error that looks like the model's fault. Keeping the
checks here, as plain functions over bytes and JSON values, lets them be tested in
milliseconds and read in one place.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Optional

ALLOWED_KEYS = frozenset({"id", "question", "context"})


class RequestError(Exception):
    """A request the endpoint refuses: HTTP status, a short machine-readable kind, and
    a sentence a client developer can act on."""

    def __init__(self, status: int, kind: str, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.kind = kind
        self.detail = detail

    def body(self) -> dict[str, Any]:
        return {"error": {"kind": self.kind, "detail": self.detail}}


@dataclass(frozen=True)
class Item:
    """One question to answer; `id` is optional (a replay expert needs it to find its
    recorded answer, a model does not)."""

    id: Optional[str]
    question: str
    context: str


@dataclass(frozen=True)
class ParsedRequest:
    items: list[Item]
    single: bool  # the client sent one object, so it gets one object back


def check_declared_length(content_length: Optional[str], max_body_bytes: int) -> None:
    """Refuse on the Content-Length header alone, before reading a byte of the body."""
    if content_length is None:
        return
    try:
        declared = int(content_length)
    except ValueError:
        raise RequestError(400, "bad_header", "Content-Length is not an integer") from None
    if declared > max_body_bytes:
        raise RequestError(413, "body_too_large", f"the body has {declared} bytes; at most {max_body_bytes} are accepted")


def _type_name(value: Any) -> str:
    names = {dict: "object", list: "array", str: "string", bool: "boolean", int: "integer", float: "number", type(None): "null"}
    return names.get(type(value), type(value).__name__)


def _item(value: Any, where: str) -> Item:
    if not isinstance(value, dict):
        raise RequestError(422, "invalid_item", f"{where}: expected an object with question and context, got {_type_name(value)}")
    unknown = sorted(set(value) - ALLOWED_KEYS)
    if unknown:
        raise RequestError(422, "invalid_item", f"{where}: unknown field(s) {unknown}; allowed: id, question, context")
    texts = {}
    for name in ("question", "context"):
        if name not in value:
            raise RequestError(422, "invalid_item", f"{where}.{name}: required field is missing")
        text = value[name]
        if not isinstance(text, str):
            raise RequestError(422, "invalid_item", f"{where}.{name}: expected a string, got {_type_name(text)}")
        if not text.strip():
            raise RequestError(422, "invalid_item", f"{where}.{name}: must not be empty")
        texts[name] = text
    rid = value.get("id")
    if rid is not None:
        # Integer ids become strings, as in the batch job's row checks.
        if isinstance(rid, bool) or not isinstance(rid, (str, int)):
            raise RequestError(422, "invalid_item", f"{where}.id: expected a string or an integer, got {_type_name(rid)}")
        rid = str(rid)
        if not rid.strip():
            raise RequestError(422, "invalid_item", f"{where}.id: must not be empty when given")
    return Item(id=rid, question=texts["question"], context=texts["context"])


def parse_answer_request(body: bytes, *, max_body_bytes: int, max_items: int) -> ParsedRequest:
    """A `POST /v1/answer` body: one `{"question", "context", "id"?}` object or a
    non-empty array of them. Raises RequestError with the status to send."""
    if len(body) > max_body_bytes:
        raise RequestError(413, "body_too_large", f"the body has more than {max_body_bytes} bytes")
    if not body.strip():
        raise RequestError(400, "invalid_json", "the body is empty; send a JSON object or array")
    try:
        data = json.loads(body.decode("utf-8"))
    except UnicodeDecodeError:
        raise RequestError(400, "invalid_json", "the body is not UTF-8") from None
    except json.JSONDecodeError as exc:
        raise RequestError(400, "invalid_json", f"the body is not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from None
    except RecursionError:
        raise RequestError(400, "invalid_json", "the body nests too deeply") from None
    if isinstance(data, dict):
        return ParsedRequest(items=[_item(data, "body")], single=True)
    if not isinstance(data, list):
        raise RequestError(422, "invalid_body", f"expected a JSON object or array, got {_type_name(data)}")
    if not data:
        raise RequestError(422, "invalid_body", "the array is empty; send at least one item")
    if len(data) > max_items:
        raise RequestError(422, "too_many_items", f"{len(data)} items in one request; at most {max_items} are accepted, split it")
    return ParsedRequest(items=[_item(v, f"body[{i}]") for i, v in enumerate(data)], single=False)

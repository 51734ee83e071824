"""The endpoint's request checks, without Ray: every bad body is a 4xx with a kind."""

import json

import pytest

from pipelines.serve_requests import RequestError, check_declared_length, parse_answer_request

LIMITS = {"max_body_bytes": 2048, "max_items": 3}
GOOD = {"question": "Who?", "context": "Someone did it."}


def _refused(body: bytes) -> RequestError:
    with pytest.raises(RequestError) as info:
        parse_answer_request(body, **LIMITS)
    return info.value


def test_one_object_and_a_list_parse_to_items():
    one = parse_answer_request(json.dumps({**GOOD, "id": 7}).encode(), **LIMITS)
    assert one.single and one.items[0].id == "7" and one.items[0].question == "Who?"
    many = parse_answer_request(json.dumps([GOOD, {**GOOD, "id": "b"}]).encode(), **LIMITS)
    assert not many.single and [i.id for i in many.items] == [None, "b"]


@pytest.mark.parametrize(
    "body, status, kind, says",
    [
        (b"", 400, "invalid_json", "empty"),
        (b"{", 400, "invalid_json", "not valid JSON"),
        (b"\xff\xfe", 400, "invalid_json", "UTF-8"),
        (b'"text"', 422, "invalid_body", "string"),
        (b"[]", 422, "invalid_body", "empty"),
        (json.dumps([GOOD] * 4).encode(), 422, "too_many_items", "at most 3"),
        (json.dumps({"question": "q"}).encode(), 422, "invalid_item", "body.context"),
        (json.dumps({"question": 5, "context": "c"}).encode(), 422, "invalid_item", "got integer"),
        (json.dumps({"question": "  ", "context": "c"}).encode(), 422, "invalid_item", "empty"),
        (json.dumps({**GOOD, "id": True}).encode(), 422, "invalid_item", "body.id"),
        (json.dumps({**GOOD, "id": ""}).encode(), 422, "invalid_item", "body.id"),
        (json.dumps({**GOOD, "extra": 1}).encode(), 422, "invalid_item", "extra"),
        (json.dumps([GOOD, 3]).encode(), 422, "invalid_item", "body[1]"),
        (b" " * 3000, 413, "body_too_large", "2048"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_bad_bodies_are_refused_with_status_and_kind(body, status, kind, says):
    err = _refused(body)
    assert (err.status, err.kind) == (status, kind)
    assert says in err.detail
    assert err.body() == {"error": {"kind": kind, "detail": err.detail}}


def test_deeply_nested_json_is_a_400_not_a_crash():
    with pytest.raises(RequestError) as info:
        parse_answer_request(b"[" * 100_000 + b"]" * 100_000, max_body_bytes=1 << 20, max_items=3)
    assert (info.value.status, info.value.kind) == (400, "invalid_json")


def test_declared_length_is_checked_before_reading():
    check_declared_length(None, 100)
    check_declared_length("100", 100)
    with pytest.raises(RequestError) as info:
        check_declared_length("101", 100)
    assert info.value.status == 413
    with pytest.raises(RequestError) as info:
        check_declared_length("lots", 100)
    assert info.value.status == 400

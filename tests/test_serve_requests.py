"""The endpoint's request checks, without Ray: every bad body is a 4xx with a kind."""

import json
import types

import pytest

from pipelines.serve.request_body import RequestError, check_declared_length, parse_answer_request

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


# -- a call whose replica died is sent again; nothing else is -----------------------------


def _calls(*outcomes):
    """A call factory that answers with the given outcomes in turn (an exception is
    raised), and counts how often it was called."""
    made = []

    def call():
        made.append(len(made))
        outcome = outcomes[len(made) - 1]

        async def run():
            if isinstance(outcome, BaseException):
                raise outcome
            return outcome

        return run()

    return call, made


def test_a_lost_replica_is_retried_with_the_same_call_until_answered(monkeypatch):
    import asyncio

    from ray.exceptions import ActorDiedError, ActorUnavailableError

    from pipelines.serve import app as serve_app

    monkeypatch.setattr(serve_app, "RETRY_FIRST_DELAY_S", 0.001)
    call, made = _calls(ActorDiedError(), ActorUnavailableError("restarting", None), ["answer"])
    retries = serve_app._Retries()
    assert asyncio.run(serve_app._until_answered(call, "expert x", retries)) == ["answer"]
    assert len(made) == 3 and retries.count == 2 and isinstance(retries.last, ActorUnavailableError)


def test_other_failures_are_not_retried():
    import asyncio

    from ray.exceptions import ActorDiedError, RayTaskError

    from pipelines.serve import app as serve_app

    for exc in (ValueError("the expert's code raised"), RayTaskError("answer", "tb", ValueError("x"))):
        call, made = _calls(exc, ["never"])
        with pytest.raises(type(exc)):
            asyncio.run(serve_app._until_answered(call, "expert x", serve_app._Retries()))
        assert len(made) == 1
    # A replica death that surfaced while resolving a chained call is still a lost replica.
    assert serve_app.replica_lost(RayTaskError("answer", "tb", ActorDiedError()))
    assert not serve_app.replica_lost(RayTaskError("answer", "tb", ValueError("x")))


def test_a_request_whose_time_runs_out_while_its_replica_is_replaced_is_a_503():
    """The retry loop is ended by the request's timeout; when a replica loss is what it
    was waiting on, the client is told unavailable (503), not slow (504)."""
    import asyncio

    from ray.exceptions import ActorDiedError

    from pipelines.serve import app as serve_app

    async def never_answers(items, retries):
        retries.count, retries.last = 1, ActorDiedError()
        await asyncio.sleep(10)

    async def slow(items, retries):
        await asyncio.sleep(10)

    class FakeRequest:
        headers: dict = {}

        async def stream(self):
            yield json.dumps(GOOD).encode()

    # The handler alone, on a stand-in for the deployment (no Serve, no Ray).
    ingress = types.SimpleNamespace(limits=serve_app.ServeSpec(request_timeout_s=0.05))
    ingress._body = lambda request: serve_app.Ingress._body(ingress, request)
    for answer_items, status, kind in ((never_answers, 503, "unavailable"), (slow, 504, "timeout")):
        ingress._answer_items = answer_items
        response = asyncio.run(serve_app.Ingress.answer(ingress, FakeRequest()))
        assert response.status_code == status and json.loads(response.body)["error"]["kind"] == kind

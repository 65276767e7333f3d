"""The httpx transports' own rules, on a mock transport and a fake clock (no network)."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from buttress import FakeClock, TimeoutExceeded
from buttress.integrations.httpx import HostOptions, HostPolicies, ResilientTransport


class Body(httpx.SyncByteStream):
    """A response body that records whether it was closed."""

    def __init__(self) -> None:
        self.closed = False

    def __iter__(self) -> Iterator[bytes]:
        yield b"late"

    def close(self) -> None:
        self.closed = True


def test_each_attempt_lowers_the_request_timeouts_to_what_is_left() -> None:
    clock = FakeClock()
    seen: list[dict[str, float]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(dict(request.extensions["timeout"]))
        clock.advance(0.5)
        return httpx.Response(503 if len(seen) == 1 else 200)

    options = HostOptions(attempt_timeout=2.0, total_timeout=3.0, delay=0.0)
    transport = ResilientTransport(
        httpx.MockTransport(handler), policies=HostPolicies(default=options, clock=clock)
    )
    with httpx.Client(transport=transport, timeout=httpx.Timeout(5.0, connect=1.0)) as client:
        request = client.build_request("GET", "http://h.example/")
        assert client.send(request).status_code == 200
        # the caller's own timeouts are given back afterwards
        assert request.extensions["timeout"]["read"] == 5.0
    assert seen[0] == {"connect": 1.0, "read": 2.0, "write": 2.0, "pool": 2.0}
    # the second attempt: 2 s of its own, but only 2.5 s left of the total
    assert seen[1] == {"connect": 1.0, "read": 2.0, "write": 2.0, "pool": 2.0}
    assert clock.monotonic() == 1.0


def test_timeouts_that_already_fit_are_left_as_the_caller_gave_them() -> None:
    clock = FakeClock()
    seen: list[object] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.extensions["timeout"])
        return httpx.Response(200)

    options = HostOptions(attempt_timeout=10.0, total_timeout=30.0)
    transport = ResilientTransport(
        httpx.MockTransport(handler), policies=HostPolicies(default=options, clock=clock)
    )
    with httpx.Client(transport=transport, timeout=httpx.Timeout(5.0)) as client:
        request = client.build_request("GET", "http://h.example/")
        given = request.extensions["timeout"]
        assert client.send(request).status_code == 200
    assert seen == [given]
    assert seen[0] is given  # not copied: every timeout ends within the 10 s left


def test_an_idempotency_key_on_a_post_makes_it_retried() -> None:
    clock = FakeClock()
    calls: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request.method)
        return httpx.Response(503 if len(calls) == 1 else 200)

    options = HostOptions(delay=0.0)
    transport = ResilientTransport(
        httpx.MockTransport(handler), policies=HostPolicies(default=options, clock=clock)
    )
    with httpx.Client(transport=transport) as client:
        assert client.post("http://h.example/", content=b"x").status_code == 503
        calls.clear()
        headers = {"Idempotency-Key": "k-1"}
        answer = client.post("http://h.example/", content=b"x", headers=headers)
        assert answer.status_code == 200
    assert calls == ["POST", "POST"]


def test_the_total_timeout_caps_a_later_attempt() -> None:
    clock = FakeClock()
    seen: list[float] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.extensions["timeout"]["read"])
        clock.advance(1.25)
        return httpx.Response(503 if len(seen) == 1 else 200)

    options = HostOptions(attempt_timeout=2.0, total_timeout=3.0, delay=0.0)
    transport = ResilientTransport(
        httpx.MockTransport(handler), policies=HostPolicies(default=options, clock=clock)
    )
    with httpx.Client(transport=transport) as client:
        assert client.get("http://h.example/").status_code == 200
    assert seen == [2.0, 1.75]


def test_a_response_past_the_deadline_is_closed_and_refused() -> None:
    clock = FakeClock()
    body = Body()

    def handler(request: httpx.Request) -> httpx.Response:
        clock.advance(5.0)
        return httpx.Response(200, stream=body)

    options = HostOptions(attempt_timeout=1.0, total_timeout=None, max_attempts=1)
    transport = ResilientTransport(
        httpx.MockTransport(handler), policies=HostPolicies(default=options, clock=clock)
    )
    with httpx.Client(transport=transport) as client, pytest.raises(TimeoutExceeded):
        client.get("http://h.example/")
    assert body.closed


def test_a_503_body_is_drained_before_the_next_attempt() -> None:
    clock = FakeClock()
    bodies: list[Body] = []

    def handler(request: httpx.Request) -> httpx.Response:
        body = Body()
        bodies.append(body)
        # by the time an attempt runs, every earlier body was closed
        assert all(earlier.closed for earlier in bodies[:-1])
        return httpx.Response(503, stream=body)

    transport = ResilientTransport(httpx.MockTransport(handler), policies=HostPolicies(clock=clock))
    with httpx.Client(transport=transport) as client:
        response = client.get("http://h.example/")
    assert response.status_code == 503
    assert response.text == "late"  # the last body is still there to read
    assert len(bodies) == 3


def test_a_pipeline_of_only_a_retry_sends_a_post_as_is() -> None:
    from buttress import Retry

    calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        return httpx.Response(503)

    transport = ResilientTransport(
        httpx.MockTransport(handler), hosts={"h.example": Retry(3, delay=0, reraise=True)}
    )
    with httpx.Client(transport=transport) as client:
        assert client.post("http://h.example/", content=b"x").status_code == 503
        assert calls == 1
        assert client.get("http://h.example/").status_code == 503
        assert calls == 4

"""RequestTimeoutMiddleware on a fake clock: 504 before the response, a cut-off after."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from buttress.clock import FakeClock
from buttress.errors import ConfigError, TimeoutExceeded
from buttress.integrations.asgi import (
    ProblemMiddleware,
    Receive,
    RequestIdMiddleware,
    RequestTimeoutMiddleware,
    Scope,
    Send,
)
from buttress.policies.timeout import Timeout, remaining

from tests.helpers import tick
from tests.unit.integrations.asgi.asgi_calls import Call, call, scope_of


@pytest.fixture
def manual() -> FakeClock:
    return FakeClock(auto_advance=False)


class Held:
    """An app that answers only when released; it records what it saw."""

    def __init__(self, *, start_first: bool = False) -> None:
        self.release = asyncio.Event()
        self.entered = asyncio.Event()
        self.start_first = start_first
        self.budget: float | None = None
        self.cancelled = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.budget = remaining()
        self.entered.set()
        if self.start_first:
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"part", "more_body": True})
        try:
            await self.release.wait()
        except asyncio.CancelledError:
            self.cancelled = True
            raise
        if not self.start_first:
            await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"done"})


async def start(app: Any, path: str = "/") -> tuple[Call, asyncio.Task[Call]]:
    attempt = Call(app, scope_of(path), [{"type": "http.request", "body": b""}])
    task = asyncio.create_task(attempt.run())
    await tick(3)
    return attempt, task


async def test_a_request_past_its_limit_gets_a_504(manual: FakeClock) -> None:
    held = Held()
    app = RequestIdMiddleware(RequestTimeoutMiddleware(held, 5.0, clock=manual))
    attempt, task = await start(app, "/slow")
    assert held.entered.is_set()
    # The request's budget is the one every buttress wait inside sees.
    assert held.budget == 5.0
    manual.advance(4.9)
    await tick(3)
    assert not task.done()
    manual.advance(0.1)
    await task
    assert held.cancelled
    assert attempt.status == 504
    assert attempt.headers["content-type"] == "application/problem+json"
    body = attempt.json()
    assert body["detail"] == "The request did not complete within 5 s."
    assert body["instance"] == "/slow"
    assert body["request_id"] == attempt.headers["x-request-id"]


async def test_a_request_in_time_is_untouched(manual: FakeClock) -> None:
    held = Held()
    attempt, task = await start(RequestTimeoutMiddleware(held, 5.0, clock=manual))
    held.release.set()
    await task
    assert attempt.status == 200
    assert attempt.body == b"done"
    assert manual.pending_timers == 0


async def test_after_the_response_started_the_request_is_cut_off(manual: FakeClock) -> None:
    held = Held(start_first=True)
    attempt, task = await start(RequestTimeoutMiddleware(held, 5.0, clock=manual))
    manual.advance(5.0)
    with pytest.raises(TimeoutExceeded):
        await task
    assert held.cancelled
    # One response start, never a second: the server closes the connection.
    assert [m["type"] for m in attempt.sent] == ["http.response.start", "http.response.body"]
    assert attempt.sent[-1]["more_body"] is True


async def test_paths_have_limits_of_their_own(manual: FakeClock) -> None:
    held = Held()
    middleware = RequestTimeoutMiddleware(
        held, 5.0, paths={"/reports/**": 60, "/events/stream": None}, clock=manual
    )
    attempt, task = await start(middleware, "/reports/2026/q1")
    assert held.budget == 60.0
    manual.advance(30)
    await tick(3)
    assert not task.done()
    manual.advance(30)
    await task
    assert attempt.status == 504
    assert attempt.json()["detail"] == "The request did not complete within 60 s."

    streaming = Held()
    middleware = RequestTimeoutMiddleware(
        streaming, 5.0, paths=[("/events/stream", None)], clock=manual
    )
    attempt, task = await start(middleware, "/events/stream")
    assert streaming.budget is None
    manual.advance(3600)
    await tick(3)
    assert not task.done()
    streaming.release.set()
    await task
    assert attempt.status == 200


async def test_the_first_matching_path_wins() -> None:
    middleware = RequestTimeoutMiddleware(
        Held(), 5.0, paths=[("/a/b", 1.0), ("/a/**", 2.0)], name="api"
    )
    assert [
        None if p is None else (p.seconds, p.name)
        for p in map(middleware.timeout_for, ["/a/b", "/a/c", "/z"])
    ] == [(1.0, "api:/a/b"), (2.0, "api:/a/**"), (5.0, "api")]
    assert RequestTimeoutMiddleware(Held(), None).timeout_for("/") is None


async def test_another_timeouts_error_is_the_applications(manual: FakeClock) -> None:
    inner = Timeout(1.0, name="payments", clock=manual)

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        async with inner:
            await asyncio.Event().wait()

    attempt, task = await start(RequestTimeoutMiddleware(app, 5.0, clock=manual))
    manual.advance(1.0)
    with pytest.raises(TimeoutExceeded) as info:
        await task
    assert info.value.name == "payments"
    assert attempt.sent == []
    # With a ProblemMiddleware inside, it is an ordinary 504 of the application.
    mapped = RequestTimeoutMiddleware(ProblemMiddleware(app), 5.0, clock=manual)
    attempt, task = await start(mapped)
    manual.advance(1.0)
    await task
    assert attempt.status == 504


async def test_non_http_scopes_pass_through(manual: FakeClock) -> None:
    seen: list[float | None] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append(remaining())

    middleware = RequestTimeoutMiddleware(app, 5.0, clock=manual)
    await call(middleware, kind="websocket")
    await call(middleware, kind="lifespan")
    assert seen == [None, None]


@pytest.mark.parametrize(
    ("args", "options", "path"),
    [
        ((0,), {}, "timeout"),
        ((-1,), {}, "timeout"),
        (("5",), {}, "timeout"),
        ((5,), {"paths": {"/a": 0}}, "paths['/a']"),
        ((5,), {"paths": {"no-slash": 1}}, "paths['no-slash']"),
        ((5,), {"name": ""}, "name"),
    ],
)
def test_bad_options_are_refused(args: tuple[Any, ...], options: dict[str, Any], path: str) -> None:
    with pytest.raises(ConfigError) as info:
        RequestTimeoutMiddleware(Held(), *args, **options)
    assert info.value.path == path

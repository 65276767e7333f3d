"""Drain and GracefulShutdownMiddleware: stop intake, wait for work up to a grace, cancel."""

from __future__ import annotations

import asyncio
import inspect
import logging
import pickle
from typing import Any

import pytest

from buttress.clock import FakeClock
from buttress.errors import ConfigError, Rejected
from buttress.integrations.asgi import (
    Drain,
    DrainReport,
    GracefulShutdownMiddleware,
    Message,
    Receive,
    RequestIdMiddleware,
    Scope,
    Send,
    ShuttingDown,
)

from tests.helpers import tick
from tests.unit.integrations.asgi.asgi_calls import Call, call, scope_of


@pytest.fixture
def manual() -> FakeClock:
    return FakeClock(auto_advance=False)


async def hold(event: asyncio.Event, drain: Drain) -> None:
    async with drain.track():
        await event.wait()


async def test_shutdown_waits_for_work_that_ends_in_time(manual: FakeClock) -> None:
    drain = Drain(30.0, clock=manual)
    release = asyncio.Event()
    tasks = [asyncio.create_task(hold(release, drain)) for _ in range(3)]
    await tick()
    assert drain.in_flight == 3
    stopping = asyncio.create_task(drain.shutdown())
    await tick()
    assert not drain.accepting
    assert not stopping.done()
    manual.advance(29.0)
    release.set()
    assert await stopping == DrainReport(finished=3, cancelled=0, abandoned=0)
    assert all(task.done() and not task.cancelled() for task in tasks)
    assert manual.pending_timers == 0


async def test_work_left_at_the_end_of_the_grace_is_cancelled(
    manual: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    drain = Drain(10.0, clock=manual)
    quick, stuck = asyncio.Event(), asyncio.Event()
    done = asyncio.create_task(hold(quick, drain))
    left = asyncio.create_task(hold(stuck, drain))
    await tick()
    stopping = asyncio.create_task(drain.shutdown())
    await tick()
    quick.set()
    await tick(3)
    assert not stopping.done()
    manual.advance(10.0)
    assert await stopping == DrainReport(finished=1, cancelled=1, abandoned=0)
    assert not done.cancelled()
    assert left.cancelled()
    assert "1 task(s) still running after 10s: cancelled" in caplog.text


async def test_work_that_ignores_its_cancellation_is_abandoned(manual: FakeClock) -> None:
    drain = Drain(1.0, cancel_timeout=2.0, clock=manual)
    finish = asyncio.Event()

    async def stubborn() -> None:
        async with drain.track():
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                await finish.wait()  # cleaning up, for longer than it may

    task = asyncio.create_task(stubborn())
    await tick()
    stopping = asyncio.create_task(drain.shutdown())
    await tick()
    manual.advance(1.0)
    await tick(3)
    assert not stopping.done()
    manual.advance(2.0)
    assert await stopping == DrainReport(finished=0, cancelled=0, abandoned=1)
    finish.set()
    await task
    assert drain.in_flight == 0


async def test_a_closed_drain_takes_no_new_work() -> None:
    drain = Drain()
    waiter = asyncio.create_task(drain.wait_closed())
    await tick()
    assert not waiter.done()
    drain.close()
    drain.close()  # idempotent
    await waiter
    await drain.wait_closed()  # returns at once once closed
    with pytest.raises(ShuttingDown) as info:
        async with drain.track():
            pass  # pragma: no cover
    assert isinstance(info.value, Rejected)

    async def work() -> None:
        pass  # pragma: no cover - never started

    coro = work()
    with pytest.raises(ShuttingDown):
        drain.spawn(coro)
    assert inspect.getcoroutinestate(coro) == "CORO_CLOSED"  # closed, so no "never awaited" warning
    assert await drain.shutdown() == DrainReport(0, 0, 0)


async def test_spawned_workers_are_drained(
    manual: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    drain = Drain(5.0, clock=manual)
    handled: list[int] = []
    queue: asyncio.Queue[int] = asyncio.Queue()

    async def worker() -> None:
        # The worker's loop: take messages until the drain closes, finish the one in hand.
        closing = asyncio.ensure_future(drain.wait_closed())
        while True:
            getting = asyncio.ensure_future(queue.get())
            await asyncio.wait((getting, closing), return_when=asyncio.FIRST_COMPLETED)
            if not getting.done():
                getting.cancel()
                return
            handled.append(getting.result())

    async def failing() -> None:
        raise RuntimeError("worker bug")

    task = drain.spawn(worker(), name="worker")
    broken = drain.spawn(failing(), name="broken")
    await tick(3)
    assert broken.done()
    assert "task 'broken' of drain 'drain' failed" in caplog.text
    for number in (1, 2):
        queue.put_nowait(number)
    await tick(3)
    report = await drain.shutdown()
    assert report == DrainReport(finished=1, cancelled=0, abandoned=0)
    assert handled == [1, 2]
    assert task.done()


async def test_the_caller_of_shutdown_is_not_waited_for(manual: FakeClock) -> None:
    drain = Drain(5.0, clock=manual)
    async with drain.track():
        assert await drain.shutdown() == DrainReport(0, 0, 0)
    assert drain.in_flight == 0


async def test_nested_tracking_counts_the_task_once() -> None:
    drain = Drain()
    async with drain.track():
        async with drain.track():
            assert drain.in_flight == 1
        assert drain.in_flight == 1
    assert drain.in_flight == 0


def test_shutting_down_pickles_and_bad_options_are_refused() -> None:
    again = pickle.loads(pickle.dumps(ShuttingDown("api", 5.0)))
    assert (again.name, again.retry_after) == ("api", 5.0)
    for options, path in (
        ({"grace": -1}, "grace"),
        ({"cancel_timeout": "5"}, "cancel_timeout"),
        ({"name": ""}, "name"),
    ):
        with pytest.raises(ConfigError) as info:
            Drain(**options)
        assert info.value.path == path
    with pytest.raises(ConfigError) as info:
        GracefulShutdownMiddleware(app_of(asyncio.Event()), drain="drain")  # type: ignore[arg-type]
    assert info.value.path == "drain"


# ---------------------------------------------------------------------- middleware


def app_of(release: asyncio.Event, log: list[str] | None = None) -> Any:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                assert log is not None
                log.append(message["type"])
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                else:
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        await release.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    return app


async def test_while_draining_new_requests_get_503_and_old_ones_finish(manual: FakeClock) -> None:
    drain = Drain(30.0, clock=manual)
    release = asyncio.Event()
    app = RequestIdMiddleware(GracefulShutdownMiddleware(app_of(release), drain, retry_after=7))
    first = Call(app, scope_of("/a"), [{"type": "http.request", "body": b""}])
    running = asyncio.create_task(first.run())
    await tick(3)
    assert drain.in_flight == 1
    drain.close()
    refused = await call(app, "/b")
    assert refused.status == 503
    assert refused.headers["connection"] == "close"
    assert refused.headers["retry-after"] == "7"
    assert refused.headers["content-type"] == "application/problem+json"
    assert refused.json()["request_id"] == refused.headers["x-request-id"]
    release.set()
    await running
    assert first.status == 200
    # Keep-alive clients go elsewhere for their next request.
    assert first.headers["connection"] == "close"
    assert drain.in_flight == 0


async def test_responses_before_the_drain_keep_their_connection() -> None:
    release = asyncio.Event()
    release.set()
    done = await call(GracefulShutdownMiddleware(app_of(release)))
    assert "connection" not in done.headers


async def test_lifespan_shutdown_drains_before_the_application_hears_of_it(
    manual: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="buttress.integrations.asgi")
    drain = Drain(10.0, clock=manual)
    release = asyncio.Event()
    log: list[str] = []
    app = GracefulShutdownMiddleware(app_of(release, log), drain)
    in_flight = asyncio.create_task(call(app, "/slow"))
    await tick(3)
    messages = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
    sent: list[Message] = []

    async def receive() -> Message:
        return messages.pop(0)

    async def send(message: Message) -> None:
        sent.append(message)

    lifespan = asyncio.create_task(app({"type": "lifespan"}, receive, send))
    await tick(5)
    # The application has not heard of the shutdown: a request is still in flight.
    assert log == ["lifespan.startup"]
    assert not drain.accepting
    manual.advance(10.0)
    await lifespan
    assert log == ["lifespan.startup", "lifespan.shutdown"]
    assert in_flight.cancelled()
    assert "drain 'drain': 0 finished, 1 cancelled, 0 abandoned" in caplog.text


async def test_websockets_are_refused_while_draining() -> None:
    drain = Drain()
    drain.close()
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "websocket.connect"}

    async def send(message: Message) -> None:
        sent.append(message)

    await GracefulShutdownMiddleware(app_of(asyncio.Event()), drain)(
        scope_of("/ws", kind="websocket"), receive, send
    )
    assert sent == [{"type": "websocket.close", "code": 1013, "reason": "shutting down"}]


async def test_other_scopes_pass_through() -> None:
    seen: list[str] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append(scope["type"])

    drain = Drain()
    drain.close()
    await call(GracefulShutdownMiddleware(app, drain), kind="custom")
    assert seen == ["custom"]

"""The ASGI middlewares under a real server: uvicorn on 127.0.0.1, httpx as the client.

What depends on the server is checked here: headers on the wire, a connection cut
off when a response cannot be finished, ``Connection: close`` while draining, and
the lifespan shutdown that drains the application's workers.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, StreamingResponse
from starlette.routing import Route

from buttress.clock import FakeClock
from buttress.integrations.asgi import (
    Drain,
    GracefulShutdownMiddleware,
    NotFound,
    ProblemMiddleware,
    RequestIdMiddleware,
    RequestTimeoutMiddleware,
)

pytestmark = pytest.mark.integration

SECRET = "dsn=postgresql://app:s3cret@db/prod"


@asynccontextmanager
async def serving(app: Any) -> AsyncIterator[tuple[httpx.AsyncClient, uvicorn.Server]]:
    """``app`` under uvicorn on an ephemeral loopback port, and a client for it."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    # Listening before uvicorn starts: early connections wait in the backlog.
    sock.listen(64)
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, lifespan="on", log_config=None, access_log=False)
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{port}", trust_env=False, timeout=30.0
        ) as client:
            yield client, server
    finally:
        server.should_exit = True
        await task
        sock.close()


class Gate:
    """Holds requests in flight until the test opens it; tells when one arrived."""

    def __init__(self) -> None:
        self.entered = asyncio.Event()
        self.open = asyncio.Event()

    async def wait(self) -> None:
        self.entered.set()
        await self.open.wait()


def app_with(routes: list[Route], *middleware: Middleware, **options: Any) -> Starlette:
    return Starlette(routes=routes, middleware=list(middleware), **options)


async def test_ids_and_problems_on_the_wire(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="buttress.integrations.asgi")

    async def hello(request: Request) -> PlainTextResponse:
        return PlainTextResponse(request.state.request_id)

    async def missing(request: Request) -> PlainTextResponse:
        raise NotFound("no such order")

    async def crash(request: Request) -> PlainTextResponse:
        raise RuntimeError(SECRET)

    app = app_with(
        [Route("/", hello), Route("/missing", missing), Route("/crash", crash)],
        Middleware(RequestIdMiddleware),
        Middleware(ProblemMiddleware),
    )
    async with serving(app) as (client, _):
        generated = await client.get("/")
        kept = await client.get("/", headers={"X-Request-ID": "edge-7", "X-Correlation-ID": "c-1"})
        replaced = await client.get("/", headers={"X-Request-ID": "x" * 500})
        missing_one = await client.get("/missing")
        crashed = await client.get("/crash", headers={"X-Request-ID": "req-crash"})
    assert generated.text == generated.headers["x-request-id"]
    assert len(generated.text) == 36
    assert (kept.text, kept.headers["x-correlation-id"]) == ("edge-7", "c-1")
    assert replaced.headers["x-request-id"] != "x" * 500
    assert len(replaced.headers["x-request-id"]) == 36
    assert missing_one.status_code == 404
    assert missing_one.headers["content-type"] == "application/problem+json"
    assert missing_one.json()["detail"] == "no such order"
    assert crashed.status_code == 500
    assert crashed.json() == {
        "type": "about:blank",
        "title": "Internal Server Error",
        "status": 500,
        "instance": "/crash",
        "request_id": "req-crash",
    }
    assert "s3cret" not in crashed.text
    (record,) = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert "req-crash" in record.getMessage()
    assert record.exc_info is not None
    assert SECRET in caplog.text  # the traceback, in the log only


async def test_an_error_mid_stream_cuts_the_connection(caplog: pytest.LogCaptureFixture) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b"first part\n"
        raise RuntimeError("the stream broke")

    async def stream(request: Request) -> StreamingResponse:
        return StreamingResponse(chunks())

    app = app_with(
        [Route("/stream", stream)], Middleware(RequestIdMiddleware), Middleware(ProblemMiddleware)
    )
    async with serving(app) as (client, _):
        with pytest.raises(httpx.RemoteProtocolError):
            await client.get("/stream", headers={"X-Request-ID": "req-stream"})
        # The server is fine: the next request on a new connection is served.
        assert (await client.get("/missing-route")).status_code == 404
    ours = [r for r in caplog.records if r.name == "buttress.integrations.asgi"]
    assert len(ours) == 1
    assert "req-stream" in ours[0].getMessage()
    assert "started" in ours[0].getMessage()


async def test_request_timeout_on_the_wire() -> None:
    clock = FakeClock(auto_advance=False)
    gate = Gate()

    async def slow(request: Request) -> PlainTextResponse:
        await gate.wait()
        return PlainTextResponse("late")  # pragma: no cover - cancelled first

    async def stream(request: Request) -> StreamingResponse:
        async def chunks() -> AsyncIterator[bytes]:
            yield b"first part\n"
            await gate.wait()
            yield b"never"  # pragma: no cover

        return StreamingResponse(chunks())

    app = app_with(
        [Route("/slow", slow), Route("/stream", stream)],
        Middleware(RequestIdMiddleware),
        Middleware(ProblemMiddleware),
        Middleware(RequestTimeoutMiddleware, timeout=5.0, clock=clock),
    )
    async with serving(app) as (client, _):
        pending = asyncio.create_task(client.get("/slow"))
        await gate.entered.wait()
        clock.advance(5.0)
        response = await pending
        assert response.status_code == 504
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["detail"] == "The request did not complete within 5 s."
        assert response.json()["request_id"] == response.headers["x-request-id"]

        gate.entered.clear()

        async def read_stream() -> None:
            async with client.stream("GET", "/stream") as streamed:
                assert streamed.status_code == 200
                async for _ in streamed.aiter_bytes():
                    pass

        reading = asyncio.create_task(read_stream())
        await gate.entered.wait()
        clock.advance(5.0)
        with pytest.raises(httpx.RemoteProtocolError):
            await reading


class WatchedDrain(Drain):
    """A Drain that tells the test when its shutdown began."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.shutting_down = asyncio.Event()

    async def shutdown(self, grace: float | None = None) -> Any:
        self.shutting_down.set()
        return await super().shutdown(grace)


async def test_graceful_shutdown_drains_requests_and_workers(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="buttress.integrations.asgi")
    clock = FakeClock(auto_advance=False)
    drain = WatchedDrain(30.0, clock=clock)
    gate = Gate()
    worker_log: list[str] = []

    async def slow(request: Request) -> PlainTextResponse:
        await gate.wait()
        return PlainTextResponse("finished")

    async def fast(request: Request) -> PlainTextResponse:
        return PlainTextResponse("fast")

    async def worker() -> None:
        await drain.wait_closed()
        worker_log.append("stopped taking work")

    async def stuck_worker() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            worker_log.append("cancelled")
            raise

    app = app_with(
        [Route("/slow", slow), Route("/fast", fast)],
        Middleware(RequestIdMiddleware),
        Middleware(GracefulShutdownMiddleware, drain=drain, retry_after=3),
    )
    async with serving(app) as (client, server):
        drain.spawn(worker(), name="worker")
        stuck = drain.spawn(stuck_worker(), name="stuck")
        assert (await client.get("/fast")).headers.get("connection") != "close"
        in_flight = asyncio.create_task(client.get("/slow"))
        await gate.entered.wait()
        drain.close()
        refused = await client.get("/fast")
        assert refused.status_code == 503
        assert refused.headers["connection"] == "close"
        assert refused.headers["retry-after"] == "3"
        assert refused.json()["detail"] == "The service is shutting down; try again."
        gate.open.set()
        finished = await in_flight
        assert (finished.status_code, finished.text) == (200, "finished")
        assert finished.headers["connection"] == "close"
        assert worker_log == ["stopped taking work"]
        # The server stops; its lifespan shutdown runs the drain, which waits for
        # the stuck worker until the grace period ends, then cancels it.
        server.should_exit = True
        await drain.shutting_down.wait()
        assert not stuck.done()
        clock.advance(30.0)
    assert stuck.cancelled()
    assert worker_log == ["stopped taking work", "cancelled"]
    assert "drain 'drain': 0 finished, 1 cancelled, 0 abandoned" in caplog.text

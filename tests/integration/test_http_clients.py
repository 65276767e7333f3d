"""The httpx transports and the aiohttp middleware against a real local server.

Every behaviour runs for the three clients: httpx sync, httpx async, aiohttp. The
server (uvicorn on 127.0.0.1) fails in scripted ways; the policies' waits run on a
fake clock, except where a real socket must time out (slow, hang), where the
attempt timeout is short. Every client has a pool of ONE connection: a response a
retry failed to release would leave the next attempt waiting for the pool, which
ends in a timeout error rather than a pass.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import httpx
import pytest

from buttress.clock import MONOTONIC, Clock, FakeClock
from buttress.errors import CircuitOpen, TimeoutExceeded
from buttress.integrations import aiohttp as buttress_aiohttp
from buttress.integrations import httpx as buttress_httpx
from buttress.integrations._http import HostOptions, HostPolicies
from buttress.policies.circuit import CircuitBreaker

from ._http_server import ResetServer, ScriptedServer
from tests.helpers import tick

pytestmark = pytest.mark.integration

KINDS = ["httpx-sync", "httpx-async", "aiohttp"]


@pytest.fixture(scope="module")
def server() -> Iterator[ScriptedServer]:
    running = ScriptedServer().start()
    yield running
    running.stop()


class Client:
    """One client of ``kind`` with the buttress integration, one pooled connection."""

    def __init__(self, kind: str, policies: HostPolicies) -> None:
        self.kind = kind
        self.policies = policies
        self._sync: httpx.Client | None = None
        self._async: httpx.AsyncClient | None = None
        self._session: aiohttp.ClientSession | None = None
        limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
        if kind == "httpx-sync":
            inner = httpx.HTTPTransport(limits=limits)
            transport = buttress_httpx.ResilientTransport(inner, policies=policies)
            self._sync = httpx.Client(transport=transport, timeout=5.0)
        elif kind == "httpx-async":
            ainner = httpx.AsyncHTTPTransport(limits=limits)
            atransport = buttress_httpx.AsyncResilientTransport(ainner, policies=policies)
            self._async = httpx.AsyncClient(transport=atransport, timeout=5.0)

    async def __aenter__(self) -> Client:
        if self.kind == "aiohttp":
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=1),
                timeout=aiohttp.ClientTimeout(total=5.0),
                middlewares=[buttress_aiohttp.ResilientMiddleware(policies=self.policies)],
            )
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._sync is not None:
            self._sync.close()
        if self._async is not None:
            await self._async.aclose()
        if self._session is not None:
            await self._session.close()

    async def request(
        self, method: str, url: str, *, body: Any = b"", headers: dict[str, str] | None = None
    ) -> tuple[int, str]:
        """Send; return the status and the body text."""
        if self._sync is not None:
            content = body() if callable(body) else body
            response = self._sync.request(method, url, content=content, headers=headers)
            return response.status_code, response.text
        if self._async is not None:
            content = body() if callable(body) else body
            aresponse = await self._async.request(method, url, content=content, headers=headers)
            return aresponse.status_code, aresponse.text
        assert self._session is not None
        data = body() if callable(body) else body
        async with self._session.request(method, url, data=data, headers=headers) as response:
            return response.status, await response.text()


def policies(clock: Clock, **options: Any) -> HostPolicies:
    return HostPolicies(default=HostOptions(**options), clock=clock)


def streamed(kind: str) -> Any:
    """A body that can be sent only once: a generator, in the client's flavour."""
    if kind == "httpx-sync":

        def chunks() -> Iterator[bytes]:
            yield b"streamed"

        return chunks

    async def achunks() -> AsyncIterator[bytes]:
        yield b"streamed"

    return achunks


@pytest.mark.parametrize("kind", KINDS)
async def test_503_then_200_is_retried(kind: str, server: ScriptedServer, clock: FakeClock) -> None:
    url = server.script(503, 503, 200)
    async with Client(kind, policies(clock)) as client:
        assert await client.request("GET", url) == (200, "200")
    assert server.seen(url) == 3
    assert len(clock.sleeps) == 2


@pytest.mark.parametrize("kind", KINDS)
async def test_429_waits_for_its_retry_after(
    kind: str, server: ScriptedServer, clock: FakeClock
) -> None:
    url = server.script((429, {"Retry-After": "7"}), 200)
    async with Client(kind, policies(clock)) as client:
        assert await client.request("GET", url) == (200, "200")
    assert server.seen(url) == 2
    assert clock.sleeps == [7.0]


@pytest.mark.parametrize("kind", KINDS)
async def test_a_retry_after_beyond_max_delay_returns_the_429(
    kind: str, server: ScriptedServer, clock: FakeClock
) -> None:
    url = server.script((429, {"Retry-After": "120"}), 200)
    async with Client(kind, policies(clock, max_delay=10.0)) as client:
        assert await client.request("GET", url) == (429, "429")
    assert server.seen(url) == 1
    assert clock.sleeps == []


@pytest.mark.parametrize("kind", KINDS)
async def test_retries_run_out_with_the_last_response_and_its_body(
    kind: str, server: ScriptedServer, clock: FakeClock
) -> None:
    url = server.script(503)
    async with Client(kind, policies(clock, max_attempts=3, min_calls=10)) as client:
        assert await client.request("GET", url) == (503, "503")
    assert server.seen(url) == 3


@pytest.mark.parametrize("kind", KINDS)
async def test_a_connection_reset_is_retried(kind: str, clock: FakeClock) -> None:
    reset = ResetServer(resets=1).start()
    try:
        async with Client(kind, policies(clock)) as client:
            assert await client.request("GET", reset.url) == (200, "ok")
        assert reset.connections == 2
    finally:
        reset.stop()


@pytest.mark.parametrize("kind", KINDS)
async def test_a_slow_attempt_is_cut_off_and_retried(kind: str, server: ScriptedServer) -> None:
    url = server.script("slow:2", 200)
    options = policies(MONOTONIC, attempt_timeout=0.3, delay=0.0)
    async with Client(kind, options) as client:
        assert await client.request("GET", url) == (200, "200")
    assert server.seen(url) == 2


@pytest.mark.parametrize("kind", KINDS)
async def test_hanging_attempts_time_out_and_open_the_breaker(
    kind: str, server: ScriptedServer
) -> None:
    url = server.script("hang")
    options = policies(MONOTONIC, attempt_timeout=0.2, max_attempts=1, consecutive_failures=2)
    async with Client(kind, options) as client:
        for _ in range(2):
            with pytest.raises((TimeoutExceeded, httpx.TimeoutException)):
                await client.request("GET", url)
        with pytest.raises(CircuitOpen):
            await client.request("GET", url)
    assert server.seen(url) == 2


@pytest.mark.parametrize("kind", KINDS)
async def test_5xx_open_the_breaker_and_stop_traffic(
    kind: str, server: ScriptedServer, clock: FakeClock
) -> None:
    url = server.script(500)
    options = policies(clock, max_attempts=1, consecutive_failures=3)
    async with Client(kind, options) as client:
        for _ in range(3):
            assert await client.request("GET", url) == (500, "500")
        for _ in range(5):
            with pytest.raises(CircuitOpen):
                await client.request("GET", url)
        breaker = next(
            s
            for s in options.lookup("http", "127.0.0.1", server.port).pipeline
            if isinstance(s, CircuitBreaker)
        )
        assert breaker.state == "open"
        assert breaker.name == f"http://127.0.0.1:{server.port} breaker"
    assert server.seen(url) == 3


@pytest.mark.parametrize("kind", KINDS)
async def test_404s_never_trip_the_breaker(
    kind: str, server: ScriptedServer, clock: FakeClock
) -> None:
    url = server.script(404)
    options = policies(clock, consecutive_failures=2, min_calls=2, window=4)
    async with Client(kind, options) as client:
        for _ in range(12):
            assert await client.request("GET", url) == (404, "404")
    assert server.seen(url) == 12
    assert clock.sleeps == []


@pytest.mark.parametrize("kind", KINDS)
async def test_a_post_without_idempotency_key_is_not_retried(
    kind: str, server: ScriptedServer, clock: FakeClock
) -> None:
    url = server.script(503, 200)
    async with Client(kind, policies(clock)) as client:
        assert await client.request("POST", url, body=b"order") == (503, "503")
        assert server.seen(url) == 1
        # The breaker still saw it: a non-retried request keeps the other policies.
        assert await client.request("PATCH", url, body=b"x") == (200, "200")


@pytest.mark.parametrize("kind", KINDS)
async def test_a_post_with_an_idempotency_key_is_retried(
    kind: str, server: ScriptedServer, clock: FakeClock
) -> None:
    url = server.script(503, 200)
    async with Client(kind, policies(clock)) as client:
        status = await client.request(
            "POST", url, body=b"order", headers={"Idempotency-Key": "k-1"}
        )
    assert status == (200, "200")
    assert server.bodies(url) == [b"order", b"order"]


@pytest.mark.parametrize("kind", KINDS)
async def test_a_caller_can_opt_in_to_retrying_posts(
    kind: str, server: ScriptedServer, clock: FakeClock
) -> None:
    url = server.script(503, 200)
    options = HostPolicies(default=HostOptions(), retry_non_idempotent=True, clock=clock)
    async with Client(kind, options) as client:
        assert await client.request("POST", url, body=b"order") == (200, "200")
    assert server.seen(url) == 2


@pytest.mark.parametrize("kind", KINDS)
async def test_a_streamed_body_is_sent_once(
    kind: str, server: ScriptedServer, clock: FakeClock
) -> None:
    url = server.script(503, 200)
    async with Client(kind, policies(clock)) as client:
        assert await client.request("PUT", url, body=streamed(kind)) == (503, "503")
    assert server.bodies(url) == [b"streamed"]


@pytest.mark.parametrize("kind", KINDS)
async def test_a_host_configured_in_toml_through_the_registry(
    kind: str, server: ScriptedServer, clock: FakeClock
) -> None:
    from buttress.registry import Registry

    registry = Registry.from_mapping(
        {
            "pipelines": {
                "local-api": {
                    "policies": [
                        {"type": "retry", "max_attempts": 2, "delay": 0, "reraise": True},
                        {"type": "circuit_breaker", "consecutive_failures": 5},
                    ]
                }
            }
        }
    )
    options = HostPolicies(
        {f"http://127.0.0.1:{server.port}": "local-api"}, registry=registry, clock=clock
    )
    url = server.script(502, 502, 200)
    async with Client(kind, options) as client:
        assert await client.request("GET", url) == (502, "502")
    assert server.seen(url) == 2  # two attempts, as the registry's pipeline says


async def test_the_async_transports_share_their_policies(
    server: ScriptedServer, clock: FakeClock
) -> None:
    shared = policies(clock, max_attempts=1, consecutive_failures=2)
    url = server.script(503)
    async with Client("httpx-async", shared) as first, Client("aiohttp", shared) as second:
        assert await first.request("GET", url) == (503, "503")
        assert await second.request("GET", url) == (503, "503")
        with pytest.raises(CircuitOpen):
            await first.request("GET", url)
    assert server.seen(url) == 2
    assert shared.origins() == [f"http://127.0.0.1:{server.port}"]


async def test_cancelling_a_request_cancels_it(server: ScriptedServer) -> None:
    url = server.script("hang")
    async with Client("aiohttp", policies(MONOTONIC)) as client:
        task = asyncio.ensure_future(client.request("GET", url))
        while server.seen(url) == 0:
            await tick()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

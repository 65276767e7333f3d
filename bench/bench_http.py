"""HTTP clients with the default per-host pipeline vs the bare client vs tenacity +
pybreaker (aiobreaker for async) around the same client, on GETs to a local server.

Each pyperf process starts its own server: uvicorn serving a plain ASGI app that
answers ``200 ok``, in a subprocess on 127.0.0.1 (so the server does not share the
client's GIL). Every contender uses one keep-alive connection pool. The issue's
target is *≤ 5 % over the bare client*, and ahead of the tenacity + pybreaker stack.
"""

from __future__ import annotations

import asyncio
import atexit
import os
import socket
import subprocess
import sys
import threading
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))

SYNC = "httpx GET, local server (sync)"
ASYNC = "httpx GET, local server (async)"
AIO = "aiohttp GET, local server (async)"
NOTE = "target: at most 5 % over bare"

APP = """
async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-length", b"2"), (b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"ok"})
"""

_server: dict[str, Any] = {}


def url() -> str:
    """The server's URL, starting it on first use (once per process)."""
    if "url" not in _server:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        code = (
            APP
            + "\nimport uvicorn\n"
            + f"uvicorn.run(app, host='127.0.0.1', port={port}, log_level='error', "
            + "access_log=False, lifespan='off')\n"
        )
        proc = subprocess.Popen([sys.executable, "-c", code])
        atexit.register(proc.kill)
        deadline = time.monotonic() + 20
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("the benchmark server did not start") from None
                threading.Event().wait(0.05)
        _server["url"] = f"http://127.0.0.1:{port}/ok"
    return str(_server["url"])


# ------------------------------------------------------------------------ httpx sync


def bare_sync():  # type: ignore[no-untyped-def]
    import httpx

    client = httpx.Client(transport=httpx.HTTPTransport())
    target = url()

    def get() -> None:
        client.get(target).raise_for_status()

    return get


def buttress_sync():  # type: ignore[no-untyped-def]
    import httpx

    from buttress.integrations.httpx import ResilientTransport

    client = httpx.Client(transport=ResilientTransport(httpx.HTTPTransport()))
    target = url()

    def get() -> None:
        client.get(target).raise_for_status()

    return get


def _transient(exc: BaseException) -> bool:
    import httpx

    return isinstance(exc, httpx.TransportError)


def _server_error(response: Any) -> bool:
    status = response.status_code if hasattr(response, "status_code") else response.status
    return bool(status >= 500 or status in (408, 425, 429))


def tenacity_sync():  # type: ignore[no-untyped-def]
    import httpx
    import pybreaker
    import tenacity

    client = httpx.Client(transport=httpx.HTTPTransport(), timeout=10.0)
    breaker = pybreaker.CircuitBreaker(fail_max=5, reset_timeout=30)
    slots = threading.BoundedSemaphore(100)
    target = url()

    def once() -> Any:
        with slots:
            response = client.get(target)
        if response.status_code >= 500:
            raise httpx.HTTPStatusError("server error", request=response.request, response=response)
        return response

    @tenacity.retry(
        stop=tenacity.stop_after_attempt(3) | tenacity.stop_after_delay(30),
        wait=tenacity.wait_random_exponential(multiplier=0.1, max=10),
        retry=tenacity.retry_if_exception(_transient) | tenacity.retry_if_result(_server_error),
        reraise=True,
    )
    def get() -> Any:
        response = breaker.call(once)
        response.raise_for_status()
        return response

    return get


# ----------------------------------------------------------------------- httpx async


def bare_async():  # type: ignore[no-untyped-def]
    import httpx

    client = httpx.AsyncClient(transport=httpx.AsyncHTTPTransport())
    target = url()

    async def get() -> None:
        (await client.get(target)).raise_for_status()

    return get


def buttress_async():  # type: ignore[no-untyped-def]
    import httpx

    from buttress.integrations.httpx import AsyncResilientTransport

    client = httpx.AsyncClient(transport=AsyncResilientTransport(httpx.AsyncHTTPTransport()))
    target = url()

    async def get() -> None:
        (await client.get(target)).raise_for_status()

    return get


def _tenacity_async(send: Any) -> Any:
    """tenacity + aiobreaker + a semaphore + asyncio.timeout around ``send()``."""
    import aiobreaker
    import tenacity

    breaker = aiobreaker.CircuitBreaker(fail_max=5)
    holder: dict[str, asyncio.Semaphore] = {}

    async def once() -> Any:
        slots = holder.get("slots")
        if slots is None:
            slots = holder["slots"] = asyncio.Semaphore(100)
        async with slots, asyncio.timeout(10.0):
            return await send()

    @tenacity.retry(
        stop=tenacity.stop_after_attempt(3) | tenacity.stop_after_delay(30),
        wait=tenacity.wait_random_exponential(multiplier=0.1, max=10),
        retry=tenacity.retry_if_exception(_transient) | tenacity.retry_if_result(_server_error),
        reraise=True,
    )
    async def get() -> Any:
        return await breaker.call_async(once)

    return get


def tenacity_async():  # type: ignore[no-untyped-def]
    import httpx

    client = httpx.AsyncClient(transport=httpx.AsyncHTTPTransport())
    target = url()

    async def send() -> Any:
        response = await client.get(target)
        response.raise_for_status()
        return response

    return _tenacity_async(send)


# --------------------------------------------------------------------------- aiohttp


def _aiohttp(middlewares: tuple[Any, ...] = ()) -> Any:
    """A GET on one lazily made session (aiohttp wants a running loop to make one)."""
    import aiohttp

    target = url()
    holder: dict[str, aiohttp.ClientSession] = {}

    async def get() -> Any:
        session = holder.get("session")
        if session is None:
            session = holder["session"] = aiohttp.ClientSession(middlewares=middlewares)
        async with session.get(target) as response:
            response.raise_for_status()
            await response.read()
            return response

    return get


def bare_aiohttp():  # type: ignore[no-untyped-def]
    return _aiohttp()


def buttress_aiohttp():  # type: ignore[no-untyped-def]
    from buttress.integrations.aiohttp import ResilientMiddleware

    return _aiohttp((ResilientMiddleware(),))


def tenacity_aiohttp():  # type: ignore[no-untyped-def]
    return _tenacity_async(_aiohttp())


from _harness import Case, check_works, main

CASES = [
    Case(SYNC, "bare", bare_sync),
    Case(SYNC, "buttress", buttress_sync, note=NOTE),
    Case(SYNC, "tenacity + pybreaker", tenacity_sync, peer=True),
    Case(ASYNC, "bare", bare_async, is_async=True),
    Case(ASYNC, "buttress", buttress_async, is_async=True, note=NOTE),
    Case(ASYNC, "tenacity + aiobreaker", tenacity_async, is_async=True, peer=True),
    Case(AIO, "bare", bare_aiohttp, is_async=True),
    Case(AIO, "buttress", buttress_aiohttp, is_async=True, note=NOTE),
    Case(AIO, "tenacity + aiobreaker", tenacity_aiohttp, is_async=True, peer=True),
]

if __name__ == "__main__":
    if "--check" in sys.argv:
        check_works(CASES)
    else:
        main(CASES)

"""What the ASGI tests share: an app with routes, rules on a fake clock, a client."""

from __future__ import annotations

import warnings
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from buttress.clock import FakeClock
from buttress.integrations.asgi import RateLimitMiddleware, Rule
from buttress.ratelimit import RateLimiter
from buttress.stores import MemoryStore

with warnings.catch_warnings():
    # Starlette's test client warns that it prefers httpx2 to the httpx installed here.
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient, WebSocketDenialResponse

__all__ = [
    "PEER",
    "ROUTES",
    "TestClient",
    "WebSocketDenialResponse",
    "calls",
    "client_of",
    "http_scope",
    "limiter",
    "make_app",
    "refused_connection",
    "rule_for",
]

PEER = "203.0.113.7"


def refused_connection(
    client: TestClient, path: str = "/ws", **options: Any
) -> WebSocketDisconnect:
    """Open a WebSocket that the middleware must refuse; its refusal."""
    with pytest.raises(WebSocketDisconnect) as info, client.websocket_connect(path, **options):
        pass  # pragma: no cover - refused before accept
    return info.value


def limiter(clock: FakeClock, *limits: Any, name: str = "api") -> RateLimiter:
    return RateLimiter(*limits, store=MemoryStore(clock=clock), name=name, clock=clock)


def rule_for(clock: FakeClock, *limits: Any, name: str = "api", **options: Any) -> Rule:
    return Rule(limiter(clock, *limits, name=name), **options)


calls: list[str] = []


async def echo(request: Request) -> PlainTextResponse:
    calls.append(f"{request.method} {request.url.path}")
    return PlainTextResponse("ok")


async def whoami(request: Request) -> PlainTextResponse:
    user = request.scope.get("user")
    return PlainTextResponse(user.display_name if user is not None else "")


async def ws_echo(websocket: WebSocket) -> None:
    await websocket.accept()
    try:
        while True:
            text = await websocket.receive_text()
            if text == "boom":
                raise RuntimeError("the endpoint failed")
            await websocket.send_text(text)
    except WebSocketDisconnect:
        pass


ROUTES = [
    Route("/items", echo, methods=["GET", "POST"]),
    Route("/items/{id}", echo, methods=["GET", "POST", "PUT", "DELETE"]),
    Route("/items/{id}/parts", echo, methods=["GET"]),
    Route("/health", echo),
    Route("/other", echo),
    Route("/whoami", whoami),
    WebSocketRoute("/ws", ws_echo),
]


def make_app(*rules: Rule, outer: Sequence[Middleware] = (), **options: Any) -> Starlette:
    return Starlette(
        routes=ROUTES,
        middleware=[*outer, Middleware(RateLimitMiddleware, rules=list(rules), **options)],
    )


@asynccontextmanager
async def client_of(app: Any, peer: str = PEER) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app, client=(peer, 50123))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        yield client


def http_scope(
    peer: str | None = PEER, headers: Sequence[tuple[str, str]] = (), path: str = "/"
) -> dict[str, Any]:
    return {
        "type": "http",
        "method": "GET",
        "path": path,
        "client": (peer, 50123) if peer is not None else None,
        "headers": [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers],
    }

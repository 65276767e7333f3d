"""The ASGI middleware and route decorator as users write them: ``mypy --strict`` must accept this.

Nothing here runs. It checks that :class:`RateLimitMiddleware` fits Starlette's own
types (``Middleware(...)``, an ``ASGIApp``), that the key functions compose (an
async ``validate`` makes an async key function), and that ``@routes.limit(...)``
leaves an endpoint's type as it was.
"""

from __future__ import annotations

from typing import assert_type

from fastapi import FastAPI, Request
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.responses import PlainTextResponse
from starlette.types import ASGIApp

from buttress.integrations.asgi import (
    AsyncKeyFunc,
    KeyFunc,
    RateLimitMiddleware,
    RouteLimiter,
    Rule,
    Scope,
    api_key,
    client_ip,
    user_key,
)
from buttress.ratelimit import FixedWindow, RateLimiter, TokenBucket


def tenant(scope: Scope) -> str | None:
    state = scope.get("state") or {}
    value = state.get("tenant")
    return value if isinstance(value, str) else None


def known(key: str) -> bool:
    return key.startswith("sk_live_")


async def known_in_db(key: str) -> bool:
    return key.startswith("sk_live_")


assert_type(client_ip(), KeyFunc)
assert_type(api_key(), KeyFunc)
assert_type(api_key(validate=known), KeyFunc)
assert_type(api_key("authorization", scheme="Bearer", validate=known_in_db), AsyncKeyFunc)

per_ip = RateLimiter(TokenBucket(10, 1.0), name="per-ip")
per_key = RateLimiter(TokenBucket(10, 1.0), FixedWindow(1000, 86400), name="per-key")
per_tenant = RateLimiter("1000/hour", name="per-tenant")
rules = [
    Rule(per_ip, key=client_ip(["10.0.0.0/8"], header="forwarded")),
    Rule(per_key, path="/api/**", methods=("POST", "PUT"), key=api_key(validate=known_in_db)),
    Rule(per_tenant, key=user_key(tenant), policies=["tenant"]),
]

app = Starlette(middleware=[Middleware(RateLimitMiddleware, rules=rules, max_websockets=5)])
wrapped: ASGIApp = RateLimitMiddleware(
    app, rules, default=Rule(per_ip), exempt=lambda scope: scope["path"] == "/"
)

routes = RouteLimiter(store="memory://", key=client_ip())
api = FastAPI()


@api.get("/items/{item_id}")
@routes.limit("5/minute", name="items")
async def read_item(item_id: int, request: Request) -> dict[str, int]:
    return {"id": item_id}


@routes.limit(per_ip)
@routes.limit(TokenBucket(1, 1.0), "100/day", name="report", key=api_key(), cost=2)
def report(request: Request) -> PlainTextResponse:
    return PlainTextResponse("report")


async def check() -> None:
    assert_type(await read_item(1, Request({"type": "http"})), dict[str, int])
    assert_type(report(Request({"type": "http"})), PlainTextResponse)

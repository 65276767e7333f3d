"""The ASGI middleware as users write it: ``mypy --strict`` must accept this file.

Nothing here runs. It checks that :class:`RateLimitMiddleware` fits Starlette's own
types (``Middleware(...)``, an ``ASGIApp``) and that the key functions compose.
"""

from __future__ import annotations

from typing import assert_type

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.types import ASGIApp

from buttress.integrations.asgi import (
    KeyFunc,
    RateLimitMiddleware,
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


api = RateLimiter(TokenBucket(10, 1.0), FixedWindow(1000, 86400), name="api")
rules = [
    Rule(api, path="/api/**", methods=("POST", "PUT"), key=api_key(), policies=("s", "d")),
    Rule(api, key=user_key(tenant)),
    Rule(api, key=client_ip(["10.0.0.0/8"], header="forwarded")),
]
assert_type(client_ip(), KeyFunc)

app = Starlette(middleware=[Middleware(RateLimitMiddleware, rules=rules, max_websockets=5)])
wrapped: ASGIApp = RateLimitMiddleware(app, rules, exempt=lambda scope: scope["path"] == "/")

"""ASGI middlewares: rate limits, request ids, problem+json errors, timeouts, shutdown.

:class:`RateLimitMiddleware` wraps any ASGI 3 application (Starlette, FastAPI,
Quart, a bare callable) and applies :class:`Rule` s to its HTTP requests. It
speaks the ASGI protocol directly and imports no framework. Every rule that
matches a request and yields a key is decided — per-IP and per-key limits stack —
and the request passes only if all allow it. Allowed responses carry
``X-RateLimit-*`` and the IETF ``RateLimit-Policy``/``RateLimit`` fields; refused
requests get a 429 with ``Retry-After`` and an RFC 9457 problem document.
WebSocket connections can be capped per key, in this process.

:class:`RouteLimiter` puts limits on single Starlette or FastAPI endpoints
(``@routes.limit("5/minute")``) with the same decisions, headers and 429s; it is
the one part that needs Starlette (the ``asgi`` extra), and is imported only when
asked for.

Key functions: :func:`client_ip` (with trusted proxies for ``X-Forwarded-For`` or
``Forwarded``), :func:`user_key` and :func:`api_key` (hashed: raw keys never reach
a store or a log; ``validate=`` keeps made-up keys from being keys at all).

Around any application's handlers, each usable alone (outermost first):
:class:`RequestIdMiddleware` (request and correlation ids, accepted when safe,
generated otherwise, echoed, in :mod:`buttress.observe.context`),
:class:`GracefulShutdownMiddleware` (requests in a :class:`Drain`, refused with a
503 while it drains, drained on the lifespan shutdown), :class:`ProblemMiddleware`
(exceptions as RFC 9457 problem documents, from the :class:`ProblemError`
taxonomy, your own mapping and buttress's errors; nothing internal in a 500) and
:class:`RequestTimeoutMiddleware` (a time limit per request, answered with a 504).

The package's modules: ``_types`` (the ASGI types and helpers every buttress ASGI
component shares), ``_identity`` (key functions), ``_paths`` (path patterns),
``_rules`` (rules, their joint decision, the headers), ``_middleware`` and
``_routes``; ``_ids``, ``_problems``, ``_timeouts`` and ``_shutdown`` for the
middlewares around the handlers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from buttress.integrations.asgi._health import HealthEndpoints
from buttress.integrations.asgi._identity import (
    AsyncKeyFunc,
    KeyFunc,
    api_key,
    client_ip,
    user_key,
)
from buttress.integrations.asgi._ids import RequestIdMiddleware, new_request_id
from buttress.integrations.asgi._middleware import RateLimitMiddleware
from buttress.integrations.asgi._problems import (
    DEFAULT_ERRORS,
    Conflict,
    DependencyFailed,
    DependencyTimeout,
    ErrorMapping,
    Forbidden,
    NotFound,
    Problem,
    ProblemError,
    ProblemMiddleware,
    ServiceUnavailable,
    TooManyRequests,
    Unauthorized,
    ValidationFailed,
    send_problem_response,
)
from buttress.integrations.asgi._rules import QUOTA_EXCEEDED, Rule
from buttress.integrations.asgi._shutdown import (
    Drain,
    DrainReport,
    GracefulShutdownMiddleware,
    ShuttingDown,
)
from buttress.integrations.asgi._timeouts import RequestTimeoutMiddleware
from buttress.integrations.asgi._types import ASGIApp, Message, Receive, Scope, Send

if TYPE_CHECKING:
    from buttress.integrations.asgi._routes import RouteLimiter

__all__ = [
    "DEFAULT_ERRORS",
    "QUOTA_EXCEEDED",
    "ASGIApp",
    "AsyncKeyFunc",
    "Conflict",
    "DependencyFailed",
    "DependencyTimeout",
    "Drain",
    "DrainReport",
    "ErrorMapping",
    "Forbidden",
    "GracefulShutdownMiddleware",
    "HealthEndpoints",
    "KeyFunc",
    "Message",
    "NotFound",
    "Problem",
    "ProblemError",
    "ProblemMiddleware",
    "RateLimitMiddleware",
    "Receive",
    "RequestIdMiddleware",
    "RequestTimeoutMiddleware",
    "RouteLimiter",
    "Rule",
    "Scope",
    "Send",
    "ServiceUnavailable",
    "ShuttingDown",
    "TooManyRequests",
    "Unauthorized",
    "ValidationFailed",
    "api_key",
    "client_ip",
    "new_request_id",
    "send_problem_response",
    "user_key",
]


def __getattr__(name: str) -> Any:
    # The route decorator needs Starlette; the middleware must not pull it in.
    if name == "RouteLimiter":
        try:
            from buttress.integrations.asgi._routes import RouteLimiter  # noqa: PLC0415
        except ModuleNotFoundError as exc:
            if exc.name is None or exc.name.partition(".")[0] != "starlette":
                raise
            raise ImportError("RouteLimiter needs Starlette: pip install 'buttress[asgi]'") from exc
        return RouteLimiter
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

"""The ASGI protocol as buttress's ASGI components speak it: types and small helpers.

Shared by every ASGI piece of buttress — the rate-limit middleware and route
decorator today, the webhook receiver, the gateway and the observability
middlewares tomorrow — so each reads headers and answers with a problem document
the same way. Pure ASGI: nothing here imports a framework.
"""

from __future__ import annotations

import json
import math
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any, TypeAlias

__all__ = [
    "ASGIApp",
    "Headers",
    "Message",
    "Receive",
    "Scope",
    "Send",
    "header_value",
    "header_values",
    "problem",
    "send_problem",
    "whole_seconds",
]

Scope: TypeAlias = MutableMapping[str, Any]
"""The ASGI connection scope (``type``, ``path``, ``headers``, ``client``, ...)."""
Message: TypeAlias = MutableMapping[str, Any]
"""One ASGI event, received or sent (``{"type": "http.response.start", ...}``)."""
Receive: TypeAlias = Callable[[], Awaitable[Message]]
"""The ASGI ``receive`` callable."""
Send: TypeAlias = Callable[[Message], Awaitable[None]]
"""The ASGI ``send`` callable."""
ASGIApp: TypeAlias = Callable[[Scope, Receive, Send], Awaitable[None]]
"""An ASGI 3 application: ``await app(scope, receive, send)``."""
Headers: TypeAlias = list[tuple[bytes, bytes]]
"""Raw response headers as ASGI carries them: lower-case names, latin-1 values."""


def header_values(scope: Scope, name: bytes) -> list[str]:
    """Every value of the request header ``name`` (lower case), in order, as text.

    Several occurrences of one header form one list (RFC 9110 §5.3); the caller
    decides how to join or split them. Values are decoded as latin-1, as ASGI
    servers pass the bytes on the wire through untouched.
    """
    return [
        value.decode("latin-1") for key, value in scope.get("headers", ()) if key.lower() == name
    ]


def header_value(scope: Scope, name: bytes) -> bytes | None:
    """The raw bytes of the first request header ``name`` (lower case), or ``None``."""
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            found: bytes = value
            return found
    return None


def whole_seconds(value: float) -> int:
    """Seconds rounded up to a whole number, as HTTP headers state them.

    Float noise (``2.0000000001``) does not add a second; zero and negative
    durations are 0.
    """
    if value <= 0:
        return 0
    return math.ceil(value - 1e-9)


def problem(
    status: int,
    title: str,
    detail: str,
    *,
    instance: str = "",
    type: str = "about:blank",  # the RFC 9457 member's name
    **extra: Any,
) -> bytes:
    """An RFC 9457 ``application/problem+json`` document, compact and ASCII-only.

    ``extra`` members follow the standard ones (``"violated-policies": [...]``,
    say). ``instance`` should be a path without its query string, which may hold
    secrets.
    """
    document = {
        "type": type,
        "title": title,
        "status": status,
        "detail": detail,
        "instance": instance,
        **extra,
    }
    return json.dumps(document, separators=(",", ":")).encode("ascii")


async def send_problem(
    send: Send,
    status: int,
    body: bytes,
    headers: Iterable[tuple[bytes, bytes]] = (),
    *,
    start: str = "http.response.start",
    body_type: str = "http.response.body",
) -> None:
    """Answer with ``body`` (from :func:`problem`) as a whole ASGI response.

    ``headers`` come after ``content-type`` and ``content-length``. ``start`` and
    ``body_type`` name the events: the WebSocket denial response uses
    ``websocket.http.response.start`` and ``websocket.http.response.body``.
    """
    head = [
        (b"content-type", b"application/problem+json"),
        (b"content-length", str(len(body)).encode("ascii")),
        *headers,
    ]
    await send({"type": start, "status": status, "headers": head})
    await send({"type": body_type, "body": body, "more_body": False})

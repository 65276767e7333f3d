"""RequestIdMiddleware: a request id and a correlation id for every request, echoed back.

An incoming id is taken only when it is safe to carry into logs and headers: at
most ``max_length`` characters, all of them from a small set (letters, digits and
``-._:=+/@``). Anything else — an empty value, a CR/LF that would split a log line
or a header, quotes, spaces, a 10 KB blob — is replaced by a fresh id, never
echoed, never logged.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable

from buttress.errors import ConfigError
from buttress.integrations.asgi._types import ASGIApp, Message, Receive, Scope, Send
from buttress.observe.context import correlation_id, request_id

__all__ = ["RequestIdMiddleware", "new_request_id"]

_TOKEN = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
# What an id may hold: enough for UUIDs, ULIDs, base64 and "service:trace/span" ids,
# nothing that means something to a log line, a header or a shell.
_SAFE = rb"[A-Za-z0-9._:=+/@-]"


def new_request_id() -> str:
    """A fresh random id: a UUID4 in its canonical 36-character form."""
    return str(uuid.uuid4())


def _header_name(value: object, option: str) -> bytes:
    if not isinstance(value, str) or not _TOKEN.fullmatch(value.encode("latin-1", "replace")):
        raise ConfigError(f"must be an HTTP header name, got {value!r}", path=option)
    return value.lower().encode("ascii")


class RequestIdMiddleware:
    """Pure ASGI middleware giving each request a request id and a correlation id.

    For every HTTP request and WebSocket connection:

    - the request id is the incoming ``request_header`` (default ``X-Request-ID``)
      when ``accept_incoming`` is true and the value is valid (see the module
      docs), else a new one from ``generate`` (default :func:`new_request_id`);
    - the correlation id is the incoming ``correlation_header`` (default
      ``X-Correlation-ID``) when valid, else the request id: the first service of
      a chain starts the correlation;
    - both are set in :data:`buttress.observe.context.request_id` and
      :data:`~buttress.observe.context.correlation_id` while the application runs
      — every log line buttress writes carries them, and tasks the request starts
      inherit them — and in ``scope["state"]`` (``request.state.request_id`` in
      Starlette and FastAPI);
    - both are echoed on the response (on ``websocket.accept`` for WebSockets),
      unless the application set that header itself.

    ``correlation_header=None`` turns the correlation id off. Put this middleware
    outermost, so that everything inside — error pages, timeouts, rate-limit
    refusals — carries the ids. Lifespan and other scopes pass through untouched.
    """

    __slots__ = ("_accept", "_correlation", "_generate", "_max", "_request", "_safe", "app")

    def __init__(
        self,
        app: ASGIApp,
        *,
        request_header: str = "X-Request-ID",
        correlation_header: str | None = "X-Correlation-ID",
        accept_incoming: bool = True,
        max_length: int = 128,
        generate: Callable[[], str] = new_request_id,
    ) -> None:
        self._request = _header_name(request_header, "request_header")
        self._correlation = (
            None
            if correlation_header is None
            else _header_name(correlation_header, "correlation_header")
        )
        if self._correlation == self._request:
            raise ConfigError(
                f"must differ from request_header, got {correlation_header!r}",
                path="correlation_header",
            )
        if not isinstance(accept_incoming, bool):
            raise ConfigError(f"must be a bool, got {accept_incoming!r}", path="accept_incoming")
        if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 8:
            raise ConfigError(f"must be an int >= 8, got {max_length!r}", path="max_length")
        self._max = max_length
        self._safe = re.compile(_SAFE + b"{1,%d}" % max_length)
        if not callable(generate):
            raise ConfigError(f"must be callable, got {generate!r}", path="generate")
        # A generator whose ids would fail validation is a bug to see now, not in
        # every log line later.
        sample = generate()
        if not isinstance(sample, str) or not self._valid(sample.encode("latin-1", "replace")):
            raise ConfigError(
                f"must return ids of at most {max_length} safe characters, returned {sample!r}",
                path="generate",
            )
        self._generate = generate
        self._accept = accept_incoming
        self.app = app

    def _valid(self, raw: bytes) -> bool:
        return self._safe.fullmatch(raw) is not None

    def _incoming(self, scope: Scope, name: bytes) -> str | None:
        if not self._accept:
            return None
        for key, value in scope.get("headers", ()):
            if key.lower() == name:
                # The first occurrence only: a second one is no more trustworthy.
                return value.decode("ascii") if self._valid(value) else None
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind not in {"http", "websocket"}:
            await self.app(scope, receive, send)
            return
        rid = self._incoming(scope, self._request) or self._generate()
        names = self._correlation
        cid = rid if names is None else self._incoming(scope, names) or rid
        state = scope.setdefault("state", {})
        state["request_id"] = rid
        if names is not None:
            state["correlation_id"] = cid
        echo = [(self._request, rid.encode("ascii"))]
        if names is not None:
            echo.append((names, cid.encode("ascii")))
        start = "http.response.start" if kind == "http" else "websocket.accept"

        async def send_with_ids(message: Message) -> None:
            if message["type"] == start:
                headers = list(message.get("headers", ()))
                present = {key.lower() for key, _ in headers}
                headers.extend(item for item in echo if item[0] not in present)
                message = {**message, "headers": headers}
            await send(message)

        request_token = request_id.set(rid)
        correlation_token = correlation_id.set(cid if names is not None else None)
        try:
            await self.app(scope, receive, send_with_ids)
        finally:
            correlation_id.reset(correlation_token)
            request_id.reset(request_token)

    def __repr__(self) -> str:
        correlation = None if self._correlation is None else self._correlation.decode()
        return (
            f"RequestIdMiddleware(app={self.app!r}, request_header={self._request.decode()!r}, "
            f"correlation_header={correlation!r}, accept_incoming={self._accept!r}, "
            f"max_length={self._max!r})"
        )

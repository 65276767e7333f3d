"""Errors as RFC 9457 problem documents: a small taxonomy and the middleware that maps.

Two ways in, for two kinds of code:

- *Your own code* raises the taxonomy's exceptions — :class:`NotFound`,
  :class:`Conflict`, :class:`ValidationFailed`, ... — each a :class:`ProblemError`
  that knows its status and carries only what you chose to show (``detail`` and
  extra members).
- *Code you do not own* (an ORM's ``NoResultFound``, a client library's errors)
  is mapped by type when the middleware is built: ``errors={NoResultFound: 404}``,
  or a :class:`Problem`, or a function of the exception.

buttress's own errors are mapped already (:data:`DEFAULT_ERRORS`). Whatever is
left is a 500 whose body says nothing of the exception — neither its message nor
its type — and whose traceback goes to the log with the request id.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, ClassVar, TypeAlias

from buttress.errors import (
    BulkheadFull,
    CircuitOpen,
    ConfigError,
    RateLimited,
    Rejected,
    RetryExhausted,
    StoreUnavailable,
    TimeoutExceeded,
)
from buttress.integrations.asgi._types import (
    ASGIApp,
    Message,
    Receive,
    Scope,
    Send,
    send_problem,
    whole_seconds,
)
from buttress.observe.context import current_ids

__all__ = [
    "DEFAULT_ERRORS",
    "Conflict",
    "DependencyFailed",
    "DependencyTimeout",
    "ErrorMapping",
    "Forbidden",
    "NotFound",
    "Problem",
    "ProblemError",
    "ProblemMiddleware",
    "ServiceUnavailable",
    "TooManyRequests",
    "Unauthorized",
    "ValidationFailed",
    "send_problem_response",
]

_log = logging.getLogger("buttress.integrations.asgi")

_STANDARD = frozenset({"type", "title", "status", "detail", "instance", "request_id"})


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


@dataclass(frozen=True, slots=True)
class Problem:
    """What to answer for an error: an RFC 9457 problem and its response headers.

    - ``status``: the HTTP status, 400 to 599.
    - ``title``: a short summary, the same for every occurrence of the problem
      type; default the status's reason phrase (RFC 9457 asks for it when
      ``type`` is ``about:blank``).
    - ``detail``: shown to the client as is, so only text meant for the client;
      ``None`` leaves the member out.
    - ``type``: a URI naming the problem type (``about:blank`` by default).
    - ``retry_after``: seconds, sent as ``Retry-After`` (rounded up).
    - ``headers``: further response headers, ``(name, value)`` text pairs.
    - ``extra``: further members of the document (``{"errors": [...]}``); they
      may not reuse a standard member's name.
    """

    status: int
    title: str | None = None
    detail: str | None = None
    type: str = "about:blank"
    retry_after: float | None = None
    headers: tuple[tuple[str, str], ...] = ()
    extra: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        status = self.status
        if isinstance(status, bool) or not isinstance(status, int) or not 400 <= status <= 599:
            raise ConfigError(
                f"must be an HTTP error status (400-599), got {status!r}", path="status"
            )
        if self.title is None:
            object.__setattr__(self, "title", _phrase(status))
        for option in ("title", "type"):
            if not isinstance(getattr(self, option), str):
                raise ConfigError(f"must be a string, got {getattr(self, option)!r}", path=option)
        if self.detail is not None and not isinstance(self.detail, str):
            raise ConfigError(f"must be a string or None, got {self.detail!r}", path="detail")
        clash = _STANDARD.intersection(self.extra)
        if clash:
            raise ConfigError(f"reuses standard members {sorted(clash)}", path="extra")
        for name, value in self.headers:
            if "\r" in name or "\n" in name or "\r" in value or "\n" in value:
                raise ConfigError(f"header {name!r} holds a line break", path="headers")

    def document(self, instance: str = "", request_id: str | None = None) -> bytes:
        """The ``application/problem+json`` body: compact, ASCII-only JSON.

        ``instance`` is the request's path (never with its query string, which
        may hold secrets); ``request_id`` is added as the ``request_id`` member.
        """
        body: dict[str, Any] = {"type": self.type, "title": self.title, "status": self.status}
        if self.detail is not None:
            body["detail"] = self.detail
        if instance:
            body["instance"] = instance
        if request_id is not None:
            body["request_id"] = request_id
        body.update(self.extra)
        return json.dumps(body, separators=(",", ":"), default=str).encode("ascii")

    def response_headers(self) -> list[tuple[bytes, bytes]]:
        """The headers to send with the document (``Retry-After`` and :attr:`headers`)."""
        headers = [
            (name.lower().encode("latin-1"), value.encode("latin-1"))
            for name, value in self.headers
        ]
        if self.retry_after is not None:
            headers.append((b"retry-after", str(whole_seconds(self.retry_after)).encode("ascii")))
        return headers


async def send_problem_response(
    send: Send, scope: Scope, problem: Problem, headers: Iterable[tuple[bytes, bytes]] = ()
) -> None:
    """Answer the request in ``scope`` with ``problem``: a whole ASGI response.

    The document's ``instance`` is the request's path and its ``request_id`` the
    current one (:func:`buttress.observe.context.current_ids`), when there is one.
    """
    body = problem.document(scope.get("path", ""), current_ids().get("request_id"))
    await send_problem(send, problem.status, body, [*problem.response_headers(), *headers])


# ------------------------------------------------------------------------ taxonomy


class ProblemError(Exception):
    """Base of the exceptions that say which problem to answer with.

    Subclasses set :attr:`status` (and, with their own ``type`` URI, :attr:`title`).
    ``detail`` is shown to the client: pass only what is meant for it. ``extra``
    keyword arguments become further members of the document
    (``ValidationFailed("bad input", errors=[...])``).
    """

    status: ClassVar[int] = 500
    title: ClassVar[str | None] = None
    type: ClassVar[str] = "about:blank"

    def __init__(
        self,
        detail: str | None = None,
        *,
        retry_after: float | None = None,
        headers: Iterable[tuple[str, str]] = (),
        **extra: Any,
    ) -> None:
        self.detail = detail
        self.retry_after = retry_after
        self.headers = tuple(headers)
        self.extra = extra
        super().__init__(detail if detail is not None else self.title or _phrase(self.status))

    @property
    def problem(self) -> Problem:
        """The :class:`Problem` this exception answers with."""
        return Problem(
            self.status,
            self.title,
            self.detail,
            self.type,
            self.retry_after,
            self.headers,
            self.extra,
        )


class ValidationFailed(ProblemError):
    """400: the request is malformed or its content invalid (``errors=[...]`` for details)."""

    status = 400


class Unauthorized(ProblemError):
    """401: no valid credentials; sends ``WWW-Authenticate: <challenge>`` (default ``Bearer``)."""

    status = 401

    def __init__(
        self,
        detail: str | None = None,
        *,
        challenge: str = "Bearer",
        headers: Iterable[tuple[str, str]] = (),
        **extra: Any,
    ) -> None:
        super().__init__(detail, headers=[("WWW-Authenticate", challenge), *headers], **extra)


class Forbidden(ProblemError):
    """403: the caller is known but may not do this."""

    status = 403


class NotFound(ProblemError):
    """404: no such resource."""

    status = 404


class Conflict(ProblemError):
    """409: the request conflicts with the resource's current state (a version, a duplicate)."""

    status = 409


class TooManyRequests(ProblemError):
    """429: the caller sent too much; ``retry_after`` seconds until it may try again."""

    status = 429


class DependencyFailed(ProblemError):
    """502: a service this one depends on failed to answer properly."""

    status = 502


class ServiceUnavailable(ProblemError):
    """503: the service cannot serve now (maintenance, overload); ``retry_after`` if known."""

    status = 503


class DependencyTimeout(ProblemError):
    """504: a service this one depends on did not answer in time."""

    status = 504


# ------------------------------------------------------------------------- mapping

ErrorMapping: TypeAlias = int | Problem | Callable[[BaseException], Problem | None]
"""How to answer an exception type: a status, a :class:`Problem`, or a function of
the exception returning one (or ``None``: "not this one", the lookup goes on with
the next class of the exception's MRO)."""


def _rate_limited(exc: BaseException) -> Problem:
    retry_after = getattr(exc, "retry_after", None)
    return Problem(429, detail="Too many requests; try again later.", retry_after=retry_after)


def _unavailable(exc: BaseException) -> Problem:
    retry_after = getattr(exc, "retry_after", None)
    return Problem(
        503,
        detail="The service cannot handle the request now; try again later.",
        retry_after=retry_after,
    )


def _problem_error(exc: BaseException) -> Problem:
    assert isinstance(exc, ProblemError)
    return exc.problem


DEFAULT_ERRORS: Mapping[type[BaseException], ErrorMapping] = {
    ProblemError: _problem_error,
    RateLimited: _rate_limited,
    CircuitOpen: _unavailable,
    BulkheadFull: _unavailable,
    Rejected: _unavailable,
    StoreUnavailable: _unavailable,
    TimeoutExceeded: Problem(504, detail="The request did not complete in time."),
    TimeoutError: Problem(504, detail="The request did not complete in time."),
    RetryExhausted: Problem(502, detail="A service this one depends on failed."),
}
"""How :class:`ProblemMiddleware` answers buttress's errors unless told otherwise:
``RateLimited`` 429 and ``CircuitOpen``, ``BulkheadFull``, any other ``Rejected``
and ``StoreUnavailable`` 503, all with ``Retry-After`` when the error knows when to
come back; ``TimeoutExceeded`` (and any ``TimeoutError``) 504; ``RetryExhausted``
502; every :class:`ProblemError` its own problem. See ``docs/errors.md``."""

_INTERNAL = Problem(500)


def _as_handler(value: object, where: str) -> Callable[[BaseException], Problem | None]:
    if isinstance(value, Problem):
        return lambda exc: value
    if isinstance(value, int) and not isinstance(value, bool):
        fixed = Problem(value)  # validates the status
        return lambda exc: fixed
    if callable(value):
        return value
    raise ConfigError(f"must be a status, a Problem or a function, got {value!r}", path=where)


class ProblemMiddleware:
    """Pure ASGI middleware answering exceptions with ``application/problem+json``.

    An exception the application raises before it started its response is looked
    up by its class and then each base class in turn (most specific first) in
    ``errors`` and then :data:`DEFAULT_ERRORS`; the first answer found is sent.
    Anything unmapped is a 500 with no detail, no exception message and no type
    name, and its traceback is logged at ERROR on ``buttress.integrations.asgi``
    with the request id. Mapped 5xx answers are logged at WARNING (one line, no
    traceback); mapped 4xx are the client's business and logged at DEBUG.

    Every document carries ``type``, ``title``, ``status``, ``instance`` (the path)
    and, under :class:`RequestIdMiddleware`, ``request_id``.

    An exception after the response started cannot become an error page: it is
    logged with the request id and re-raised, so the server closes the connection
    and the client sees a cut-off response, not a complete-looking one.

    Add it inside the framework's own error handler: in Starlette and FastAPI,
    through ``middleware=[...]`` / ``app.add_middleware`` (which places it inside
    ``ServerErrorMiddleware``), not around the application object.
    """

    __slots__ = ("_cache", "_errors", "app")

    def __init__(
        self, app: ASGIApp, errors: Mapping[type[BaseException], ErrorMapping] | None = None
    ) -> None:
        table: dict[type[BaseException], Callable[[BaseException], Problem | None]] = {}
        for kind, value in DEFAULT_ERRORS.items():
            table[kind] = _as_handler(value, "DEFAULT_ERRORS")
        for kind, value in (errors or {}).items():
            if not (isinstance(kind, type) and issubclass(kind, BaseException)):
                raise ConfigError(f"keys must be exception classes, got {kind!r}", path="errors")
            table[kind] = _as_handler(value, f"errors[{kind.__name__}]")
        self._errors = table
        self.app = app

    def problem_for(self, exc: BaseException) -> Problem | None:
        """The problem ``exc`` maps to, or ``None`` when it is unmapped (a 500)."""
        for kind in type(exc).__mro__:
            handler = self._errors.get(kind)
            if handler is None:
                continue
            found = handler(exc)
            if found is not None:
                if not isinstance(found, Problem):
                    raise TypeError(f"error mapping for {kind.__name__} returned {found!r}")
                return found
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def watch(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, watch)
        except Exception as exc:
            if started:
                _log.error(
                    "exception after the response to %s %r started (request_id=%s): "
                    "closing the connection",
                    scope.get("method", "?"),
                    scope.get("path", ""),
                    current_ids().get("request_id", "-"),
                    exc_info=exc,
                )
                raise
            await send_problem_response(send, scope, self._answer(scope, exc))

    def _answer(self, scope: Scope, exc: Exception) -> Problem:
        error = _single(exc)
        try:
            problem = self.problem_for(error)
        except Exception as failure:  # a mapping function that fails is a bug: 500
            _log.error("the error mapping failed on %s", type(error).__name__, exc_info=failure)
            problem = None
        method = scope.get("method", "?")
        path = scope.get("path", "")
        rid = current_ids().get("request_id", "-")
        if problem is None:
            _log.error(
                "unhandled %s on %s %r (request_id=%s): answered 500",
                type(error).__name__,
                method,
                path,
                rid,
                exc_info=exc,
            )
            return _INTERNAL
        if problem.status >= 500:
            _log.warning(
                "%s on %s %r (request_id=%s): answered %d: %s",
                type(error).__name__,
                method,
                path,
                rid,
                problem.status,
                error,
            )
        else:
            _log.debug(
                "%s on %s %r: answered %d", type(error).__name__, method, path, problem.status
            )
        return problem

    def __repr__(self) -> str:
        return f"ProblemMiddleware(app={self.app!r})"


def _single(exc: BaseException) -> BaseException:
    """The one error inside (nested) exception groups of one (anyio task groups wrap so)."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc

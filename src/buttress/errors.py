"""The buttress error hierarchy and the transient-error classifier.

Every error buttress raises on its own account derives from :class:`ButtressError`.
Rejections (a policy refusing to run a call) are distinct types that carry what the
caller needs to react: when to come back, how many attempts were made.

:func:`is_transient` decides whether an exception is worth retrying. It knows the
standard library's network errors and, *only when they are already imported*, the
connection errors of aiohttp, httpx, redis-py, psycopg, asyncpg, SQLAlchemy,
aio-pika and nats-py. It never imports a driver to find out: a program that does not
use httpx cannot have raised an httpx error.
"""

from __future__ import annotations

import datetime
import errno
import math
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any

__all__ = [
    "BulkheadFull",
    "ButtressError",
    "CircuitOpen",
    "ConfigError",
    "RateLimited",
    "Rejected",
    "RetryExhausted",
    "StoreError",
    "StoreUnavailable",
    "TimeoutExceeded",
    "is_transient",
    "retry_after_of",
]


class ButtressError(Exception):
    """Root of every error buttress raises on its own account."""


class ConfigError(ButtressError, ValueError):
    """Invalid configuration, raised when a policy is built or configuration loaded.

    ``path`` names the offending key, e.g. ``policies.payments.max_attempts``.
    """

    def __init__(self, message: str, *, path: str | None = None) -> None:
        self.path = path
        super().__init__(f"{path}: {message}" if path else message)


class Rejected(ButtressError):
    """A policy refused to run the call. The call had no effect.

    ``retry_after`` is the number of seconds after which trying again may succeed,
    or ``None`` when the policy cannot tell.
    """

    retry_after: float | None = None


class CircuitOpen(Rejected):
    """The circuit breaker is open (or its half-open trials are taken).

    ``until`` is the monotonic time at which the breaker lets a trial call through;
    ``retry_after`` is the same moment in seconds from when the error was raised.
    """

    def __init__(self, name: str, until: float, retry_after: float) -> None:
        self.name = name
        self.until = until
        self.retry_after = retry_after
        super().__init__(f"circuit {name!r} is open; next trial in {retry_after:.3f}s")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.name, self.until, self.retry_after))


class BulkheadFull(Rejected):
    """The bulkhead has no free slot and its wait queue is full or the wait timed out."""

    def __init__(self, name: str, reason: str = "full") -> None:
        self.name = name
        self.reason = reason
        super().__init__(f"bulkhead {name!r} rejected the call: {reason}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.name, self.reason))


class RateLimited(Rejected):
    """The rate limiter refused the call; ``retry_after`` seconds until it may pass."""

    def __init__(
        self,
        name: str,
        retry_after: float,
        *,
        key: str | None = None,
        limit: int | None = None,
        remaining: int | None = None,
    ) -> None:
        self.name = name
        self.retry_after = retry_after
        self.key = key
        self.limit = limit
        self.remaining = remaining
        where = f" for key {key!r}" if key is not None else ""
        super().__init__(f"rate limit {name!r} exceeded{where}; retry after {retry_after:.3f}s")

    def __reduce__(self) -> tuple[Any, ...]:
        return (
            _rebuild_rate_limited,
            (self.name, self.retry_after, self.key, self.limit, self.remaining),
        )


def _rebuild_rate_limited(
    name: str, retry_after: float, key: str | None, limit: int | None, remaining: int | None
) -> RateLimited:
    return RateLimited(name, retry_after, key=key, limit=limit, remaining=remaining)


class TimeoutExceeded(ButtressError, TimeoutError):
    """The call did not finish within its time limit.

    It is also a :class:`TimeoutError`, so code that already handles the built-in
    keeps working. ``name`` is the :class:`~buttress.Timeout` whose limit it was and
    ``timeout`` that limit in seconds; ``detail``, when set, says what ran out of
    time (a retry's wait or a bulkhead's queue that could not fit in what was left).
    """

    def __init__(self, name: str, timeout: float, detail: str | None = None) -> None:
        self.name = name
        self.timeout = timeout
        self.detail = detail
        message = f"{name!r} timed out after {timeout:g}s"
        super().__init__(f"{message}: {detail}" if detail else message)

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.name, self.timeout, self.detail))


class RetryExhausted(ButtressError):
    """Retry gave up. The last error is ``__cause__`` (and ``last_error``).

    ``attempts`` is how many attempts ran, ``reason`` why no more did — short and
    stable, fit for a metric label: ``"max_attempts"``, ``"max_elapsed"``,
    ``"retry_after"`` (the dependency asked for a wait longer than ``max_delay``) —
    and the message says it in words ("Retry-After 60 s exceeds max_delay 30 s").
    When the attempts were retried because of their *result*, ``last_error`` is
    ``None`` and ``last_result`` holds the last rejected result.
    """

    def __init__(
        self,
        name: str,
        attempts: int,
        last_error: BaseException | None = None,
        last_result: Any = None,
        *,
        reason: str = "max_attempts",
        detail: str | None = None,
    ) -> None:
        self.name = name
        self.attempts = attempts
        self.last_error = last_error
        self.last_result = last_result
        self.reason = reason
        self.detail = detail
        why = detail if detail is not None else reason.replace("_", " ")
        super().__init__(f"{name!r} gave up after {attempts} attempt(s): {why}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (
            _rebuild_retry_exhausted,
            (
                self.name,
                self.attempts,
                self.last_error,
                self.last_result,
                self.reason,
                self.detail,
            ),
        )


def _rebuild_retry_exhausted(  # noqa: PLR0917 - positional, as pickle calls it
    name: str,
    attempts: int,
    last_error: BaseException | None,
    last_result: Any,
    reason: str,
    detail: str | None,
) -> RetryExhausted:
    return RetryExhausted(name, attempts, last_error, last_result, reason=reason, detail=detail)


# --------------------------------------------------------------------------- transience

# OSError errno values that mean "the network or peer hiccuped", not "you asked for
# something impossible" (ENOENT, EACCES, ... stay permanent).
_TRANSIENT_ERRNOS = frozenset(
    getattr(errno, name)
    for name in (
        "ECONNRESET",
        "ECONNREFUSED",
        "ECONNABORTED",
        "EHOSTUNREACH",
        "EHOSTDOWN",
        "ENETUNREACH",
        "ENETDOWN",
        "ENETRESET",
        "ETIMEDOUT",
        "EPIPE",
        "EAGAIN",
        "EWOULDBLOCK",
        "EBUSY",
        "ENOBUFS",
        "EADDRNOTAVAIL",
    )
    if hasattr(errno, name)
)

# 501 Not Implemented and 505 HTTP Version Not Supported will not change on retry.
_PERMANENT_5XX = frozenset({501, 505})

# SQLSTATEs: connection exceptions (class 08), serialization failure, deadlock,
# statement completion unknown, too many connections, lock not available,
# admin/crash shutdown and "cannot connect now" (server starting or in recovery).
_TRANSIENT_SQLSTATE_PREFIXES = ("08",)
_TRANSIENT_SQLSTATES = frozenset(
    {"40001", "40P01", "40003", "53300", "55P03", "57P01", "57P02", "57P03", "58000", "58030"}
)

_HTTP_STATUS_ATTRS = ("status_code", "status", "code")

# A tuple built once: ``A | B`` in an isinstance call builds a union on every call,
# and is_transient runs on every failure a retry sees.
_NETWORK_ERRORS: tuple[type[BaseException], ...] = (TimeoutError, ConnectionError)


def _network_errors() -> tuple[type[BaseException], ...]:
    """The network errors, DNS failures included once :mod:`socket` is imported.

    A program that never imported :mod:`socket` cannot have raised its errors, and
    importing it here would cost every ``import buttress``.
    """
    global _NETWORK_ERRORS
    socket = sys.modules.get("socket")
    if socket is not None and len(_NETWORK_ERRORS) == 2:
        _NETWORK_ERRORS = (TimeoutError, ConnectionError, socket.gaierror, socket.herror)
    return _NETWORK_ERRORS


def _is_transient_status(status: object) -> bool:
    if isinstance(status, bool) or not isinstance(status, int):
        return False
    return status in (408, 425, 429) or (500 <= status <= 599 and status not in _PERMANENT_5XX)


def http_status_of(exc: BaseException) -> int | None:
    """The HTTP status an exception carries, if any (itself or on its ``response``)."""
    for holder in (exc, _attr(exc, "response")):
        if holder is None:
            continue
        for attr in _HTTP_STATUS_ATTRS:
            value = _attr(holder, attr)
            if isinstance(value, int) and not isinstance(value, bool):
                if 100 <= value <= 599:
                    return value
                # An integer status outside HTTP's range (aiohttp's 0 = "no response")
                # settles this holder: its later aliases say the same thing, and
                # reading them may warn (aiohttp's deprecated ``code``).
                break
    return None


def _sqlstate_of(exc: BaseException) -> str | None:
    for attr in ("sqlstate", "pgcode"):
        value = _attr(exc, attr)
        if isinstance(value, str) and len(value) == 5:
            return value
    return None


def _attr(obj: object, name: str) -> Any:
    """``getattr(obj, name, None)`` that also survives a property raising something else.

    Exceptions come from anywhere; a faulty property on one must not turn the
    classifier itself into the failure.
    """
    try:
        return getattr(obj, name, None)
    except Exception:
        return None


_checks_cache: tuple[int, list[Callable[[BaseException], bool | None]]] = (-1, [])


def _driver_checks() -> list[Callable[[BaseException], bool | None]]:
    """Checks for drivers that are imported right now; each answers True/False/None.

    Cached by the number of loaded modules: importing a driver changes it.
    """
    global _checks_cache
    modules = sys.modules
    count, cached = _checks_cache
    if count == len(modules):
        return cached
    checks: list[Callable[[BaseException], bool | None]] = []
    if "httpx" in modules:
        checks.append(_httpx_check)
    if "aiohttp" in modules:
        checks.append(_aiohttp_check)
    if "redis" in modules:
        checks.append(_redis_check)
    if "psycopg" in modules or "psycopg2" in modules or "asyncpg" in modules:
        checks.append(_pg_check)
    if "sqlalchemy" in modules:
        checks.append(_sqlalchemy_check)
    if "aiormq" in modules or "aio_pika" in modules or "pamqp" in modules:
        checks.append(_amqp_check)
    if "nats" in modules:
        checks.append(_nats_check)
    _checks_cache = (len(modules), checks)
    return checks


def _classes(module: str, *names: str) -> tuple[type[BaseException], ...]:
    mod = sys.modules.get(module)
    if mod is None:
        return ()
    found: list[type[BaseException]] = []
    for dotted in names:
        obj: Any = mod
        for part in dotted.split("."):
            obj = getattr(obj, part, None)
            if obj is None:
                break
        if isinstance(obj, type) and issubclass(obj, BaseException):
            found.append(obj)
    return tuple(found)


def _httpx_check(exc: BaseException) -> bool | None:
    transient = _classes("httpx", "TimeoutException", "NetworkError", "RemoteProtocolError")
    if transient and isinstance(exc, transient):
        return True
    return None


def _aiohttp_check(exc: BaseException) -> bool | None:
    permanent = _classes(
        "aiohttp", "InvalidURL", "ClientConnectorCertificateError", "ClientConnectorSSLError"
    )
    if permanent and isinstance(exc, permanent):
        return False
    transient = _classes(
        "aiohttp",
        "ClientConnectionError",
        "ServerTimeoutError",
        "ClientPayloadError",
        "ServerDisconnectedError",
    )
    if transient and isinstance(exc, transient):
        return True
    return None


def _redis_check(exc: BaseException) -> bool | None:
    transient = _classes(
        "redis.exceptions",
        "ConnectionError",
        "TimeoutError",
        "BusyLoadingError",
        "TryAgainError",
        "ClusterDownError",
        "MasterDownError",
        "ReadOnlyError",
    )
    if transient and isinstance(exc, transient):
        return True
    return None


def _pg_check(exc: BaseException) -> bool | None:
    # SQLSTATE-bearing errors are settled by the generic SQLSTATE rule; here only the
    # errors raised before the server said anything (connect failures, lost sockets).
    for module in ("psycopg", "psycopg2"):
        operational = _classes(module, "OperationalError")
        if operational and isinstance(exc, operational) and _sqlstate_of(exc) is None:
            return True
    conn = _classes(
        "asyncpg",
        "exceptions.ConnectionDoesNotExistError",
        "exceptions.InterfaceError",
        "exceptions.CannotConnectNowError",
    )
    if conn and isinstance(exc, conn):
        return True
    return None


def _sqlalchemy_check(exc: BaseException) -> bool | None:
    dbapi = _classes("sqlalchemy.exc", "DBAPIError")
    if dbapi and isinstance(exc, dbapi):
        if _attr(exc, "connection_invalidated"):
            return True
        orig = _attr(exc, "orig")
        if isinstance(orig, BaseException) and orig is not exc:
            return is_transient(orig)
    return None


def _amqp_check(exc: BaseException) -> bool | None:
    # Refused credentials, vhost access or protocol mismatches subclass the built-in
    # ConnectionError in aiormq, but retrying them cannot help.
    refused = (
        "AuthenticationError",
        "ProbableAuthenticationError",
        "IncompatibleProtocolError",
        "ConnectionNotAllowed",
        "ConnectionCommandInvalid",
        "ConnectionSyntaxError",
        "ConnectionNotImplemented",
        "ConnectionFrameError",
    )
    permanent = _classes("aiormq.exceptions", *refused)
    if permanent and isinstance(exc, permanent):
        return False
    names = ("AMQPConnectionError", "ConnectionClosed", "ChannelInvalidStateError")
    transient = _classes("aiormq.exceptions", *names) + _classes("aio_pika.exceptions", *names)
    if transient and isinstance(exc, transient):
        return True
    return None


def _nats_check(exc: BaseException) -> bool | None:
    transient = _classes(
        "nats.errors",
        "ConnectionClosedError",
        "TimeoutError",
        "NoServersError",
        "StaleConnectionError",
        "OutboundBufferLimitError",
        "ConnectionReconnectingError",
        "FlushTimeoutError",
        "NoRespondersError",
    )
    if transient and isinstance(exc, transient):
        return True
    return None


class StoreError(ButtressError):
    """A store failed to answer. ``store`` names it; the driver's error is ``__cause__``.

    ``outage`` tells a :class:`~buttress.stores.FallbackStore` whether to answer
    from its fallback meanwhile: true for a failing backend, false for a store used
    wrongly (an asyncio client in an event loop it does not belong to), which no
    fallback should hide.
    """

    outage: bool = True

    def __init__(self, store: str, message: str) -> None:
        self.store = store
        self.message = message
        super().__init__(f"store {store!r}: {message}")

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.store, self.message))


class StoreUnavailable(StoreError):
    """The store's backend could not be reached or did not answer in time.

    Transient: :func:`is_transient` says so, and
    :class:`~buttress.stores.FallbackStore` answers from memory meanwhile.
    """

    transient = True


_BUILTIN_TRANSIENT = frozenset(
    {
        ConnectionError,
        ConnectionResetError,
        ConnectionRefusedError,
        ConnectionAbortedError,
        BrokenPipeError,
        TimeoutError,
    }
)

# A retry that gave up did so on failures of the dependency: to a breaker or a
# fallback outside it, that is a failure too.
_BUTTRESS_TRANSIENT = (Rejected, TimeoutExceeded, RetryExhausted)


def is_transient(exc: BaseException) -> bool:
    """Whether ``exc`` is a failure that may well go away if the call is tried again.

    True for: buttress rejections, timeouts and exhausted retries; network and socket errors
    (``ConnectionError``, ``TimeoutError``, DNS failures, ``OSError`` with a
    network errno); anything carrying an HTTP status 408, 425, 429 or 5xx (except
    501 and 505) as ``status_code``/``status``/``code`` on itself or its
    ``response``; database errors whose SQLSTATE is a connection exception (08xxx),
    serialization failure (40001), deadlock (40P01), too many connections, lock not
    available or server shutdown/startup; and the connection errors of aiohttp,
    httpx, redis-py, psycopg, asyncpg, SQLAlchemy, aio-pika and nats-py when those
    are imported. Everything else — ``ValueError``, ``KeyError``, HTTP 4xx, a
    constraint violation — is permanent.

    An exception can settle the question itself with a boolean ``transient``
    attribute.
    """
    try:
        own = getattr(exc, "transient", None)
    except Exception:  # a raising property is no answer
        own = None
    if own is not None and isinstance(own, bool):
        return own
    if type(exc) in _BUILTIN_TRANSIENT:
        # The common case, answered first: a built-in network error (exactly its
        # type: a driver's subclass may mean something permanent, see below).
        return True
    if isinstance(exc, ButtressError):
        return isinstance(exc, _BUTTRESS_TRANSIENT)
    # Drivers first: some subclass the built-in ConnectionError for failures that
    # are permanent (refused credentials, bad certificates).
    for check in _driver_checks():
        verdict = check(exc)
        if verdict is not None:
            return verdict
    if isinstance(exc, _NETWORK_ERRORS if len(_NETWORK_ERRORS) == 4 else _network_errors()):
        return True
    if isinstance(exc, OSError) and exc.errno in _TRANSIENT_ERRNOS:
        return True
    sqlstate = _sqlstate_of(exc)
    if sqlstate is not None:
        return sqlstate in _TRANSIENT_SQLSTATES or sqlstate.startswith(_TRANSIENT_SQLSTATE_PREFIXES)
    status = http_status_of(exc)
    if status is not None:
        return _is_transient_status(status)
    return False


def _parse_retry_after(value: object, now: float | None = None) -> float | None:
    if value is None:  # the common case, on every failure a retry sees: answer it first
        return None
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        seconds = float(value)
    except (ValueError, OverflowError):
        pass
    else:
        # NaN and infinity are no waiting time: "Retry-After: inf" must not park a caller.
        return max(0.0, seconds) if math.isfinite(seconds) else None
    text = value.strip() if isinstance(value, str) else ""
    if not text:
        return None
    try:
        import email.utils  # noqa: PLC0415 - only for an HTTP-date Retry-After

        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        # HTTP-dates are always GMT; email.utils leaves "-0000" and zone-less dates
        # naive, which .timestamp() would read as local time.
        when = when.replace(tzinfo=datetime.UTC)
    wall = time.time() if now is None else now
    return max(0.0, when.timestamp() - wall)


def retry_after_of(exc: BaseException, *, now: float | None = None) -> float | None:
    """Seconds the failed call asked us to wait before trying again, if it said.

    Reads a numeric ``retry_after`` attribute (buttress rejections carry one), else a
    ``Retry-After`` header (delta-seconds or HTTP-date) on the exception's
    ``headers`` or its ``response.headers`` (httpx, aiohttp, requests). An HTTP-date
    is measured from ``now`` (wall-clock seconds; a policy passes ``clock.time()``),
    by default the current time. Negative waits read as 0; NaN, infinity and
    unparseable values as no answer (``None``).
    """
    if not getattr(exc, "__dict__", True) and type(exc).__module__ == "builtins":
        # A built-in exception with no attribute set on it carries no Retry-After:
        # the common case on a retry's failure path, answered without a lookup.
        return None
    own = _attr(exc, "retry_after")
    parsed = _parse_retry_after(own, now)
    if parsed is not None:
        return parsed
    for holder in (exc, _attr(exc, "response")):
        headers = _attr(holder, "headers") if holder is not None else None
        if headers is None:
            continue
        value: object = None
        if isinstance(headers, Mapping) or hasattr(headers, "get"):
            try:
                value = headers.get("Retry-After") or headers.get("retry-after")
            except Exception:  # a foreign headers object misbehaving is not our failure
                value = None
        parsed = _parse_retry_after(value, now)
        if parsed is not None:
            return parsed
    return None

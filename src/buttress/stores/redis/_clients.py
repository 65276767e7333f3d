"""What every Redis-backed store shares: checked URLs, fail-fast clients, one asyncio
client per event loop, and the mapping of driver errors to buttress's.

Private to :mod:`buttress.stores.redis`, which imports redis behind its own
``ImportError`` guard.
"""

from __future__ import annotations

import asyncio
import inspect
import math
import threading
from collections.abc import AsyncIterator, Iterable
from typing import Any, Literal, NamedTuple
from urllib.parse import parse_qsl, unquote, urlsplit

import redis
import redis.asyncio
import redis.asyncio.connection
import redis.connection
from redis.asyncio.retry import Retry as _AsyncRetry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as _RedisConnectionError
from redis.exceptions import TimeoutError as _RedisTimeoutError
from redis.retry import Retry as _Retry

from buttress._validate import check_choice, check_clock, check_name, optional_seconds
from buttress.clock import Clock
from buttress.errors import ConfigError
from buttress.stores.base import StoreError, StoreUnavailable

__all__ = [
    "DEFAULT_TIMEOUT",
    "SCHEMES",
    "UNAVAILABLE",
    "Clients",
    "Options",
    "check_prefix",
    "check_timeout",
    "check_url",
    "map_error",
]

DEFAULT_TIMEOUT = 0.25
"""Socket and connect timeout (seconds) of the clients a store builds from a URL."""

UNAVAILABLE = (_RedisConnectionError, _RedisTimeoutError, ConnectionError, TimeoutError, OSError)
"""Errors that mean the server could not be reached or did not answer in time."""

# Schemes a Redis store accepts, and what redis-py calls them. Valkey speaks the
# Redis protocol.
SCHEMES = {
    "redis": "redis",
    "rediss": "rediss",
    "unix": "unix",
    "valkey": "redis",
    "valkeys": "rediss",
}

# Query options that are text in a URL and that redis-py takes as text.
_TEXT_OPTIONS = frozenset(
    {
        "client_name",
        "encoding",
        "encoding_errors",
        "lib_name",
        "lib_version",
        "password",
        "ssl_ca_certs",
        "ssl_ca_path",
        "ssl_cert_reqs",
        "ssl_certfile",
        "ssl_ciphers",
        "ssl_keyfile",
        "ssl_password",
        "username",
    }
)


def _parameters(*classes: type) -> set[str]:
    names: set[str] = set()
    for cls in classes:
        for klass in cls.__mro__:
            init = klass.__dict__.get("__init__")
            if init is not None:
                names.update(inspect.signature(init).parameters)
    return names


def _url_options() -> dict[str, frozenset[str]]:
    # What both the sync and the asyncio connection of each scheme accept, among the
    # options redis-py knows how to read from a URL; the installed version decides.
    parsers = set(getattr(redis.connection, "URL_QUERY_ARGUMENT_PARSERS", {}))
    sync, aio = redis.connection, redis.asyncio.connection
    pools = _parameters(sync.ConnectionPool) & _parameters(aio.ConnectionPool)
    options = {}
    for scheme, names in (
        ("redis", ("Connection", "Connection")),
        ("rediss", ("SSLConnection", "SSLConnection")),
        ("unix", ("UnixDomainSocketConnection", "UnixDomainSocketConnection")),
    ):
        accepted = _parameters(getattr(sync, names[0])) & _parameters(getattr(aio, names[1]))
        options[scheme] = frozenset((parsers | _TEXT_OPTIONS) & (accepted | pools))
    return options


_OPTIONS = _url_options()


def _listed(names: Iterable[str]) -> str:
    return ", ".join(sorted(names))


def check_url(url: object, path: str = "url") -> str:
    """The URL redis-py should get for ``url``, checked without connecting.

    Raises :class:`ConfigError` at ``path`` naming what is wrong and what would be
    valid: the scheme, the port, the database number, the socket path and every
    query option (its name and value). ``valkey://`` and ``valkeys://`` become
    ``redis://`` and ``rediss://``.
    """
    if not isinstance(url, str):
        raise ConfigError(f"expected a redis:// URL, got {url!r}", path=path)
    scheme, sep, rest = url.partition("://")
    target = SCHEMES.get(scheme.lower()) if sep else None
    if target is None:
        raise ConfigError(
            f"expected a URL like redis://host:6379/0 (schemes: {_listed(SCHEMES)}), got {url!r}",
            path=path,
        )
    url = f"{target}://{rest}"
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:  # a port that is not a number, or out of range
        raise ConfigError(
            f"the port must be a number from 1 to 65535, got {url!r} ({exc})", path=path
        ) from None
    if target == "unix":
        if not parts.path:
            raise ConfigError(
                f"expected unix:///path/to/redis.sock (a socket path), got {url!r}", path=path
            )
    else:
        if port == 0:
            raise ConfigError(f"the port must be a number from 1 to 65535, got {url!r}", path=path)
        db = unquote(parts.path).strip("/")
        if db and not (db.isdigit() and db.isascii()):
            raise ConfigError(
                f"the path must be a database number such as /0, got {parts.path!r} in {url!r}",
                path=path,
            )
    _check_query(parts.query, _OPTIONS[target], url, path)
    try:
        redis.connection.parse_url(url)  # type: ignore[no-untyped-call]  # redis-py's own check
    except ValueError as exc:
        raise ConfigError(f"{exc} (in {url!r})", path=path) from None
    return url


def _check_query(query: str, allowed: frozenset[str], url: str, path: str) -> None:
    parsers = getattr(redis.connection, "URL_QUERY_ARGUMENT_PARSERS", {})
    try:
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query))
    except ValueError:
        raise ConfigError(
            f"the query must be name=value pairs joined by '&', got {query!r}", path=path
        ) from None
    for name, value in pairs:
        if name not in allowed:
            raise ConfigError(
                f"unknown option {name!r} in {url!r}; valid options: {_listed(allowed)}",
                path=path,
            )
        parser = parsers.get(name)
        try:
            if parser is not None:
                parsed = parser(value)
                if isinstance(parsed, float) and not (math.isfinite(parsed) and parsed >= 0):
                    raise ValueError(value)
        except (TypeError, ValueError):
            raise ConfigError(
                f"invalid value {value!r} for option {name!r} in {url!r}", path=path
            ) from None


def check_timeout(timeout: object, path: str = "timeout") -> float | None:
    """A client socket timeout: seconds (or a ``timedelta``) > 0, or ``None`` for none."""
    return optional_seconds(timeout, path, positive=True)


def check_prefix(prefix: object, path: str = "prefix") -> str:
    """A key prefix: a string without ``{`` or ``}`` (they would move the hash tag)."""
    if not isinstance(prefix, str) or "{" in prefix or "}" in prefix:
        raise ConfigError(f"must be a string without braces, got {prefix!r}", path=path)
    return prefix


class Options(NamedTuple):
    """What every Redis-backed store is configured with, checked (:meth:`check`)."""

    prefix: str
    time_source: Literal["server", "client"]
    clock: Clock
    name: str

    @classmethod
    def check(cls, prefix: object, time_source: object, clock: object, name: object) -> Options:
        """The options, each checked: :class:`ConfigError` naming the first bad one."""
        return cls(
            check_prefix(prefix),
            check_choice(time_source, "time_source", ("server", "client")),
            check_clock(clock),
            check_name(name) or "redis",
        )


def _sync_client(url: str, timeout: float | None) -> Any:
    # No client-side retries: redis-py would otherwise retry with backoff, stalling a
    # fallback store or a breaker sync for seconds while the server is away.
    return redis.Redis.from_url(
        url, socket_timeout=timeout, socket_connect_timeout=timeout, retry=_Retry(NoBackoff(), 0)
    )


def _async_client(url: str, timeout: float | None) -> Any:
    return redis.asyncio.Redis.from_url(
        url,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=_AsyncRetry(NoBackoff(), 0),
    )


def _started(guard: Any) -> None:
    # Run an async generator to its first ``yield`` without awaiting anything. Doing
    # it inside the running loop registers it with the loop's asyncgen hooks, so the
    # loop closes it at shutdown (``asyncio.run`` does, as do Runner and anyio).
    try:
        guard.__anext__().send(None)
    except StopIteration:
        pass


def _finished(guard: Any) -> None:
    # Close a suspended guard from outside its (closed) loop: its ``finally`` runs
    # now, and the loop's finalizer, which would fail on a closed loop, never does.
    try:
        guard.aclose().send(None)
    except (StopIteration, RuntimeError):
        pass


class Clients:
    """The redis-py clients of one store: one sync client, one asyncio client per loop.

    A client given to the constructor is used as it is, from any loop (a mismatch
    surfaces as a :class:`StoreError` from :func:`map_error`). Clients built from
    ``url`` are made lazily: the sync one on first use, an asyncio one for each
    event loop that uses the store, closed when that loop shuts its async
    generators down (``asyncio.run`` does) and forgotten once the loop is closed.
    """

    __slots__ = ("_async", "_last", "_lock", "_loops", "_sync", "owned", "timeout", "url")

    def __init__(
        self,
        *,
        client: Any = None,
        async_client: Any = None,
        url: str | None = None,
        timeout: float | None = DEFAULT_TIMEOUT,
    ) -> None:
        self._sync, self._async = client, async_client
        self.url, self.timeout = url, timeout
        self.owned = url is not None  # only clients built here are closed here
        # (loop, client) last used: one attribute, so a thread reads a matching pair.
        self._last: tuple[Any, Any] = (None, None)
        self._loops: dict[asyncio.AbstractEventLoop, tuple[Any, Any]] = {}
        self._lock = threading.Lock()

    @classmethod
    def from_url(cls, url: object, timeout: object = DEFAULT_TIMEOUT) -> Clients:
        """Clients to build from ``url`` as they are needed; both checked now (see
        :func:`check_url` and :func:`check_timeout`), nothing connects."""
        return cls(url=check_url(url), timeout=check_timeout(timeout))

    def sync(self) -> Any:
        """The ``redis.Redis`` client, built from the URL on first use."""
        client = self._sync
        if client is None:
            if self.url is None:
                raise ConfigError(
                    "this store has no sync client: pass client= or build it from a URL",
                    path="client",
                )
            with self._lock:
                client = self._sync
                if client is None:
                    client = self._sync = _sync_client(self.url, self.timeout)
        return client

    def for_loop(self, store: str) -> Any:
        """The ``redis.asyncio.Redis`` client for the running event loop.

        A client given to the constructor belongs to the first loop that uses it:
        from any other loop, :class:`StoreError` naming ``store`` (redis-py would
        fail there, or worse, now and then work).
        """
        loop = asyncio.get_running_loop()
        last = self._last
        if last[0] is loop:
            return last[1]
        if self._async is not None:
            return self._given(loop, store)
        return self._new_loop(loop)

    def _given(self, loop: asyncio.AbstractEventLoop, store: str) -> Any:
        with self._lock:
            if self._last[0] is None:
                self._last = (loop, self._async)
            elif self._last[0] is not loop:
                error = StoreError(
                    store,
                    f"the asyncio Redis client given as async_client= belongs to event loop "
                    f"{self._last[0]!r}, not to the running one: a client serves one loop. "
                    "Give each loop a store of its own, or build the store from a URL "
                    "(one client per loop)",
                )
                error.outage = False  # a misuse, not an outage: no fallback hides it
                raise error
        return self._async

    def _new_loop(self, loop: asyncio.AbstractEventLoop) -> Any:
        if self.url is None:
            raise ConfigError(
                "this store has no asyncio client: pass async_client= or build it from a URL",
                path="async_client",
            )
        with self._lock:
            self._sweep()
            entry = self._loops.get(loop)
            if entry is None:
                client = _async_client(self.url, self.timeout)
                guard = self._guard(loop, client)
                entry = self._loops[loop] = (client, guard)
                _started(guard)
            self._last = (loop, entry[0])
        return entry[0]

    async def _guard(self, loop: asyncio.AbstractEventLoop, client: Any) -> AsyncIterator[None]:
        # Suspended for the life of ``loop``; closed by its shutdown_asyncgens (or by
        # _sweep / close, once the loop is closed), it closes ``client``.
        try:
            yield
        finally:
            with self._lock:
                if self._loops.get(loop, (None,))[0] is client:
                    del self._loops[loop]
                if self._last[0] is loop:
                    self._last = (None, None)
            if not loop.is_closed():
                try:
                    await client.aclose()
                except Exception:
                    pass

    def _sweep(self) -> None:
        # With the lock held: forget the clients of loops closed without shutting
        # their async generators down. Their sockets close when collected.
        dead = [entry for loop, entry in self._loops.items() if loop.is_closed()]
        if dead:
            self._lock.release()
            try:
                for _, guard in dead:
                    _finished(guard)
            finally:
                self._lock.acquire()

    @property
    def loops(self) -> int:
        """How many event loops currently have a client of their own."""
        return len(self._loops)

    def close(self) -> None:
        """Close the clients built from the URL.

        The sync client closes now. An asyncio client is closed by its own loop: at
        once if that loop is closed, else on it, as soon as it runs.
        """
        self._close(None)

    async def aclose(self) -> None:
        """:meth:`close`, awaiting the running loop's client as it closes."""
        loop = asyncio.get_running_loop()
        with self._lock:
            entry = self._loops.get(loop)
        self._close(loop)
        if entry is not None:
            await entry[1].aclose()

    def _close(self, here: asyncio.AbstractEventLoop | None) -> None:
        if not self.owned:
            return
        client, self._sync = self._sync, None
        if client is not None:
            client.close()
        with self._lock:
            entries = [
                (loop, guard) for loop, (_, guard) in self._loops.items() if loop is not here
            ]
        for loop, guard in entries:
            try:
                loop.call_soon_threadsafe(_close_guard, loop, guard)
            except RuntimeError:  # the loop is closed
                _finished(guard)


# Closing tasks, kept until done: the loop holds only weak references to tasks.
_closing: set[asyncio.Task[None]] = set()


def _close_guard(loop: asyncio.AbstractEventLoop, guard: Any) -> None:
    task = loop.create_task(guard.aclose())
    _closing.add(task)
    task.add_done_callback(_closing.discard)


def map_error(store: str, exc: BaseException) -> StoreError:
    """The buttress error for a driver failure of ``store`` (raise it ``from exc``)."""
    if isinstance(exc, UNAVAILABLE):
        return StoreUnavailable(store, f"Redis is unavailable: {type(exc).__name__}: {exc}")
    if isinstance(exc, RuntimeError) and "loop" in str(exc):
        return StoreError(
            store,
            f"the asyncio Redis client belongs to another event loop ({exc}); a client "
            "given as async_client= works in one loop only: give each loop its own store, "
            "or build the store from a URL (one client per loop)",
        )
    return StoreError(store, f"Redis failed: {type(exc).__name__}: {exc}")

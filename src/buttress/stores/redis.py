"""The Redis store: each decision is one Lua script, one round trip, atomic.

The script is the algorithm's Lua twin followed by the store's frame
(``stores/lua/decide.lua``), which knows no algorithm: it reads the time, loads the
key's state, calls the twin, stores the new state with a TTL and returns the
decision. Scripts are loaded with ``SCRIPT LOAD`` and called with ``EVALSHA``; after
a ``SCRIPT FLUSH`` or a failover (``NOSCRIPT``) they are loaded again and the call
repeated.

Time is the Redis server's (``TIME`` inside the script) so every process sharing
the server agrees; ``time_source="client"`` sends ``clock.time()`` instead, and a
``now=`` passed to a call always wins. Keys look like ``buttress:{user:42}:tb``:
the hash tag keeps every key of one user key on one Cluster slot.

Only this module imports ``redis``; driver errors are mapped to
:class:`~buttress.stores.StoreUnavailable` / :class:`~buttress.stores.StoreError`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from functools import cache
from importlib import resources
from typing import Any, Literal

try:
    import redis
    import redis.asyncio
    from redis.asyncio.retry import Retry as _AsyncRetry
    from redis.backoff import NoBackoff
    from redis.exceptions import ConnectionError as _RedisConnectionError
    from redis.exceptions import NoScriptError, RedisError
    from redis.exceptions import TimeoutError as _RedisTimeoutError
    from redis.retry import Retry as _Retry
except ImportError as exc:  # pragma: no cover - exercised without the extra installed
    raise ImportError(
        "the Redis store needs the 'redis' package: pip install 'buttress[redis]'"
    ) from exc

from buttress.clock import MONOTONIC, Clock
from buttress.errors import ConfigError
from buttress.stores.base import (
    Algorithm,
    Decision,
    Request,
    StoreError,
    StoreUnavailable,
    validate_cost,
)

__all__ = ["RedisStore"]

DEFAULT_TIMEOUT = 0.25
"""Socket timeout (seconds) of the clients a :class:`RedisStore` builds from a URL."""

_UNAVAILABLE = (_RedisConnectionError, _RedisTimeoutError, ConnectionError, TimeoutError, OSError)
_decision = tuple.__new__
_INF = float("inf")
# Prepared (sha, source, trailing args) per algorithm; bounded in case a program
# builds a new algorithm object per call.
_PREPARED_MAX = 1024


@cache
def _frame() -> str:
    return resources.files("buttress.stores").joinpath("lua/decide.lua").read_text("utf-8")


@cache
def _script(body: str) -> tuple[str, str]:
    """``(sha1, source)`` of the script running the Lua twin ``body``."""
    source = f"{body}\n{_frame()}"
    return hashlib.sha1(source.encode("utf-8")).hexdigest(), source


def _parse(reply: Sequence[Any]) -> Decision:
    # Durations arrive as whole nanoseconds (-1: never), see decide.lua.
    allowed, limit, remaining, reset_after, retry_after = reply
    return _decision(
        Decision,
        (
            allowed == 1,
            limit,
            remaining,
            reset_after / 1e9,
            _INF if retry_after < 0 else retry_after / 1e9,
        ),
    )


class RedisStore:
    """Rate-limit state in Redis, shared by every process that uses the same server.

    Pass a ``redis.Redis`` (for :meth:`decide`) and/or a ``redis.asyncio.Redis``
    (for :meth:`adecide`), or build both lazily from a URL with :meth:`from_url`.
    Timeouts and retries of clients you pass in are yours: for a rate limiter pick
    a small ``socket_timeout`` (a store built from a URL uses
    :data:`DEFAULT_TIMEOUT` and no client-side retries).

    - ``prefix``: start of every key (``"buttress"`` gives ``buttress:{key}:tb``).
    - ``time_source``: ``"server"`` (Redis ``TIME``, the default) or ``"client"``
      (``clock.time()``, wall-clock seconds). Any call may pass ``now``.
    - ``ttl_slack``: seconds a key outlives the moment its state turns fresh, a
      margin for client clocks that disagree (only the TTL grows, not the answers).
    """

    __slots__ = (
        "_async_client",
        "_client",
        "_owned",
        "_prepared",
        "_timeout",
        "_url",
        "clock",
        "name",
        "prefix",
        "time_source",
        "ttl_slack",
    )

    def __init__(
        self,
        client: Any = None,
        *,
        async_client: Any = None,
        prefix: str = "buttress",
        time_source: Literal["server", "client"] = "server",
        clock: Clock = MONOTONIC,
        ttl_slack: float = 1.0,
        name: str = "redis",
    ) -> None:
        if time_source not in ("server", "client"):
            raise ConfigError(
                f"must be 'server' or 'client', got {time_source!r}", path="time_source"
            )
        if not isinstance(ttl_slack, int | float) or ttl_slack < 0:
            raise ConfigError(f"must be a number >= 0, got {ttl_slack!r}", path="ttl_slack")
        self._client = client
        self._async_client = async_client
        self._url: str | None = None
        self._timeout: float | None = None
        self._owned = False
        self._prepared: dict[Algorithm, tuple[str, str, tuple[Any, ...]]] = {}
        self.prefix = prefix
        self.time_source = time_source
        self.clock = clock
        self.ttl_slack = float(ttl_slack)
        self.name = name

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        timeout: float | None = DEFAULT_TIMEOUT,
        prefix: str = "buttress",
        time_source: Literal["server", "client"] = "server",
        clock: Clock = MONOTONIC,
        ttl_slack: float = 1.0,
        name: str = "redis",
    ) -> RedisStore:
        """A store whose clients are built (lazily, on first use) from a ``redis://`` URL.

        ``timeout`` is the clients' socket and connect timeout; they do not retry,
        so a slow or dead server fails fast (and a fallback store can take over).
        :meth:`close` / :meth:`aclose` close them.
        """
        if not url.startswith(("redis://", "rediss://", "unix://")):
            raise ConfigError(f"expected a redis:// URL, got {url!r}", path="url")
        store = cls(
            prefix=prefix, time_source=time_source, clock=clock, ttl_slack=ttl_slack, name=name
        )
        store._url = url
        store._timeout = timeout
        store._owned = True
        return store

    # ------------------------------------------------------------------ clients

    def _sync_client(self) -> Any:
        client = self._client
        if client is None:
            if self._url is None:
                raise ConfigError(
                    "this RedisStore has no sync client: pass client= or use from_url()",
                    path="client",
                )
            client = self._client = redis.Redis.from_url(
                self._url,
                socket_timeout=self._timeout,
                socket_connect_timeout=self._timeout,
                retry=_Retry(NoBackoff(), 0),
            )
        return client

    def _async_client_(self) -> Any:
        client = self._async_client
        if client is None:
            if self._url is None:
                raise ConfigError(
                    "this RedisStore has no async client: pass async_client= or use from_url()",
                    path="async_client",
                )
            client = self._async_client = redis.asyncio.Redis.from_url(
                self._url,
                socket_timeout=self._timeout,
                socket_connect_timeout=self._timeout,
                retry=_AsyncRetry(NoBackoff(), 0),
            )
        return client

    # ----------------------------------------------------------------- requests

    def key(self, key: str, algorithm: Algorithm) -> str:
        """The Redis key holding ``key``'s state under ``algorithm``."""
        return f"{self.prefix}:{{{key}}}:{algorithm.name}"

    def _prepare(self, algorithm: Algorithm) -> tuple[str, str, tuple[Any, ...]]:
        sha, source = _script(algorithm.lua)
        prepared = (sha, source, (round(self.ttl_slack * 1000), *algorithm.lua_args))
        try:
            if len(self._prepared) >= _PREPARED_MAX:
                self._prepared.clear()
            self._prepared[algorithm] = prepared
        except TypeError:  # an unhashable algorithm of the caller's own: no caching
            pass
        return prepared

    def _call(
        self, key: str, algorithm: Algorithm, cost: int, now: float | None
    ) -> tuple[str, str, tuple[Any, ...]]:
        if type(cost) is not int or cost < 0:
            cost = validate_cost(cost)
        try:
            prepared = self._prepared.get(algorithm)
        except TypeError:
            prepared = None
        if prepared is None:
            prepared = self._prepare(algorithm)
        sha, source, tail = prepared
        if now is None:
            when: float | str = "" if self.time_source == "server" else self.clock.time()
        else:
            when = now
        return sha, source, (1, f"{self.prefix}:{{{key}}}:{algorithm.name}", when, cost, *tail)

    def _error(self, exc: BaseException) -> StoreError:
        if isinstance(exc, _UNAVAILABLE):
            return StoreUnavailable(self.name, f"Redis is unavailable: {exc}")
        return StoreError(self.name, f"Redis failed: {exc}")

    def decide(
        self, key: str, algorithm: Algorithm, cost: int = 1, now: float | None = None
    ) -> Decision:
        """Atomically decide one request of ``cost`` for ``key``: one ``EVALSHA``."""
        sha, source, args = self._call(key, algorithm, cost, now)
        client = self._sync_client()
        try:
            try:
                reply = client.evalsha(sha, *args)
            except NoScriptError:
                client.script_load(source)
                reply = client.evalsha(sha, *args)
        except (RedisError, OSError) as exc:
            raise self._error(exc) from exc
        return _parse(reply)

    async def adecide(
        self, key: str, algorithm: Algorithm, cost: int = 1, now: float | None = None
    ) -> Decision:
        """The async twin of :meth:`decide`."""
        sha, source, args = self._call(key, algorithm, cost, now)
        client = self._async_client_()
        try:
            try:
                reply = await client.evalsha(sha, *args)
            except NoScriptError:
                await client.script_load(source)
                reply = await client.evalsha(sha, *args)
        except (RedisError, OSError) as exc:
            raise self._error(exc) from exc
        return _parse(reply)

    def _batch(
        self, requests: Sequence[Request], now: float | None
    ) -> list[tuple[str, str, tuple[Any, ...]]]:
        if now is None and self.time_source == "client":
            # One instant for the whole batch, as in the memory store.
            now = self.clock.time()
        return [self._call(key, algorithm, cost, now) for key, algorithm, cost in requests]

    def _parse_all(self, replies: list[Any]) -> list[Decision]:
        for reply in replies:
            if isinstance(reply, BaseException):
                raise self._error(reply) from reply
        return [_parse(reply) for reply in replies]

    def decide_many(self, requests: Sequence[Request], now: float | None = None) -> list[Decision]:
        """Decide several ``(key, algorithm, cost)`` requests in one pipelined round trip.

        Each decision is atomic on its own; the batch is not a transaction (so keys
        may live on different Cluster slots).
        """
        calls = self._batch(requests, now)
        if not calls:
            return []
        client = self._sync_client()
        try:
            pipe = client.pipeline(transaction=False)
            for sha, _, args in calls:
                pipe.evalsha(sha, *args)
            replies = pipe.execute(raise_on_error=False)
            missing = [i for i, reply in enumerate(replies) if isinstance(reply, NoScriptError)]
            if missing:
                for source in {calls[i][1] for i in missing}:
                    client.script_load(source)
                pipe = client.pipeline(transaction=False)
                for i in missing:
                    pipe.evalsha(calls[i][0], *calls[i][2])
                for i, reply in zip(missing, pipe.execute(raise_on_error=False), strict=True):
                    replies[i] = reply
        except (RedisError, OSError) as exc:
            raise self._error(exc) from exc
        return self._parse_all(replies)

    async def adecide_many(
        self, requests: Sequence[Request], now: float | None = None
    ) -> list[Decision]:
        """The async twin of :meth:`decide_many`."""
        calls = self._batch(requests, now)
        if not calls:
            return []
        client = self._async_client_()
        try:
            pipe = client.pipeline(transaction=False)
            for sha, _, args in calls:
                pipe.evalsha(sha, *args)
            replies = await pipe.execute(raise_on_error=False)
            missing = [i for i, reply in enumerate(replies) if isinstance(reply, NoScriptError)]
            if missing:
                for source in {calls[i][1] for i in missing}:
                    await client.script_load(source)
                pipe = client.pipeline(transaction=False)
                for i in missing:
                    pipe.evalsha(calls[i][0], *calls[i][2])
                retried = await pipe.execute(raise_on_error=False)
                for i, reply in zip(missing, retried, strict=True):
                    replies[i] = reply
        except (RedisError, OSError) as exc:
            raise self._error(exc) from exc
        return self._parse_all(replies)

    def reset(self, key: str, algorithm: Algorithm) -> None:
        """Delete ``key``'s state under ``algorithm``."""
        try:
            self._sync_client().delete(self.key(key, algorithm))
        except (RedisError, OSError) as exc:
            raise self._error(exc) from exc

    async def areset(self, key: str, algorithm: Algorithm) -> None:
        """The async twin of :meth:`reset`."""
        try:
            await self._async_client_().delete(self.key(key, algorithm))
        except (RedisError, OSError) as exc:
            raise self._error(exc) from exc

    def close(self) -> None:
        """Close the sync client if this store built it (see :meth:`from_url`)."""
        if self._owned and self._client is not None:
            self._client.close()
            self._client = None

    async def aclose(self) -> None:
        """Close the clients this store built, sync and async."""
        self.close()
        if self._owned and self._async_client is not None:
            await self._async_client.aclose()
            self._async_client = None

    def __repr__(self) -> str:
        return f"RedisStore(name={self.name!r}, prefix={self.prefix!r})"

"""The Redis store: each decision is one Lua script, one round trip, atomic.

The script is the algorithm's Lua twin followed by the store's frame
(``stores/lua/decide.lua``), which knows no algorithm: it reads the time, loads the
key's state, calls the twin, stores the new state with a TTL and returns the
decision. Several limits on one key (``decide_all``) are one script too: the twins
of every limit, each in its own block, then ``stores/lua/decide_all.lua``, which
decides them all and writes only if all allow. Scripts are loaded with
``SCRIPT LOAD`` and called with ``EVALSHA``; after a ``SCRIPT FLUSH`` or a failover
(``NOSCRIPT``) they are loaded again and the call repeated.

Time is the Redis server's (``TIME`` inside the script) so every process sharing
the server agrees; ``time_source="client"`` sends ``clock.time()`` instead, and a
``now=`` passed to a call always wins. Keys look like ``buttress:{user:42}:tb``:
the hash tag keeps every key of one user key on one Cluster slot, which is what
lets one script touch all of a key's limits.

Only this module imports ``redis``; driver errors are mapped to
:class:`~buttress.stores.StoreUnavailable` / :class:`~buttress.stores.StoreError`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from functools import cache, lru_cache
from importlib import resources
from typing import Any, Literal

try:
    import redis  # noqa: F401 - the availability check itself
    from redis.exceptions import NoScriptError, RedisError
except ImportError as exc:  # pragma: no cover - exercised without the extra installed
    raise ImportError(
        "the Redis store needs the 'redis' package: pip install 'buttress[redis]'"
    ) from exc

from buttress.clock import MONOTONIC, Clock
from buttress.errors import ConfigError
from buttress.stores._redis import (
    async_client_from_url,
    check_url,
    map_error,
    sync_client_from_url,
)
from buttress.stores.base import (
    Algorithm,
    Decision,
    MultiRequest,
    Request,
    StoreError,
    slot_names,
    validate_cost,
)

__all__ = ["RedisStore"]

DEFAULT_TIMEOUT = 0.25
"""Socket timeout (seconds) of the clients a :class:`RedisStore` builds from a URL."""

_new = tuple.__new__
# Prepared (sha, source, trailing args) per algorithm; bounded in case a program
# builds a new algorithm object per call.
_PREPARED_MAX = 1024


def _read(name: str) -> str:
    return resources.files("buttress.stores").joinpath(f"lua/{name}").read_text("utf-8")


# Read at import, never from a caller's thread: importlib.resources takes the
# import lock, and a fork while another thread holds it leaves the child's copy
# locked for good.
_FRAME = _read("decide.lua")
_FRAME_ALL = _read("decide_all.lua")


def _frame() -> str:
    return _FRAME


@cache
def _script(body: str) -> tuple[str, str]:
    """``(sha1, source)`` of the script running the Lua twin ``body``."""
    source = f"{body}\n{_frame()}"
    return hashlib.sha1(source.encode("utf-8")).hexdigest(), source


def _frame_all() -> str:
    return _FRAME_ALL


@lru_cache(maxsize=256)
def _script_all(bodies: tuple[str, ...]) -> tuple[str, str]:
    """``(sha1, source)`` of the script deciding limits with these Lua twins, in order."""
    # Each twin in its own block: they all define `local function decide`.
    blocks = "".join(
        f"do\n{body}\ndeciders[{i}] = decide\nend\n" for i, body in enumerate(bodies, 1)
    )
    source = f"local deciders = {{}}\n{blocks}{_frame_all()}"
    return hashlib.sha1(source.encode("utf-8")).hexdigest(), source


# What a call needs: (sha, source, the EVALSHA arguments after the sha).
_Call = tuple[str, str, tuple[Any, ...]]


def _encoded(*numbers: Any) -> tuple[bytes, ...]:
    """Numbers as redis-py would send them, encoded once instead of on every call."""
    return tuple(repr(number).encode() for number in numbers)


_ONE = (b"1", "1")  # "allowed", from a client with or without decode_responses


def _decision(numbers: Sequence[Any]) -> Decision:
    allowed, limit, remaining, reset_after, retry_after = numbers
    return _new(
        Decision,
        (allowed in _ONE, int(limit), int(remaining), float(reset_after), float(retry_after)),
    )


def _parse(reply: Any) -> Decision:
    # "allowed limit remaining reset_after retry_after", see decide.lua.
    return _decision(reply.split())


def _parse_all(reply: Any) -> tuple[Decision, ...]:
    numbers = reply.split()
    return tuple(_decision(numbers[at : at + 5]) for at in range(0, len(numbers), 5))


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
        "_prepared_all",
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
        # algorithms -> (sha, source, key suffixes, trailing args)
        self._prepared_all: dict[
            tuple[Algorithm, ...], tuple[str, str, tuple[str, ...], tuple[Any, ...]]
        ] = {}
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
        check_url(url)
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
            client = self._client = sync_client_from_url(self._url, self._timeout)
        return client

    def _async_client_(self) -> Any:
        client = self._async_client
        if client is None:
            if self._url is None:
                raise ConfigError(
                    "this RedisStore has no async client: pass async_client= or use from_url()",
                    path="async_client",
                )
            client = self._async_client = async_client_from_url(self._url, self._timeout)
        return client

    # ----------------------------------------------------------------- requests

    def key(self, key: str, algorithm: Algorithm) -> str:
        """The Redis key holding ``key``'s state under ``algorithm``."""
        return f"{self.prefix}:{{{key}}}:{algorithm.name}"

    def _prepare(self, algorithm: Algorithm) -> tuple[str, str, tuple[Any, ...]]:
        sha, source = _script(algorithm.lua)
        prepared = (sha, source, _encoded(round(self.ttl_slack * 1000), *algorithm.lua_args))
        try:
            if len(self._prepared) >= _PREPARED_MAX:
                self._prepared.clear()
            self._prepared[algorithm] = prepared
        except TypeError:  # an unhashable algorithm of the caller's own: no caching
            pass
        return prepared

    def _when(self, now: float | None) -> float | bytes:
        if now is not None:
            return now
        return b"" if self.time_source == "server" else self.clock.time()

    def _call(self, key: str, algorithm: Algorithm, cost: int, now: float | None) -> _Call:
        if type(cost) is not int or cost < 0:
            cost = validate_cost(cost)
        try:
            prepared = self._prepared.get(algorithm)
        except TypeError:
            prepared = None
        if prepared is None:
            prepared = self._prepare(algorithm)
        sha, source, tail = prepared
        key = f"{self.prefix}:{{{key}}}:{algorithm.name}"
        return sha, source, (1, key, self._when(now), cost, *tail)

    def _prepare_all(
        self, algorithms: tuple[Algorithm, ...]
    ) -> tuple[str, str, tuple[str, ...], tuple[Any, ...]]:
        if not algorithms:
            raise ValueError("decide_all needs at least one algorithm")
        sha, source = _script_all(tuple(algorithm.lua for algorithm in algorithms))
        tail: list[Any] = [round(self.ttl_slack * 1000)]
        for algorithm in algorithms:
            args = algorithm.lua_args
            tail += (len(args), *args)
        encoded = _encoded(*tail)
        suffixes = tuple(f"}}:{slot}" for slot in slot_names(algorithms))
        prepared = (sha, source, suffixes, encoded)
        try:
            if len(self._prepared_all) >= _PREPARED_MAX:
                self._prepared_all.clear()
            self._prepared_all[algorithms] = prepared
        except TypeError:
            pass
        return prepared

    def _call_all(
        self, key: str, algorithms: Sequence[Algorithm], cost: int, now: float | None
    ) -> _Call:
        if type(cost) is not int or cost < 0:
            cost = validate_cost(cost)
        limits = tuple(algorithms)
        try:
            prepared = self._prepared_all.get(limits)
        except TypeError:
            prepared = None
        if prepared is None:
            prepared = self._prepare_all(limits)
        sha, source, suffixes, tail = prepared
        head = f"{self.prefix}:{{{key}"
        keys = [head + suffix for suffix in suffixes]
        return sha, source, (len(keys), *keys, self._when(now), cost, *tail)

    def _error(self, exc: BaseException) -> StoreError:
        return map_error(self.name, exc)

    def _eval(self, call: _Call) -> Any:
        sha, source, args = call
        client = self._sync_client()
        try:
            try:
                return client.evalsha(sha, *args)
            except NoScriptError:
                client.script_load(source)
                return client.evalsha(sha, *args)
        except (RedisError, OSError) as exc:
            raise self._error(exc) from exc

    async def _aeval(self, call: _Call) -> Any:
        sha, source, args = call
        client = self._async_client_()
        try:
            try:
                return await client.evalsha(sha, *args)
            except NoScriptError:
                await client.script_load(source)
                return await client.evalsha(sha, *args)
        except (RedisError, OSError) as exc:
            raise self._error(exc) from exc

    def decide(
        self, key: str, algorithm: Algorithm, cost: int = 1, now: float | None = None
    ) -> Decision:
        """Atomically decide one request of ``cost`` for ``key``: one ``EVALSHA``."""
        return _parse(self._eval(self._call(key, algorithm, cost, now)))

    async def adecide(
        self, key: str, algorithm: Algorithm, cost: int = 1, now: float | None = None
    ) -> Decision:
        """The async twin of :meth:`decide`."""
        return _parse(await self._aeval(self._call(key, algorithm, cost, now)))

    def decide_all(
        self,
        key: str,
        algorithms: Sequence[Algorithm],
        cost: int = 1,
        now: float | None = None,
    ) -> tuple[Decision, ...]:
        """Every limit on ``key`` at once, all or nothing: one script, one ``EVALSHA``.

        The limits' keys (``buttress:{key}:tb``, ``buttress:{key}:fw``, ...) share
        the ``{key}`` hash tag, so on a Cluster they live in one slot.
        """
        return _parse_all(self._eval(self._call_all(key, algorithms, cost, now)))

    async def adecide_all(
        self,
        key: str,
        algorithms: Sequence[Algorithm],
        cost: int = 1,
        now: float | None = None,
    ) -> tuple[Decision, ...]:
        """The async twin of :meth:`decide_all`."""
        return _parse_all(await self._aeval(self._call_all(key, algorithms, cost, now)))

    def _one_instant(self, now: float | None) -> float | None:
        if now is None and self.time_source == "client":
            # One instant for the whole batch, as in the memory store.
            return self.clock.time()
        return now

    def _pipeline(self, calls: list[_Call]) -> list[Any]:
        """Every call in one pipelined round trip (plus one more after a NOSCRIPT)."""
        client = self._sync_client()
        try:
            pipe = client.pipeline(transaction=False)
            for sha, _, args in calls:
                pipe.evalsha(sha, *args)
            replies: list[Any] = pipe.execute(raise_on_error=False)
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
        return self._checked(replies)

    async def _apipeline(self, calls: list[_Call]) -> list[Any]:
        """The async twin of :meth:`_pipeline`."""
        client = self._async_client_()
        try:
            pipe = client.pipeline(transaction=False)
            for sha, _, args in calls:
                pipe.evalsha(sha, *args)
            replies: list[Any] = await pipe.execute(raise_on_error=False)
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
        return self._checked(replies)

    def _checked(self, replies: list[Any]) -> list[Any]:
        for reply in replies:
            if isinstance(reply, BaseException):
                raise self._error(reply) from reply
        return replies

    def decide_many(self, requests: Sequence[Request], now: float | None = None) -> list[Decision]:
        """Decide several ``(key, algorithm, cost)`` requests in one pipelined round trip.

        Each decision is atomic on its own; the batch is not a transaction (so keys
        may live on different Cluster slots).
        """
        now = self._one_instant(now)
        calls = [self._call(key, algorithm, cost, now) for key, algorithm, cost in requests]
        if not calls:
            return []
        return [_parse(reply) for reply in self._pipeline(calls)]

    async def adecide_many(
        self, requests: Sequence[Request], now: float | None = None
    ) -> list[Decision]:
        """The async twin of :meth:`decide_many`."""
        now = self._one_instant(now)
        calls = [self._call(key, algorithm, cost, now) for key, algorithm, cost in requests]
        if not calls:
            return []
        return [_parse(reply) for reply in await self._apipeline(calls)]

    def decide_all_many(
        self, requests: Sequence[MultiRequest], now: float | None = None
    ) -> list[tuple[Decision, ...]]:
        """Several ``(key, algorithms, cost)`` all-limits decisions in one pipelined round trip.

        Each key's decision is atomic and all or nothing; the batch is not a
        transaction.
        """
        now = self._one_instant(now)
        calls = [self._call_all(key, limits, cost, now) for key, limits, cost in requests]
        if not calls:
            return []
        return [_parse_all(reply) for reply in self._pipeline(calls)]

    async def adecide_all_many(
        self, requests: Sequence[MultiRequest], now: float | None = None
    ) -> list[tuple[Decision, ...]]:
        """The async twin of :meth:`decide_all_many`."""
        now = self._one_instant(now)
        calls = [self._call_all(key, limits, cost, now) for key, limits, cost in requests]
        if not calls:
            return []
        return [_parse_all(reply) for reply in await self._apipeline(calls)]

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

    def keys_of(self, key: str, algorithms: Sequence[Algorithm]) -> list[str]:
        """The Redis keys holding ``key``'s states under each of ``algorithms``."""
        return [f"{self.prefix}:{{{key}}}:{slot}" for slot in slot_names(algorithms)]

    def reset_all(self, key: str, algorithms: Sequence[Algorithm]) -> None:
        """Delete ``key``'s states under every limit of ``algorithms`` (one ``DEL``)."""
        try:
            self._sync_client().delete(*self.keys_of(key, algorithms))
        except (RedisError, OSError) as exc:
            raise self._error(exc) from exc

    async def areset_all(self, key: str, algorithms: Sequence[Algorithm]) -> None:
        """The async twin of :meth:`reset_all`."""
        try:
            await self._async_client_().delete(*self.keys_of(key, algorithms))
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

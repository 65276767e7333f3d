"""The Redis store: each decision is one Lua script, one round trip, atomic.

The script is the algorithm's Lua twin followed by the store's frame
(``stores/lua/decide.lua``), which knows no algorithm: it reads the time, loads the
key's state, calls the twin, stores the new state with a TTL and returns the
decision. Several limits on one key (``decide_all``) are one script too: the twins
of every limit, each in its own block, then ``stores/lua/decide_all.lua``, which
decides them all and writes only if all allow. Scripts run through
:func:`~buttress.stores.redis.run_scripts` (one round trip, reloaded after a
``NOSCRIPT``).

Time is the Redis server's (``TIME`` inside the script) so every process sharing
the server agrees; ``time_source="client"`` sends ``clock.time()`` instead, and a
``now=`` passed to a call always wins. Keys look like ``buttress:{user:42}:tb``:
the hash tag keeps every key of one user key on one Cluster slot, which is what
lets one script touch all of a key's limits.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable, Sequence
from datetime import timedelta
from functools import lru_cache, partial
from importlib import resources
from typing import Any, Literal, TypeVar

import redis
import redis.asyncio

from buttress._validate import check_seconds
from buttress.clock import MONOTONIC, Clock
from buttress.errors import ConfigError
from buttress.stores.base import (
    Algorithm,
    Decision,
    MultiRequest,
    Request,
    StoreBase,
    slot_names,
    validate_cost,
)

from ._clients import DEFAULT_TIMEOUT, Clients, Options, map_error
from ._scripts import Call, arun_scripts, run_scripts, script

__all__ = ["DEFAULT_TIMEOUT", "RedisStore"]

_T = TypeVar("_T")
_new = tuple.__new__
_PREPARED_MAX = 1024


def _read(name: str) -> str:
    return resources.files("buttress.stores").joinpath(f"lua/{name}").read_text("utf-8")


# Read at import, never from a caller's thread: importlib.resources takes the
# import lock, and a fork while another thread holds it leaves the child's copy
# locked for good.
_FRAME = _read("decide.lua")
_FRAME_ALL = _read("decide_all.lua")


@lru_cache(maxsize=1024)
def _script(body: str) -> tuple[str, str]:
    """``(sha1, source)`` of the script running the Lua twin ``body``."""
    return script(f"{body}\n{_FRAME}")


@lru_cache(maxsize=256)
def _script_all(bodies: tuple[str, ...]) -> tuple[str, str]:
    """``(sha1, source)`` of the script deciding limits with these Lua twins, in order."""
    # Each twin in its own block: they all define `local function decide`.
    blocks = "".join(
        f"do\n{body}\ndeciders[{i}] = decide\nend\n" for i, body in enumerate(bodies, 1)
    )
    return script(f"local deciders = {{}}\n{blocks}{_FRAME_ALL}")


_K = TypeVar("_K")


def _prepared(table: dict[_K, _T], key: _K, prepare: Callable[[_K], _T]) -> _T:
    """``table[key]``, prepared on first use; bounded, since a program may build a
    new algorithm object per call."""
    try:
        found = table.get(key)
    except TypeError:  # an unhashable algorithm of the caller's own: no caching
        return prepare(key)
    if found is None:
        found = prepare(key)
        if len(table) >= _PREPARED_MAX:
            table.clear()
        table[key] = found
    return found


def _packed(*numbers: float) -> bytes:
    """Numbers as one argument of little-endian doubles (``doubles`` in prelude.lua):
    made once per limit, one argument for redis-py to send and Redis to parse."""
    return struct.pack(f"<{len(numbers)}d", *numbers)


_ONE_KEY = b"1"  # the number of keys of a single decision, encoded once


# A decision as the frames pack it (see DECISION in decide.lua): one C call unpacks
# all five fields, already of the types a Decision holds.
_DECISION = struct.Struct("<?qqdd")
_unpack = _DECISION.unpack
_iter_unpack = _DECISION.iter_unpack
_make = partial(tuple.__new__, Decision)


def _parse(reply: bytes) -> Decision:
    return _new(Decision, _unpack(reply))


def _parse_all(reply: bytes) -> tuple[Decision, ...]:
    return tuple(map(_make, _iter_unpack(reply)))


def _parse_many(replies: list[bytes]) -> list[Decision]:
    return list(map(_make, _iter_unpack(b"".join(replies))))


def _parse_all_many(replies: list[bytes]) -> list[tuple[Decision, ...]]:
    return [tuple(map(_make, _iter_unpack(reply))) for reply in replies]


def _check_clients(client: Any, async_client: Any) -> None:
    if client is None and async_client is None:
        raise ConfigError(
            "pass a redis.Redis as client= and/or a redis.asyncio.Redis as async_client=, "
            "or build the store with RedisStore.from_url(url)",
            path="client",
        )
    if client is not None and (
        isinstance(client, redis.asyncio.Redis) or not callable(getattr(client, "evalsha", None))
    ):
        raise ConfigError(
            f"expected a redis.Redis (give an asyncio client as async_client=), got {client!r}",
            path="client",
        )
    if async_client is not None and (
        isinstance(async_client, redis.Redis)
        or not callable(getattr(async_client, "evalsha", None))
    ):
        raise ConfigError(
            f"expected a redis.asyncio.Redis (give a sync client as client=), got {async_client!r}",
            path="async_client",
        )


class RedisStore(StoreBase):
    """Rate-limit state in Redis, shared by every process that uses the same server.

    Pass a ``redis.Redis`` (for :meth:`decide`) and/or a ``redis.asyncio.Redis``
    (for :meth:`adecide`), or build the store from a URL with :meth:`from_url`.
    Timeouts and retries of clients you pass in are yours: for a rate limiter pick
    a small ``socket_timeout`` (a store built from a URL uses
    :data:`DEFAULT_TIMEOUT` and no client-side retries). An asyncio client you pass
    in serves one event loop; a store built from a URL makes one per loop.

    - ``prefix``: start of every key (``"buttress"`` gives ``buttress:{key}:tb``).
    - ``time_source``: ``"server"`` (Redis ``TIME``, the default) or ``"client"``
      (``clock.time()``, wall-clock seconds). Any call may pass ``now``.
    - ``ttl_slack``: seconds a key outlives the moment its state turns fresh, a
      margin for client clocks that disagree (only the TTL grows, not the answers).

    Failures raise :class:`~buttress.stores.StoreUnavailable` (connection,
    timeout) or :class:`~buttress.stores.StoreError`, the driver's error as
    ``__cause__``.
    """

    __slots__ = (
        "_clients",
        "_head",
        "_last",
        "_prepared",
        "_prepared_all",
        "_slack",
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
        ttl_slack: float | timedelta = 1.0,
        name: str = "redis",
    ) -> None:
        _check_clients(client, async_client)
        options = Options.check(prefix, time_source, clock, name)
        self._setup(Clients(client=client, async_client=async_client), options, ttl_slack)

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        prefix: str = "buttress",
        timeout: float | timedelta | None = DEFAULT_TIMEOUT,
        time_source: Literal["server", "client"] = "server",
        clock: Clock = MONOTONIC,
        ttl_slack: float | timedelta = 1.0,
        name: str = "redis",
    ) -> RedisStore:
        """A store whose clients are built (lazily, on first use) from a Redis URL.

        ``redis://``, ``rediss://`` (TLS), ``unix://`` and ``valkey://`` /
        ``valkeys://``. The URL is checked now — scheme, port, database, query
        options — without connecting: a malformed one raises
        :class:`~buttress.errors.ConfigError` at ``url``. ``timeout`` is the
        clients' socket and connect timeout; they do not retry, so a slow or dead
        server fails fast (and a fallback store can take over). Sync calls share one
        client; each event loop gets an asyncio client of its own, closed when the
        loop shuts down. :meth:`close` / :meth:`aclose` close them.
        """
        store = cls.__new__(cls)
        options = Options.check(prefix, time_source, clock, name)
        store._setup(Clients.from_url(url, timeout), options, ttl_slack)
        return store

    def _setup(self, clients: Clients, options: Options, ttl_slack: object) -> None:
        self.prefix, self.time_source, self.clock, self.name = options
        self.ttl_slack = check_seconds(ttl_slack, "ttl_slack")
        self._slack = round(self.ttl_slack * 1000)
        self._clients = clients
        self._head = f"{self.prefix}:{{"
        self._prepared: dict[Algorithm, tuple[bytes, str, str, bytes]] = {}
        self._last: tuple[Algorithm | None, Any] = (None, None)
        # algorithms -> (sha, source, key suffixes, trailing args)
        self._prepared_all: dict[
            tuple[Algorithm, ...], tuple[bytes, str, tuple[str, ...], bytes]
        ] = {}

    # ----------------------------------------------------------------- requests

    def key(self, key: str, algorithm: Algorithm) -> str:
        """The Redis key holding ``key``'s state under ``algorithm``."""
        return f"{self.prefix}:{{{key}}}:{algorithm.name}"

    def keys_of(self, key: str, algorithms: Sequence[Algorithm]) -> list[str]:
        """The Redis keys holding ``key``'s states under each of ``algorithms``."""
        return [f"{self.prefix}:{{{key}}}:{slot}" for slot in slot_names(algorithms)]

    def _prepare(self, algorithm: Algorithm) -> tuple[bytes, str, str, bytes]:
        # (sha, source, the key's end, the packed numbers), as sent: bytes where redis-py
        # would encode on every call.
        sha, source = _script(algorithm.lua)
        return (
            sha.encode(),
            source,
            f"}}:{algorithm.name}",
            _packed(self._slack, *algorithm.lua_args),
        )

    def _prepare_all(
        self, algorithms: tuple[Algorithm, ...]
    ) -> tuple[bytes, str, tuple[str, ...], bytes]:
        # (sha, source, the keys' ends, the packed numbers)
        if not algorithms:
            raise ValueError("decide_all needs at least one algorithm")
        sha, source = _script_all(tuple(algorithm.lua for algorithm in algorithms))
        numbers: list[float] = [self._slack]
        for algorithm in algorithms:
            args = algorithm.lua_args
            numbers += (len(args), *args)
        ends = tuple(f"}}:{slot}" for slot in slot_names(algorithms))
        return sha.encode(), source, ends, _packed(*numbers)

    def _when(self, now: float | None) -> tuple[float, ...]:
        # The time argument: the caller's; none for the server's; else one clock read
        # (for a whole batch: one instant, as in the memory store).
        if now is not None:
            return (now,)
        return () if self.time_source == "server" else (self.clock.time(),)

    def _calls(self, requests: Iterable[Request], now: float | None) -> list[Call]:
        """The script call of each ``(key, algorithm, cost)`` request."""
        when, head, table, prepare = self._when(now), self._head, self._prepared, self._prepare
        # The last algorithm and its prepared call: requests of a batch share one, and
        # a limiter asks for the same one every time.
        last, prepared = self._last
        calls: list[Call] = []
        for key, algorithm, given in requests:
            cost = given if type(given) is int and given >= 0 else validate_cost(given)
            if algorithm is not last:
                prepared = _prepared(table, algorithm, prepare)
                last = algorithm
            sha, source, end, packed = prepared
            calls.append((sha, source, (_ONE_KEY, head + key + end, packed, cost, *when)))
        self._last = (last, prepared)  # one attribute: read whole by other threads
        return calls

    def _calls_all(self, requests: Iterable[MultiRequest], now: float | None) -> list[Call]:
        """The script call of each ``(key, algorithms, cost)`` all-limits request."""
        when, head, table = self._when(now), self._head, self._prepared_all
        calls: list[Call] = []
        for key, algorithms, cost in requests:
            sha, source, ends, packed = _prepared(table, tuple(algorithms), self._prepare_all)
            start = head + key
            keys = [start + end for end in ends]
            calls.append((sha, source, (len(keys), *keys, packed, validate_cost(cost), *when)))
        return calls

    # ---------------------------------------------------------------- decisions

    def decide(
        self, key: str, algorithm: Algorithm, cost: int = 1, now: float | None = None
    ) -> Decision:
        """Atomically decide one request of ``cost`` for ``key``: one ``EVALSHA``."""
        calls = self._calls(((key, algorithm, cost),), now)
        return _parse(run_scripts(self._clients.sync(), calls, self.name)[0])

    async def adecide(
        self, key: str, algorithm: Algorithm, cost: int = 1, now: float | None = None
    ) -> Decision:
        """The async twin of :meth:`decide`."""
        calls = self._calls(((key, algorithm, cost),), now)
        return _parse((await arun_scripts(self._clients.for_loop(self.name), calls, self.name))[0])

    def decide_all(
        self, key: str, algorithms: Sequence[Algorithm], cost: int = 1, now: float | None = None
    ) -> tuple[Decision, ...]:
        """Every limit on ``key`` at once, all or nothing: one script, one ``EVALSHA``.

        The limits' keys (``buttress:{key}:tb``, ``buttress:{key}:fw``, ...) share
        the ``{key}`` hash tag, so on a Cluster they live in one slot.
        """
        calls = self._calls_all(((key, algorithms, cost),), now)
        return _parse_all(run_scripts(self._clients.sync(), calls, self.name)[0])

    async def adecide_all(
        self, key: str, algorithms: Sequence[Algorithm], cost: int = 1, now: float | None = None
    ) -> tuple[Decision, ...]:
        """The async twin of :meth:`decide_all`."""
        calls = self._calls_all(((key, algorithms, cost),), now)
        return _parse_all(
            (await arun_scripts(self._clients.for_loop(self.name), calls, self.name))[0]
        )

    def _batch(self, calls: list[Call], parse: Callable[[list[Any]], list[_T]]) -> list[_T]:
        return parse(run_scripts(self._clients.sync(), calls, self.name)) if calls else []

    async def _abatch(self, calls: list[Call], parse: Callable[[list[Any]], list[_T]]) -> list[_T]:
        replies = (
            await arun_scripts(self._clients.for_loop(self.name), calls, self.name) if calls else []
        )
        return parse(replies)

    def decide_many(self, requests: Sequence[Request], now: float | None = None) -> list[Decision]:
        """Decide several ``(key, algorithm, cost)`` requests in one pipelined round trip.

        Each decision is atomic on its own; the batch is not a transaction (so keys
        may live on different Cluster slots).
        """
        return self._batch(self._calls(requests, now), _parse_many)

    async def adecide_many(
        self, requests: Sequence[Request], now: float | None = None
    ) -> list[Decision]:
        """The async twin of :meth:`decide_many`."""
        return await self._abatch(self._calls(requests, now), _parse_many)

    def decide_all_many(
        self, requests: Sequence[MultiRequest], now: float | None = None
    ) -> list[tuple[Decision, ...]]:
        """Several ``(key, algorithms, cost)`` all-limits decisions in one pipelined round trip.

        Each key's decision is atomic and all or nothing; the batch is not a
        transaction.
        """
        return self._batch(self._calls_all(requests, now), _parse_all_many)

    async def adecide_all_many(
        self, requests: Sequence[MultiRequest], now: float | None = None
    ) -> list[tuple[Decision, ...]]:
        """The async twin of :meth:`decide_all_many`."""
        return await self._abatch(self._calls_all(requests, now), _parse_all_many)

    # -------------------------------------------------------------------- reset

    def reset_all(self, key: str, algorithms: Sequence[Algorithm]) -> None:
        """Delete ``key``'s states under every limit of ``algorithms`` (one ``DEL``)."""
        client = self._clients.sync()
        try:
            client.delete(*self.keys_of(key, algorithms))
        except Exception as exc:
            raise map_error(self.name, exc) from exc

    async def areset_all(self, key: str, algorithms: Sequence[Algorithm]) -> None:
        """The async twin of :meth:`reset_all`."""
        client = self._clients.for_loop(self.name)
        try:
            await client.delete(*self.keys_of(key, algorithms))
        except Exception as exc:
            raise map_error(self.name, exc) from exc

    # ---------------------------------------------------------------- lifecycle

    @property
    def loops(self) -> int:
        """How many event loops currently hold an asyncio client of this store's own."""
        return self._clients.loops

    def close(self) -> None:
        """Close the clients this store built from its URL (clients passed in stay open).

        An asyncio client is closed by its own loop (see :meth:`from_url`).
        """
        self._clients.close()

    async def aclose(self) -> None:
        """The async twin of :meth:`close`: the running loop's client is closed now."""
        await self._clients.aclose()

    def __repr__(self) -> str:
        return f"RedisStore(name={self.name!r}, prefix={self.prefix!r})"

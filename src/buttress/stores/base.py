"""The contract between rate-limit algorithms and the stores that keep their state.

Stores know no algorithm. An algorithm is a pure function
``decide(state, now, cost) -> (new_state, Decision)`` over a tiny state (a tuple of
floats), plus a Lua twin of that function. The memory store runs ``decide`` under a
lock; the Redis store runs the Lua twin inside one script. Both keep the state as an
opaque tuple of numbers and drop it once it is equivalent to a fresh key.

Several limits on one key (10 a second *and* 1,000 an hour) are decided together
by ``decide_all``: all or nothing, so a request refused by one limit takes nothing
from the others. Each limit keeps its own state under a *slot* named after its
algorithm (:func:`slot_names`).

This module is the lower layer: :mod:`buttress.ratelimit` implements
:class:`Algorithm` and re-exports :class:`Decision`, never the other way round.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import NamedTuple, Protocol, TypeAlias, runtime_checkable

from buttress.errors import StoreError, StoreUnavailable

__all__ = [
    "Algorithm",
    "Decision",
    "MultiRequest",
    "Request",
    "State",
    "Store",
    "StoreBase",
    "StoreError",
    "StoreUnavailable",
    "slot_names",
    "validate_cost",
]

State: TypeAlias = tuple[float, ...]
"""An algorithm's per-key state: a few numbers, so it serialises to one Redis string."""


class Decision(NamedTuple):
    """The answer to one rate-limit request; immutable.

    - ``allowed``: whether the request may proceed (its cost was taken).
    - ``limit``: the most a key can be granted at once (burst or window limit).
    - ``remaining``: how much more could be granted right now, after this request.
    - ``reset_after``: seconds until the key is back to a full, fresh quota if no
      further request comes (``0.0`` when it already is).
    - ``retry_after``: ``0.0`` when allowed; otherwise seconds until the same request
      could be allowed, or ``math.inf`` when its cost exceeds ``limit`` and it never
      can be.

    A ``NamedTuple`` (immutable, no ``__dict__``) rather than a frozen dataclass:
    building one takes a third of the time, and one is built for every request.
    """

    allowed: bool
    limit: int
    remaining: int
    reset_after: float
    retry_after: float


@runtime_checkable
class Algorithm(Protocol):
    """What a store needs from a rate-limit algorithm (see :mod:`buttress.ratelimit`).

    ``decide`` must be pure and deterministic, and ``reset_after`` of its decision
    must be the time after which the new state behaves exactly like no state at
    all: stores delete the state then (memory eviction, Redis TTL). ``lua`` is the
    Lua twin: a chunk defining ``local function decide(state, now, cost, args)``
    that returns ``new_state, allowed (1/0), limit, remaining, reset_after,
    retry_after`` computed exactly as the Python ``decide`` does, where ``state`` is
    ``nil`` or the list of numbers last stored and ``args`` is :attr:`lua_args`.
    """

    @property
    def name(self) -> str:
        """Short stable name of the algorithm kind (``"tb"``), part of storage keys."""
        ...

    @property
    def lua(self) -> str:
        """Lua source of the twin of :meth:`decide` (see the class docstring)."""
        ...

    @property
    def lua_args(self) -> tuple[float, ...]:
        """The configuration numbers the Lua twin receives as ``args``."""
        ...

    def decide(self, state: State | None, now: float, cost: int) -> tuple[State, Decision]:
        """Decide a request of ``cost`` at time ``now`` given the key's ``state``."""
        ...


Request: TypeAlias = tuple[str, Algorithm, int]
"""One entry of a batched decision: ``(key, algorithm, cost)``."""

MultiRequest: TypeAlias = tuple[str, Sequence[Algorithm], int]
"""One entry of a batched all-limits decision: ``(key, algorithms, cost)``."""


def slot_names(algorithms: Sequence[Algorithm]) -> tuple[str, ...]:
    """The state slot of each limit in ``algorithms``, for one key.

    A limit's slot is its algorithm's ``name`` (``"tb"``), the same slot a single
    ``decide`` uses; a second or third limit of the same kind gets ``"tb.2"``,
    ``"tb.3"``, so ``TokenBucket(10, 1)`` and ``TokenBucket(1000, 3600)`` on one key
    keep separate states. Slots follow the order of the limits.
    """
    seen: dict[str, int] = {}
    slots = []
    for algorithm in algorithms:
        name = algorithm.name
        count = seen[name] = seen.get(name, 0) + 1
        slots.append(name if count == 1 else f"{name}.{count}")
    return tuple(slots)


@runtime_checkable
class Store(Protocol):
    """Where rate-limit state lives: one atomic decision per call, sync or async.

    ``now`` is for tests and for callers that keep their own time: by default the
    memory store reads its clock's monotonic time and the Redis store the Redis
    server's time. A ``cost`` of 0 asks without taking anything. Errors talking
    to a backend surface as :class:`StoreError` (never a driver's exception).

    This is the interface callers use (type hints, ``isinstance``). To write a
    store, subclass :class:`StoreBase`: it asks for a small core and provides the
    rest.
    """

    @property
    def name(self) -> str:
        """The store's name, used in events."""
        ...

    def decide(
        self, key: str, algorithm: Algorithm, cost: int = 1, now: float | None = None
    ) -> Decision:
        """Atomically decide one request of ``cost`` for ``key`` under ``algorithm``."""
        ...

    async def adecide(
        self, key: str, algorithm: Algorithm, cost: int = 1, now: float | None = None
    ) -> Decision:
        """The async twin of :meth:`decide`."""
        ...

    def decide_many(self, requests: Sequence[Request], now: float | None = None) -> list[Decision]:
        """Decide several ``(key, algorithm, cost)`` requests, in order, in one round trip."""
        ...

    async def adecide_many(
        self, requests: Sequence[Request], now: float | None = None
    ) -> list[Decision]:
        """The async twin of :meth:`decide_many`."""
        ...

    def decide_all(
        self, key: str, algorithms: Sequence[Algorithm], cost: int = 1, now: float | None = None
    ) -> tuple[Decision, ...]:
        """Atomically decide one request of ``cost`` for ``key`` under every limit at once.

        All or nothing: every limit decides on its current state; only if all allow
        is the cost taken from each. When one refuses, nothing is taken anywhere,
        and the limits that would have allowed report their standing as a cost-0
        ask would. Decisions come back in the order of ``algorithms``; each limit
        keeps its state in its own slot (:func:`slot_names`). On Redis this is one
        script and one round trip (the keys share one Cluster slot).
        """
        ...

    async def adecide_all(
        self, key: str, algorithms: Sequence[Algorithm], cost: int = 1, now: float | None = None
    ) -> tuple[Decision, ...]:
        """The async twin of :meth:`decide_all`."""
        ...

    def decide_all_many(
        self, requests: Sequence[MultiRequest], now: float | None = None
    ) -> list[tuple[Decision, ...]]:
        """Several ``(key, algorithms, cost)`` all-limits decisions in one round trip."""
        ...

    async def adecide_all_many(
        self, requests: Sequence[MultiRequest], now: float | None = None
    ) -> list[tuple[Decision, ...]]:
        """The async twin of :meth:`decide_all_many`."""
        ...

    def reset(self, key: str, algorithm: Algorithm) -> None:
        """Forget ``key``'s state under ``algorithm``: its next request finds a full quota."""
        ...

    async def areset(self, key: str, algorithm: Algorithm) -> None:
        """The async twin of :meth:`reset`."""
        ...

    def reset_all(self, key: str, algorithms: Sequence[Algorithm]) -> None:
        """Forget ``key``'s state under every limit of ``algorithms`` (see :meth:`decide_all`)."""
        ...

    async def areset_all(self, key: str, algorithms: Sequence[Algorithm]) -> None:
        """The async twin of :meth:`reset_all`."""
        ...

    def close(self) -> None:
        """Release what the store opened itself (connections it created from a URL)."""
        ...

    async def aclose(self) -> None:
        """The async twin of :meth:`close`."""
        ...


class StoreBase(ABC):
    """The base of a store of your own: implement the core, inherit the rest.

    The core is :meth:`decide_all` (decide one request under every limit of a key,
    all or nothing) and :meth:`reset_all`. Everything else :class:`Store` offers is
    a default built on it: a single limit is ``decide_all`` over one algorithm
    (same slot, :func:`slot_names`), a batch is one call per request. A backend
    that does I/O overrides the async twins :meth:`adecide_all` and
    :meth:`areset_all` (by default they call the sync ones, which is right only for
    a store that never waits), and may override any default it can do better, such
    as a batch in one round trip. :meth:`close` / :meth:`aclose` release nothing
    unless overridden.

    Set ``name`` (used in events and errors) as a class attribute or in
    ``__init__``. Costs reach the core already checked (non-negative ints) when
    they come through :class:`~buttress.ratelimit.RateLimiter`; a store called
    directly checks them with :func:`validate_cost`.
    """

    __slots__ = ()

    name: str = "store"

    # ----------------------------------------------------------------- the core

    @abstractmethod
    def decide_all(
        self, key: str, algorithms: Sequence[Algorithm], cost: int = 1, now: float | None = None
    ) -> tuple[Decision, ...]:
        """Atomically decide ``cost`` for ``key`` under every limit, all or nothing.

        See :meth:`Store.decide_all` for the contract.
        """

    @abstractmethod
    def reset_all(self, key: str, algorithms: Sequence[Algorithm]) -> None:
        """Forget ``key``'s state under every limit of ``algorithms``."""

    async def adecide_all(
        self, key: str, algorithms: Sequence[Algorithm], cost: int = 1, now: float | None = None
    ) -> tuple[Decision, ...]:
        """The async twin of :meth:`decide_all`; by default it calls it (never waits)."""
        return self.decide_all(key, algorithms, cost, now)

    async def areset_all(self, key: str, algorithms: Sequence[Algorithm]) -> None:
        """The async twin of :meth:`reset_all`; by default it calls it."""
        self.reset_all(key, algorithms)

    def close(self) -> None:  # noqa: B027 - a default: most stores open nothing
        """Release what the store opened; nothing by default."""

    async def aclose(self) -> None:
        """The async twin of :meth:`close`; by default it calls it."""
        self.close()

    # ------------------------------------------------------------- the defaults

    def decide(
        self, key: str, algorithm: Algorithm, cost: int = 1, now: float | None = None
    ) -> Decision:
        """One limit: :meth:`decide_all` over ``(algorithm,)``."""
        return self.decide_all(key, (algorithm,), cost, now)[0]

    async def adecide(
        self, key: str, algorithm: Algorithm, cost: int = 1, now: float | None = None
    ) -> Decision:
        """The async twin of :meth:`decide`."""
        return (await self.adecide_all(key, (algorithm,), cost, now))[0]

    def decide_many(self, requests: Sequence[Request], now: float | None = None) -> list[Decision]:
        """Each ``(key, algorithm, cost)`` request in order, one :meth:`decide` each."""
        decide = self.decide
        return [decide(key, algorithm, cost, now) for key, algorithm, cost in requests]

    async def adecide_many(
        self, requests: Sequence[Request], now: float | None = None
    ) -> list[Decision]:
        """The async twin of :meth:`decide_many`."""
        return [await self.adecide(key, algorithm, cost, now) for key, algorithm, cost in requests]

    def decide_all_many(
        self, requests: Sequence[MultiRequest], now: float | None = None
    ) -> list[tuple[Decision, ...]]:
        """Each ``(key, algorithms, cost)`` request in order, one :meth:`decide_all` each."""
        decide_all = self.decide_all
        return [decide_all(key, limits, cost, now) for key, limits, cost in requests]

    async def adecide_all_many(
        self, requests: Sequence[MultiRequest], now: float | None = None
    ) -> list[tuple[Decision, ...]]:
        """The async twin of :meth:`decide_all_many`."""
        return [await self.adecide_all(key, limits, cost, now) for key, limits, cost in requests]

    def reset(self, key: str, algorithm: Algorithm) -> None:
        """One limit: :meth:`reset_all` over ``(algorithm,)``."""
        self.reset_all(key, (algorithm,))

    async def areset(self, key: str, algorithm: Algorithm) -> None:
        """The async twin of :meth:`reset`."""
        await self.areset_all(key, (algorithm,))


def validate_cost(cost: object) -> int:
    """``cost`` as a non-negative int, else :class:`TypeError` / :class:`ValueError`.

    Shared by every store: a bad cost is the caller's error, raised before any I/O.
    """
    if type(cost) is not int:
        if isinstance(cost, bool) or not isinstance(cost, int):
            raise TypeError(f"cost must be an int, got {type(cost).__name__}")
        cost = int(cost)
    if cost < 0:
        raise ValueError(f"cost must be >= 0, got {cost}")
    return cost

"""A store that degrades to memory while its primary (Redis) is down, and comes back.

Every decision goes to the primary store. When the primary fails — a
:class:`~buttress.stores.StoreError` (its client's socket timeout included) or any
error :func:`~buttress.errors.is_transient` calls transient — the store switches to
its fallback (a :class:`~buttress.stores.MemoryStore` by default) and answers from
there, so the caller never sees the failure. Every ``probe_interval`` seconds one
decision is sent to the primary again as a probe; when it answers, the store
switches back. Each switch emits an event, :class:`StoreFellBack` then
:class:`StoreRecovered`, and logs one line on the ``buttress.stores`` logger (a
warning, then an info): one per outage, however many requests it serves.

Any other error — a bad argument, a :class:`~buttress.errors.ConfigError`, a bug —
is the caller's to see: falling back would hide it for ever.

While degraded, each process enforces the limits on its own, from its own memory:
the limits still hold per process, not across processes.

How quickly a hung Redis counts as failed is the Redis client's socket timeout:
:meth:`~buttress.stores.RedisStore.from_url` (and :func:`store_from_url`) build
clients with a small timeout and no client-side retries; for a client you build
yourself, choose them.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from buttress._events import logger
from buttress._validate import check_clock, check_name, check_seconds
from buttress.clock import MONOTONIC, Clock
from buttress.errors import ConfigError, is_transient
from buttress.events import Emitter, Event, Listener
from buttress.stores.base import (
    Algorithm,
    Decision,
    MultiRequest,
    Request,
    Store,
    StoreBase,
    StoreError,
    validate_cost,
)
from buttress.stores.memory import MemoryStore

__all__ = ["FallbackStore", "StoreFellBack", "StoreRecovered", "is_outage"]


@dataclass(frozen=True, slots=True)
class StoreFellBack(Event):
    """The primary store failed; decisions now come from the fallback store.

    ``policy`` is the fallback store's name, ``error`` the failure that caused it.
    """

    error: Exception


@dataclass(frozen=True, slots=True)
class StoreRecovered(Event):
    """The primary store answered a probe; decisions come from it again.

    ``down_for`` is how many seconds decisions were served by the fallback.
    """

    down_for: float


def is_outage(error: BaseException) -> bool:
    """Whether ``error`` from a store means it is down (so a fallback should answer).

    A :class:`~buttress.stores.StoreError` (unless its ``outage`` is false: the
    store was used wrongly), or an error :func:`~buttress.errors.is_transient` calls
    transient (a store of your own that lets a driver's connection error through).
    Anything else is a bug or a configuration error, which a fallback would only
    hide.
    """
    if isinstance(error, StoreError):
        return error.outage
    return is_transient(error)


def cause(error: BaseException) -> str:
    """``error`` in one line for a log message: its type and its text, no traceback."""
    return f"{type(error).__name__}: {error}"


def _costs(requests: Sequence[tuple[Any, Any, Any]]) -> None:
    for _, _, cost in requests:
        validate_cost(cost)


class FallbackStore(StoreBase):
    """``primary`` first; ``fallback`` (memory) while ``primary`` fails; back after a probe.

    ``probe_interval`` is the time (seconds or a ``timedelta``, on
    ``clock.monotonic()``) between attempts to reach a failed primary.
    ``degraded`` tells whether decisions currently come from the fallback. Listen
    to the switches with :meth:`subscribe` or :func:`buttress.subscribe`.
    """

    __slots__ = (
        "_down_since",
        "_events",
        "_lock",
        "_probe_at",
        "clock",
        "degraded",
        "fallback",
        "name",
        "primary",
        "probe_interval",
    )

    def __init__(
        self,
        primary: Store,
        fallback: Store | None = None,
        *,
        probe_interval: float | timedelta = 5.0,
        clock: Clock = MONOTONIC,
        name: str | None = None,
    ) -> None:
        if not isinstance(primary, Store):
            raise ConfigError(f"expected a Store, got {primary!r}", path="primary")
        if fallback is not None and not isinstance(fallback, Store):
            raise ConfigError(f"expected a Store or None, got {fallback!r}", path="fallback")
        self.probe_interval = check_seconds(probe_interval, "probe_interval")
        self.clock: Clock = check_clock(clock)
        self.primary = primary
        self.fallback: Store = MemoryStore(clock=clock) if fallback is None else fallback
        self.name = check_name(name) or f"{primary.name}+{self.fallback.name}"
        # Whether decisions currently come from the fallback store.
        self.degraded = False
        self._probe_at = 0.0
        self._down_since = 0.0
        self._lock = threading.Lock()
        self._events = Emitter()

    def subscribe(self, listener: Listener, *types: type[Event]) -> Callable[[], None]:
        """Send this store's events to ``listener``; returns the unsubscribe function."""
        return self._events.subscribe(listener, *types)

    # ------------------------------------------------------ the switching logic

    def _try_primary(self) -> bool:
        """Whether this call should go to the primary (healthy, or this call probes)."""
        return not self.degraded or self._claim_probe()

    def _claim_probe(self) -> bool:
        now = self.clock.monotonic()
        with self._lock:
            if not self.degraded:
                return True  # another thread saw the primary recover meanwhile
            if now < self._probe_at:
                return False
            # This caller probes; the others keep using the fallback meanwhile.
            self._probe_at = now + self.probe_interval
            return True

    def _failed(self, error: Exception) -> None:
        if not is_outage(error):
            raise error  # the caller's error, not an outage: never hidden
        now = self.clock.monotonic()
        with self._lock:
            self._probe_at = now + self.probe_interval
            if self.degraded:
                return
            self.degraded = True
            self._down_since = now
        logger("buttress.stores").warning(
            "store %r: %r failed, answering from %r until it recovers (probing every %g s): %s",
            self.name,
            self.primary.name,
            self.fallback.name,
            self.probe_interval,
            cause(error),
        )
        if self._events.enabled:
            self._events.emit(StoreFellBack(self.name, error))

    def _answered(self, result: Any) -> Any:
        if self.degraded:
            self._recover()
        return result

    def _recover(self) -> None:
        now = self.clock.monotonic()
        with self._lock:
            if not self.degraded:
                return  # another thread recovered first and reported it
            self.degraded = False
            down_for = now - self._down_since
        logger("buttress.stores").info(
            "store %r: %r recovered after %.3g s down, answering from it again",
            self.name,
            self.primary.name,
            down_for,
        )
        if self._events.enabled:
            self._events.emit(StoreRecovered(self.name, down_for))

    def _forward(self, method: str, *args: Any) -> Any:
        """``primary.<method>(*args)``, or the fallback's while the primary is down."""
        if self._try_primary():
            try:
                return self._answered(getattr(self.primary, method)(*args))
            except Exception as exc:
                self._failed(exc)
        return getattr(self.fallback, method)(*args)

    async def _aforward(self, method: str, *args: Any) -> Any:
        """The async twin of :meth:`_forward` (``method`` names a coroutine method)."""
        if not self._try_primary():
            return await getattr(self.fallback, method)(*args)
        try:
            result = await getattr(self.primary, method)(*args)
        except Exception as exc:
            self._failed(exc)
            return await getattr(self.fallback, method)(*args)
        return self._answered(result)

    def _reset(self, method: str, *args: Any) -> None:
        # Both stores forget; a primary that is down is skipped (and noted).
        getattr(self.fallback, method)(*args)
        try:
            getattr(self.primary, method)(*args)
        except Exception as exc:
            self._failed(exc)

    async def _areset(self, method: str, *args: Any) -> None:
        await getattr(self.fallback, method)(*args)
        try:
            await getattr(self.primary, method)(*args)
        except Exception as exc:
            self._failed(exc)

    # ------------------------------------------------------------------- store
    # Bad input is the caller's error, not an outage: costs are checked first.

    def decide(
        self, key: str, algorithm: Algorithm, cost: int = 1, now: float | None = None
    ) -> Decision:
        """Decide on the primary store, or on the fallback while the primary is down."""
        if type(cost) is not int or cost < 0:
            cost = validate_cost(cost)
        decision: Decision = self._forward("decide", key, algorithm, cost, now)
        return decision

    async def adecide(
        self, key: str, algorithm: Algorithm, cost: int = 1, now: float | None = None
    ) -> Decision:
        """The async twin of :meth:`decide`."""
        if type(cost) is not int or cost < 0:
            cost = validate_cost(cost)
        decision: Decision = await self._aforward("adecide", key, algorithm, cost, now)
        return decision

    def decide_many(self, requests: Sequence[Request], now: float | None = None) -> list[Decision]:
        """The batch on the primary store, or on the fallback while the primary is down."""
        _costs(requests)
        decisions: list[Decision] = self._forward("decide_many", requests, now)
        return decisions

    async def adecide_many(
        self, requests: Sequence[Request], now: float | None = None
    ) -> list[Decision]:
        """The async twin of :meth:`decide_many`."""
        _costs(requests)
        decisions: list[Decision] = await self._aforward("adecide_many", requests, now)
        return decisions

    def decide_all(
        self, key: str, algorithms: Sequence[Algorithm], cost: int = 1, now: float | None = None
    ) -> tuple[Decision, ...]:
        """All limits at once, all or nothing, on the primary store or on the fallback."""
        cost = validate_cost(cost)
        decisions: tuple[Decision, ...] = self._forward("decide_all", key, algorithms, cost, now)
        return decisions

    async def adecide_all(
        self, key: str, algorithms: Sequence[Algorithm], cost: int = 1, now: float | None = None
    ) -> tuple[Decision, ...]:
        """The async twin of :meth:`decide_all`."""
        cost = validate_cost(cost)
        decisions: tuple[Decision, ...] = await self._aforward(
            "adecide_all", key, algorithms, cost, now
        )
        return decisions

    def decide_all_many(
        self, requests: Sequence[MultiRequest], now: float | None = None
    ) -> list[tuple[Decision, ...]]:
        """The all-limits batch on the primary store, or on the fallback."""
        _costs(requests)
        decisions: list[tuple[Decision, ...]] = self._forward("decide_all_many", requests, now)
        return decisions

    async def adecide_all_many(
        self, requests: Sequence[MultiRequest], now: float | None = None
    ) -> list[tuple[Decision, ...]]:
        """The async twin of :meth:`decide_all_many`."""
        _costs(requests)
        decisions: list[tuple[Decision, ...]] = await self._aforward(
            "adecide_all_many", requests, now
        )
        return decisions

    def reset(self, key: str, algorithm: Algorithm) -> None:
        """Forget ``key`` in both stores (a primary that is down is skipped)."""
        self._reset("reset", key, algorithm)

    async def areset(self, key: str, algorithm: Algorithm) -> None:
        """The async twin of :meth:`reset`."""
        await self._areset("areset", key, algorithm)

    def reset_all(self, key: str, algorithms: Sequence[Algorithm]) -> None:
        """Forget ``key`` under every limit, in both stores (a primary that is down is skipped)."""
        self._reset("reset_all", key, algorithms)

    async def areset_all(self, key: str, algorithms: Sequence[Algorithm]) -> None:
        """The async twin of :meth:`reset_all`."""
        await self._areset("areset_all", key, algorithms)

    def close(self) -> None:
        """Close both stores."""
        try:
            self.primary.close()
        finally:
            self.fallback.close()

    async def aclose(self) -> None:
        """The async twin of :meth:`close`."""
        try:
            await self.primary.aclose()
        finally:
            await self.fallback.aclose()

    def __repr__(self) -> str:
        return (
            f"FallbackStore({self.primary!r}, {self.fallback!r}, "
            f"probe_interval={self.probe_interval!r})"
        )

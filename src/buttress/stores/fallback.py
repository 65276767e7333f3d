"""A store that degrades to memory while its primary (Redis) is down, and comes back.

Every decision goes to the primary store. When the primary fails — any error,
including its client's socket timeout — the store switches to its fallback (a
:class:`~buttress.stores.MemoryStore` by default) and answers from there, so the
caller never sees the failure. Every ``probe_interval`` seconds one decision is
sent to the primary again as a probe; when it answers, the store switches back.
Each switch emits an event: :class:`StoreFellBack`, then :class:`StoreRecovered`.

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
from typing import Any

from buttress.clock import MONOTONIC, Clock
from buttress.errors import ConfigError
from buttress.events import Emitter, Event, Listener
from buttress.stores.base import (
    Algorithm,
    Decision,
    MultiRequest,
    Request,
    Store,
    validate_cost,
)
from buttress.stores.memory import MemoryStore

__all__ = ["FallbackStore", "StoreFellBack", "StoreRecovered"]


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


class FallbackStore:
    """``primary`` first; ``fallback`` (memory) while ``primary`` fails; back after a probe.

    ``probe_interval`` is the time, on ``clock.monotonic()``, between attempts to
    reach a failed primary. ``degraded`` tells whether decisions currently come
    from the fallback. Listen to the switches with :meth:`subscribe` or
    :func:`buttress.subscribe`.
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
        probe_interval: float = 5.0,
        clock: Clock = MONOTONIC,
        name: str | None = None,
    ) -> None:
        if (
            isinstance(probe_interval, bool)
            or not isinstance(probe_interval, int | float)
            or not probe_interval >= 0
        ):
            raise ConfigError(
                f"must be a number >= 0, got {probe_interval!r}", path="probe_interval"
            )
        self.primary = primary
        self.fallback: Store = MemoryStore(clock=clock) if fallback is None else fallback
        self.probe_interval = float(probe_interval)
        self.clock = clock
        self.name = name if name is not None else f"{primary.name}+{self.fallback.name}"
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
        now = self.clock.monotonic()
        with self._lock:
            self._probe_at = now + self.probe_interval
            if self.degraded:
                return
            self.degraded = True
            self._down_since = now
        if self._events.enabled:
            self._events.emit(StoreFellBack(self.name, error))

    def _answered(self) -> None:
        if self.degraded:
            self._recover()

    def _recover(self) -> None:
        now = self.clock.monotonic()
        with self._lock:
            if not self.degraded:
                return  # another thread recovered first and reported it
            self.degraded = False
            down_for = now - self._down_since
        if self._events.enabled:
            self._events.emit(StoreRecovered(self.name, down_for))

    def _forward(self, method: str, *args: Any) -> Any:
        """``primary.<method>(*args)``, or the fallback's while the primary is down."""
        if self._try_primary():
            try:
                result = getattr(self.primary, method)(*args)
            except Exception as exc:
                self._failed(exc)
            else:
                self._answered()
                return result
        return getattr(self.fallback, method)(*args)

    async def _aforward(self, method: str, *args: Any) -> Any:
        """The async twin of :meth:`_forward`."""
        if self._try_primary():
            try:
                result = await getattr(self.primary, method)(*args)
            except Exception as exc:
                self._failed(exc)
            else:
                self._answered()
                return result
        return await getattr(self.fallback, method)(*args)

    # ------------------------------------------------------------------- store

    def decide(
        self, key: str, algorithm: Algorithm, cost: int = 1, now: float | None = None
    ) -> Decision:
        """Decide on the primary store, or on the fallback while the primary is down."""
        if type(cost) is not int or cost < 0:
            # Bad input is the caller's error, not an outage: check it before trying.
            cost = validate_cost(cost)
        if self._try_primary():
            try:
                decision = self.primary.decide(key, algorithm, cost, now)
            except Exception as exc:
                self._failed(exc)
            else:
                self._answered()
                return decision
        return self.fallback.decide(key, algorithm, cost, now)

    async def adecide(
        self, key: str, algorithm: Algorithm, cost: int = 1, now: float | None = None
    ) -> Decision:
        """The async twin of :meth:`decide`."""
        if type(cost) is not int or cost < 0:
            cost = validate_cost(cost)
        if self._try_primary():
            try:
                decision = await self.primary.adecide(key, algorithm, cost, now)
            except Exception as exc:
                self._failed(exc)
            else:
                self._answered()
                return decision
        return await self.fallback.adecide(key, algorithm, cost, now)

    def decide_many(self, requests: Sequence[Request], now: float | None = None) -> list[Decision]:
        """The batch on the primary store, or on the fallback while the primary is down."""
        for _, _, cost in requests:
            validate_cost(cost)
        if self._try_primary():
            try:
                decisions = self.primary.decide_many(requests, now)
            except Exception as exc:
                self._failed(exc)
            else:
                self._answered()
                return decisions
        return self.fallback.decide_many(requests, now)

    async def adecide_many(
        self, requests: Sequence[Request], now: float | None = None
    ) -> list[Decision]:
        """The async twin of :meth:`decide_many`."""
        for _, _, cost in requests:
            validate_cost(cost)
        if self._try_primary():
            try:
                decisions = await self.primary.adecide_many(requests, now)
            except Exception as exc:
                self._failed(exc)
            else:
                self._answered()
                return decisions
        return await self.fallback.adecide_many(requests, now)

    def decide_all(
        self,
        key: str,
        algorithms: Sequence[Algorithm],
        cost: int = 1,
        now: float | None = None,
    ) -> tuple[Decision, ...]:
        """All limits at once, all or nothing, on the primary store or on the fallback."""
        cost = validate_cost(cost)
        decisions: tuple[Decision, ...] = self._forward("decide_all", key, algorithms, cost, now)
        return decisions

    async def adecide_all(
        self,
        key: str,
        algorithms: Sequence[Algorithm],
        cost: int = 1,
        now: float | None = None,
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
        for _, _, cost in requests:
            validate_cost(cost)
        decisions: list[tuple[Decision, ...]] = self._forward("decide_all_many", requests, now)
        return decisions

    async def adecide_all_many(
        self, requests: Sequence[MultiRequest], now: float | None = None
    ) -> list[tuple[Decision, ...]]:
        """The async twin of :meth:`decide_all_many`."""
        for _, _, cost in requests:
            validate_cost(cost)
        decisions: list[tuple[Decision, ...]] = await self._aforward(
            "adecide_all_many", requests, now
        )
        return decisions

    def reset(self, key: str, algorithm: Algorithm) -> None:
        """Forget ``key`` in both stores (a primary that is down is skipped)."""
        self.fallback.reset(key, algorithm)
        try:
            self.primary.reset(key, algorithm)
        except Exception as exc:
            self._failed(exc)

    async def areset(self, key: str, algorithm: Algorithm) -> None:
        """The async twin of :meth:`reset`."""
        await self.fallback.areset(key, algorithm)
        try:
            await self.primary.areset(key, algorithm)
        except Exception as exc:
            self._failed(exc)

    def reset_all(self, key: str, algorithms: Sequence[Algorithm]) -> None:
        """Forget ``key`` under every limit, in both stores (a primary that is down is skipped)."""
        self.fallback.reset_all(key, algorithms)
        try:
            self.primary.reset_all(key, algorithms)
        except Exception as exc:
            self._failed(exc)

    async def areset_all(self, key: str, algorithms: Sequence[Algorithm]) -> None:
        """The async twin of :meth:`reset_all`."""
        await self.fallback.areset_all(key, algorithms)
        try:
            await self.primary.areset_all(key, algorithms)
        except Exception as exc:
            self._failed(exc)

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

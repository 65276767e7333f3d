"""The in-process store: rate-limit state in a dict, one lock, bounded memory.

A decision reads the key's state, runs the algorithm's pure ``decide`` and writes
the result back, all under one lock held for well under a microsecond, so it is
atomic across threads and (having no ``await`` inside) across asyncio tasks.

Memory stays bounded however many distinct keys pass through. Each entry records
when its state becomes equivalent to a fresh key (``now + reset_after``); a state
that is already fresh is never stored. Whenever a new key is added, the two oldest
entries are examined: expired ones are dropped, live ones move to the back. Each
insertion thus pays for checking two entries, which keeps the table below about
twice the number of live keys, with no background thread and no full scan.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

from buttress.clock import MONOTONIC, Clock
from buttress.stores.base import Algorithm, Decision, Request, State, validate_cost

__all__ = ["MemoryStore"]


class MemoryStore:
    """Rate-limit state in this process; thread- and task-safe; the default store.

    Time is ``clock.monotonic()`` unless a call passes ``now``. ``len(store)`` is the
    number of keys currently held.
    """

    __slots__ = ("_data", "_lock", "_monotonic", "clock", "name")

    def __init__(self, *, clock: Clock = MONOTONIC, name: str = "memory") -> None:
        self.clock = clock
        self.name = name
        self._monotonic = clock.monotonic
        # (algorithm name, key) -> [state, expires_at]; oldest insertion first. The
        # list is updated in place so a known key costs no dict write.
        self._data: OrderedDict[tuple[str, str], list[Any]] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._data)

    def decide(
        self, key: str, algorithm: Algorithm, cost: int = 1, now: float | None = None
    ) -> Decision:
        """Atomically decide one request of ``cost`` for ``key`` under ``algorithm``."""
        if type(cost) is not int or cost < 0:
            cost = validate_cost(cost)
        if now is None:
            now = self._monotonic()
        slot = (algorithm.name, key)
        data = self._data
        lock = self._lock
        lock.acquire()
        try:
            entry = data.get(slot)
            if entry is None:
                state, decision = algorithm.decide(None, now, cost)
                if decision[3] > 0:
                    data[slot] = [state, now + decision[3]]
                    self._sweep(now)
            else:
                state, decision = algorithm.decide(entry[0], now, cost)
                if decision[3] > 0:
                    entry[0] = state
                    entry[1] = now + decision[3]
                else:
                    del data[slot]
        finally:
            lock.release()
        return decision

    def _sweep(self, now: float) -> None:
        # Examine the two oldest entries: drop the expired, requeue the live. Called
        # with the lock held, once per insertion.
        data = self._data
        for _ in range(2):
            slot, entry = data.popitem(last=False)
            if entry[1] > now:
                data[slot] = entry

    async def adecide(
        self, key: str, algorithm: Algorithm, cost: int = 1, now: float | None = None
    ) -> Decision:
        """The async twin of :meth:`decide` (it never waits for anything but the lock)."""
        return self.decide(key, algorithm, cost, now)

    def decide_many(self, requests: Sequence[Request], now: float | None = None) -> list[Decision]:
        """Decide several ``(key, algorithm, cost)`` requests in order, at one instant."""
        if now is None:
            now = self._monotonic()
        decide = self.decide
        return [decide(key, algorithm, cost, now) for key, algorithm, cost in requests]

    async def adecide_many(
        self, requests: Sequence[Request], now: float | None = None
    ) -> list[Decision]:
        """The async twin of :meth:`decide_many`."""
        return self.decide_many(requests, now)

    def reset(self, key: str, algorithm: Algorithm) -> None:
        """Forget ``key``'s state under ``algorithm``."""
        with self._lock:
            self._data.pop((algorithm.name, key), None)

    async def areset(self, key: str, algorithm: Algorithm) -> None:
        """The async twin of :meth:`reset`."""
        self.reset(key, algorithm)

    def peek_state(self, key: str, algorithm: Algorithm) -> State | None:
        """The stored state of ``key`` (``None`` if fresh); for tests and debugging."""
        with self._lock:
            entry = self._data.get((algorithm.name, key))
        return None if entry is None else tuple(entry[0])

    def clear(self) -> None:
        """Forget every key."""
        with self._lock:
            self._data.clear()

    def close(self) -> None:
        """Nothing to release; here for the :class:`~buttress.stores.Store` protocol."""

    async def aclose(self) -> None:
        """Nothing to release; here for the :class:`~buttress.stores.Store` protocol."""

    def __repr__(self) -> str:
        return f"MemoryStore(name={self.name!r}, keys={len(self._data)})"

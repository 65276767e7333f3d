"""The in-process store: rate-limit state in dicts, one lock, bounded memory.

A decision reads the key's state, runs the algorithm's pure ``decide`` and writes
the result back, all under one lock held for about a microsecond, so it is atomic
across threads and (having no ``await`` inside) across asyncio tasks. Several limits
on one key are decided under the same single lock hold, all or nothing.

The hot path is a *bound decider* (:meth:`MemoryStore.bind`): a closure made once
per algorithm that holds the algorithm's ``decide``, its table and the lock, so a
decision costs a clock read, the lock, one dict lookup and the algorithm itself —
no tuple keys to build and hash, no attribute lookups. :meth:`~MemoryStore.decide`
keeps one per algorithm and calls it; :class:`~buttress.ratelimit.RateLimiter`
calls it directly.

Memory stays bounded however many distinct keys pass through. Each entry records
when its state becomes equivalent to a fresh key (``now + reset_after``); a state
that is already fresh is never stored. Whenever a new key is added, the two oldest
entries of an insertion queue are examined: expired ones are dropped, live ones move
to the back, and ones deleted or replaced meanwhile are forgotten. Each insertion
thus pays for checking two entries, which keeps the tables below about twice the
number of live keys, with no background thread and no full scan.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, TypeAlias

from buttress.clock import MONOTONIC, Clock
from buttress.stores.base import (
    Algorithm,
    Decision,
    MultiRequest,
    Request,
    State,
    slot_names,
    validate_cost,
)

__all__ = ["MemoryStore"]

# key -> [state, expires_at]. Lists, updated in place, so a known key costs no dict
# write and the insertion queue can tell a live entry from a replaced one (identity).
_Table: TypeAlias = dict[str, list[Any]]
Decider: TypeAlias = Callable[[str, int, float | None], Decision]
"""A bound decider: ``(key, cost, now=None) -> Decision`` for one algorithm."""
MultiDecider: TypeAlias = Callable[[str, int, float | None], tuple[Decision, ...]]
"""A bound all-limits decider: ``(key, cost, now=None) -> decisions`` for some algorithms."""

# Bound deciders kept per algorithm (or tuple of them); bounded in case a program
# builds a new algorithm object per call.
_BOUND_MAX = 1024


class MemoryStore:
    """Rate-limit state in this process; thread- and task-safe; the default store.

    Time is ``clock.monotonic()`` unless a call passes ``now``. ``len(store)`` is the
    number of keys currently held (over every limit).
    """

    __slots__ = (
        "_bound",
        "_bound_all",
        "_lock",
        "_monotonic",
        "_queue",
        "_tables",
        "clock",
        "name",
    )

    def __init__(self, *, clock: Clock = MONOTONIC, name: str = "memory") -> None:
        self.clock = clock
        self.name = name
        self._monotonic = clock.monotonic
        # slot name -> table. A table is never replaced (clear() empties it), so bound
        # deciders may hold on to theirs.
        self._tables: dict[str, _Table] = {}
        # (table, key, entry) per insertion, oldest first.
        self._queue: deque[tuple[_Table, str, list[Any]]] = deque()
        self._lock = threading.Lock()
        self._bound: dict[Algorithm, Decider] = {}
        self._bound_all: dict[tuple[Algorithm, ...], MultiDecider] = {}

    def __len__(self) -> int:
        return sum(len(table) for table in list(self._tables.values()))

    def _table(self, slot: str) -> _Table:
        table = self._tables.get(slot)
        if table is None:
            # setdefault is atomic: threads racing to create a table agree on one.
            table = self._tables.setdefault(slot, {})
        return table

    def _added(self, table: _Table, key: str, entry: list[Any], now: float) -> None:
        # Called with the lock held, once per insertion: queue the new entry, then
        # examine the two oldest (unrolled: this runs for every new key).
        queue = self._queue
        queue.append((table, key, entry))
        item = queue.popleft()
        old_table, old_key, old_entry = item
        if old_table.get(old_key) is old_entry:
            if old_entry[1] > now:
                queue.append(item)
            else:
                del old_table[old_key]
        item = queue.popleft()
        old_table, old_key, old_entry = item
        if old_table.get(old_key) is old_entry:
            if old_entry[1] > now:
                queue.append(item)
            else:
                del old_table[old_key]

    # ---------------------------------------------------------------- one limit

    def bind(self, algorithm: Algorithm) -> Decider:
        """A decider for ``algorithm`` alone: ``(key, cost, now=None) -> Decision``.

        Same decisions and state as :meth:`decide`, with every per-call lookup done
        once here. ``cost`` is not validated: pass a non-negative int.
        """
        decide = algorithm.decide
        table = self._table(algorithm.name)
        get = table.get
        monotonic = self._monotonic
        lock = self._lock
        acquire = lock.acquire
        release = lock.release
        added = self._added

        def decide_bound(key: str, cost: int, now: float | None = None) -> Decision:
            if now is None:
                now = monotonic()
            acquire()
            try:
                entry = get(key)
                if entry is None:
                    state, decision = decide(None, now, cost)
                    reset_after = decision[3]
                    if reset_after > 0:
                        entry = [state, now + reset_after]
                        table[key] = entry
                        added(table, key, entry, now)
                else:
                    state, decision = decide(entry[0], now, cost)
                    reset_after = decision[3]
                    if reset_after > 0:
                        entry[0] = state
                        entry[1] = now + reset_after
                    else:
                        # Back to fresh: a fresh state is never kept.
                        del table[key]
            finally:
                release()
            return decision

        return decide_bound

    def _decider(self, algorithm: Algorithm) -> Decider:
        bound = self._bound
        try:
            decider = bound.get(algorithm)
        except TypeError:  # an unhashable algorithm of the caller's own: no caching
            return self.bind(algorithm)
        if decider is None:
            decider = self.bind(algorithm)
            if len(bound) >= _BOUND_MAX:
                bound.clear()
            bound[algorithm] = decider
        return decider

    def decide(
        self, key: str, algorithm: Algorithm, cost: int = 1, now: float | None = None
    ) -> Decision:
        """Atomically decide one request of ``cost`` for ``key`` under ``algorithm``."""
        if type(cost) is not int or cost < 0:
            cost = validate_cost(cost)
        return self._decider(algorithm)(key, cost, now)

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

    # ----------------------------------------------------------- several limits

    def bind_all(self, algorithms: Sequence[Algorithm]) -> MultiDecider:
        """An all-limits decider: ``(key, cost, now=None) -> decisions``, as :meth:`decide_all`.

        ``cost`` is not validated: pass a non-negative int.
        """
        limits = tuple(algorithms)
        tables = tuple(self._table(slot) for slot in slot_names(limits))
        # (decide, table.get, table) per limit, looked up once.
        steps = tuple(
            (algorithm.decide, table.get, table)
            for algorithm, table in zip(limits, tables, strict=True)
        )
        monotonic = self._monotonic
        lock = self._lock
        acquire = lock.acquire
        release = lock.release
        added = self._added

        def decide_all_bound(key: str, cost: int, now: float | None = None) -> tuple[Decision, ...]:
            if now is None:
                now = monotonic()
            # Plain loops, not comprehensions: each comprehension is a call of its own.
            entries: list[list[Any] | None] = []
            outcomes: list[tuple[State, Decision]] = []
            allowed = True
            acquire()
            try:
                for decide, get, _ in steps:
                    entry = get(key)
                    outcome = decide(None if entry is None else entry[0], now, cost)
                    entries.append(entry)
                    outcomes.append(outcome)
                    if not outcome[1][0]:
                        allowed = False
                decisions: list[Decision] = []
                if allowed:
                    inserted = []
                    for (_, _, table), entry, (state, decision) in zip(
                        steps, entries, outcomes, strict=True
                    ):
                        reset_after = decision[3]
                        if entry is None:
                            if reset_after > 0:
                                fresh = [state, now + reset_after]
                                table[key] = fresh
                                inserted.append((table, fresh))
                        elif reset_after > 0:
                            entry[0] = state
                            entry[1] = now + reset_after
                        else:
                            del table[key]
                        decisions.append(decision)
                    # Sweep only once every state is written: a sweep in between could
                    # drop an entry of this key that is due now but about to be updated.
                    for table, fresh in inserted:
                        added(table, key, fresh, now)
                else:
                    # Refused: nothing is taken anywhere. The limits that would have
                    # allowed report their standing, as an ask of cost 0 would.
                    for (decide, _, _), entry, (_, decision) in zip(
                        steps, entries, outcomes, strict=True
                    ):
                        decisions.append(
                            decide(None if entry is None else entry[0], now, 0)[1]
                            if decision[0]
                            else decision
                        )
            finally:
                release()
            return tuple(decisions)

        return decide_all_bound

    def _all_decider(self, algorithms: Sequence[Algorithm]) -> MultiDecider:
        limits = tuple(algorithms)
        bound = self._bound_all
        try:
            decider = bound.get(limits)
        except TypeError:
            return self.bind_all(limits)
        if decider is None:
            decider = self.bind_all(limits)
            if len(bound) >= _BOUND_MAX:
                bound.clear()
            bound[limits] = decider
        return decider

    def decide_all(
        self,
        key: str,
        algorithms: Sequence[Algorithm],
        cost: int = 1,
        now: float | None = None,
    ) -> tuple[Decision, ...]:
        """Decide ``cost`` for ``key`` under every limit at once, all or nothing.

        Every limit decides on its current state under one lock hold; the new states
        are kept only if all allow. When one refuses, no state changes, and the
        limits that would have allowed report their standing as a cost-0 ask.
        """
        if type(cost) is not int or cost < 0:
            cost = validate_cost(cost)
        return self._all_decider(algorithms)(key, cost, now)

    async def adecide_all(
        self,
        key: str,
        algorithms: Sequence[Algorithm],
        cost: int = 1,
        now: float | None = None,
    ) -> tuple[Decision, ...]:
        """The async twin of :meth:`decide_all`."""
        return self.decide_all(key, algorithms, cost, now)

    def decide_all_many(
        self, requests: Sequence[MultiRequest], now: float | None = None
    ) -> list[tuple[Decision, ...]]:
        """Several ``(key, algorithms, cost)`` all-limits decisions in order, at one instant."""
        if now is None:
            now = self._monotonic()
        decide_all = self.decide_all
        return [decide_all(key, algorithms, cost, now) for key, algorithms, cost in requests]

    async def adecide_all_many(
        self, requests: Sequence[MultiRequest], now: float | None = None
    ) -> list[tuple[Decision, ...]]:
        """The async twin of :meth:`decide_all_many`."""
        return self.decide_all_many(requests, now)

    # ------------------------------------------------------------------ the rest

    def reset(self, key: str, algorithm: Algorithm) -> None:
        """Forget ``key``'s state under ``algorithm``."""
        with self._lock:
            self._table(algorithm.name).pop(key, None)

    async def areset(self, key: str, algorithm: Algorithm) -> None:
        """The async twin of :meth:`reset`."""
        self.reset(key, algorithm)

    def reset_all(self, key: str, algorithms: Sequence[Algorithm]) -> None:
        """Forget ``key``'s state under every limit of ``algorithms``."""
        slots = slot_names(algorithms)
        with self._lock:
            for slot in slots:
                self._table(slot).pop(key, None)

    async def areset_all(self, key: str, algorithms: Sequence[Algorithm]) -> None:
        """The async twin of :meth:`reset_all`."""
        self.reset_all(key, algorithms)

    def peek_state(self, key: str, algorithm: Algorithm, slot: str | None = None) -> State | None:
        """The stored state of ``key`` (``None`` if fresh); for tests and debugging.

        ``slot`` picks a limit's slot other than the algorithm's own (``"tb.2"``).
        """
        with self._lock:
            entry = self._table(algorithm.name if slot is None else slot).get(key)
        return None if entry is None else tuple(entry[0])

    def clear(self) -> None:
        """Forget every key."""
        with self._lock:
            for table in self._tables.values():
                table.clear()
            self._queue.clear()

    def close(self) -> None:
        """Nothing to release; here for the :class:`~buttress.stores.Store` protocol."""

    async def aclose(self) -> None:
        """Nothing to release; here for the :class:`~buttress.stores.Store` protocol."""

    def __repr__(self) -> str:
        return f"MemoryStore(name={self.name!r}, keys={len(self)})"

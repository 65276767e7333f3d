"""The in-process store: rate-limit state in dicts, one lock, bounded memory.

A decision reads the key's state, runs the algorithm's pure ``decide`` and writes
the result back, all under one lock held for about a microsecond, so it is atomic
across threads and (having no ``await`` inside) across asyncio tasks. Several limits
on one key are decided under the same single lock hold, all or nothing.

The hot paths are *bound deciders*, made once per algorithm (the
:class:`~buttress.stores.LocalStore` capability). :meth:`MemoryStore.bind` holds the
algorithm's ``decide``, its table and the lock, so a decision costs a clock read,
the lock, one dict lookup and the algorithm itself. :meth:`MemoryStore.bind_allow`
answers only "allowed?": it is compiled from a template into which the algorithm's
boolean twin (:class:`~buttress.stores.AllowTwin`) is pasted, so one decision is one
Python call that builds no :class:`~buttress.stores.Decision` — the way
:class:`~buttress.ratelimit.RateLimiter` enforces limits.

Memory stays bounded however many distinct keys pass through. Each entry records
when its state becomes equivalent to a fresh key (``now + reset_after``); a state
that is already fresh is never stored. Whenever a new key is added, the two oldest
entries of an insertion queue are examined: expired ones are dropped, live ones move
to the back, and ones deleted or replaced meanwhile are forgotten. Each insertion
thus pays for checking two entries, which keeps the tables below about twice the
number of live keys, with no background thread and no full scan.

A process that forks while another thread holds a store's lock would give the
child a lock that nobody will ever release: every store's lock is freed in the
child at fork (:func:`os.register_at_fork`).
"""

from __future__ import annotations

import os
import textwrap
import weakref
from collections import deque
from collections.abc import Callable, Sequence
from time import sleep as _sleep
from typing import Any, TypeAlias

from buttress._validate import check_clock, check_name
from buttress.clock import MONOTONIC, Clock
from buttress.errors import ConfigError
from buttress.stores._local import Allow, AllowTwin, AsyncAllow, Decider, MultiDecider
from buttress.stores.base import (
    Algorithm,
    Decision,
    MultiRequest,
    Request,
    State,
    slot_names,
    validate_cost,
)

__all__ = ["Decider", "MemoryStore", "MultiDecider"]

# key -> [state, expires_at]. Lists, updated in place, so a known key costs no dict
# write and the insertion queue can tell a live entry from a replaced one (identity).
_Table: TypeAlias = dict[str, list[Any]]

# Bound deciders kept per algorithm (or tuple of them); bounded in case a program
# builds a new algorithm object per call.
_BOUND_MAX = 1024

# Mutual exclusion is one token in a list: ``pop()`` takes it, or raises IndexError
# when another thread holds it; ``append()`` gives it back. Both are atomic (under the
# GIL, and per object on free-threaded builds), so whoever popped the token is alone
# in the critical section until it appends it again: every decision happens whole,
# in the order the token was taken (linearizable). Uncontended it costs a third of
# threading.Lock's acquire/release pair, whose argument parsing dominates a decision
# on CPython 3.11. The sections are short (a dict lookup and a few float operations),
# so a thread that finds the token taken yields and tries again: on one core the
# holder was preempted mid-section and needs the GIL back; on several, it is
# finishing.
_YIELDS = 64
_MAX_PAUSE = 1e-3


def _wait(take: Callable[[], bool]) -> None:
    """Take the token from ``take`` once its holder gives it back."""
    pause = 0.0
    tries = 0
    while True:
        _sleep(pause)  # 0 first: just yield; then back off, as a slow holder may be
        try:
            take()
        except IndexError:
            tries += 1
            if tries >= _YIELDS:
                pause = min(_MAX_PAUSE, pause * 2 or 1e-6)
        else:
            return


# Every store, so a forked child can give back the tokens other threads held.
_stores: weakref.WeakSet[MemoryStore] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for store in list(_stores):
        store._after_fork()


if hasattr(os, "register_at_fork"):  # not on Windows, which never forks
    os.register_at_fork(after_in_child=_after_fork_in_child)


# ------------------------------------------------------------ boolean deciders
#
# The boolean deciders are generated, as dataclasses generates __init__: one
# template per shape, with sync and async variants, and the algorithm's boolean twin
# pasted in, so the allowed path is a single Python frame. Locals of the template
# start with "_" (the twin's own names never do); "key", "cost", "now", "state",
# "allowed" and "reset_after" are shared with the twin.

_HEAD = """\
def _make({params}):
    {async_}def allow(key=None, cost=None):
        _key = _default_key if key is None else _prefix + key
        if cost is None:
            cost = _default_cost
        elif type(cost) is not int or cost < 0:
            cost = _validate_cost(cost)
"""

_TAIL = """\
        if _on_refused is not None:
            _on_refused()
        return False
    return allow
"""

# One limit: the twin inline, between the lookup and the write-back of decide's
# bound decider (same table, same entries, same sweep).
_ONE = """\
        now = _monotonic()
        try:
            _take()
        except IndexError:
            _wait(_take)
        try:
            _entry = _get(_key)
            state = None if _entry is None else _entry[0]
{twin}
            if reset_after > 0.0:
                if _entry is None:
                    _entry = [state, now + reset_after]
                    _table[_key] = _entry
                    _added(_table, _key, _entry, now)
                else:
                    _entry[0] = state
                    _entry[1] = now + reset_after
            elif _entry is not None:
                # Back to fresh: a fresh state is never kept.
                del _table[_key]
        finally:
            _give(True)
        if allowed:
            return True
"""

# Several limits: each limit's twin as a step function; all or nothing. The first
# refusal ends it, writing nothing (decide_all writes nothing on a refusal either).
_ALL = """\
        now = _monotonic()
        _outcomes = []
        try:
            _take()
        except IndexError:
            _wait(_take)
        try:
            for _step, _get, _table in _steps:
                _entry = _get(_key)
                _outcome = _step(None if _entry is None else _entry[0], now, cost)
                if not _outcome[2]:
                    break
                _outcomes.append((_table, _entry, _outcome))
            else:
                _inserted = []
                for _table, _entry, (_state, _reset_after, _) in _outcomes:
                    if _entry is None:
                        if _reset_after > 0.0:
                            _fresh = [_state, now + _reset_after]
                            _table[_key] = _fresh
                            _inserted.append((_table, _fresh))
                    elif _reset_after > 0.0:
                        _entry[0] = _state
                        _entry[1] = now + _reset_after
                    else:
                        del _table[_key]
                # Sweep once every state is written, as decide_all does.
                for _table, _fresh in _inserted:
                    _added(_table, _key, _fresh, now)
                return True
        finally:
            _give(True)
"""

# A subclass overrode decide: ask it, through its own methods.
_DELEGATE = """\
        if _allowed({await_}_ask(_key, _limits, cost)):
            return True
"""

_STEP = """\
def _make({params}):
    def step(state, now, cost):
{twin}
        return state, reset_after, allowed
    return step
"""

# For an algorithm without a boolean twin: its decide, whose decision is dropped.
_GENERIC_TWIN = """\
state, _decision = _decide(state, now, cost)
allowed = _decision[0]
reset_after = _decision[3]
"""

# (template, how far its twin is indented)
_ONE_TEMPLATE = (_HEAD + _ONE + _TAIL, 12)
_ALL_TEMPLATE = (_HEAD + _ALL + _TAIL, 0)
_DELEGATE_TEMPLATE = (_HEAD + _DELEGATE + _TAIL, 0)
_STEP_TEMPLATE = (_STEP, 8)

_ALLOW_PARAMS = (
    "_prefix",
    "_default_key",
    "_default_cost",
    "_validate_cost",
    "_on_refused",
)
_ONE_PARAMS = ("_table", "_get", "_added", "_monotonic", "_take", "_give", "_wait")
_ALL_PARAMS = ("_steps", "_added", "_monotonic", "_take", "_give", "_wait")
_DELEGATE_PARAMS = ("_ask", "_limits", "_allowed")

_compiled: dict[tuple[object, ...], Callable[..., Any]] = {}


def _compile(
    template: tuple[str, int], params: tuple[str, ...], twin: str = "", is_async: bool = False
) -> Any:
    """The ``_make`` factory of ``template``, compiled once per template, twin and names."""
    cache_key = (template, twin, params, is_async)
    make = _compiled.get(cache_key)
    if make is None:
        text, indent = template
        source = text.format(
            params=", ".join(params),
            async_="async " if is_async else "",
            await_="await " if is_async else "",
            twin=textwrap.indent(twin, " " * indent),
        )
        namespace: dict[str, Any] = {}
        code = compile(source, "<buttress.stores.memory: bound decider>", "exec")
        exec(code, namespace)  # our own templates; the twins come from the algorithms
        make = namespace["_make"]
        if len(_compiled) >= _BOUND_MAX:
            _compiled.clear()
        _compiled[cache_key] = make
    return make


def _twin_of(algorithm: Algorithm) -> AllowTwin:
    twin = getattr(algorithm, "allow_twin", None)
    if isinstance(twin, AllowTwin):
        return twin
    return AllowTwin(_GENERIC_TWIN, {"_decide": algorithm.decide})


def _step(algorithm: Algorithm) -> Callable[[State | None, float, int], tuple[State, float, bool]]:
    """The boolean twin as ``step(state, now, cost) -> (state, reset_after, allowed)``."""
    twin = _twin_of(algorithm)
    names = tuple(sorted(twin.names))
    make = _compile(_STEP_TEMPLATE, names, twin.source)
    step: Callable[[State | None, float, int], tuple[State, float, bool]]
    step = make(*(twin.names[name] for name in names))
    return step


def _one_allowed(decision: Decision) -> bool:
    return decision[0]


def _all_allowed(decisions: tuple[Decision, ...]) -> bool:
    return all(decision[0] for decision in decisions)


class MemoryStore:
    """Rate-limit state in this process; thread- and task-safe; the default store.

    Time is ``clock.monotonic()`` unless a call passes ``now``. ``len(store)`` is the
    number of keys currently held (over every limit).
    """

    __slots__ = (
        "__weakref__",
        "_bound",
        "_bound_all",
        "_give",
        "_monotonic",
        "_queue",
        "_tables",
        "_take",
        "_token",
        "clock",
        "name",
    )

    def __init__(self, *, clock: Clock = MONOTONIC, name: str = "memory") -> None:
        self.clock: Clock = check_clock(clock)
        checked = check_name(name)
        if checked is None:
            raise ConfigError("must be a non-empty string, got None", path="name")
        self.name = checked
        self._monotonic = clock.monotonic
        # slot name -> table. A table is never replaced (clear() empties it), so bound
        # deciders may hold on to theirs.
        self._tables: dict[str, _Table] = {}
        # (table, key, entry) per insertion, oldest first.
        self._queue: deque[tuple[_Table, str, list[Any]]] = deque()
        # The store's mutex (see _wait): one token, taken by pop() and given back by
        # append(). Bound deciders hold these very methods: the list is never
        # replaced (a forked child gives a missing token back, see _after_fork).
        self._token: list[bool] = [True]
        self._take = self._token.pop
        self._give = self._token.append
        self._bound: dict[Algorithm, Decider] = {}
        self._bound_all: dict[tuple[Algorithm, ...], MultiDecider] = {}
        _stores.add(self)

    def _acquire(self) -> None:
        try:
            self._take()
        except IndexError:
            _wait(self._take)

    def _after_fork(self) -> None:
        # In a forked child only the forking thread exists: a token another thread
        # held at the fork would stay taken for ever, so it is given back. (The key
        # that thread was updating may keep a half-written entry: one key's state,
        # never the store's structure, which only ever changes by single dict and
        # deque operations.)
        if not self._token:
            self._give(True)

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
        # examine the two oldest. An entry is dropped once its expiry is *before*
        # now: `now + reset_after` may round down to `now` itself when reset_after
        # is below half an ulp of now (1e-9 s at epoch times), and such a state is
        # not fresh yet at `now`: dropping it would admit too much (and, the queue
        # holding nothing else, leave nothing for the second examination). So the
        # new entry always survives its own sweep, and the queue never runs dry.
        queue = self._queue
        queue.append((table, key, entry))
        for _ in range(2):
            item = queue.popleft()
            old_table, old_key, old_entry = item
            if old_table.get(old_key) is old_entry:
                if old_entry[1] < now:
                    del old_table[old_key]
                else:
                    queue.append(item)

    # ---------------------------------------------------------------- one limit

    def bind(self, algorithm: Algorithm) -> Decider:
        """A decider for ``algorithm`` alone: ``(key, cost, now=None) -> Decision``.

        Same decisions and state as :meth:`decide`, with every per-call lookup done
        once here. ``cost`` is not validated: pass a non-negative int. A subclass
        that overrides ``decide`` gets a decider that calls it.
        """
        if self._overridden():
            decide = self.decide

            def decide_overridden(key: str, cost: int, now: float | None = None) -> Decision:
                return decide(key, algorithm, cost, now)

            return decide_overridden
        return self._bind(algorithm)

    def _overridden(self) -> bool:
        """Whether a subclass overrides a decision method: then binders must call it."""
        cls = type(self)
        return cls is not MemoryStore and any(
            getattr(cls, method) is not getattr(MemoryStore, method)
            for method in ("decide", "adecide", "decide_all", "adecide_all")
        )

    def _bind(self, algorithm: Algorithm) -> Decider:
        decide = algorithm.decide
        table = self._table(algorithm.name)
        get = table.get
        monotonic = self._monotonic
        take = self._take
        give = self._give
        added = self._added

        def decide_bound(key: str, cost: int, now: float | None = None) -> Decision:
            if now is None:
                now = monotonic()
            try:
                take()
            except IndexError:
                _wait(take)
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
                give(True)
            return decision

        return decide_bound

    def _decider(self, algorithm: Algorithm) -> Decider:
        bound = self._bound
        try:
            decider = bound.get(algorithm)
        except TypeError:  # an unhashable algorithm of the caller's own: no caching
            return self._bind(algorithm)
        if decider is None:
            decider = self._bind(algorithm)
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

        ``cost`` is not validated: pass a non-negative int. A subclass that
        overrides ``decide_all`` gets a decider that calls it.
        """
        limits = tuple(algorithms)
        if self._overridden():
            decide_all = self.decide_all

            def decide_all_overridden(
                key: str, cost: int, now: float | None = None
            ) -> tuple[Decision, ...]:
                return decide_all(key, limits, cost, now)

            return decide_all_overridden
        return self._bind_all(limits)

    def _bind_all(self, limits: tuple[Algorithm, ...]) -> MultiDecider:
        tables = tuple(self._table(slot) for slot in slot_names(limits))
        # (decide, table.get, table) per limit, looked up once.
        steps = tuple(
            (algorithm.decide, table.get, table)
            for algorithm, table in zip(limits, tables, strict=True)
        )
        monotonic = self._monotonic
        take = self._take
        give = self._give
        added = self._added

        def decide_all_bound(key: str, cost: int, now: float | None = None) -> tuple[Decision, ...]:
            if now is None:
                now = monotonic()
            # Plain loops, not comprehensions: each comprehension is a call of its own.
            entries: list[list[Any] | None] = []
            outcomes: list[tuple[State, Decision]] = []
            allowed = True
            try:
                take()
            except IndexError:
                _wait(take)
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
                give(True)
            return tuple(decisions)

        return decide_all_bound

    def _all_decider(self, algorithms: Sequence[Algorithm]) -> MultiDecider:
        limits = tuple(algorithms)
        bound = self._bound_all
        try:
            decider = bound.get(limits)
        except TypeError:
            return self._bind_all(limits)
        if decider is None:
            decider = self._bind_all(limits)
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

    # ------------------------------------------------------------ boolean deciders

    def bind_allow(
        self,
        algorithms: Sequence[Algorithm],
        *,
        prefix: str = "",
        default_key: str = "",
        default_cost: int = 1,
        on_refused: Callable[[], object] | None = None,
    ) -> Allow:
        """``allow(key=None, cost=None) -> bool``: one request under every limit, all or nothing.

        Decides, and keeps state, exactly as :meth:`decide` (one limit) or
        :meth:`decide_all` (several) would for the key ``prefix + key`` —
        ``default_key`` as it is when ``key`` is ``None`` — and ``cost`` (``default_cost``
        when ``None``), but answers only whether the request was allowed, building
        no :class:`~buttress.stores.Decision`. ``on_refused()`` is called after each
        refusal. One limit with a boolean twin (every built-in algorithm has one)
        makes a decision a single Python call.
        """
        allow: Allow = self._bind_allow(
            algorithms, prefix, default_key, default_cost, on_refused, is_async=False
        )
        return allow

    def bind_async_allow(
        self,
        algorithms: Sequence[Algorithm],
        *,
        prefix: str = "",
        default_key: str = "",
        default_cost: int = 1,
        on_refused: Callable[[], object] | None = None,
    ) -> AsyncAllow:
        """The async twin of :meth:`bind_allow` (it never waits for anything but the lock)."""
        allow: AsyncAllow = self._bind_allow(
            algorithms, prefix, default_key, default_cost, on_refused, is_async=True
        )
        return allow

    def _bind_allow(
        self,
        algorithms: Sequence[Algorithm],
        prefix: str,
        default_key: str,
        default_cost: int,
        on_refused: Callable[[], object] | None,
        *,
        is_async: bool,
    ) -> Any:
        limits = tuple(algorithms)
        if not limits:
            raise ValueError("bind_allow needs at least one algorithm")
        if not isinstance(prefix, str) or not isinstance(default_key, str):
            raise TypeError("prefix and default_key must be strings")
        cost: int | float = validate_cost(default_cost)
        if all(isinstance(getattr(limit, "allow_twin", None), AllowTwin) for limit in limits):
            # Twins take a whole float as they take an int, alike to the last bit (an
            # int operand converts exactly), and float-only arithmetic is the
            # interpreter's specialised kind: the default cost is given as a float.
            cost = float(cost)
        common = (prefix, default_key, cost, validate_cost, on_refused)
        guard = (self._take, self._give, _wait)
        if self._overridden():
            common = (prefix, default_key, validate_cost(default_cost), validate_cost, on_refused)
            if len(limits) == 1:
                ask: Any = self.adecide if is_async else self.decide
                what: Any = limits[0]
                allowed: Any = _one_allowed
            else:
                ask = self.adecide_all if is_async else self.decide_all
                what = limits
                allowed = _all_allowed
            make = _compile(_DELEGATE_TEMPLATE, _ALLOW_PARAMS + _DELEGATE_PARAMS, "", is_async)
            return make(*common, ask, what, allowed)
        if len(limits) == 1:
            algorithm = limits[0]
            twin = _twin_of(algorithm)
            names = tuple(sorted(twin.names))
            table = self._table(algorithm.name)
            make = _compile(
                _ONE_TEMPLATE, _ALLOW_PARAMS + _ONE_PARAMS + names, twin.source, is_async
            )
            return make(
                *common,
                table,
                table.get,
                self._added,
                self._monotonic,
                *guard,
                *(twin.names[name] for name in names),
            )
        steps = tuple(
            (_step(algorithm), table.get, table)
            for algorithm, table in zip(
                limits, (self._table(slot) for slot in slot_names(limits)), strict=True
            )
        )
        make = _compile(_ALL_TEMPLATE, _ALLOW_PARAMS + _ALL_PARAMS, "", is_async)
        return make(*common, steps, self._added, self._monotonic, *guard)

    # ------------------------------------------------------------------ the rest

    def reset(self, key: str, algorithm: Algorithm) -> None:
        """Forget ``key``'s state under ``algorithm``."""
        self._acquire()
        try:
            self._table(algorithm.name).pop(key, None)
        finally:
            self._give(True)

    async def areset(self, key: str, algorithm: Algorithm) -> None:
        """The async twin of :meth:`reset`."""
        self.reset(key, algorithm)

    def reset_all(self, key: str, algorithms: Sequence[Algorithm]) -> None:
        """Forget ``key``'s state under every limit of ``algorithms``."""
        slots = slot_names(algorithms)
        self._acquire()
        try:
            for slot in slots:
                self._table(slot).pop(key, None)
        finally:
            self._give(True)

    async def areset_all(self, key: str, algorithms: Sequence[Algorithm]) -> None:
        """The async twin of :meth:`reset_all`."""
        self.reset_all(key, algorithms)

    def peek_state(self, key: str, algorithm: Algorithm, slot: str | None = None) -> State | None:
        """The stored state of ``key`` (``None`` if fresh); for tests and debugging.

        ``slot`` picks a limit's slot other than the algorithm's own (``"tb.2"``).
        """
        self._acquire()
        try:
            entry = self._table(algorithm.name if slot is None else slot).get(key)
        finally:
            self._give(True)
        return None if entry is None else tuple(entry[0])

    def clear(self) -> None:
        """Forget every key."""
        self._acquire()
        try:
            for table in self._tables.values():
                table.clear()
            self._queue.clear()
        finally:
            self._give(True)

    def close(self) -> None:
        """Nothing to release; here for the :class:`~buttress.stores.Store` protocol."""

    async def aclose(self) -> None:
        """Nothing to release; here for the :class:`~buttress.stores.Store` protocol."""

    def __repr__(self) -> str:
        return f"MemoryStore(name={self.name!r}, keys={len(self)})"

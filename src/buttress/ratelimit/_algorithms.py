"""Sans-I/O rate-limit algorithms: token bucket, GCRA, sliding window, fixed window.

Each algorithm is a frozen, validated configuration with one pure method,
``decide(state, now, cost) -> (new_state, Decision)``. It does no I/O and reads no
clock: the store passes the time and the key's state (``None`` for a key never seen
or forgotten) and keeps what comes back. A state is a tuple of two or three
numbers, so it fits in one Redis string; ``Decision.reset_after`` is when that state
becomes indistinguishable from ``None``, which is when stores drop it.

Every algorithm has a Lua twin under ``ratelimit/lua/`` that the Redis store runs
server-side, and a boolean twin (:attr:`allow_twin`): Python source that answers
only "allowed?" and writes the same state, which the memory store compiles into its
boolean deciders (:class:`~buttress.stores.AllowTwin`). The twins perform the same
floating-point operations in the same order, so every path decides alike (the
shared test suite checks it).

A request may cost more than 1. A cost above ``limit`` can never be allowed: the
decision says so with ``retry_after = math.inf`` instead of raising, so callers treat
it like any other refusal. A cost of 0 takes nothing and reports the key's standing.
"""

from __future__ import annotations

import math
import os
from typing import TYPE_CHECKING, Any, TypeAlias

from buttress._validate import check_seconds
from buttress.errors import ConfigError
from buttress.stores._local import AllowTwin
from buttress.stores.base import Decision, State

if TYPE_CHECKING:
    from datetime import timedelta

__all__ = ["GCRA", "FixedWindow", "SlidingWindow", "TokenBucket"]

# Tolerance, in units of cost, for float rounding: a bucket refilled to
# 2.9999999999999996 tokens holds 3. The Lua twins use the same constant.
_EPS = 1e-9
_INF = math.inf
_floor = math.floor
# Building the tuple directly skips NamedTuple's Python-level __new__ (~100 ns).
_decision = tuple.__new__


Seconds: TypeAlias = "float | timedelta"

_LUA_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "lua")


def _read(path: str) -> str:
    with open(path, encoding="utf-8") as file:
        return file.read()


# Every Lua twin is read at import (four small files): reading one lazily from a
# caller's thread would take the import lock, which a fork can leave held forever
# in the child.
_LUA = {
    name: _read(os.path.join(_LUA_DIR, f"{name}.lua"))
    for name in ("token_bucket", "gcra", "fixed_window", "sliding_window")
}


def _lua(name: str) -> str:
    return _LUA[name]


def _positive(value: object, path: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"must be a number, got {type(value).__name__}", path=path)
    number = float(value)
    if not (number > 0 and math.isfinite(number)):
        raise ConfigError(f"must be a finite number > 0, got {value!r}", path=path)
    return number


def _count(value: object, path: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"must be an int, got {type(value).__name__}", path=path)
    if value < 1:
        raise ConfigError(f"must be >= 1, got {value!r}", path=path)
    return value


class _Algorithm:
    """Frozen configuration base: equal by kind and parameters, immutable once built."""

    # Stores key caches by algorithm, so the hash is computed once.
    __slots__ = ("_hash",)

    name: str
    _lua_file: str
    _hash: int

    def _params(self) -> tuple[Any, ...]:
        raise NotImplementedError

    @property
    def lua(self) -> str:
        """Lua source of this algorithm's twin of :meth:`decide`."""
        return _lua(self._lua_file)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable")

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return self._params() == other._params()

    def __hash__(self) -> int:
        try:
            return self._hash
        except AttributeError:
            value = hash((type(self), self._params()))
            object.__setattr__(self, "_hash", value)
            return value

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), self._params())


class _Bucket(_Algorithm):
    """What the two bucket algorithms share: ``rate`` per ``period`` seconds, ``burst`` at once."""

    __slots__ = ("burst", "period", "rate")

    rate: float
    period: float
    burst: int

    def __init__(self, rate: float, period: Seconds = 1.0, burst: int | None = None) -> None:
        rate = _positive(rate, "rate")
        seconds = check_seconds(period, "period", positive=True)
        burst = max(1, int(rate)) if burst is None else _count(burst, "burst")
        put = object.__setattr__
        put(self, "rate", rate)
        put(self, "period", seconds)
        put(self, "burst", burst)

    def _params(self) -> tuple[Any, ...]:
        return (self.rate, self.period, self.burst)

    @property
    def quota(self) -> tuple[int, float]:
        """``(requests, seconds)``: a bucket of ``burst``, refilled in ``burst / rate`` periods.

        What a ``RateLimit-Policy`` header item states as ``q`` and ``w``.
        """
        return self.burst, self.burst * self.period / self.rate

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(rate={self.rate!r}, period={self.period!r}, "
            f"burst={self.burst!r})"
        )


class TokenBucket(_Bucket):
    """A bucket of ``burst`` tokens refilled with ``rate`` tokens every ``period`` seconds.

    A request takes ``cost`` tokens if the bucket holds them. ``burst`` (the
    bucket's capacity and the decision's ``limit``) defaults to ``rate`` rounded
    down, at least 1: ``TokenBucket(100, 60)`` allows 100 requests at once, then
    one every 0.6 s. ``period`` is in seconds or a ``timedelta``. State:
    ``(tokens, updated_at)``.
    """

    __slots__ = ("_capacity", "_refill")

    name = "tb"
    _lua_file = "token_bucket"

    _capacity: float
    _refill: float

    def __init__(self, rate: float, period: Seconds = 1.0, burst: int | None = None) -> None:
        super().__init__(rate, period, burst)
        object.__setattr__(self, "_capacity", float(self.burst))
        object.__setattr__(self, "_refill", self.rate / self.period)

    @property
    def lua_args(self) -> tuple[float, ...]:
        """``(capacity, refill per second, limit)`` for the Lua twin."""
        return (self._capacity, self._refill, self.burst)

    @property
    def allow_twin(self) -> AllowTwin:
        """The boolean twin of :meth:`decide`, for the memory store's ``bind_allow``."""
        return AllowTwin(
            _TOKEN_BUCKET_TWIN, {"capacity": self._capacity, "refill": self._refill, "EPS": _EPS}
        )

    def decide(self, state: State | None, now: float, cost: int) -> tuple[State, Decision]:
        """Take ``cost`` tokens if the bucket, refilled up to ``now``, holds them."""
        capacity = self._capacity
        if state is None:
            tokens = capacity
        else:
            tokens, last = state
            if now < last:
                # Time went backwards (client clocks disagree): treat it as `last`.
                now = last
            else:
                tokens += (now - last) * self._refill
                if tokens > capacity:  # noqa: PLR1730 - a compare is cheaper than min()
                    tokens = capacity
        # The allowed path returns on its own: it runs on nearly every request.
        if cost <= tokens + _EPS:
            tokens -= cost
            if tokens < 0:
                tokens = 0.0
            return (tokens, now), _decision(
                Decision,
                (True, self.burst, _floor(tokens + _EPS), (capacity - tokens) / self._refill, 0.0),
            )
        refill = self._refill
        return (tokens, now), _decision(
            Decision,
            (
                False,
                self.burst,
                _floor(tokens + _EPS),
                (capacity - tokens) / refill,
                _INF if cost > capacity else (cost - tokens) / refill,
            ),
        )


class GCRA(_Bucket):
    """The generic cell rate algorithm: ``rate`` requests per ``period``, ``burst`` at once.

    Requests are spaced ``period / rate`` seconds apart on average, with up to
    ``burst`` (the decision's ``limit``; default ``rate`` rounded down, at least 1)
    allowed back to back. It admits exactly what :class:`TokenBucket` admits with
    the same numbers, but keeps a single number per key: the theoretical arrival
    time of the next request, ``(tat,)``.
    """

    __slots__ = ("_interval", "_tolerance")

    name = "gcra"
    _lua_file = "gcra"

    _interval: float
    _tolerance: float

    def __init__(self, rate: float, period: Seconds = 1.0, burst: int | None = None) -> None:
        super().__init__(rate, period, burst)
        interval = self.period / self.rate
        object.__setattr__(self, "_interval", interval)
        object.__setattr__(self, "_tolerance", interval * self.burst)

    @property
    def lua_args(self) -> tuple[float, ...]:
        """``(emission interval, tolerance, limit)`` for the Lua twin."""
        return (self._interval, self._tolerance, self.burst)

    @property
    def allow_twin(self) -> AllowTwin:
        """The boolean twin of :meth:`decide`, for the memory store's ``bind_allow``."""
        return AllowTwin(
            _GCRA_TWIN, {"interval": self._interval, "tolerance": self._tolerance, "EPS": _EPS}
        )

    def decide(self, state: State | None, now: float, cost: int) -> tuple[State, Decision]:
        """Admit ``cost`` cells if the theoretical arrival time allows them at ``now``."""
        interval = self._interval
        if state is None:
            tat = now
        else:
            tat = state[0]
            if tat < now:  # noqa: PLR1730 - a compare is cheaper than max()
                tat = now
        available = (self._tolerance - (tat - now)) / interval
        if cost <= available + _EPS:
            tat += cost * interval
            available -= cost
            if available < 0:
                available = 0.0
            return (tat,), _decision(
                Decision, (True, self.burst, _floor(available + _EPS), tat - now, 0.0)
            )
        burst = self.burst
        return (tat,), _decision(
            Decision,
            (
                False,
                burst,
                _floor(available + _EPS),
                tat - now,
                _INF if cost > burst else (cost - available) * interval,
            ),
        )


class _Window(_Algorithm):
    """What the two window algorithms share: ``limit`` per ``period`` seconds."""

    __slots__ = ("limit", "period")

    limit: int
    period: float

    def __init__(self, limit: int, period: Seconds = 1.0) -> None:
        limit = _count(limit, "limit")
        seconds = check_seconds(period, "period", positive=True)
        object.__setattr__(self, "limit", limit)
        object.__setattr__(self, "period", seconds)

    def _params(self) -> tuple[Any, ...]:
        return (self.limit, self.period)

    @property
    def quota(self) -> tuple[int, float]:
        """``(requests, seconds)``: ``limit`` per ``period``, as ``RateLimit-Policy`` states it."""
        return self.limit, self.period

    @property
    def lua_args(self) -> tuple[float, ...]:
        """``(limit, period)`` for the Lua twin."""
        return (self.limit, self.period)

    def _twin_names(self) -> dict[str, Any]:
        return {"limit": self.limit, "period": self.period, "floor": _floor}


class FixedWindow(_Window):
    """At most ``limit`` per window of ``period`` seconds, windows aligned on the clock.

    Windows start at multiples of ``period`` of the store's time (the Redis server's
    epoch seconds by default, so a 60 s window is a clock minute). Simple and
    cheap, but allows up to twice ``limit`` across a window boundary; see
    :class:`SlidingWindow`. State: ``(window index, count)``.
    """

    __slots__ = ()

    name = "fw"
    _lua_file = "fixed_window"

    @property
    def allow_twin(self) -> AllowTwin:
        """The boolean twin of :meth:`decide`, for the memory store's ``bind_allow``."""
        return AllowTwin(_FIXED_WINDOW_TWIN, self._twin_names())

    def decide(self, state: State | None, now: float, cost: int) -> tuple[State, Decision]:
        """Count ``cost`` against the current window if it still fits in ``limit``."""
        limit = self.limit
        period = self.period
        index: float = _floor(now / period)
        if (index + 1) * period <= now:
            # The division rounded down across a window's end: the window that
            # ends at (index + 1) * period is over (reset_after ends exactly there).
            index += 1
        count = 0.0
        if state is not None:
            old_index, old_count = state
            if old_index >= index:
                # Same window, or time went backwards: stay in the stored window.
                index = old_index
                count = old_count
        window_left = (index + 1) * period - now
        if count + cost <= limit:
            count += cost
            allowed = True
            retry_after = 0.0
        else:
            allowed = False
            retry_after = _INF if cost > limit else window_left
        return (index, count), _decision(
            Decision,
            (allowed, limit, int(limit - count), window_left if count > 0 else 0.0, retry_after),
        )

    def __repr__(self) -> str:
        return f"FixedWindow(limit={self.limit!r}, period={self.period!r})"


class SlidingWindow(_Window):
    """At most ``limit`` per sliding ``period``, estimated from two fixed-window counters.

    The count of the previous window is weighted by how much of it the sliding
    window still covers (the sliding window counter approximation): smooth like a
    log of every request, for the memory of two numbers. State:
    ``(window index, previous count, current count)``.
    """

    __slots__ = ()

    name = "sw"
    _lua_file = "sliding_window"

    @property
    def allow_twin(self) -> AllowTwin:
        """The boolean twin of :meth:`decide`, for the memory store's ``bind_allow``."""
        return AllowTwin(_SLIDING_WINDOW_TWIN, {**self._twin_names(), "EPS": _EPS})

    def decide(self, state: State | None, now: float, cost: int) -> tuple[State, Decision]:
        """Count ``cost`` if the weighted count of the sliding window leaves room."""
        limit = self.limit
        period = self.period
        index: float = _floor(now / period)
        if (index + 1) * period <= now:
            # The division rounded down across a window's end: the window that
            # ends at (index + 1) * period is over (reset_after ends exactly there).
            index += 1
        previous = 0.0
        current = 0.0
        if state is not None:
            old_index, old_previous, old_current = state
            if old_index >= index:
                index = old_index
                previous = old_previous
                current = old_current
            elif old_index == index - 1:
                previous = old_current
        elapsed = now - index * period
        if elapsed < 0:
            elapsed = 0.0
        # The share of the previous window that the sliding window still covers.
        weight = 1 - elapsed / period
        used = previous * weight + current
        if used + cost <= limit + _EPS:
            current += cost
            used += cost
            allowed = True
            retry_after = 0.0
        else:
            allowed = False
            if cost > limit:
                retry_after = _INF
            elif current + cost <= limit:
                # Wait, within this window, for the previous window's share to shrink.
                retry_after = (weight - (limit - current - cost) / previous) * period
            else:
                # Wait into the next window, where this window's count is "previous".
                share = (limit - cost) / current
                if share > 1:
                    share = 1.0
                retry_after = weight * period + (1 - share) * period
        left = limit - used
        if left < 0:
            left = 0.0
        if current > 0:
            reset_after = weight * period + period
        elif previous > 0:
            reset_after = weight * period
        else:
            reset_after = 0.0
        return (index, previous, current), _decision(
            Decision, (allowed, limit, _floor(left + _EPS), reset_after, retry_after)
        )

    def __repr__(self) -> str:
        return f"SlidingWindow(limit={self.limit!r}, period={self.period!r})"


# ------------------------------------------------------------------ boolean twins
#
# Each is its algorithm's decide without the Decision: the same operations in the
# same order, setting `state`, `allowed` and `reset_after` (the contract is
# AllowTwin's). They never assign `now`: the store still needs the time it read.

_TOKEN_BUCKET_TWIN = """\
if state is None:
    tokens = capacity
    at = now
else:
    tokens, at = state
    if now >= at:
        tokens += (now - at) * refill
        if tokens > capacity:
            tokens = capacity
        at = now
allowed = cost <= tokens + EPS
if allowed:
    tokens -= cost
    if tokens < 0:
        tokens = 0.0
state = (tokens, at)
reset_after = (capacity - tokens) / refill
"""

_GCRA_TWIN = """\
if state is None:
    tat = now
else:
    tat = state[0]
    if tat < now:
        tat = now
allowed = cost <= (tolerance - (tat - now)) / interval + EPS
if allowed:
    tat += cost * interval
state = (tat,)
reset_after = tat - now
"""

_FIXED_WINDOW_TWIN = """\
index = floor(now / period)
if (index + 1) * period <= now:
    index += 1
count = 0.0
if state is not None:
    old_index, old_count = state
    if old_index >= index:
        index = old_index
        count = old_count
allowed = count + cost <= limit
if allowed:
    count += cost
state = (index, count)
reset_after = (index + 1) * period - now if count > 0 else 0.0
"""

_SLIDING_WINDOW_TWIN = """\
index = floor(now / period)
if (index + 1) * period <= now:
    index += 1
previous = 0.0
current = 0.0
if state is not None:
    old_index, old_previous, old_current = state
    if old_index >= index:
        index = old_index
        previous = old_previous
        current = old_current
    elif old_index == index - 1:
        previous = old_current
elapsed = now - index * period
if elapsed < 0:
    elapsed = 0.0
weight = 1 - elapsed / period
allowed = previous * weight + current + cost <= limit + EPS
if allowed:
    current += cost
if current > 0:
    reset_after = weight * period + period
elif previous > 0:
    reset_after = weight * period
else:
    reset_after = 0.0
state = (index, previous, current)
"""

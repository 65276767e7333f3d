"""Rolling windows in buckets, and a log-bucketed latency histogram: the budgets' memory.

Both are sans-I/O: every method takes the time (``now``, monotonic seconds) from its
caller, so a fake clock drives them in tests and the budgets read the clock once per
call. Neither locks; the budget holding them does.

:class:`Ring` counts two kinds of outcome (good and bad, or fast and slow) over the
last ``length`` seconds in ``size`` buckets of ``length / size`` seconds. Bucket
``k`` holds what happened while ``int(now // width) == k``; the window is the
current bucket and the ``size - 1`` before it, so it reaches back between
``length - width`` and ``length`` seconds — the current bucket is partial. A record
is O(1); moving on clears the buckets that fell out (at most ``size`` of them, once
per bucket width); running totals make a query O(1).

:class:`Histogram` keeps counts of durations in logarithmic bins, DDSketch-style:
bin ``i`` holds the durations in ``(MIN * g**(i-1), MIN * g**i]`` with
``g = (1 + a) / (1 - a)``, and reports its durations as ``2 * MIN * g**i / (g + 1)``,
which is within ``a`` (relative) of every duration in the bin. So the percentile it
answers is within :data:`RELATIVE_ERROR` of the true one (the nearest-rank
percentile of the durations recorded) for durations between :data:`MIN_SECONDS`
and :data:`MAX_SECONDS`; shorter ones read as ``MIN_SECONDS``, longer ones as
``MAX_SECONDS``.
"""

from __future__ import annotations

import math
from array import array

__all__ = ["MAX_SECONDS", "MIN_SECONDS", "RELATIVE_ERROR", "Histogram", "Ring"]


class Ring:
    """Two counts (``good`` and ``bad``) over the last ``length`` seconds, in ``size`` buckets."""

    __slots__ = ("bad", "bad_total", "current", "good", "good_total", "length", "size", "width")

    def __init__(self, length: float, size: int) -> None:
        self.length = length
        self.size = size
        self.width = length / size
        self.good = [0] * size
        self.bad = [0] * size
        self.good_total = 0
        self.bad_total = 0
        self.current: int | None = None  # the absolute index of the newest bucket

    def _move(self, index: int) -> None:
        """Make bucket ``index`` the newest, clearing those that left the window."""
        current = self.current
        size = self.size
        if current is None or index - current >= size:
            self.good = [0] * size
            self.bad = [0] * size
            self.good_total = self.bad_total = 0
        else:
            good, bad = self.good, self.bad
            for k in range(current + 1, index + 1):
                slot = k % size
                self.good_total -= good[slot]
                self.bad_total -= bad[slot]
                good[slot] = bad[slot] = 0
        self.current = index

    def add(self, now: float, good: int, bad: int) -> None:
        """Count ``good`` and ``bad`` outcomes at time ``now``."""
        index = int(now // self.width)
        current = self.current
        if current is None or index > current:
            self._move(index)
        elif index < current:  # a time from a bucket already closed: count it as now
            index = current
        slot = index % self.size
        if good:
            self.good[slot] += good
            self.good_total += good
        if bad:
            self.bad[slot] += bad
            self.bad_total += bad

    def totals(self, now: float) -> tuple[int, int]:
        """``(good, bad)`` in the window ending at ``now``."""
        index = int(now // self.width)
        current = self.current
        if current is not None and index > current:
            self._move(index)
        return self.good_total, self.bad_total

    def clear(self) -> None:
        """Forget everything."""
        self.current = None
        self.good = [0] * self.size
        self.bad = [0] * self.size
        self.good_total = self.bad_total = 0


RELATIVE_ERROR = 0.01
"""How far (relative) a latency percentile estimate may be from the true one: 1 %."""

MIN_SECONDS = 1e-6
"""Durations at or below this (1 µs) read as this."""

MAX_SECONDS = 86_400.0
"""Durations above this (one day) read as this."""

_GAMMA = (1 + RELATIVE_ERROR) / (1 - RELATIVE_ERROR)
_LOG_GAMMA = math.log(_GAMMA)
_BINS = math.ceil(math.log(MAX_SECONDS / MIN_SECONDS) / _LOG_GAMMA) + 1
_LOG_MIN = math.log(MIN_SECONDS)


def bin_of(seconds: float) -> int:
    """The histogram bin of a duration."""
    if seconds <= MIN_SECONDS:
        return 0
    if seconds >= MAX_SECONDS:
        return _BINS - 1
    # ceil(log(x / MIN) / log(g)); clamped, in case rounding lands one beyond.
    return min(math.ceil((math.log(seconds) - _LOG_MIN) / _LOG_GAMMA), _BINS - 1)


def value_of(index: int) -> float:
    """The duration bin ``index`` reports: within RELATIVE_ERROR of all it holds."""
    if index == 0:
        return MIN_SECONDS
    if index == _BINS - 1:
        return MAX_SECONDS
    return min(2 * MIN_SECONDS * _GAMMA**index / (_GAMMA + 1), MAX_SECONDS)


class Histogram:
    """Durations over the last ``length`` seconds in ``size`` time buckets of log bins.

    Each time bucket is an ``array`` of :data:`_BINS` counts (about 1,250 of them, 8
    bytes each); the window's sum is kept alongside, so a percentile is one walk
    over the bins, whatever the traffic.
    """

    __slots__ = ("buckets", "count", "current", "length", "size", "sums", "width")

    def __init__(self, length: float, size: int) -> None:
        self.length = length
        self.size = size
        self.width = length / size
        self.buckets: list[array[int] | None] = [None] * size  # made when first used
        self.sums = array("q", bytes(8 * _BINS))
        self.count = 0
        self.current: int | None = None

    def _move(self, index: int) -> None:
        current = self.current
        size = self.size
        if current is None or index - current >= size:
            self.buckets = [None] * size
            self.sums = array("q", bytes(8 * _BINS))
            self.count = 0
        else:
            sums = self.sums
            for k in range(current + 1, index + 1):
                slot = k % size
                bucket = self.buckets[slot]
                if bucket is not None:
                    for i, n in enumerate(bucket):
                        if n:
                            sums[i] -= n
                            self.count -= n
                    self.buckets[slot] = None
        self.current = index

    def add(self, now: float, seconds: float) -> None:
        """Record one duration at time ``now``."""
        index = int(now // self.width)
        current = self.current
        if current is None or index > current:
            self._move(index)
        elif index < current:
            index = current
        slot = index % self.size
        bucket = self.buckets[slot]
        if bucket is None:
            bucket = self.buckets[slot] = array("q", bytes(8 * _BINS))
        at = bin_of(seconds)
        bucket[at] += 1
        self.sums[at] += 1
        self.count += 1

    def percentile(self, now: float, q: float) -> float | None:
        """The ``q`` percentile (``0 < q < 1``, nearest rank) in the window; None if empty."""
        index = int(now // self.width)
        if self.current is not None and index > self.current:
            self._move(index)
        count = self.count
        if not count:
            return None
        rank = max(1, math.ceil(q * count - 1e-9))
        seen = 0
        for i, n in enumerate(self.sums):
            seen += n
            if seen >= rank:
                return value_of(i)
        return MAX_SECONDS  # pragma: no cover - the counts add up to count

    def clear(self) -> None:
        """Forget everything."""
        self.current = None
        self.buckets = [None] * self.size
        self.sums = array("q", bytes(8 * _BINS))
        self.count = 0

"""Sliding windows of call outcomes, in constant memory.

Two shapes, one interface (``add``, ``clear``, ``metrics``):

- :class:`CountWindow` keeps the last *N* outcomes in a ring of bytes (bit 0:
  failed, bit 1: slow) with running totals, so adding one is O(1).
- :class:`TimeWindow` keeps per-bucket totals for the last ``seconds``: one
  bucket per second, at least 10 and at most 600 buckets. Old calls leave the
  window a whole bucket at a time, so the window covers between ``seconds`` minus
  one bucket and ``seconds``; memory never grows with the call rate.

Windows are not thread-safe on their own: the engine calls them under its lock.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["CircuitMetrics", "CountWindow", "TimeWindow", "bucket_count"]

_MIN_BUCKETS = 10
_MAX_BUCKETS = 600


@dataclass(frozen=True, slots=True)
class CircuitMetrics:
    """What a breaker's window holds right now (a snapshot; it does not update).

    ``calls`` counts the recorded outcomes in the window (ignored exceptions and
    rejected calls are not outcomes), ``failures`` and ``slow_calls`` are among
    them (a slow failure is both), and the ratios are over ``calls`` (0.0 when
    empty). ``consecutive_failures`` counts failures since the last success,
    wherever the window ends.
    """

    calls: int
    failures: int
    slow_calls: int
    consecutive_failures: int

    @property
    def failure_ratio(self) -> float:
        """``failures / calls``, or 0.0 for an empty window."""
        return self.failures / self.calls if self.calls else 0.0

    @property
    def slow_call_ratio(self) -> float:
        """``slow_calls / calls``, or 0.0 for an empty window."""
        return self.slow_calls / self.calls if self.calls else 0.0


def bucket_count(seconds: float) -> int:
    """How many buckets a time window of ``seconds`` is kept in."""
    return min(max(math.ceil(seconds), _MIN_BUCKETS), _MAX_BUCKETS)


class CountWindow:
    """The last ``size`` outcomes."""

    __slots__ = ("_pos", "_ring", "calls", "failures", "size", "slow")

    def __init__(self, size: int) -> None:
        self.size = size
        self._ring = bytearray(size)
        self._pos = 0
        self.calls = 0
        self.failures = 0
        self.slow = 0

    def add(self, failed: bool, slow: bool) -> None:
        """Record one outcome, pushing out the oldest when the window is full."""
        pos = self._pos
        if self.calls == self.size:
            old = self._ring[pos]
            self.failures -= old & 1
            self.slow -= old >> 1
        else:
            self.calls += 1
        self._ring[pos] = failed | (slow << 1)
        self.failures += failed
        self.slow += slow
        pos += 1
        self._pos = 0 if pos == self.size else pos

    @property
    def clean(self) -> bool:
        """Full of fast successes: one more fast success would change nothing."""
        return self.calls == self.size and not self.failures and not self.slow

    def totals(self) -> tuple[int, int, int]:
        """``(calls, failures, slow)`` in the window now."""
        return self.calls, self.failures, self.slow

    def clear(self) -> None:
        """Forget every outcome."""
        self._ring = bytearray(self.size)
        self._pos = 0
        self.calls = self.failures = self.slow = 0


class TimeWindow:
    """The outcomes of the last ``seconds``, in buckets."""

    __slots__ = (
        "_b_calls",
        "_b_failures",
        "_b_slow",
        "_buckets",
        "_head",
        "_now",
        "_width",
        "calls",
        "failures",
        "slow",
    )

    # Never "clean": every success adds to the current bucket's count, which later
    # decides the ratio when older buckets expire, so no success can be skipped.
    clean = False

    def __init__(self, seconds: float, now: Callable[[], float]) -> None:
        self._buckets = bucket_count(seconds)
        self._width = seconds / self._buckets
        self._now = now
        self._b_calls = [0] * self._buckets
        self._b_failures = [0] * self._buckets
        self._b_slow = [0] * self._buckets
        self._head = self._index()
        self.calls = self.failures = self.slow = 0

    def _index(self) -> int:
        return math.floor(self._now() / self._width)

    def _advance(self) -> int:
        """Empty the buckets that fell out since last time; return the current one."""
        index = self._index()
        head = self._head
        if index <= head:  # a clock that stands still (or a fake one set back)
            return head % self._buckets
        buckets = self._buckets
        for absolute in range(head + 1, head + 1 + min(index - head, buckets)):
            slot = absolute % buckets
            self.calls -= self._b_calls[slot]
            self.failures -= self._b_failures[slot]
            self.slow -= self._b_slow[slot]
            self._b_calls[slot] = self._b_failures[slot] = self._b_slow[slot] = 0
        self._head = index
        return index % buckets

    def add(self, failed: bool, slow: bool) -> None:
        """Record one outcome in the current bucket."""
        slot = self._advance()
        self._b_calls[slot] += 1
        self._b_failures[slot] += failed
        self._b_slow[slot] += slow
        self.calls += 1
        self.failures += failed
        self.slow += slow

    def totals(self) -> tuple[int, int, int]:
        """``(calls, failures, slow)`` in the window now."""
        self._advance()
        return self.calls, self.failures, self.slow

    def clear(self) -> None:
        """Forget every outcome."""
        buckets = self._buckets
        self._b_calls = [0] * buckets
        self._b_failures = [0] * buckets
        self._b_slow = [0] * buckets
        self._head = self._index()
        self.calls = self.failures = self.slow = 0

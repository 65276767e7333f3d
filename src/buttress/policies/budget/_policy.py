"""``ErrorBudget`` and ``LatencyBudget``: policies that watch calls and never change them.

Placed in a pipeline (or used as a decorator, or through ``call``/``acall``), each
records what every call ended with and hands the call's result or error back
untouched. Both can be fed by hand too (``record``), for outcomes buttress never
sees. The counting lives in :mod:`._window`; a lock per budget makes them safe to
share between threads and tasks.
"""

from __future__ import annotations

import threading
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any, ClassVar, TypeVar, cast

from buttress._deadline import cancelled_by_timeout
from buttress._options import built_from
from buttress._outcome import _PROGRAMMING, OnErrors
from buttress._strategy import Call, Policy
from buttress._validate import check_clock, check_count, check_seconds
from buttress.clock import MONOTONIC, Clock
from buttress.errors import ConfigError
from buttress.policies.budget._options import (
    BurnAlert,
    ErrorBudgetOptions,
    LatencyBudgetOptions,
)
from buttress.policies.budget._snapshot import (
    AlertStatus,
    ErrorBudgetSnapshot,
    LatencyBudgetSnapshot,
    register,
)
from buttress.policies.budget._window import Histogram, Ring

__all__ = ["ErrorBudget", "LatencyBudget"]

R = TypeVar("R")

_DAY = 86_400.0


def _ratio(bad: int, total: int) -> float:
    return bad / total if total else 0.0


class ErrorBudget(Policy):
    """An SLO — ``target`` of the calls good over ``window`` — and what is left of its budget.

    ``ErrorBudget(0.999)`` allows one bad call in a thousand over the last 30 days.
    It answers:

    - :meth:`remaining`: the share of the budget left (1 untouched, 0 spent, below 0
      overspent) — ``1 - error_rate / (1 - target)`` over the SLO window;
    - :meth:`error_rate` and :meth:`burn_rate` over the SLO window or any alert
      window: the burn rate is the error rate divided by what the budget allows, so
      1 spends the budget exactly over the window and 14.4 spends 2 % of a 30-day
      budget in an hour;
    - :meth:`alerts` and :meth:`alerting`: the multi-window burn-rate alerts (by
      default 1 h and 5 min above 14.4, 6 h and 30 min above 6), each firing while
      both its windows burn faster than its factor.

    As a policy it records each call's outcome through the same matcher as every
    policy (``on=``/``on_result=``; see ``docs/outcomes.md``): transient errors,
    timeouts, buttress's rejections (an open circuit, a full bulkhead — the caller
    got no answer) and returned responses with a transient status are bad; any
    other result, and errors that are answers (a 404, a ``ValueError``), are good;
    programming errors and the caller's cancellations count as nothing. It never
    changes a call's result or error. By hand: :meth:`record`.

    Counts are kept in buckets (``buckets`` for the SLO window, ``alert_buckets`` for
    each alert window): a window reaches back between ``length - length/buckets``
    and ``length`` seconds, memory is fixed, and recording a call is O(1).
    Thread-safe; sync and async alike.
    """

    __slots__ = (
        "_bad",
        "_by_window",
        "_edge",
        "_good",
        "_lock",
        "_mark",
        "_rings",
        "_slo",
        "clock",
        "options",
    )

    Options: ClassVar[type[ErrorBudgetOptions]] = ErrorBudgetOptions

    options: ErrorBudgetOptions
    clock: Clock

    def __init__(
        self,
        target: float,
        *,
        window: float | timedelta = 30 * _DAY,
        buckets: int = 720,
        alerts: tuple[BurnAlert, ...] | list[BurnAlert] | None = None,
        alert_buckets: int = 60,
        on: OnErrors | None = None,
        on_result: Callable[[Any], object] | None = None,
        name: str | None = None,
        clock: Clock = MONOTONIC,
    ) -> None:
        options = ErrorBudgetOptions(
            target=target,
            window=window,
            buckets=buckets,
            alerts=None if alerts is None else tuple(alerts),
            alert_buckets=alert_buckets,
            on=on,
            on_result=on_result,
        )
        self._setup(options, name, clock)

    @classmethod
    def from_options(
        cls, options: ErrorBudgetOptions, *, name: str | None = None, clock: Clock = MONOTONIC
    ) -> ErrorBudget:
        """An ``ErrorBudget`` from its options (as the registry builds it from TOML)."""
        return built_from(cls, options, name, clock)

    def _setup(self, options: ErrorBudgetOptions, name: str | None, clock: Clock) -> None:
        self.options = options
        self.clock = clock if clock is MONOTONIC else check_clock(clock)
        window = cast(float, options.window)
        rings = {window: Ring(window, options.buckets)}
        for length in options.windows:
            if length not in rings:
                rings[length] = Ring(length, options.alert_buckets)
        self._by_window = rings
        self._rings = tuple(rings.values())
        self._slo = rings[window]
        self._lock = threading.Lock()
        # Calls counted since ``_mark``, not yet in the rings: until ``_edge``, the
        # first bucket boundary of any ring after ``_mark``, they all belong to the
        # bucket ``_mark`` is in, in every ring. So a call adds to two integers,
        # however many windows there are; the rings take them at the next boundary
        # or read.
        self._good = self._bad = 0
        self._mark = 0.0
        self._edge = float("-inf")
        self._init_strategy(name, "error_budget")
        register(self)
        self._build()

    # ----------------------------------------------------------------------- feeding

    def record(self, ok: bool, count: int = 1) -> None:
        """Count ``count`` calls that were good (``ok``) or bad, now."""
        if not isinstance(ok, bool):
            raise ConfigError(f"must be True (good) or False (bad), got {ok!r}", path="ok")
        count = check_count(count, "count")
        self._add(count, 0) if ok else self._add(0, count)

    def _add(self, good: int, bad: int) -> None:
        now = self.clock.monotonic()
        with self._lock:
            if now >= self._edge:
                self._flush(now)
            self._good += good
            self._bad += bad

    def _flush(self, now: float) -> None:
        """Move the pending counts into the rings; start a new pending period at ``now``.

        Called with the lock held.
        """
        good, bad, mark = self._good, self._bad, self._mark
        if good or bad:
            for ring in self._rings:
                ring.add(mark, good, bad)
            self._good = self._bad = 0
        self._mark = now
        # Slightly early (a relative 1e-12, far above the rounding of the division
        # the rings use): a flush before the boundary is always right, one after it
        # would not be.
        self._edge = min((int(now // ring.width) + 1) * ring.width for ring in self._rings) * (
            1.0 - 1e-12
        )

    def _judge_error(self, exc: BaseException) -> None:
        if not isinstance(exc, Exception):
            if cancelled_by_timeout(exc):  # a buttress Timeout cut the call short
                self._add(0, 1)
            return  # the caller's cancellation, an interrupt: nothing happened
        failed = self.options.matcher.error_rule(exc)
        if not failed and isinstance(exc, _PROGRAMMING):
            return  # the caller's bug says nothing about the service
        self._add(0, 1) if failed else self._add(1, 0)

    def _judge_result(self, result: object) -> None:
        self._add(0, 1) if self.options.matcher.result_rule(result) else self._add(1, 0)

    def execute(self, call: Call[R]) -> R:
        """Run the call; record its outcome; return or raise what it did."""
        try:
            result = call()
        except BaseException as exc:
            self._judge_error(exc)
            raise
        self._judge_result(result)
        return result

    async def aexecute(self, call: Call[Awaitable[R]]) -> R:
        """Await the call; record its outcome; return or raise what it did."""
        try:
            result = await call()
        except BaseException as exc:
            self._judge_error(exc)
            raise
        self._judge_result(result)
        return result

    # ---------------------------------------------------------------------- reading

    def _ring(self, window: float | timedelta | None) -> Ring:
        if window is None:
            return self._slo
        seconds = check_seconds(window, "window", positive=True)
        ring = self._by_window.get(seconds)
        if ring is None:
            counted = ", ".join(f"{w:g}" for w in self.options.windows)
            raise ConfigError(
                f"{seconds:g} s is not a window this budget counts over; it counts over "
                f"{counted} (seconds): the SLO window and the alerts' windows",
                path="window",
            )
        return ring

    def _totals(self, ring: Ring) -> tuple[int, int]:
        now = self.clock.monotonic()
        with self._lock:
            self._flush(now)
            return ring.totals(now)

    def counts(self, window: float | timedelta | None = None) -> tuple[int, int]:
        """``(good, bad)`` calls in ``window`` (default: the SLO window)."""
        return self._totals(self._ring(window))

    def error_rate(self, window: float | timedelta | None = None) -> float:
        """The share of bad calls in ``window`` (default: the SLO window); 0 with no calls.

        ``window`` is the SLO window or one of the alerts' windows, in seconds or as
        a ``timedelta``.
        """
        good, bad = self._totals(self._ring(window))
        return _ratio(bad, good + bad)

    def burn_rate(self, window: float | timedelta | None = None) -> float:
        """How fast the budget burns over ``window``: the error rate over ``1 - target``.

        1 spends exactly the budget over the SLO window; 0 with no bad calls.
        """
        return self.error_rate(window) / self.options.allowed

    def remaining(self) -> float:
        """The share of the SLO window's error budget left; below 0 once overspent."""
        good, bad = self._totals(self._slo)
        return 1.0 - _ratio(bad, good + bad) / self.options.allowed

    def alerts(self) -> tuple[AlertStatus, ...]:
        """Each burn-rate alert with its two burn rates now, in the order given."""
        return self.snapshot().alerts

    def alerting(self, alert: BurnAlert | None = None) -> bool:
        """Whether an alert fires (``alert``, or any of them)."""
        if alert is not None and alert not in self.options.burn_alerts:
            raise ConfigError(f"{alert!r} is not one of this budget's alerts", path="alert")
        return any(
            status.firing for status in self.alerts() if alert is None or status.alert == alert
        )

    def snapshot(self) -> ErrorBudgetSnapshot:
        """Everything at once, read together (for exporters and health pages)."""
        now = self.clock.monotonic()
        allowed = self.options.allowed
        with self._lock:
            self._flush(now)
            totals = {length: ring.totals(now) for length, ring in self._by_window.items()}
        rates = {
            length: _ratio(bad, good + bad) / allowed for length, (good, bad) in totals.items()
        }
        good, bad = totals[self._slo.length]
        error_rate = _ratio(bad, good + bad)
        return ErrorBudgetSnapshot(
            name=self.name,
            target=self.options.target,
            window=self._slo.length,
            good=good,
            bad=bad,
            error_rate=error_rate,
            remaining=1.0 - error_rate / allowed,
            burn_rates=tuple((length, rates[length]) for length in self.options.windows),
            alerts=tuple(
                AlertStatus(alert, rates[alert.long], rates[alert.short])
                for alert in self.options.burn_alerts
            ),
        )

    def reset(self) -> None:
        """Forget every recorded call."""
        with self._lock:
            self._good = self._bad = 0
            self._edge = float("-inf")
            for ring in self._rings:
                ring.clear()

    def __repr__(self) -> str:
        o = self.options
        return f"ErrorBudget({o.target!r}, window={o.window!r}, name={self.name!r})"


class LatencyBudget(Policy):
    """A latency SLO — the ``percentile`` of call durations at most ``threshold`` — over ``window``.

    ``LatencyBudget(0.3, percentile=0.99)`` is "p99 ≤ 300 ms": at most 1 % of the
    calls of the last 30 days may take longer than 300 ms. It answers:

    - :meth:`remaining`: the share of those allowed slow calls left (1 none slow, 0
      spent, below 0 overspent), exact;
    - :meth:`estimate`: the percentile itself, from a log-bucketed histogram,
      within 1 % (relative) of the true nearest-rank percentile of the window's
      durations for durations from 1 µs to a day.

    As a policy it measures every call that returns or raises (a buttress
    ``Timeout`` cutting it short included) on its clock; programming errors and the
    caller's cancellations are not measured. It never changes a call's result or
    error. By hand: :meth:`record`. Memory is fixed: ``buckets`` time buckets, each
    a histogram of about 1,250 counts once it has seen a call. Thread-safe.
    """

    __slots__ = ("_histogram", "_lock", "_ring", "_threshold", "clock", "options")

    Options: ClassVar[type[LatencyBudgetOptions]] = LatencyBudgetOptions

    options: LatencyBudgetOptions
    clock: Clock

    def __init__(
        self,
        threshold: float | timedelta,
        *,
        percentile: float = 0.99,
        window: float | timedelta = 30 * _DAY,
        buckets: int = 60,
        name: str | None = None,
        clock: Clock = MONOTONIC,
    ) -> None:
        options = LatencyBudgetOptions(
            threshold=threshold, percentile=percentile, window=window, buckets=buckets
        )
        self._setup(options, name, clock)

    @classmethod
    def from_options(
        cls, options: LatencyBudgetOptions, *, name: str | None = None, clock: Clock = MONOTONIC
    ) -> LatencyBudget:
        """A ``LatencyBudget`` from its options (as the registry builds it from TOML)."""
        return built_from(cls, options, name, clock)

    def _setup(self, options: LatencyBudgetOptions, name: str | None, clock: Clock) -> None:
        self.options = options
        self.clock = clock if clock is MONOTONIC else check_clock(clock)
        window = cast(float, options.window)
        self._threshold = cast(float, options.threshold)
        self._ring = Ring(window, options.buckets)  # good: fast, bad: slow
        self._histogram = Histogram(window, options.buckets)
        self._lock = threading.Lock()
        self._init_strategy(name, "latency_budget")
        register(self)
        self._build()

    # ----------------------------------------------------------------------- feeding

    def record(self, seconds: float | timedelta) -> None:
        """Count one call that took ``seconds`` (or a ``timedelta``), now."""
        self._add(check_seconds(seconds, "seconds"))

    def _add(self, seconds: float) -> None:
        now = self.clock.monotonic()
        slow = seconds > self._threshold
        with self._lock:
            self._ring.add(now, 0 if slow else 1, 1 if slow else 0)
            self._histogram.add(now, seconds)

    def _ended(self, exc: BaseException, start: float) -> None:
        if isinstance(exc, Exception):
            if not isinstance(exc, _PROGRAMMING):
                self._add(self.clock.monotonic() - start)
        elif cancelled_by_timeout(exc):
            self._add(self.clock.monotonic() - start)

    def execute(self, call: Call[R]) -> R:
        """Run the call and record how long it took; return or raise what it did."""
        start = self.clock.monotonic()
        try:
            result = call()
        except BaseException as exc:
            self._ended(exc, start)
            raise
        self._add(self.clock.monotonic() - start)
        return result

    async def aexecute(self, call: Call[Awaitable[R]]) -> R:
        """Await the call and record how long it took; return or raise what it did."""
        start = self.clock.monotonic()
        try:
            result = await call()
        except BaseException as exc:
            self._ended(exc, start)
            raise
        self._add(self.clock.monotonic() - start)
        return result

    # ---------------------------------------------------------------------- reading

    def counts(self) -> tuple[int, int]:
        """``(calls, slow calls)`` in the window."""
        now = self.clock.monotonic()
        with self._lock:
            fast, slow = self._ring.totals(now)
        return fast + slow, slow

    def estimate(self) -> float | None:
        """The percentile of the window's durations, in seconds (within 1 %); None if none."""
        now = self.clock.monotonic()
        with self._lock:
            return self._histogram.percentile(now, self.options.percentile)

    def remaining(self) -> float:
        """The share of the allowed slow calls left; below 0 once overspent."""
        calls, slow = self.counts()
        return 1.0 - _ratio(slow, calls) / self.options.allowed

    def snapshot(self) -> LatencyBudgetSnapshot:
        """Everything at once, read together (for exporters and health pages)."""
        now = self.clock.monotonic()
        o = self.options
        with self._lock:
            fast, slow = self._ring.totals(now)
            estimate = self._histogram.percentile(now, o.percentile)
        calls = fast + slow
        return LatencyBudgetSnapshot(
            name=self.name,
            threshold=o.threshold,  # type: ignore[arg-type]
            percentile=o.percentile,
            window=o.window,  # type: ignore[arg-type]
            calls=calls,
            slow=slow,
            estimate=estimate,
            remaining=1.0 - _ratio(slow, calls) / o.allowed,
        )

    def reset(self) -> None:
        """Forget every recorded call."""
        with self._lock:
            self._ring.clear()
            self._histogram.clear()

    def __repr__(self) -> str:
        o = self.options
        return (
            f"LatencyBudget({o.threshold!r}, percentile={o.percentile!r}, "
            f"window={o.window!r}, name={self.name!r})"
        )

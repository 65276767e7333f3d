"""Unit tests of the circuit breaker, on the fake clock."""

from __future__ import annotations

import asyncio
import math
import threading
from collections.abc import Callable
from typing import Any

import pytest

from buttress.clock import FakeClock
from buttress.errors import CircuitOpen, ConfigError
from buttress.events import CallRejected, Event, call_name
from buttress.pipeline import Pipeline
from buttress.policies.circuit import (
    CircuitBreaker,
    CircuitMetrics,
    CircuitState,
    CircuitStateChanged,
)
from buttress.policies.circuit import _engine as engine_module
from buttress.policies.circuit._window import bucket_count

from tests.helpers import tick

CLOSED = CircuitState.CLOSED
OPEN = CircuitState.OPEN
HALF_OPEN = CircuitState.HALF_OPEN
ISOLATED = CircuitState.ISOLATED


class Down(ConnectionError):
    """The protected dependency failed."""


def ok() -> str:
    return "ok"


def fail() -> str:
    raise Down("down")


def succeed(breaker: CircuitBreaker, times: int = 1) -> None:
    for _ in range(times):
        assert breaker.call(ok) == "ok"


def failing(breaker: CircuitBreaker, times: int = 1) -> None:
    for _ in range(times):
        with pytest.raises(Down):
            breaker.call(fail)


def slow_call(clock: FakeClock, seconds: float, *, raises: bool = False) -> Callable[[], str]:
    def run() -> str:
        clock.advance(seconds)
        if raises:
            raise Down("slow and down")
        return "slow"

    return run


def recorder(breaker: CircuitBreaker) -> list[Event]:
    events: list[Event] = []
    breaker.subscribe(events.append)
    return events


def transitions(events: list[Event]) -> list[tuple[str, str, str]]:
    return [
        (e.old.value, e.new.value, e.reason) for e in events if isinstance(e, CircuitStateChanged)
    ]


def rejections(events: list[Event]) -> list[str]:
    return [e.reason for e in events if isinstance(e, CallRejected)]


class CountingClock(FakeClock):
    """A fake clock that counts how often it is read."""

    def __init__(self) -> None:
        super().__init__()
        self.reads = 0

    def monotonic(self) -> float:
        self.reads += 1
        return super().monotonic()


class CountingLock:
    """Wraps the engine's lock and counts acquisitions."""

    def __init__(self, lock: Any) -> None:
        self.lock = lock
        self.acquired = 0

    def __enter__(self) -> Any:
        self.acquired += 1
        return self.lock.__enter__()

    def __exit__(self, *exc: Any) -> Any:
        return self.lock.__exit__(*exc)


def counting_lock(breaker: CircuitBreaker) -> CountingLock:
    engine = breaker._engine
    lock = CountingLock(engine._lock)
    engine._lock = lock  # type: ignore[assignment]
    return lock


# ----------------------------------------------------------------------- drivers

SyncWay = Callable[[CircuitBreaker, Callable[[], str]], str]


def via_decorator(breaker: CircuitBreaker, fn: Callable[[], str]) -> str:
    return breaker(fn)()


def via_call(breaker: CircuitBreaker, fn: Callable[[], str]) -> str:
    return breaker.call(fn)


def via_dunder_call(breaker: CircuitBreaker, fn: Callable[[], str]) -> str:
    return breaker(lambda _: fn(), None)


def via_pipeline(breaker: CircuitBreaker, fn: Callable[[], str]) -> str:
    return Pipeline(breaker).call(fn)


def via_with(breaker: CircuitBreaker, fn: Callable[[], str]) -> str:
    with breaker:
        return fn()


SYNC_WAYS = [via_decorator, via_call, via_dunder_call, via_pipeline, via_with]

AsyncFn = Callable[[], Any]


async def avia_decorator(breaker: CircuitBreaker, fn: AsyncFn) -> Any:
    return await breaker(fn)()


async def avia_acall(breaker: CircuitBreaker, fn: AsyncFn) -> Any:
    return await breaker.acall(fn)


async def avia_pipeline(breaker: CircuitBreaker, fn: AsyncFn) -> Any:
    return await Pipeline(breaker).acall(fn)


async def avia_with(breaker: CircuitBreaker, fn: AsyncFn) -> Any:
    async with breaker:
        return await fn()


ASYNC_WAYS = [avia_decorator, avia_acall, avia_pipeline, avia_with]


# ------------------------------------------------------------------ configuration


@pytest.mark.parametrize(
    ("options", "path"),
    [
        ({"failure_ratio": 0}, "failure_ratio"),
        ({"failure_ratio": 1.5}, "failure_ratio"),
        ({"failure_ratio": math.nan}, "failure_ratio"),
        ({"failure_ratio": True}, "failure_ratio"),
        ({"failure_ratio": "0.5"}, "failure_ratio"),
        ({"min_calls": 0}, "min_calls"),
        ({"min_calls": 2.0}, "min_calls"),
        ({"window": 0}, "window"),
        ({"window": 10.5}, "window"),
        ({"window": 10, "window_seconds": 5.0}, "window"),
        ({"window_seconds": 0}, "window_seconds"),
        ({"window_seconds": -1.0}, "window_seconds"),
        ({"window_seconds": math.inf}, "window_seconds"),
        ({"consecutive_failures": 0}, "consecutive_failures"),
        ({"consecutive_failures": False}, "consecutive_failures"),
        ({"slow_call_duration": 0}, "slow_call_duration"),
        ({"slow_call_duration": -0.1}, "slow_call_duration"),
        ({"slow_call_ratio": 0.0}, "slow_call_ratio"),
        ({"slow_call_ratio": 1.01}, "slow_call_ratio"),
        ({"open_duration": -1}, "open_duration"),
        ({"open_duration": math.inf}, "open_duration"),
        ({"open_duration_factor": 0.5}, "open_duration_factor"),
        ({"open_duration_factor": 2.0, "max_open_duration": 10.0}, "max_open_duration"),
        ({"max_open_duration": "long"}, "max_open_duration"),
        ({"half_open_calls": 0}, "half_open_calls"),
        ({"half_open_successes": 0}, "half_open_successes"),
        ({"failure_on": KeyboardInterrupt}, "failure_on"),
        ({"failure_on": (OSError, asyncio.CancelledError)}, "failure_on"),
        ({"failure_on": ()}, "failure_on"),
        ({"failure_on": (OSError, "x")}, "failure_on"),
        ({"failure_on": 3}, "failure_on"),
        ({"ignore": SystemExit}, "ignore"),
        ({"ignore": int}, "ignore"),
        ({"name": 3}, "name"),
        ({"clock": object()}, "clock"),
    ],
)
def test_invalid_options_name_the_option(options: dict[str, Any], path: str) -> None:
    with pytest.raises(ConfigError) as info:
        CircuitBreaker(**options)
    assert info.value.path == path
    assert str(info.value).startswith(f"{path}: ")


def test_defaults() -> None:
    breaker = CircuitBreaker()
    o = breaker.options
    assert (o.failure_ratio, o.min_calls, o.window, o.window_seconds) == (0.5, 10, 100, None)
    assert (o.consecutive_failures, o.slow_call_duration, o.slow_call_ratio) == (None, None, 1.0)
    assert (o.open_duration, o.open_duration_factor, o.max_open_duration) == (30.0, 1.0, 300.0)
    assert (o.half_open_calls, o.half_open_successes) == (1, 1)
    assert breaker.state is CLOSED
    assert breaker.until is None
    assert breaker.metrics == CircuitMetrics(0, 0, 0, 0)
    assert breaker.name.startswith("circuit-")
    assert repr(breaker) == f"CircuitBreaker(name={breaker.name!r}, state='closed')"


def test_half_open_successes_defaults_to_half_open_calls() -> None:
    assert CircuitBreaker(half_open_calls=3).options.half_open_successes == 3
    assert CircuitBreaker(half_open_calls=3, half_open_successes=5).options.half_open_successes == 5


def test_time_window_option_replaces_the_count_window() -> None:
    options = CircuitBreaker(window_seconds=60, min_calls=500).options
    assert (options.window, options.window_seconds, options.min_calls) == (None, 60.0, 500)


def test_min_calls_defaults_to_ten_or_a_smaller_count_window() -> None:
    assert CircuitBreaker().options.min_calls == 10
    assert CircuitBreaker(window=5).options.min_calls == 5
    assert CircuitBreaker(window=50, min_calls=20).options.min_calls == 20
    assert CircuitBreaker(window=5, min_calls=5).options.min_calls == 5
    assert CircuitBreaker(window_seconds=5, min_calls=500).options.min_calls == 500


@pytest.mark.parametrize(("window", "min_calls"), [(5, 10), (1, 2), (100, 101)])
def test_min_calls_above_a_count_window_is_refused(window: int, min_calls: int) -> None:
    # It used to be capped silently; a count window never holds more outcomes, so
    # the ratios could never trip: refused, saying what is valid.
    with pytest.raises(ConfigError) as info:
        CircuitBreaker(window=window, min_calls=min_calls)
    assert info.value.path == "min_calls"
    assert f"at most window ({window})" in str(info.value)


def test_small_window_with_default_min_calls_trips(clock: FakeClock) -> None:
    breaker = CircuitBreaker(window=3, clock=clock)
    failing(breaker, 2)
    succeed(breaker)
    assert breaker.state is OPEN  # 2 of 3, with min_calls capped at 3


def test_max_open_duration_only_checked_when_the_duration_grows() -> None:
    breaker = CircuitBreaker(open_duration=600.0)
    assert breaker.options.max_open_duration == 600.0


def test_state_enum_values_are_metric_labels() -> None:
    assert [s.value for s in CircuitState] == ["closed", "open", "half_open", "isolated"]
    assert str(CircuitState.HALF_OPEN) == "half_open"


# --------------------------------------------------------------- count window


def test_trips_on_failure_ratio_once_min_calls_is_reached(clock: FakeClock) -> None:
    breaker = CircuitBreaker(failure_ratio=0.5, min_calls=4, window=10, clock=clock)
    events = recorder(breaker)
    failing(breaker, 3)  # 3 of 3 failed, but under min_calls
    assert breaker.state is CLOSED
    assert breaker.metrics == CircuitMetrics(3, 3, 0, 3)
    failing(breaker)
    assert breaker.state is OPEN
    assert transitions(events) == [("closed", "open", "failure_ratio")]
    assert breaker.metrics == CircuitMetrics(4, 4, 0, 4)  # the window that tripped it


def test_ratio_just_below_threshold_stays_closed(clock: FakeClock) -> None:
    breaker = CircuitBreaker(failure_ratio=0.5, min_calls=4, window=10, clock=clock)
    succeed(breaker, 3)
    failing(breaker, 2)  # 2 of 5
    assert breaker.state is CLOSED
    assert breaker.metrics.failure_ratio == pytest.approx(0.4)
    failing(breaker)  # 3 of 6
    assert breaker.state is OPEN


def test_a_success_that_reaches_min_calls_can_trip(clock: FakeClock) -> None:
    breaker = CircuitBreaker(failure_ratio=0.5, min_calls=4, window=10, clock=clock)
    failing(breaker, 2)
    succeed(breaker)
    assert breaker.state is CLOSED
    succeed(breaker)  # 2 of 4 failed: the ratio is met when the window gets big enough
    assert breaker.state is OPEN


def test_count_window_forgets_the_oldest_outcome(clock: FakeClock) -> None:
    breaker = CircuitBreaker(failure_ratio=1.0, min_calls=4, window=4, clock=clock)
    failing(breaker, 3)
    succeed(breaker)
    assert breaker.metrics == CircuitMetrics(4, 3, 0, 0)
    succeed(breaker, 2)
    assert breaker.metrics == CircuitMetrics(4, 1, 0, 0)
    succeed(breaker)
    assert breaker.metrics == CircuitMetrics(4, 0, 0, 0)
    assert breaker.metrics.failure_ratio == 0.0
    failing(breaker, 3)  # 3 of 4: under a ratio of 1.0
    assert breaker.state is CLOSED
    failing(breaker)
    assert breaker.state is OPEN


def test_metrics_ratios() -> None:
    metrics = CircuitMetrics(calls=8, failures=2, slow_calls=6, consecutive_failures=1)
    assert (metrics.failure_ratio, metrics.slow_call_ratio) == (0.25, 0.75)
    assert CircuitMetrics(0, 0, 0, 0).failure_ratio == 0.0
    assert CircuitMetrics(0, 0, 0, 0).slow_call_ratio == 0.0


# ---------------------------------------------------------------- time window


@pytest.mark.parametrize(
    ("seconds", "buckets"), [(0.5, 10), (5, 10), (10, 10), (10.5, 11), (60, 60), (3600, 600)]
)
def test_time_window_buckets(seconds: float, buckets: int) -> None:
    assert bucket_count(seconds) == buckets


def test_time_window_counts_the_last_seconds(clock: FakeClock) -> None:
    breaker = CircuitBreaker(window_seconds=10, min_calls=100, clock=clock)
    failing(breaker, 2)  # bucket [0, 1)
    clock.advance(5)
    succeed(breaker, 3)  # bucket [5, 6)
    assert breaker.metrics == CircuitMetrics(5, 2, 0, 0)
    clock.advance(4.875)
    assert breaker.metrics == CircuitMetrics(5, 2, 0, 0)
    clock.advance(0.125)  # t = 10: the first bucket falls out
    assert breaker.metrics == CircuitMetrics(3, 0, 0, 0)
    clock.advance(5)  # t = 15: so does the second
    assert breaker.metrics == CircuitMetrics(0, 0, 0, 0)


def test_time_window_trips_on_ratio_across_buckets(clock: FakeClock) -> None:
    breaker = CircuitBreaker(window_seconds=10, min_calls=6, failure_ratio=0.5, clock=clock)
    for _ in range(2):
        succeed(breaker)
        failing(breaker)
        clock.advance(1)
    succeed(breaker)
    assert breaker.state is CLOSED
    failing(breaker)  # 3 of 6 calls, spread over three buckets
    assert breaker.state is OPEN
    assert breaker.metrics == CircuitMetrics(6, 3, 0, 1)


def test_time_window_after_a_long_idle_period_is_empty(clock: FakeClock) -> None:
    breaker = CircuitBreaker(window_seconds=2, min_calls=3, clock=clock)
    failing(breaker, 2)
    clock.advance(1_000_000)
    failing(breaker)
    assert breaker.state is CLOSED
    assert breaker.metrics == CircuitMetrics(1, 1, 0, 3)


def test_time_window_memory_is_constant(clock: FakeClock) -> None:
    breaker = CircuitBreaker(window_seconds=30, min_calls=100, failure_ratio=1.0, clock=clock)
    window = breaker._engine._window
    for _ in range(500):
        succeed(breaker, 3)
        clock.advance(0.25)
    assert len(window._b_calls) == len(window._b_failures) == len(window._b_slow) == 30
    # Now t = 125: buckets [96, 126) hold the calls made at t = 96.0 ... 124.75.
    assert breaker.metrics.calls == sum(window._b_calls) == 3 * 116


def test_time_window_never_takes_the_lock_free_path(clock: FakeClock) -> None:
    breaker = CircuitBreaker(window_seconds=1, min_calls=1, clock=clock)
    succeed(breaker, 500)
    assert breaker._engine.fast == 0
    assert breaker.metrics.calls == 500


# --------------------------------------------------------- consecutive failures


def test_trips_on_consecutive_failures(clock: FakeClock) -> None:
    breaker = CircuitBreaker(
        consecutive_failures=3, failure_ratio=1.0, min_calls=100, window=100, clock=clock
    )
    events = recorder(breaker)
    failing(breaker, 2)
    succeed(breaker)
    failing(breaker, 2)
    assert breaker.state is CLOSED
    assert breaker.metrics.consecutive_failures == 2
    failing(breaker)
    assert breaker.state is OPEN
    assert transitions(events) == [("closed", "open", "consecutive_failures")]


def test_ignored_exceptions_do_not_break_a_streak(clock: FakeClock) -> None:
    breaker = CircuitBreaker(consecutive_failures=2, ignore=ValueError, clock=clock)

    def bad_input() -> str:
        raise ValueError("not counted")

    failing(breaker)
    with pytest.raises(ValueError, match="not counted"):
        breaker.call(bad_input)
    assert breaker.metrics == CircuitMetrics(1, 1, 0, 1)
    failing(breaker)
    assert breaker.state is OPEN


def test_consecutive_checked_before_ratio(clock: FakeClock) -> None:
    breaker = CircuitBreaker(consecutive_failures=2, min_calls=2, window=2, clock=clock)
    events = recorder(breaker)
    failing(breaker, 2)
    assert transitions(events) == [("closed", "open", "consecutive_failures")]


# ------------------------------------------------------------------ slow calls


def test_trips_on_slow_call_ratio(clock: FakeClock) -> None:
    breaker = CircuitBreaker(
        slow_call_duration=2.0, slow_call_ratio=0.5, min_calls=4, window=10, clock=clock
    )
    events = recorder(breaker)
    assert breaker.call(slow_call(clock, 2.0)) == "slow"  # exactly the threshold is slow
    breaker.call(slow_call(clock, 1.999))
    breaker.call(ok)
    assert breaker.metrics == CircuitMetrics(3, 0, 1, 0)
    breaker.call(slow_call(clock, 7.0))
    assert breaker.state is OPEN
    assert transitions(events) == [("closed", "open", "slow_call_ratio")]
    assert breaker.metrics.slow_call_ratio == 0.5


def test_a_slow_failure_is_both(clock: FakeClock) -> None:
    breaker = CircuitBreaker(slow_call_duration=1.0, min_calls=10, clock=clock)
    with pytest.raises(Down):
        breaker.call(slow_call(clock, 3.0, raises=True))
    assert breaker.metrics == CircuitMetrics(1, 1, 1, 1)


def test_failure_ratio_wins_over_slow_ratio(clock: FakeClock) -> None:
    breaker = CircuitBreaker(
        slow_call_duration=1.0, slow_call_ratio=0.5, min_calls=1, window=10, clock=clock
    )
    events = recorder(breaker)
    with pytest.raises(Down):
        breaker.call(slow_call(clock, 3.0, raises=True))
    assert transitions(events) == [("closed", "open", "failure_ratio")]


@pytest.mark.parametrize("way", SYNC_WAYS)
def test_every_sync_driver_times_calls(way: SyncWay, clock: FakeClock) -> None:
    breaker = CircuitBreaker(slow_call_duration=1.0, min_calls=3, window=3, clock=clock)
    assert way(breaker, ok) == "ok"
    assert way(breaker, slow_call(clock, 1.5)) == "slow"
    with pytest.raises(Down):
        way(breaker, slow_call(clock, 1.5, raises=True))
    assert breaker.metrics == CircuitMetrics(3, 1, 2, 1)


@pytest.mark.parametrize("way", SYNC_WAYS)
def test_timed_drivers_record_slow_successes_on_a_clean_window(
    way: SyncWay, clock: FakeClock
) -> None:
    breaker = CircuitBreaker(slow_call_duration=1.0, min_calls=4, window=4, clock=clock)
    succeed(breaker, 4)
    assert breaker._engine.fast
    way(breaker, slow_call(clock, 5.0))
    assert breaker.metrics == CircuitMetrics(4, 0, 1, 0)
    assert breaker._engine.fast == 0


@pytest.mark.parametrize("way", ASYNC_WAYS)
async def test_every_async_driver_times_calls(way: Any, clock: FakeClock) -> None:
    breaker = CircuitBreaker(slow_call_duration=1.0, min_calls=4, window=4, clock=clock)

    async def quick() -> str:
        return "ok"

    async def slow() -> str:
        await clock.asleep(1.5)
        return "slow"

    async def slow_fail() -> str:
        await clock.asleep(1.5)
        raise Down("slow and down")

    for _ in range(4):
        assert await way(breaker, quick) == "ok"
    assert breaker._engine.fast  # clean: the next fast success skips the lock
    assert await way(breaker, quick) == "ok"
    assert await way(breaker, slow) == "slow"
    with pytest.raises(Down):
        await way(breaker, slow_fail)
    assert breaker.metrics == CircuitMetrics(4, 1, 2, 1)


# --------------------------------------------------- the lock-free success path


def test_clock_is_never_read_without_slow_call_detection() -> None:
    clock = CountingClock()
    breaker = CircuitBreaker(window=5, min_calls=5, clock=clock)
    reads = clock.reads
    for way in SYNC_WAYS:
        for _ in range(10):
            way(breaker, ok)
    failing(breaker, 1)
    assert clock.reads == reads


def test_clock_read_twice_per_call_with_slow_call_detection() -> None:
    clock = CountingClock()
    breaker = CircuitBreaker(window=5, min_calls=5, slow_call_duration=1.0, clock=clock)
    succeed(breaker, 5)
    reads = clock.reads
    for way in SYNC_WAYS:
        way(breaker, ok)
    assert clock.reads - reads == 2 * len(SYNC_WAYS)


@pytest.mark.parametrize("slow_call_duration", [None, 1.0])
@pytest.mark.parametrize("way", SYNC_WAYS)
def test_clean_successes_take_no_lock(
    way: SyncWay, slow_call_duration: float | None, clock: FakeClock
) -> None:
    breaker = CircuitBreaker(
        window=10, min_calls=10, slow_call_duration=slow_call_duration, clock=clock
    )
    succeed(breaker, 9)
    assert breaker._engine.fast == 0  # not full yet: a success still changes the counts
    succeed(breaker)
    assert breaker._engine.fast != 0
    lock = counting_lock(breaker)
    for _ in range(50):
        assert way(breaker, ok) == "ok"
    assert lock.acquired == 0
    with pytest.raises(Down):
        way(breaker, fail)
    assert lock.acquired == 1
    assert breaker._engine.fast == 0
    assert breaker.metrics == CircuitMetrics(10, 1, 0, 1)


@pytest.mark.parametrize("way", ASYNC_WAYS)
async def test_clean_async_successes_take_no_lock(way: Any, clock: FakeClock) -> None:
    breaker = CircuitBreaker(window=3, min_calls=3, clock=clock)

    async def quick() -> str:
        return "ok"

    for _ in range(3):
        await way(breaker, quick)
    lock = counting_lock(breaker)
    for _ in range(20):
        assert await way(breaker, quick) == "ok"
    assert lock.acquired == 0


def test_window_gets_clean_again_when_the_failure_leaves_it(clock: FakeClock) -> None:
    breaker = CircuitBreaker(window=5, min_calls=5, clock=clock)
    succeed(breaker, 5)
    failing(breaker)
    succeed(breaker, 4)
    assert breaker._engine.fast == 0  # the failure is still the oldest entry
    succeed(breaker)
    assert breaker._engine.fast != 0
    assert breaker.metrics == CircuitMetrics(5, 0, 0, 0)


async def test_late_clean_success_is_linearized_at_its_start(clock: FakeClock) -> None:
    """A success admitted while clean changes nothing, even if a failure came meanwhile."""
    breaker = CircuitBreaker(window=4, min_calls=4, failure_ratio=1.0, clock=clock)
    succeed(breaker, 4)
    release = asyncio.Event()

    async def held() -> str:
        await release.wait()
        return "late"

    task = asyncio.create_task(breaker.acall(held))
    await tick()
    failing(breaker)
    release.set()
    assert await task == "late"
    # Linearized before the failure: a no-op, so the streak is not broken either.
    assert breaker.metrics == CircuitMetrics(4, 1, 0, 1)


# ------------------------------------------------------------ open and its duration


def test_open_rejects_with_until_and_retry_after(clock: FakeClock) -> None:
    breaker = CircuitBreaker(min_calls=1, window=1, open_duration=30.0, clock=clock, name="pay")
    events = recorder(breaker)
    clock.advance(100)
    failing(breaker)
    assert breaker.until == 130.0
    clock.advance(12.5)
    ran = []
    with pytest.raises(CircuitOpen) as info:
        breaker.call(ran.append, 1)
    assert ran == []
    assert (info.value.name, info.value.until, info.value.retry_after) == ("pay", 130.0, 17.5)
    assert rejections(events) == ["circuit_open"]
    assert events[-1] == CallRejected("pay", "circuit_open", call="list.append")


def test_open_turns_half_open_exactly_at_until(clock: FakeClock) -> None:
    breaker = CircuitBreaker(min_calls=1, window=1, open_duration=10.0, clock=clock)
    events = recorder(breaker)
    failing(breaker)
    clock.advance(9.999)
    assert breaker.state is OPEN
    with pytest.raises(CircuitOpen):
        breaker.call(ok)
    clock.advance(0.001)
    assert breaker.state is HALF_OPEN  # looking makes the due move, with its event
    assert breaker.until is None
    assert transitions(events)[-1] == ("open", "half_open", "open_duration_elapsed")
    succeed(breaker)
    assert breaker.state is CLOSED
    assert breaker.metrics == CircuitMetrics(0, 0, 0, 0)  # a fresh window


def test_zero_open_duration_allows_a_trial_at_once(clock: FakeClock) -> None:
    breaker = CircuitBreaker(min_calls=1, window=1, open_duration=0.0, clock=clock)
    failing(breaker)
    succeed(breaker)
    assert breaker.state is CLOSED


def test_open_duration_grows_and_is_capped_then_resets_on_close(clock: FakeClock) -> None:
    breaker = CircuitBreaker(
        min_calls=1,
        window=1,
        open_duration=10.0,
        open_duration_factor=2.0,
        max_open_duration=35.0,
        clock=clock,
    )
    failing(breaker)
    opened_for = []
    for _ in range(4):
        until = breaker.until
        assert until is not None
        opened_for.append(until - clock.monotonic())
        clock.advance(until - clock.monotonic())
        failing(breaker)  # the trial fails: open again, for longer
    assert opened_for == [10.0, 20.0, 35.0, 35.0]
    clock.advance(35.0)
    succeed(breaker)
    assert breaker.state is CLOSED
    failing(breaker)
    assert breaker.until == clock.monotonic() + 10.0


def test_reset_also_resets_the_growth(clock: FakeClock) -> None:
    breaker = CircuitBreaker(
        min_calls=1, window=1, open_duration=10.0, open_duration_factor=3.0, clock=clock
    )
    failing(breaker)
    clock.advance(10.0)
    failing(breaker)
    assert breaker.until == clock.monotonic() + 30.0
    breaker.reset()
    failing(breaker)
    assert breaker.until == clock.monotonic() + 10.0


# --------------------------------------------------------------------- half-open


def trip(breaker: CircuitBreaker, clock: FakeClock) -> None:
    """Trip a breaker built with min_calls=1, window=1 and wait out its open duration."""
    failing(breaker)
    assert breaker.state is OPEN
    until = breaker.until
    assert until is not None
    clock.advance(until - clock.monotonic())


def test_half_open_admits_permits_and_closes_after_successes(clock: FakeClock) -> None:
    breaker = CircuitBreaker(
        min_calls=1, window=1, half_open_calls=2, half_open_successes=3, clock=clock
    )
    events = recorder(breaker)
    trip(breaker, clock)
    with breaker, breaker:  # two trials in flight
        with pytest.raises(CircuitOpen) as info:
            breaker.call(ok)
        assert (info.value.until, info.value.retry_after) == (clock.monotonic(), 0.0)
        assert breaker._engine.trials() == (2, 0)
    assert breaker._engine.trials() == (0, 2)
    assert breaker.state is HALF_OPEN  # 2 of 3 successes
    succeed(breaker)
    assert breaker.state is CLOSED
    assert rejections(events) == ["half_open_full"]
    assert transitions(events) == [
        ("closed", "open", "failure_ratio"),
        ("open", "half_open", "open_duration_elapsed"),
        ("half_open", "closed", "trials_succeeded"),
    ]


def test_more_successes_than_permits_probes_one_after_another(clock: FakeClock) -> None:
    breaker = CircuitBreaker(
        min_calls=1, window=1, half_open_calls=1, half_open_successes=3, clock=clock
    )
    trip(breaker, clock)
    for expected in (HALF_OPEN, HALF_OPEN, CLOSED):
        succeed(breaker)
        assert breaker.state is expected


def test_any_failure_in_half_open_reopens(clock: FakeClock) -> None:
    breaker = CircuitBreaker(
        min_calls=1, window=1, half_open_calls=3, open_duration=5.0, clock=clock
    )
    events = recorder(breaker)
    trip(breaker, clock)
    succeed(breaker, 2)
    failing(breaker)
    assert breaker.state is OPEN
    assert breaker.until == clock.monotonic() + 5.0
    assert transitions(events)[-1] == ("half_open", "open", "trial_failed")


def test_a_slow_trial_reopens(clock: FakeClock) -> None:
    breaker = CircuitBreaker(min_calls=1, window=1, slow_call_duration=1.0, clock=clock)
    events = recorder(breaker)
    trip(breaker, clock)
    assert breaker.call(slow_call(clock, 1.0)) == "slow"
    assert breaker.state is OPEN
    assert transitions(events)[-1] == ("half_open", "open", "trial_slow")


def test_ignored_exception_in_a_trial_gives_the_permit_back(clock: FakeClock) -> None:
    breaker = CircuitBreaker(min_calls=1, window=1, ignore=ValueError, clock=clock)
    trip(breaker, clock)

    def bad_input() -> str:
        raise ValueError("ignored")

    with pytest.raises(ValueError, match="ignored"):
        breaker.call(bad_input)
    assert breaker.state is HALF_OPEN
    assert breaker._engine.trials() == (0, 0)
    succeed(breaker)
    assert breaker.state is CLOSED


def test_an_unmatched_exception_in_a_trial_counts_as_success(clock: FakeClock) -> None:
    breaker = CircuitBreaker(min_calls=1, window=1, failure_on=Down, clock=clock)
    trip(breaker, clock)

    def not_found() -> str:
        raise LookupError("404")

    with pytest.raises(LookupError):
        breaker.call(not_found)
    assert breaker.state is CLOSED


def test_base_exception_in_a_trial_gives_the_permit_back(clock: FakeClock) -> None:
    breaker = CircuitBreaker(min_calls=1, window=1, clock=clock)
    trip(breaker, clock)

    def interrupted() -> str:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        breaker.call(interrupted)
    assert breaker.state is HALF_OPEN
    assert breaker._engine.trials() == (0, 0)
    succeed(breaker)
    assert breaker.state is CLOSED


async def test_cancelled_trial_gives_its_permit_back(clock: FakeClock) -> None:
    breaker = CircuitBreaker(min_calls=1, window=1, clock=clock)
    trip(breaker, clock)
    started = asyncio.Event()

    async def hangs() -> str:
        started.set()
        await asyncio.Event().wait()
        return "never"

    task = asyncio.create_task(breaker.acall(hangs))
    await started.wait()
    assert breaker._engine.trials() == (1, 0)
    with pytest.raises(CircuitOpen):
        await breaker.acall(hangs)  # the one permit is taken
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert breaker.state is HALF_OPEN
    assert breaker._engine.trials() == (0, 0)  # released, no outcome counted

    async def quick() -> str:
        return "ok"

    assert await breaker.acall(quick) == "ok"
    assert breaker.state is CLOSED


@pytest.mark.parametrize("way", ASYNC_WAYS)
async def test_every_async_driver_releases_a_cancelled_trial(way: Any, clock: FakeClock) -> None:
    breaker = CircuitBreaker(min_calls=1, window=1, clock=clock)
    trip(breaker, clock)

    async def hangs() -> str:
        await asyncio.Event().wait()
        return "never"

    task = asyncio.create_task(way(breaker, hangs))
    await tick(3)
    assert breaker._engine.trials() == (1, 0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert breaker._engine.trials() == (0, 0)
    assert breaker.state is HALF_OPEN


def test_interrupted_thread_gives_its_permit_back(clock: FakeClock) -> None:
    breaker = CircuitBreaker(min_calls=1, window=1, clock=clock)
    trip(breaker, clock)
    outcome: list[BaseException] = []

    def interrupted() -> str:
        raise SystemExit(1)  # what an interrupt delivered into the thread looks like

    def worker() -> None:
        try:
            breaker.call(interrupted)
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join(5)
    assert [type(e) for e in outcome] == [SystemExit]
    assert breaker._engine.trials() == (0, 0)
    succeed(breaker)
    assert breaker.state is CLOSED


async def test_stale_outcome_of_a_call_from_the_closed_era_is_dropped(clock: FakeClock) -> None:
    breaker = CircuitBreaker(min_calls=2, window=2, clock=clock)
    release = asyncio.Event()

    async def held() -> str:
        await release.wait()
        raise Down("late failure")

    task = asyncio.create_task(breaker.acall(held))
    await tick()
    failing(breaker, 2)
    clock.advance(30.0)
    assert breaker.state is HALF_OPEN
    async with breaker:  # the one trial, in flight while the old call fails
        release.set()
        with pytest.raises(Down):
            await task
        assert breaker.state is HALF_OPEN  # the old failure does not reopen it
        assert breaker._engine.trials() == (1, 0)  # nor take the trial's permit
    assert breaker.state is CLOSED


async def test_late_success_from_closed_era_does_not_count_as_a_trial(clock: FakeClock) -> None:
    breaker = CircuitBreaker(min_calls=2, window=2, clock=clock)
    release = asyncio.Event()

    async def held() -> str:
        await release.wait()
        return "late"

    task = asyncio.create_task(breaker.acall(held))
    await tick()
    failing(breaker, 2)
    clock.advance(30.0)
    assert breaker.state is HALF_OPEN
    release.set()
    assert await task == "late"
    assert breaker.state is HALF_OPEN
    assert breaker._engine.trials() == (0, 0)


# -------------------------------------------------------------- atomic admission


async def test_twenty_concurrent_tasks_one_trial(clock: FakeClock) -> None:
    breaker = CircuitBreaker(min_calls=1, window=1, half_open_calls=1, clock=clock)
    trip(breaker, clock)
    release = asyncio.Event()
    ran = 0

    async def trial() -> str:
        nonlocal ran
        ran += 1
        await release.wait()
        return "ok"

    tasks = [asyncio.create_task(breaker.acall(trial)) for _ in range(20)]
    await tick(2)
    release.set()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert ran == 1
    assert results.count("ok") == 1
    assert sum(isinstance(r, CircuitOpen) for r in results) == 19
    assert breaker.state is CLOSED


def test_twenty_threads_one_trial(clock: FakeClock) -> None:
    breaker = CircuitBreaker(min_calls=1, window=1, half_open_calls=1, clock=clock)
    trip(breaker, clock)
    events = recorder(breaker)
    barrier = threading.Barrier(20)
    release = threading.Event()
    lock = threading.Lock()
    ran = 0
    rejected = 0
    all_rejected = threading.Event()

    def trial() -> str:
        nonlocal ran
        with lock:
            ran += 1
        assert release.wait(10)
        return "ok"

    def worker() -> None:
        nonlocal rejected
        barrier.wait(10)
        try:
            breaker.call(trial)
        except CircuitOpen:
            with lock:
                rejected += 1
                if rejected == 19:
                    all_rejected.set()

    threads = [threading.Thread(target=worker) for _ in range(20)]
    for thread in threads:
        thread.start()
    assert all_rejected.wait(10)
    release.set()
    for thread in threads:
        thread.join(10)
    assert (ran, rejected) == (1, 19)
    assert rejections(events) == ["half_open_full"] * 19
    assert breaker.state is CLOSED


# ----------------------------------------------------------------- isolate / reset


def test_isolate_holds_open_until_reset(clock: FakeClock) -> None:
    breaker = CircuitBreaker(open_duration=1.0, clock=clock, name="db")
    events = recorder(breaker)
    succeed(breaker, 3)
    breaker.isolate()
    assert breaker.state is ISOLATED
    assert breaker.until == math.inf
    clock.advance(1e9)
    with pytest.raises(CircuitOpen) as info:
        breaker.call(ok)
    assert (info.value.until, info.value.retry_after) == (math.inf, math.inf)
    assert breaker.state is ISOLATED
    breaker.isolate()  # already isolated: nothing new happens
    breaker.reset()
    assert breaker.state is CLOSED
    assert breaker.metrics == CircuitMetrics(0, 0, 0, 0)
    assert transitions(events) == [
        ("closed", "isolated", "isolate"),
        ("isolated", "closed", "reset"),
    ]
    assert rejections(events) == ["circuit_open"]


def test_isolate_from_open_and_half_open(clock: FakeClock) -> None:
    breaker = CircuitBreaker(min_calls=1, window=1, clock=clock)
    failing(breaker)
    breaker.isolate()
    assert breaker.state is ISOLATED
    breaker.reset()
    trip(breaker, clock)
    assert breaker.state is HALF_OPEN
    with breaker:
        breaker.isolate()
    assert breaker.state is ISOLATED  # the trial's success belongs to the half-open era


def test_reset_while_closed_clears_the_window_silently(clock: FakeClock) -> None:
    breaker = CircuitBreaker(window=10, clock=clock)
    events = recorder(breaker)
    failing(breaker, 3)

    def block() -> None:
        with breaker:
            breaker.reset()
            raise Down("started before the reset")

    with pytest.raises(Down):
        block()
    assert breaker.metrics == CircuitMetrics(0, 0, 0, 0)
    assert events == []


# ---------------------------------------------------------- which errors count


def test_failure_on_types_other_exceptions_count_as_success(clock: FakeClock) -> None:
    breaker = CircuitBreaker(failure_on=(Down, TimeoutError), clock=clock)

    def not_found() -> str:
        raise KeyError("404")

    def timeout() -> str:
        raise TimeoutError

    with pytest.raises(KeyError):
        breaker.call(not_found)
    with pytest.raises(TimeoutError):
        breaker.call(timeout)
    failing(breaker)
    assert breaker.metrics == CircuitMetrics(3, 2, 0, 2)


def test_failure_on_single_type(clock: FakeClock) -> None:
    breaker = CircuitBreaker(failure_on=ZeroDivisionError, clock=clock)
    failing(breaker)
    with pytest.raises(ZeroDivisionError):
        breaker.call(lambda: 1 / 0)
    assert breaker.metrics == CircuitMetrics(2, 1, 0, 1)


def test_failure_on_predicate(clock: FakeClock) -> None:
    breaker = CircuitBreaker(failure_on=lambda exc: "retryable" in str(exc), clock=clock)

    def raising(message: str) -> str:
        raise RuntimeError(message)

    with pytest.raises(RuntimeError):
        breaker.call(raising, "retryable glitch")
    with pytest.raises(RuntimeError):
        breaker.call(raising, "bad request")
    assert breaker.metrics == CircuitMetrics(2, 1, 0, 0)


def test_ignore_types_and_predicate(clock: FakeClock) -> None:
    by_type = CircuitBreaker(ignore=(KeyError, ValueError), clock=clock)
    by_predicate = CircuitBreaker(ignore=lambda exc: isinstance(exc, LookupError), clock=clock)
    for breaker in (by_type, by_predicate):
        with pytest.raises(KeyError):
            breaker.call({}.__getitem__, "missing")
        failing(breaker)
    assert by_type.metrics == CircuitMetrics(1, 1, 0, 1)
    assert by_predicate.metrics == CircuitMetrics(1, 1, 0, 1)


def test_ignore_wins_over_failure_on(clock: FakeClock) -> None:
    breaker = CircuitBreaker(failure_on=OSError, ignore=Down, clock=clock)
    failing(breaker)
    assert breaker.metrics == CircuitMetrics(0, 0, 0, 0)


def test_base_exceptions_never_count(clock: FakeClock) -> None:
    breaker = CircuitBreaker(failure_on=lambda exc: True, clock=clock)
    for error in (KeyboardInterrupt, SystemExit, GeneratorExit, asyncio.CancelledError):

        def raising(error: type[BaseException] = error) -> str:
            raise error

        with pytest.raises(error):
            breaker.call(raising)
    assert breaker.metrics == CircuitMetrics(0, 0, 0, 0)


def test_a_raising_predicate_propagates_and_releases_the_permit(clock: FakeClock) -> None:
    broken = False

    def predicate(exc: BaseException) -> bool:
        if broken:
            raise RuntimeError("predicate bug")
        return True

    breaker = CircuitBreaker(min_calls=1, window=1, failure_on=predicate, clock=clock)
    trip(breaker, clock)
    broken = True
    with pytest.raises(RuntimeError, match="predicate bug") as info:
        breaker.call(fail)
    assert isinstance(info.value.__context__, Down)
    assert breaker.state is HALF_OPEN
    assert breaker._engine.trials() == (0, 0)


# ------------------------------------------------------------------------ events


def test_full_cycle_of_events(clock: FakeClock) -> None:
    breaker = CircuitBreaker(min_calls=2, window=2, open_duration=5.0, clock=clock, name="api")
    events = recorder(breaker)
    failing(breaker, 2)
    with pytest.raises(CircuitOpen):
        breaker.call(ok)
    clock.advance(5.0)
    failing(breaker)
    clock.advance(5.0)
    succeed(breaker)
    f, o = call_name(fail), call_name(ok)
    assert events == [
        CircuitStateChanged("api", CLOSED, OPEN, "failure_ratio", call=f),
        CallRejected("api", "circuit_open", call=o),
        CircuitStateChanged("api", OPEN, HALF_OPEN, "open_duration_elapsed", call=f),
        CircuitStateChanged("api", HALF_OPEN, OPEN, "trial_failed", call=f),
        CircuitStateChanged("api", OPEN, HALF_OPEN, "open_duration_elapsed", call=o),
        CircuitStateChanged("api", HALF_OPEN, CLOSED, "trials_succeeded", call=o),
    ]
    assert f == "tests.unit.policies.test_circuit.fail"


def test_no_event_objects_without_listeners(
    clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    def forbidden(*args: Any) -> Any:
        raise AssertionError("an event was built with nobody listening")

    monkeypatch.setattr(engine_module, "CircuitStateChanged", forbidden)
    monkeypatch.setattr(engine_module, "CallRejected", forbidden)
    breaker = CircuitBreaker(min_calls=1, window=1, clock=clock)
    failing(breaker)
    with pytest.raises(CircuitOpen):
        breaker.call(ok)
    clock.advance(30.0)
    succeed(breaker)
    breaker.isolate()
    breaker.reset()
    assert breaker.state is CLOSED


def test_listener_may_read_and_drive_the_breaker(clock: FakeClock) -> None:
    breaker = CircuitBreaker(min_calls=1, window=1, clock=clock)
    seen: list[tuple[CircuitState, CircuitMetrics]] = []

    def listener(event: Event) -> None:
        if isinstance(event, CircuitStateChanged):
            seen.append((breaker.state, breaker.metrics))
            if event.new is OPEN:
                breaker.reset()  # its own event comes after this listener returns

    breaker.subscribe(listener)
    failing(breaker)
    assert breaker.state is CLOSED
    assert seen == [(OPEN, CircuitMetrics(1, 1, 0, 1)), (CLOSED, CircuitMetrics(0, 0, 0, 0))]


def test_listener_reset_during_the_half_open_move(clock: FakeClock) -> None:
    breaker = CircuitBreaker(min_calls=1, window=1, clock=clock)
    trip(breaker, clock)

    def listener(event: Event) -> None:
        if isinstance(event, CircuitStateChanged) and event.new is HALF_OPEN:
            breaker.reset()

    breaker.subscribe(listener)
    # Admitted as the trial before the event reached the listener, whose reset then
    # started a new era: the trial's outcome belongs to the old one and is dropped.
    succeed(breaker)
    assert breaker.state is CLOSED
    assert breaker.metrics == CircuitMetrics(0, 0, 0, 0)
    succeed(breaker)
    assert breaker.metrics == CircuitMetrics(1, 0, 0, 0)


def test_a_failing_listener_does_not_break_the_call(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    breaker = CircuitBreaker(min_calls=1, window=1, clock=clock)

    def broken(event: Event) -> None:
        raise RuntimeError("listener bug")

    breaker.subscribe(broken)
    failing(breaker)
    assert breaker.state is OPEN
    assert "listener bug" in caplog.text


# ----------------------------------------------------------------------- drivers


@pytest.mark.parametrize("way", SYNC_WAYS)
def test_every_sync_driver_records_and_rejects(way: SyncWay, clock: FakeClock) -> None:
    breaker = CircuitBreaker(min_calls=3, window=3, clock=clock)
    assert way(breaker, ok) == "ok"
    with pytest.raises(Down):
        way(breaker, fail)
    assert breaker.metrics == CircuitMetrics(2, 1, 0, 1)
    with pytest.raises(Down):
        way(breaker, fail)
    assert breaker.state is OPEN
    with pytest.raises(CircuitOpen):
        way(breaker, ok)
    clock.advance(30.0)
    assert way(breaker, ok) == "ok"
    assert breaker.state is CLOSED


@pytest.mark.parametrize("way", ASYNC_WAYS)
async def test_every_async_driver_records_and_rejects(way: Any, clock: FakeClock) -> None:
    breaker = CircuitBreaker(min_calls=3, window=3, clock=clock)

    async def quick() -> str:
        await tick()
        return "ok"

    async def broken() -> str:
        await tick()
        raise Down("down")

    assert await way(breaker, quick) == "ok"
    with pytest.raises(Down):
        await way(breaker, broken)
    assert breaker.metrics == CircuitMetrics(2, 1, 0, 1)
    with pytest.raises(Down):
        await way(breaker, broken)
    assert breaker.state is OPEN
    with pytest.raises(CircuitOpen):
        await way(breaker, quick)
    clock.advance(30.0)
    assert await way(breaker, quick) == "ok"
    assert breaker.state is CLOSED


def test_decorator_keeps_metadata_and_binds_methods(clock: FakeClock) -> None:
    breaker = CircuitBreaker(clock=clock)

    class Client:
        def __init__(self) -> None:
            self.base = "https://x"

        @breaker
        def get(self, path: str, *, query: str = "") -> str:
            """Fetch a path."""
            return self.base + path + query

        @breaker
        async def aget(self, path: str) -> str:
            return self.base + path

    client = Client()
    assert client.get("/a", query="?q") == "https://x/a?q"
    assert asyncio.run(client.aget("/b")) == "https://x/b"
    assert Client.get.__name__ == "get"
    assert Client.get.__doc__ == "Fetch a path."
    assert breaker.metrics.calls == 2


def test_one_breaker_shared_by_pipeline_and_decorator(clock: FakeClock) -> None:
    breaker = CircuitBreaker(min_calls=2, window=2, clock=clock)
    pipeline = Pipeline(breaker)
    decorated = breaker(fail)
    with pytest.raises(Down):
        pipeline.call(fail)
    with pytest.raises(Down):
        decorated()
    assert breaker.state is OPEN
    with pytest.raises(CircuitOpen):
        pipeline.call(ok)


def test_exit_without_enter_is_an_error() -> None:
    breaker = CircuitBreaker(name="x")
    with pytest.raises(RuntimeError, match="without a matching __enter__"):
        breaker.__exit__(None, None, None)


def test_with_blocks_nest_and_keep_their_own_tickets(clock: FakeClock) -> None:
    breaker = CircuitBreaker(min_calls=5, window=5, clock=clock)
    with breaker:
        with pytest.raises(Down), breaker:
            raise Down("inner")
        assert breaker.metrics == CircuitMetrics(1, 1, 0, 1)
    assert breaker.metrics == CircuitMetrics(2, 1, 0, 0)


async def test_async_with_in_concurrent_tasks_keep_their_own_tickets(clock: FakeClock) -> None:
    breaker = CircuitBreaker(min_calls=1, window=1, half_open_calls=2, clock=clock)
    trip(breaker, clock)
    gates = [asyncio.Event(), asyncio.Event()]

    async def trial(index: int) -> None:
        async with breaker:
            await gates[index].wait()
            if index == 0:
                raise Down("first trial fails")

    first = asyncio.create_task(trial(0))
    second = asyncio.create_task(trial(1))
    await tick()
    assert breaker._engine.trials() == (2, 0)
    gates[1].set()
    await second
    assert breaker._engine.trials() == (1, 1)
    gates[0].set()
    with pytest.raises(Down):
        await first
    assert breaker.state is OPEN


# ----------------------------------------------------- rejections from inner policies


def test_inner_rejections_are_not_failures_by_default(clock: FakeClock) -> None:
    from buttress import Bulkhead, BulkheadFull, Pipeline

    breaker = CircuitBreaker(consecutive_failures=1, window=5, min_calls=1, clock=clock)
    bulkhead = Bulkhead(1)
    pipeline = Pipeline(breaker, bulkhead)
    with bulkhead:  # the only slot is taken: the inner bulkhead rejects
        for _ in range(3):
            with pytest.raises(BulkheadFull):
                pipeline.call(lambda: "never runs")
    assert breaker.state is CircuitState.CLOSED
    assert breaker.metrics.failures == 0
    assert breaker.metrics.calls == 0


def test_inner_rejections_count_when_named_in_failure_on(clock: FakeClock) -> None:
    from buttress import Bulkhead, BulkheadFull, Pipeline

    breaker = CircuitBreaker(
        consecutive_failures=1, failure_on=(BulkheadFull, ConnectionError), clock=clock
    )
    bulkhead = Bulkhead(1)
    with bulkhead, pytest.raises(BulkheadFull):
        Pipeline(breaker, bulkhead).call(lambda: "never runs")
    assert breaker.state is CircuitState.OPEN

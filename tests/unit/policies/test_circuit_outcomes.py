"""What the breaker counts: the one outcome model, results, and timeouts.

Issue 6, items 2 and 5: a hanging dependency trips the breaker (a call a buttress
``Timeout`` ends is a timeout failure; a caller's cancellation is nothing), a
permanent 4xx is an answer, a returned 503 is a failure, programming errors and
inner rejections count as nothing unless named. Every rule is checked through every
entry point, sync and async.
"""

from __future__ import annotations

import asyncio
import dataclasses
import threading
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from buttress import Matcher
from buttress.clock import FakeClock
from buttress.errors import (
    BulkheadFull,
    CircuitOpen,
    ConfigError,
    RateLimited,
    RetryExhausted,
    TimeoutExceeded,
)
from buttress.pipeline import Pipeline
from buttress.policies.bulkhead import Bulkhead
from buttress.policies.circuit import CircuitBreaker, CircuitMetrics, CircuitState
from buttress.policies.retry import Retry
from buttress.policies.timeout import Timeout

from tests.helpers import tick
from tests.unit.policies.test_circuit import ASYNC_WAYS, SYNC_WAYS, SyncWay

CLOSED = CircuitState.CLOSED
OPEN = CircuitState.OPEN
HALF_OPEN = CircuitState.HALF_OPEN

URL = "https://api.example/items/1"


def response(status: int) -> httpx.Response:
    return httpx.Response(status, request=httpx.Request("GET", URL))


def status_error(status: int) -> httpx.HTTPStatusError:
    answer = response(status)
    return httpx.HTTPStatusError(f"{status}", request=answer.request, response=answer)


def returning(value: Any) -> Callable[[], Any]:
    def call() -> Any:
        return value

    return call


def raising(error: BaseException) -> Callable[[], Any]:
    def call() -> Any:
        raise error

    return call


def areturning(value: Any) -> Callable[[], Any]:
    async def call() -> Any:
        return value

    return call


def araising(error: BaseException) -> Callable[[], Any]:
    async def call() -> Any:
        raise error

    return call


def run(way: SyncWay, breaker: CircuitBreaker, fn: Callable[[], Any]) -> Any:
    try:
        return way(breaker, fn)
    except Exception as exc:
        return exc


async def arun(way: Any, breaker: CircuitBreaker, fn: Callable[[], Any]) -> Any:
    try:
        return await way(breaker, fn)
    except Exception as exc:
        return exc


def tripped_open(clock: FakeClock, **options: Any) -> CircuitBreaker:
    """A breaker opened by one failure, its open time over: the next call is a trial."""
    breaker = CircuitBreaker(window=1, min_calls=1, open_duration=1.0, clock=clock, **options)
    with pytest.raises(ConnectionError):
        breaker.call(raising(ConnectionError("down")))
    clock.advance(1.0)
    assert breaker.state is HALF_OPEN
    return breaker


# ========================================================== results and answers


@pytest.mark.parametrize("way", SYNC_WAYS)
def test_a_returned_503_is_a_failure(way: SyncWay, clock: FakeClock) -> None:
    if way.__name__ == "via_with":
        pytest.skip("a block has no result")
    breaker = CircuitBreaker(consecutive_failures=5, clock=clock)
    unavailable = response(503)
    for _ in range(4):
        assert run(way, breaker, returning(unavailable)) is unavailable
    assert breaker.state is CLOSED
    assert run(way, breaker, returning(unavailable)) is unavailable  # returned, not raised
    assert breaker.state is OPEN
    assert breaker.metrics.failures == 5


@pytest.mark.parametrize("way", ASYNC_WAYS)
async def test_a_returned_503_is_a_failure_async(way: Any, clock: FakeClock) -> None:
    if way.__name__ == "avia_with":
        pytest.skip("a block has no result")
    breaker = CircuitBreaker(consecutive_failures=5, clock=clock)
    unavailable = response(503)
    for _ in range(5):
        assert await arun(way, breaker, areturning(unavailable)) is unavailable
    assert breaker.state is OPEN


@pytest.mark.parametrize("way", SYNC_WAYS)
def test_a_404_is_an_answer_not_a_failure(way: SyncWay, clock: FakeClock) -> None:
    breaker = CircuitBreaker(consecutive_failures=5, window=10, min_calls=5, clock=clock)
    for _ in range(10):
        assert isinstance(run(way, breaker, raising(status_error(404))), httpx.HTTPStatusError)
    assert breaker.state is CLOSED
    assert breaker.metrics == CircuitMetrics(10, 0, 0, 0)  # ten answers: successes
    if way.__name__ != "via_with":
        for _ in range(10):
            assert run(way, breaker, returning(response(404))).status_code == 404
        assert breaker.state is CLOSED
        assert breaker.metrics.failures == 0


@pytest.mark.parametrize("way", ASYNC_WAYS)
async def test_a_404_is_an_answer_not_a_failure_async(way: Any, clock: FakeClock) -> None:
    breaker = CircuitBreaker(consecutive_failures=5, window=10, min_calls=5, clock=clock)
    for _ in range(10):
        error = await arun(way, breaker, araising(status_error(404)))
        assert isinstance(error, httpx.HTTPStatusError)
    assert breaker.state is CLOSED
    assert breaker.metrics == CircuitMetrics(10, 0, 0, 0)


@pytest.mark.parametrize("status", [408, 425, 429, 500, 502, 503, 504])
def test_transient_statuses_count_raised_or_returned(status: int, clock: FakeClock) -> None:
    breaker = CircuitBreaker(window=4, min_calls=4, failure_ratio=1.0, clock=clock)
    for _ in range(2):
        breaker.call(returning(response(status)))
        with pytest.raises(httpx.HTTPStatusError):
            breaker.call(raising(status_error(status)))
    assert breaker.state is OPEN


@pytest.mark.parametrize("status", [200, 201, 204, 301, 400, 401, 403, 404, 409, 422, 501, 505])
def test_other_statuses_are_answers(status: int, clock: FakeClock) -> None:
    breaker = CircuitBreaker(window=4, min_calls=4, failure_ratio=0.25, clock=clock)
    for _ in range(4):
        breaker.call(returning(response(status)))
    assert breaker.state is CLOSED
    assert breaker.metrics == CircuitMetrics(4, 0, 0, 0)


def test_a_response_type_of_ones_own_is_judged_by_its_status(clock: FakeClock) -> None:
    @dataclasses.dataclass
    class Reply:
        status_code: int
        body: str = ""

    breaker = CircuitBreaker(window=2, min_calls=2, clock=clock)
    breaker.call(returning(Reply(200)))
    breaker.call(returning(Reply(503)))
    assert breaker.state is OPEN  # 1 of 2: the failure ratio of 0.5


def test_a_result_that_resists_inspection_is_a_success(clock: FakeClock) -> None:
    class Awkward(type):
        def __getattr__(cls, name: str) -> Any:
            raise RuntimeError("no attributes here")

    class Thing(metaclass=Awkward):
        pass

    breaker = CircuitBreaker(window=1, min_calls=1, clock=clock)
    thing = Thing()
    assert breaker.call(returning(thing)) is thing
    assert breaker.metrics == CircuitMetrics(1, 0, 0, 0)


@pytest.mark.parametrize("way", SYNC_WAYS)
def test_results_of_changing_types_are_each_judged(way: SyncWay, clock: FakeClock) -> None:
    if way.__name__ == "via_with":
        pytest.skip("a block has no result")
    breaker = CircuitBreaker(window=4, min_calls=4, failure_ratio=0.5, clock=clock)
    results = [1, response(503), None, response(503)]
    for value in results:
        assert run(way, breaker, returning(value)) is value
    assert breaker.metrics == CircuitMetrics(4, 2, 0, 1)
    assert breaker.state is OPEN


def test_plain_results_are_successes_without_looking(clock: FakeClock) -> None:
    breaker = CircuitBreaker(window=3, min_calls=3, clock=clock)
    for value in (None, 0, "503", b"", 1.5, [503], {"status": 503}, (503,)):
        breaker.call(returning(value))
    assert breaker.metrics.failures == 0
    assert breaker._engine.fast  # a clean window: the lock-free path serves them


def test_a_clean_window_still_counts_a_failed_result(clock: FakeClock) -> None:
    breaker = CircuitBreaker(window=2, min_calls=2, clock=clock)
    breaker.call(returning(response(200)))
    breaker.call(returning(response(200)))
    assert breaker._engine.fast
    breaker.call(returning(response(503)))  # on the lock-free path, and still seen
    assert breaker.state is OPEN


# ====================================================================== on=


def test_on_replaces_the_rule_for_errors(clock: FakeClock) -> None:
    class NotFound(Exception):
        pass

    breaker = CircuitBreaker(window=2, min_calls=2, on=NotFound, clock=clock)
    with pytest.raises(ConnectionError):
        breaker.call(raising(ConnectionError("now an answer")))
    assert breaker.metrics == CircuitMetrics(1, 0, 0, 0)
    with pytest.raises(NotFound):
        breaker.call(raising(NotFound()))
    assert breaker.state is OPEN


@pytest.mark.parametrize(
    "on",
    [
        KeyError,
        (KeyError, ConnectionError),
        lambda exc: isinstance(exc, KeyError),
        Matcher(KeyError),
        Matcher(lambda exc: "boom" in str(exc)),
    ],
    ids=["type", "tuple", "predicate", "matcher", "matcher-predicate"],
)
def test_on_takes_what_every_policy_takes(on: Any, clock: FakeClock) -> None:
    breaker = CircuitBreaker(consecutive_failures=2, on=on, clock=clock)
    for _ in range(2):
        with pytest.raises(KeyError):
            breaker.call(raising(KeyError("boom")))
    assert breaker.state is OPEN


def test_failure_on_is_the_former_name_of_on(clock: FakeClock) -> None:
    breaker = CircuitBreaker(consecutive_failures=1, failure_on=KeyError, clock=clock)
    assert breaker.options.on is KeyError
    assert breaker.options.failure_on is None
    with pytest.raises(KeyError):
        breaker.call(raising(KeyError("k")))
    assert breaker.state is OPEN


def test_on_and_failure_on_together_are_refused() -> None:
    with pytest.raises(ConfigError) as info:
        CircuitBreaker(on=KeyError, failure_on=ValueError)
    assert info.value.path == "failure_on"
    assert "not both" in str(info.value)


@pytest.mark.parametrize(
    ("options", "path"),
    [
        ({"on": 3}, "on"),
        ({"on": ()}, "on"),
        ({"on": KeyboardInterrupt}, "on"),
        ({"on": (KeyError, "x")}, "on"),
        ({"failure_on": int}, "failure_on"),
        ({"on_result": 503}, "on_result"),
        ({"ignore": (ValueError, SystemExit)}, "ignore"),
    ],
)
def test_bad_matchers_name_their_option(options: dict[str, Any], path: str) -> None:
    with pytest.raises(ConfigError) as info:
        CircuitBreaker(**options)
    assert info.value.path == path


def test_on_result_replaces_the_rule_for_results(clock: FakeClock) -> None:
    breaker = CircuitBreaker(
        consecutive_failures=2, on_result=lambda value: value == "maintenance", clock=clock
    )
    breaker.call(returning(response(503)))  # no longer a failure: the rule is replaced
    assert breaker.metrics.failures == 0
    for _ in range(2):
        assert breaker.call(returning("maintenance")) == "maintenance"
    assert breaker.state is OPEN


async def test_on_result_async(clock: FakeClock) -> None:
    breaker = CircuitBreaker(consecutive_failures=2, on_result=lambda v: v is None, clock=clock)
    for _ in range(2):
        assert await breaker.acall(areturning(None)) is None
    assert breaker.state is OPEN


def test_a_raising_result_rule_gives_the_trial_permit_back(clock: FakeClock) -> None:
    def broken(value: object) -> bool:
        raise RuntimeError("rule bug")

    breaker = tripped_open(clock, on_result=broken)
    with pytest.raises(RuntimeError, match="rule bug"):
        breaker.call(returning("x"))
    assert breaker._engine.trials() == (0, 0)
    assert breaker.state is HALF_OPEN


# ================================================= what counts as nothing


@pytest.mark.parametrize("way", SYNC_WAYS)
@pytest.mark.parametrize("error", [TypeError("bug"), AttributeError("bug"), NameError("bug")])
def test_programming_errors_count_as_nothing(
    way: SyncWay, error: Exception, clock: FakeClock
) -> None:
    breaker = CircuitBreaker(window=1, min_calls=1, clock=clock)
    for _ in range(3):
        assert run(way, breaker, raising(error)) is error
    assert breaker.metrics == CircuitMetrics(0, 0, 0, 0)


@pytest.mark.parametrize("way", ASYNC_WAYS)
async def test_programming_errors_count_as_nothing_async(way: Any, clock: FakeClock) -> None:
    breaker = CircuitBreaker(window=1, min_calls=1, clock=clock)
    error = AttributeError("bug")
    assert await arun(way, breaker, araising(error)) is error
    assert breaker.metrics == CircuitMetrics(0, 0, 0, 0)


def test_programming_errors_count_when_named(clock: FakeClock) -> None:
    named = CircuitBreaker(consecutive_failures=1, on=(ConnectionError, TypeError), clock=clock)
    with pytest.raises(TypeError):
        named.call(raising(TypeError("bug")))
    assert named.state is OPEN
    broad = CircuitBreaker(consecutive_failures=1, on=Exception, clock=clock)
    with pytest.raises(TypeError):
        broad.call(raising(TypeError("bug")))  # Exception does not name a programming error
    assert broad.metrics == CircuitMetrics(0, 0, 0, 0)


def test_a_programming_error_in_a_trial_gives_the_permit_back(clock: FakeClock) -> None:
    breaker = tripped_open(clock)
    with pytest.raises(TypeError):
        breaker.call(raising(TypeError("bug")))
    assert breaker._engine.trials() == (0, 0)
    assert breaker.state is HALF_OPEN


@pytest.mark.parametrize(
    "rejection",
    [BulkheadFull("inner"), RateLimited("inner", 1.0), CircuitOpen("inner", 5.0, 5.0)],
)
def test_inner_rejections_count_as_nothing_unless_named(
    rejection: Exception, clock: FakeClock
) -> None:
    breaker = CircuitBreaker(window=1, min_calls=1, clock=clock)
    with pytest.raises(type(rejection)):
        breaker.call(raising(rejection))
    assert breaker.metrics == CircuitMetrics(0, 0, 0, 0)
    named = CircuitBreaker(window=1, min_calls=1, on=type(rejection), clock=clock)
    with pytest.raises(type(rejection)):
        named.call(raising(rejection))
    assert named.state is OPEN


def test_a_full_inner_bulkhead_never_trips_the_breaker(clock: FakeClock) -> None:
    breaker = CircuitBreaker(window=2, min_calls=2, clock=clock)
    bulkhead = Bulkhead(1, max_queue=0)
    pipeline = Pipeline(breaker, bulkhead)
    entered = threading.Event()
    release = threading.Event()

    def hold() -> str:
        entered.set()
        release.wait(5)
        return "done"

    worker = threading.Thread(target=pipeline.call, args=(hold,))
    worker.start()
    try:
        assert entered.wait(5)
        for _ in range(5):
            with pytest.raises(BulkheadFull):
                pipeline.call(returning("x"))
    finally:
        release.set()
        worker.join(5)
    assert breaker.state is CLOSED
    assert breaker.metrics == CircuitMetrics(1, 0, 0, 0)


def test_ignore_counts_as_nothing_and_wins_over_on(clock: FakeClock) -> None:
    breaker = CircuitBreaker(window=1, min_calls=1, on=Exception, ignore=KeyError, clock=clock)
    with pytest.raises(KeyError):
        breaker.call(raising(KeyError("k")))
    assert breaker.metrics == CircuitMetrics(0, 0, 0, 0)


# ============================================== timeouts: a hanging dependency


class Hang:
    """An async dependency that never answers (until released), counting its calls."""

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.started = 0

    async def __call__(self) -> str:
        self.started += 1
        await self.gate.wait()
        return "late"


async def test_the_recommended_pipeline_trips_on_a_hanging_dependency() -> None:
    # The order the docs recommend, with real asyncio and 10 ms timeouts as users run it.
    breaker = CircuitBreaker(consecutive_failures=5, slow_call_duration=0.01)
    pipeline = Pipeline(Timeout(0.01), Retry(3), breaker, Bulkhead(10))
    hang = Hang()
    errors = []
    for _ in range(20):
        try:
            await pipeline.acall(hang)
        except (TimeoutExceeded, CircuitOpen, RetryExhausted) as exc:
            errors.append(type(exc))
    assert breaker.state is OPEN
    assert breaker.metrics.failures == 5
    assert breaker.metrics.slow_calls == 5  # a call cut off by a timeout is slow too
    assert errors[:5] == [TimeoutExceeded] * 5
    assert hang.started == 5  # the other fifteen were refused without calling it
    assert set(errors[5:]) <= {CircuitOpen, RetryExhausted}


async def test_twenty_concurrent_hanging_calls_trip_the_breaker() -> None:
    breaker = CircuitBreaker(consecutive_failures=5, slow_call_duration=0.01)
    pipeline = Pipeline(Timeout(0.01), Retry(3), breaker, Bulkhead(10))
    hang = Hang()
    results = await asyncio.gather(
        *(pipeline.acall(hang) for _ in range(20)), return_exceptions=True
    )
    assert all(isinstance(r, TimeoutExceeded | BulkheadFull | CircuitOpen) for r in results)
    assert breaker.state is OPEN
    with pytest.raises(CircuitOpen):
        await pipeline.acall(hang)


async def test_a_timeout_inside_the_breaker_trips_it_per_attempt() -> None:
    # Per-attempt timeout inside the breaker: each attempt's TimeoutExceeded counts.
    breaker = CircuitBreaker(consecutive_failures=5, slow_call_duration=0.01)
    pipeline = Pipeline(Retry(3, clock=FakeClock()), breaker, Timeout(0.01))
    hang = Hang()
    for _ in range(20):
        with pytest.raises((RetryExhausted, TimeoutExceeded, CircuitOpen)):
            await pipeline.acall(hang)
        if breaker.state is OPEN:
            break
    assert breaker.state is OPEN
    assert hang.started == 5
    assert breaker.metrics.failures == 5


@pytest.mark.parametrize("way", ASYNC_WAYS)
async def test_every_async_entry_point_counts_a_timeout_cancellation(
    way: Any, manual_clock: FakeClock
) -> None:
    breaker = CircuitBreaker(
        window=2, min_calls=2, slow_call_duration=5.0, failure_ratio=1.0, clock=manual_clock
    )
    timeout = Timeout(1.0, clock=manual_clock)
    hang = Hang()
    for _ in range(2):
        task = asyncio.create_task(timeout.acall(way, breaker, hang))
        await tick(3)
        manual_clock.advance(1.0)
        with pytest.raises(TimeoutExceeded):
            await task
    # Cut off after 1 s: failures, and slow although slow_call_duration is 5 s.
    assert breaker.metrics == CircuitMetrics(2, 2, 2, 2)
    assert breaker.state is OPEN


async def test_a_timeout_ends_a_trial_as_a_failure(manual_clock: FakeClock) -> None:
    breaker = tripped_open(manual_clock)
    timeout = Timeout(1.0, clock=manual_clock)
    task = asyncio.create_task(timeout.acall(breaker.acall, Hang()))
    await tick(3)
    assert breaker._engine.trials() == (1, 0)
    manual_clock.advance(1.0)
    with pytest.raises(TimeoutExceeded):
        await task
    assert breaker.state is OPEN  # the trial timed out: open again


def test_a_cancellation_without_a_task_is_nothing(clock: FakeClock) -> None:
    breaker = CircuitBreaker(window=1, min_calls=1, clock=clock)
    with pytest.raises(asyncio.CancelledError):
        breaker.call(raising(asyncio.CancelledError()))
    assert breaker.metrics == CircuitMetrics(0, 0, 0, 0)


# ===================================================== the caller's cancellation


@pytest.mark.parametrize("way", ASYNC_WAYS)
async def test_a_callers_cancellation_counts_as_nothing(way: Any, clock: FakeClock) -> None:
    breaker = CircuitBreaker(window=1, min_calls=1, clock=clock)
    for _ in range(3):
        task = asyncio.create_task(way(breaker, Hang()))
        await tick(3)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert breaker.metrics == CircuitMetrics(0, 0, 0, 0)


@pytest.mark.parametrize("way", ASYNC_WAYS)
async def test_a_callers_cancellation_inside_a_timeout_is_nothing(
    way: Any, manual_clock: FakeClock
) -> None:
    # A Timeout encloses the call but has not fired: the caller's cancel is theirs.
    breaker = tripped_open(manual_clock)
    timeout = Timeout(10.0, clock=manual_clock)
    task = asyncio.create_task(timeout.acall(way, breaker, Hang()))
    await tick(3)
    assert breaker._engine.trials() == (1, 0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert breaker._engine.trials() == (0, 0)  # the trial permit came back
    assert breaker.state is HALF_OPEN


# ============================================= sync: a late return in a Timeout


def slow(clock: FakeClock, seconds: float, value: Any = "late") -> Callable[[], Any]:
    def call() -> Any:
        clock.advance(seconds)
        return value

    return call


@pytest.mark.parametrize("way", SYNC_WAYS)
def test_a_late_return_in_an_optimistic_timeout_is_a_timeout(
    way: SyncWay, clock: FakeClock
) -> None:
    # With slow-call detection on, a slow call takes the locked path, where the
    # breaker sees that the enclosing Timeout's deadline passed: the caller gets
    # TimeoutExceeded, the breaker counts a timeout failure (and a slow call) — as it
    # does when an async call is cancelled.
    breaker = CircuitBreaker(window=2, min_calls=2, slow_call_duration=1.0, clock=clock)
    timeout = Timeout(1.0, clock=clock)
    for _ in range(2):
        with pytest.raises(TimeoutExceeded):
            timeout.call(way, breaker, slow(clock, 1.5))
    assert breaker.metrics == CircuitMetrics(2, 2, 2, 2)
    assert breaker.state is OPEN


def test_the_recommended_pipeline_trips_on_a_slow_sync_dependency(clock: FakeClock) -> None:
    breaker = CircuitBreaker(consecutive_failures=5, slow_call_duration=0.01, clock=clock)
    pipeline = Pipeline(
        Timeout(0.01, clock=clock), Retry(3, clock=clock), breaker, Bulkhead(10, clock=clock)
    )
    for _ in range(20):
        with pytest.raises((TimeoutExceeded, CircuitOpen)):
            pipeline.call(slow(clock, 0.02))
    assert breaker.state is OPEN
    assert breaker.metrics.failures == 5


def test_a_sync_timeout_inside_the_breaker_trips_it_per_attempt(clock: FakeClock) -> None:
    breaker = CircuitBreaker(consecutive_failures=5, slow_call_duration=0.01, clock=clock)
    pipeline = Pipeline(Retry(3, clock=clock), breaker, Timeout(0.01, clock=clock))
    calls = 0

    def hangs() -> str:
        nonlocal calls
        calls += 1
        clock.advance(0.02)
        return "late"

    for _ in range(20):
        with pytest.raises((RetryExhausted, TimeoutExceeded, CircuitOpen)):
            pipeline.call(hangs)
    assert breaker.state is OPEN
    assert calls == 5


def test_in_time_returns_in_a_timeout_are_successes(clock: FakeClock) -> None:
    breaker = CircuitBreaker(window=2, min_calls=2, slow_call_duration=1.0, clock=clock)
    timeout = Timeout(1.0, clock=clock)
    for _ in range(4):
        assert timeout.call(breaker.call, slow(clock, 0.5, "ok")) == "ok"
    assert breaker.metrics == CircuitMetrics(2, 0, 0, 0)
    assert breaker._engine.fast


def test_a_late_trial_reopens_the_breaker(clock: FakeClock) -> None:
    breaker = tripped_open(clock, slow_call_duration=1.0)
    reasons: list[str] = []
    breaker.subscribe(lambda event: reasons.append(event.reason))
    with pytest.raises(TimeoutExceeded):
        Timeout(1.0, clock=clock).call(breaker.call, slow(clock, 2.0))
    assert breaker.state is OPEN
    assert reasons == ["trial_failed"]  # a timeout, not merely a slow trial


def test_a_late_return_faster_than_slow_call_duration_is_a_success(clock: FakeClock) -> None:
    # The documented limit: the deadline is read only for a slow call (off the
    # lock-free path), so a call that is late but not slow counts as what it returned.
    # Set slow_call_duration no longer than the timeout around the breaker.
    breaker = CircuitBreaker(window=2, min_calls=2, slow_call_duration=10.0, clock=clock)
    timeout = Timeout(1.0, clock=clock)
    for _ in range(2):
        with pytest.raises(TimeoutExceeded):
            timeout.call(breaker.call, slow(clock, 1.5))
    assert breaker.metrics == CircuitMetrics(2, 0, 0, 0)


def test_without_slow_call_detection_a_late_return_counts_as_what_it_returned(
    clock: FakeClock,
) -> None:
    # The documented limit: without slow_call_duration the breaker reads no clock,
    # so it records the result the call returned; the Timeout still refuses it.
    breaker = CircuitBreaker(window=2, min_calls=2, clock=clock)
    timeout = Timeout(1.0, clock=clock)
    for _ in range(2):
        with pytest.raises(TimeoutExceeded):
            timeout.call(breaker.call, slow(clock, 1.5))
    assert breaker.metrics == CircuitMetrics(2, 0, 0, 0)


def test_a_late_return_with_its_own_clock_uses_the_deadlines_clock() -> None:
    timeout_clock, breaker_clock = FakeClock(), FakeClock(start=500.0)
    breaker = CircuitBreaker(window=1, min_calls=1, slow_call_duration=1.0, clock=breaker_clock)

    def slow_on_both() -> str:
        timeout_clock.advance(2.0)
        breaker_clock.advance(2.0)
        return "late"

    with pytest.raises(TimeoutExceeded):
        Timeout(1.0, clock=timeout_clock).call(breaker.call, slow_on_both)
    assert breaker.state is OPEN
    assert breaker.metrics.failures == 1


def test_a_late_return_in_a_pessimistic_timeout_is_a_timeout(manual_clock: FakeClock) -> None:
    breaker = CircuitBreaker(window=1, min_calls=1, slow_call_duration=1.0, clock=manual_clock)
    started, gate, opened = threading.Event(), threading.Event(), threading.Event()
    breaker.subscribe(lambda event: opened.set())

    def blocked() -> str:
        started.set()
        gate.wait(5)
        return "late"

    timeout = Timeout(1.0, mode="pessimistic", clock=manual_clock)
    errors: list[BaseException] = []

    def caller() -> None:
        try:
            timeout.call(breaker.call, blocked)
        except TimeoutExceeded as exc:
            errors.append(exc)

    thread = threading.Thread(target=caller)
    thread.start()
    assert started.wait(5)  # the call runs on a worker; the caller waits for it
    for _ in range(100):  # the deadline passes (the caller may start waiting late)
        manual_clock.advance(1.0)
        thread.join(0.05)
        if not thread.is_alive():
            break
    assert len(errors) == 1  # the caller was released with TimeoutExceeded
    gate.set()  # the abandoned call returns, in its worker, past the deadline
    assert opened.wait(5)
    assert breaker.state is OPEN


def test_a_late_block_in_a_timeout_is_a_timeout(clock: FakeClock) -> None:
    breaker = CircuitBreaker(window=1, min_calls=1, slow_call_duration=1.0, clock=clock)

    def block() -> str:
        with breaker:
            clock.advance(2.0)
        return "late"

    with pytest.raises(TimeoutExceeded):
        Timeout(1.0, clock=clock).call(block)
    assert breaker.metrics == CircuitMetrics(1, 1, 1, 1)


async def test_an_async_block_cancelled_by_a_timeout_is_a_timeout(
    manual_clock: FakeClock,
) -> None:
    breaker = CircuitBreaker(window=1, min_calls=1, clock=manual_clock)
    hang = Hang()

    async def block() -> str:
        async with breaker:
            return await hang()

    task = asyncio.create_task(Timeout(1.0, clock=manual_clock).acall(block))
    await tick(3)
    manual_clock.advance(1.0)
    with pytest.raises(TimeoutExceeded):
        await task
    assert breaker.state is OPEN


# ========================================== a sync entry point, an async function


@pytest.mark.parametrize(
    "options", [{}, {"slow_call_duration": 1.0}, {"on_result": lambda value: value is None}]
)
def test_an_async_function_is_refused_after_plain_results(
    options: dict[str, Any], clock: FakeClock
) -> None:
    async def fetch() -> int:
        return 1

    breaker = CircuitBreaker(window=10, min_calls=10, clock=clock, **options)
    for _ in range(3):
        breaker.call(returning(1))  # the last plain class is remembered
    with pytest.raises(TypeError, match="acall"):
        breaker.call(fetch)
    with pytest.raises(TypeError, match="acall"):
        Pipeline(breaker).call(fetch)
    with pytest.raises(TypeError, match="acall"):
        breaker(lambda _: fetch(), None)  # a sync callable returning a coroutine
    assert breaker.metrics.calls == 3  # refused: counted as nothing

    trial = tripped_open(clock, **options)
    with pytest.raises(TypeError, match="acall"):
        trial.call(fetch)
    assert trial._engine.trials() == (0, 0)  # the refused trial gave its permit back
    assert trial.state is HALF_OPEN

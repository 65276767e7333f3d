"""One time budget (issue 6, item 3), and cancellations passing through.

Inside a ``Timeout``, every wait the retry would make — backoff or Retry-After — is
checked before it begins: one that cannot end before the deadline fails at once with
the enclosing timeout's ``TimeoutExceeded`` (its ``detail`` naming the retry and the
wait, chained from the last error), and ``RetryGaveUp(reason="deadline")`` is
emitted. A cancellation — by the caller or by a buttress ``Timeout`` — is never
retried or swallowed; one by a ``Timeout`` ends the retry with
``RetryGaveUp(reason="timeout")``.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import pytest

from buttress import (
    Pipeline,
    RateLimited,
    Retry,
    RetryExhausted,
    RetryGaveUp,
    RetryScheduled,
    Timeout,
    TimeoutExceeded,
    TimeoutOccurred,
)
from buttress.clock import FakeClock
from buttress.events import Event

from tests.helpers import tick
from tests.unit.policies.retry_helpers import MODES, Hang, Script, run


@pytest.fixture(params=MODES)
def mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def failing(n: int = 10) -> Script:
    return Script(*(ConnectionError(f"failure {i}") for i in range(1, n + 1)))


# ------------------------------------------------------------------- the budget


async def test_a_wait_past_the_deadline_fails_at_once(mode: str, clock: FakeClock) -> None:
    seen: list[Event] = []
    timeout = Timeout(0.2, name="total", clock=clock)
    retry = Retry(3, delay=1.0, jitter="none", name="api", clock=clock)
    retry.subscribe(seen.append)
    timeout.subscribe(seen.append)
    script = failing()
    with pytest.raises(TimeoutExceeded) as info:
        await run(Pipeline(timeout, retry), script, mode)
    exceeded = info.value
    assert exceeded.name == "total"
    assert exceeded.timeout == 0.2
    assert exceeded.detail == "retry 'api' would wait 1.000s with 0.200s left"
    assert isinstance(exceeded.__cause__, ConnectionError)
    assert str(exceeded.__cause__) == "failure 1"
    assert script.calls == 1
    assert clock.sleeps == []
    assert clock.monotonic() == 0.0
    gave_up = [e for e in seen if isinstance(e, RetryGaveUp)]
    assert [(e.attempts, e.reason, e.error) for e in gave_up] == [
        (1, "deadline", exceeded.__cause__)
    ]
    assert any(isinstance(e, TimeoutOccurred) for e in seen)
    assert not any(isinstance(e, RetryScheduled) for e in seen)


async def test_with_full_jitter_the_budget_still_holds(mode: str, clock: FakeClock) -> None:
    retry = Retry(3, delay=1.0, clock=clock, random=lambda: 0.9)
    script = failing()
    with pytest.raises(TimeoutExceeded):
        await run(Pipeline(Timeout(0.2, clock=clock), retry), script, mode)
    assert clock.sleeps == []


async def test_waits_that_fit_are_taken_until_one_does_not(mode: str, clock: FakeClock) -> None:
    retry = Retry(10, delay=1.0, jitter="none", name="r", clock=clock)
    script = failing()
    with pytest.raises(TimeoutExceeded) as info:
        await run(Pipeline(Timeout(5.0, clock=clock), retry), script, mode)
    # Failures at 0, 1 and 3 s; waiting 4 s at 3 s would end at 7 s, past 5 s.
    assert clock.sleeps == [1.0, 2.0]
    assert script.calls == 3
    assert info.value.detail == "retry 'r' would wait 4.000s with 2.000s left"
    assert str(info.value.__cause__) == "failure 3"


async def test_a_retry_after_past_the_deadline(mode: str, clock: FakeClock) -> None:
    answer = httpx.Response(
        429, headers={"Retry-After": "20"}, request=httpx.Request("GET", "https://x.test/")
    )
    error = httpx.HTTPStatusError("slow down", request=answer.request, response=answer)
    script = Script(error)
    retry = Retry(3, max_delay=60.0, clock=clock, name="r")
    with pytest.raises(TimeoutExceeded) as info:
        await run(Pipeline(Timeout(10.0, clock=clock), retry), script, mode)
    assert info.value.detail == "retry 'r' would wait 20.000s with 10.000s left"
    assert info.value.__cause__ is error
    assert clock.sleeps == []


async def test_a_returned_response_asking_past_the_deadline(mode: str, clock: FakeClock) -> None:
    answer = httpx.Response(503, headers={"Retry-After": "20"})
    script = Script(answer)
    seen: list[Event] = []
    retry = Retry(3, clock=clock)
    retry.subscribe(seen.append, RetryGaveUp)
    with pytest.raises(TimeoutExceeded) as info:
        await run(Pipeline(Timeout(10.0, clock=clock), retry), script, mode)
    assert info.value.__cause__ is None
    assert [(e.reason, e.result) for e in seen if isinstance(e, RetryGaveUp)] == [
        ("deadline", answer)
    ]


async def test_rate_limited_past_the_deadline_is_not_waited_for(
    mode: str, clock: FakeClock
) -> None:
    error = RateLimited("limit", 8.0)
    script = Script(error)
    with pytest.raises(TimeoutExceeded) as info:
        await run(Pipeline(Timeout(5.0, clock=clock), Retry(3, clock=clock)), script, mode)
    assert info.value.__cause__ is error
    assert script.calls == 1
    assert clock.sleeps == []


def test_a_deadline_already_passed_allows_no_new_attempt(clock: FakeClock) -> None:
    """Even a retry without waits does not start an attempt after the deadline.

    (Sync: an async attempt running past the deadline is cancelled by the Timeout.)
    """
    slow = Script(*(ConnectionError() for _ in range(5)))

    def attempt() -> Any:
        clock.advance(1.0)
        return slow.sync()

    retry = Retry(5, backoff="constant", delay=0, name="r", clock=clock)
    with pytest.raises(TimeoutExceeded) as info:
        Pipeline(Timeout(1.5, clock=clock), retry).call(attempt)
    assert slow.calls == 2
    assert info.value.detail == "retry 'r' would wait 0.000s with 0.000s left"


async def test_a_timeout_inside_the_retry_bounds_each_attempt_not_the_waits(
    mode: str, clock: FakeClock
) -> None:
    script = failing(2)
    retry = Retry(3, delay=1.0, jitter="none", clock=clock)
    assert await run(Pipeline(retry, Timeout(0.2, clock=clock)), script, mode) == "ok"
    assert clock.sleeps == [1.0, 2.0]


async def test_max_elapsed_keeps_its_own_reason(mode: str, clock: FakeClock) -> None:
    retry = Retry(None, delay=1.0, jitter="none", max_elapsed=2.5, clock=clock)
    with pytest.raises(RetryExhausted) as info:
        await run(Pipeline(Timeout(100.0, clock=clock), retry), failing(), mode)
    assert info.value.reason == "max_elapsed"
    assert clock.sleeps == [1.0]


async def test_outside_any_timeout_nothing_changes(mode: str, clock: FakeClock) -> None:
    retry = Retry(3, delay=1.0, jitter="none", clock=clock)
    with pytest.raises(RetryExhausted):
        await run(Pipeline(retry), failing(), mode)
    assert clock.sleeps == [1.0, 2.0]


@pytest.mark.parametrize("timeout_mode", ["optimistic", "pessimistic"])
def test_on_the_real_clock_no_second_is_spent(timeout_mode: Any) -> None:
    """The issue's example, on the real clock: no 3 s block, no 1 s sleep."""

    def fail() -> None:
        raise ConnectionError("down")

    started = time.monotonic()
    pipeline = Pipeline(Timeout(0.2, mode=timeout_mode), Retry(3, delay=1.0, jitter="none"))
    with pytest.raises(TimeoutExceeded) as info:
        pipeline.call(fail)
    assert time.monotonic() - started < 0.5
    assert isinstance(info.value.__cause__, ConnectionError)


async def test_on_the_real_clock_async() -> None:
    async def fail() -> None:
        raise ConnectionError("down")

    started = time.monotonic()
    with pytest.raises(TimeoutExceeded) as info:
        await Pipeline(Timeout(0.2), Retry(3, delay=1.0, jitter="none")).acall(fail)
    assert time.monotonic() - started < 0.5
    assert isinstance(info.value.__cause__, ConnectionError)


# ----------------------------------------------------------------- cancellation


async def test_a_timeout_cancelling_an_attempt_passes_through(manual_clock: FakeClock) -> None:
    seen: list[Event] = []
    retry = Retry(5, name="r", clock=manual_clock)
    retry.subscribe(seen.append)
    hanging = Hang()
    task = asyncio.ensure_future(Pipeline(Timeout(0.5, clock=manual_clock), retry).acall(hanging))
    await tick(3)
    manual_clock.advance(0.5)
    with pytest.raises(TimeoutExceeded) as info:
        await task
    assert isinstance(info.value.__cause__, asyncio.CancelledError)
    assert hanging.calls == 1
    assert [(type(e), e.attempts, e.reason) for e in seen if isinstance(e, RetryGaveUp)] == [
        (RetryGaveUp, 1, "timeout")
    ]
    assert not any(isinstance(e, RetryScheduled) for e in seen)


async def test_a_timeout_cancelling_a_later_attempt(manual_clock: FakeClock) -> None:
    seen: list[Event] = []
    retry = Retry(5, delay=1.0, jitter="none", name="r", clock=manual_clock)
    retry.subscribe(seen.append, RetryGaveUp)
    fail_then_hang = Hang(ConnectionError())
    task = asyncio.ensure_future(
        Pipeline(Timeout(5.0, clock=manual_clock), retry).acall(fail_then_hang)
    )
    await tick(3)
    manual_clock.advance(1.0)  # the wait ends; the second attempt starts and hangs
    await tick(3)
    assert fail_then_hang.calls == 2
    manual_clock.advance(4.0)
    with pytest.raises(TimeoutExceeded):
        await task
    assert fail_then_hang.calls == 2
    assert [(e.attempts, e.reason) for e in seen if isinstance(e, RetryGaveUp)] == [(2, "timeout")]


async def test_the_callers_cancellation_passes_through_quietly(manual_clock: FakeClock) -> None:
    seen: list[Event] = []
    retry = Retry(5, delay=1.0, clock=manual_clock)
    retry.subscribe(seen.append)
    hanging = Hang()
    for pipeline in (Pipeline(retry), Pipeline(Timeout(60.0, clock=manual_clock), retry)):
        task = asyncio.ensure_future(pipeline.acall(hanging))
        await tick(3)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert hanging.calls == 2
    assert seen == []


async def test_a_cancelled_error_raised_by_the_call_is_not_retried(clock: FakeClock) -> None:
    script = Script(asyncio.CancelledError())
    with pytest.raises(asyncio.CancelledError):
        await Retry(5, on=lambda exc: True, clock=clock).acall(script.async_)
    assert script.calls == 1

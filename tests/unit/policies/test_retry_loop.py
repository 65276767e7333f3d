"""The loop form: ``for attempt in retry.attempts(): with attempt: ...`` (and ``async for``).

Same engine, same events, same budget rules, same outcome model as a decorated
call: a retried error is swallowed by ``with attempt:`` and the loop goes round
after the wait; anything else propagates at once; exhaustion raises
``RetryExhausted`` from the loop; values are judged with ``attempt.retry_on``.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from buttress import (
    CircuitOpen,
    Pipeline,
    Retry,
    RetryExhausted,
    RetryGaveUp,
    RetryRecovered,
    RetryScheduled,
    Timeout,
    TimeoutExceeded,
)
from buttress.clock import FakeClock
from buttress.events import Event
from buttress.policies.retry import Attempt, AttemptLoop
from buttress.testing import zero_backoff

from tests.helpers import tick

MODES = ["sync", "async"]


@pytest.fixture(params=MODES)
def mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


class Block:
    """The body of a loop: plays ``outcomes`` (exceptions raised, values returned)."""

    def __init__(self, *outcomes: object) -> None:
        self.outcomes = list(outcomes)
        self.runs = 0

    def __call__(self) -> Any:
        self.runs += 1
        outcome = self.outcomes.pop(0) if self.outcomes else "ok"
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome


async def loop(policy: Retry, block: Block, mode: str, *, judge: bool = False) -> list[Any]:
    """Run ``block`` in the loop form; return what each attempt's block produced."""
    produced: list[Any] = []
    if mode == "sync":
        for attempt in policy.attempts(call="job"):
            with attempt:
                value = block()
                produced.append(attempt.retry_on(value) if judge else value)
    else:
        async for attempt in policy.attempts(call="job"):
            with attempt:
                value = block()
                produced.append(attempt.retry_on(value) if judge else value)
    return produced


def response(status: int, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.Response(status, headers=headers)


# ---------------------------------------------------------------------------- basics


async def test_retries_a_transient_error(mode: str, clock: FakeClock) -> None:
    block = Block(ConnectionError(), TimeoutError(), "done")
    assert await loop(Retry(jitter="none", clock=clock), block, mode) == ["done"]
    assert block.runs == 3
    assert clock.sleeps == [0.1, 0.2]


async def test_attempt_numbers(mode: str, clock: FakeClock) -> None:
    numbers: list[int] = []
    failures = [ConnectionError(), ConnectionError()]
    policy = Retry(clock=clock)
    if mode == "sync":
        for attempt in policy.attempts():
            with attempt:
                numbers.append(attempt.number)
                if failures:
                    raise failures.pop()
    else:
        async for attempt in policy.attempts():
            with attempt:
                numbers.append(attempt.number)
                if failures:
                    raise failures.pop()
    assert numbers == [1, 2, 3]


async def test_success_at_once_runs_once(mode: str, clock: FakeClock) -> None:
    block = Block("done")
    assert await loop(Retry(clock=clock), block, mode) == ["done"]
    assert block.runs == 1
    assert clock.sleeps == []


async def test_an_error_not_retried_propagates_at_once(mode: str, clock: FakeClock) -> None:
    error = ValueError("bad")
    block = Block(ConnectionError(), error)
    seen: list[Event] = []
    policy = Retry(5, jitter="none", name="r", clock=clock)
    policy.subscribe(seen.append, RetryGaveUp)
    with pytest.raises(ValueError) as info:
        await loop(policy, block, mode)
    assert info.value is error
    assert block.runs == 2
    assert seen == [RetryGaveUp("r", 2, "not_retryable", error, None, call="job")]


@pytest.mark.parametrize(
    "error", [TypeError("bug"), CircuitOpen("b", 1.0, 1.0), KeyboardInterrupt()], ids=repr
)
async def test_programming_errors_rejections_and_interrupts_propagate(
    mode: str, error: BaseException, clock: FakeClock
) -> None:
    block = Block(error)
    with pytest.raises(type(error)):
        await loop(Retry(5, clock=clock), block, mode)
    assert block.runs == 1


async def test_exhaustion_raises_after_the_loop(mode: str, clock: FakeClock) -> None:
    errors = [ConnectionError(str(i)) for i in range(3)]
    block = Block(*errors)
    with pytest.raises(RetryExhausted) as info:
        await loop(Retry(3, name="job", clock=clock), block, mode)
    assert info.value.attempts == 3
    assert info.value.reason == "max_attempts"
    assert info.value.last_error is errors[2]
    assert info.value.__cause__ is errors[2]
    assert block.runs == 3


async def test_reraise_raises_the_last_error(mode: str, clock: FakeClock) -> None:
    errors = [ConnectionError(str(i)) for i in range(3)]
    with pytest.raises(ConnectionError) as info:
        await loop(Retry(3, reraise=True, clock=clock), Block(*errors), mode)
    assert info.value is errors[2]


async def test_on_chooses_what_is_retried(mode: str, clock: FakeClock) -> None:
    block = Block(KeyError(), KeyError(), "done")
    assert await loop(Retry(on=KeyError, clock=clock), block, mode) == ["done"]


async def test_a_block_left_early_ends_the_loop(mode: str, clock: FakeClock) -> None:
    runs = 0
    policy = Retry(clock=clock)
    if mode == "sync":
        for attempt in policy.attempts():
            with attempt:
                runs += 1
            break
    else:
        async for attempt in policy.attempts():
            with attempt:
                runs += 1
            break
    assert runs == 1


def test_an_except_in_the_block_cannot_swallow_a_retry(clock: FakeClock) -> None:
    runs = 0
    for attempt in Retry(clock=clock).attempts():
        with attempt:
            runs += 1
            try:
                attempt.retry_on(response(503) if runs == 1 else response(200))
            except Exception:  # pragma: no cover - the retry signal is no Exception
                pytest.fail("swallowed")
    assert runs == 2


def test_a_finished_loop_stays_finished(clock: FakeClock) -> None:
    attempts = Retry(clock=clock).attempts()
    assert isinstance(attempts, AttemptLoop)
    assert iter(attempts) is attempts
    for attempt in attempts:
        assert isinstance(attempt, Attempt)
        with attempt:
            pass
    assert list(attempts) == []
    assert "attempt=1" in repr(attempts)
    assert repr(attempt) == "Attempt(number=1)"


# ----------------------------------------------------------------------------- values


async def test_retry_on_judges_with_the_default_rule(mode: str, clock: FakeClock) -> None:
    ok = response(200)
    block = Block(response(503), response(502), ok)
    produced = await loop(Retry(jitter="none", clock=clock), block, mode, judge=True)
    assert produced == [ok]
    assert block.runs == 3
    assert clock.sleeps == [0.1, 0.2]


async def test_retry_on_keeps_answers_and_plain_values(mode: str, clock: FakeClock) -> None:
    for value in (response(404), None, "text", 503):
        block = Block(value)
        assert await loop(Retry(clock=clock), block, mode, judge=True) == [value]
        assert block.runs == 1


async def test_retry_on_with_on_result(mode: str, clock: FakeClock) -> None:
    block = Block("queued", "running", "done")
    policy = Retry(5, clock=clock, on_result=lambda state: state != "done")
    assert await loop(policy, block, mode, judge=True) == ["done"]
    assert block.runs == 3


async def test_retry_on_honours_a_retry_after(mode: str, clock: FakeClock) -> None:
    block = Block(response(503, {"Retry-After": "4"}), response(200))
    await loop(Retry(jitter="none", clock=clock), block, mode, judge=True)
    assert clock.sleeps == [4.0]


async def test_values_retried_to_exhaustion(mode: str, clock: FakeClock) -> None:
    last = response(503)
    block = Block(response(503), response(500), last)
    with pytest.raises(RetryExhausted) as info:
        await loop(Retry(3, clock=clock), block, mode, judge=True)
    assert info.value.last_result is last
    assert info.value.last_error is None


def test_reraise_ends_the_loop_on_the_last_value(clock: FakeClock) -> None:
    policy = Retry(2, reraise=True, clock=clock, on_result=lambda r: r < 10)
    values = iter([1, 2, 3])
    for attempt in policy.attempts():
        with attempt:
            attempt.retry_on(next(values))
    assert attempt.result == 2
    assert attempt.number == 2


async def test_retry_retries_unconditionally(mode: str, clock: FakeClock) -> None:
    seen: list[Event] = []
    policy = Retry(3, jitter="none", name="poll", clock=clock)
    policy.subscribe(seen.append)
    polls = 0
    if mode == "sync":
        for attempt in policy.attempts(call="poll"):
            with attempt:
                polls += 1
                if polls < 3:
                    attempt.retry(f"pending {polls}")
    else:
        async for attempt in policy.attempts(call="poll"):
            with attempt:
                polls += 1
                if polls < 3:
                    attempt.retry(f"pending {polls}")
    assert polls == 3
    assert seen == [
        RetryScheduled("poll", 1, 0.1, None, "pending 1", call="poll"),
        RetryScheduled("poll", 2, 0.2, None, "pending 2", call="poll"),
        RetryRecovered("poll", 3, call="poll"),
    ]


# ------------------------------------------------------------------ events and bounds


async def test_events_match_the_decorated_form(mode: str, clock: FakeClock) -> None:
    errors = [ConnectionError(), ConnectionError(), ConnectionError()]
    seen: list[Event] = []
    policy = Retry(3, jitter="none", name="db", clock=clock)
    policy.subscribe(seen.append)
    with pytest.raises(RetryExhausted):
        await loop(policy, Block(*errors), mode)
    assert seen == [
        RetryScheduled("db", 1, 0.1, errors[0], None, call="job"),
        RetryScheduled("db", 2, 0.2, errors[1], None, call="job"),
        RetryGaveUp("db", 3, "max_attempts", errors[2], None, call="job"),
    ]


async def test_no_events_for_a_block_that_succeeds_at_once(mode: str, clock: FakeClock) -> None:
    seen: list[Event] = []
    policy = Retry(clock=clock)
    policy.subscribe(seen.append)
    await loop(policy, Block("done"), mode)
    with pytest.raises(ValueError):
        await loop(policy, Block(ValueError()), mode)
    assert seen == []


async def test_max_elapsed(mode: str, clock: FakeClock) -> None:
    class Slow(Block):
        def __call__(self) -> Any:
            clock.advance(1.0)
            return super().__call__()

    block = Slow(*(ConnectionError() for _ in range(10)))
    policy = Retry(
        None, backoff="constant", delay=2.0, jitter="none", max_elapsed=10.0, clock=clock
    )
    with pytest.raises(RetryExhausted) as info:
        await loop(policy, block, mode)
    assert info.value.reason == "max_elapsed"
    assert info.value.attempts == 4


async def test_the_time_budget_of_an_enclosing_timeout(mode: str, clock: FakeClock) -> None:
    block = Block(*(ConnectionError() for _ in range(10)))
    seen: list[Event] = []
    policy = Retry(3, delay=1.0, jitter="none", name="r", clock=clock)
    policy.subscribe(seen.append, RetryGaveUp)

    def run_sync() -> None:
        for attempt in policy.attempts():
            with attempt:
                block()

    async def run_async() -> None:
        async for attempt in policy.attempts():
            with attempt:
                block()

    timeout = Timeout(0.2, clock=clock)

    async def run() -> None:
        if mode == "sync":
            timeout.call(run_sync)
        else:
            await timeout.acall(run_async)

    with pytest.raises(TimeoutExceeded) as info:
        await run()
    assert info.value.detail == "retry 'r' would wait 1.000s with 0.200s left"
    assert isinstance(info.value.__cause__, ConnectionError)
    assert block.runs == 1
    assert clock.sleeps == []
    assert [e.reason for e in seen if isinstance(e, RetryGaveUp)] == ["deadline"]


async def test_zero_backoff(mode: str, clock: FakeClock) -> None:
    block = Block(ConnectionError(), ConnectionError())
    with zero_backoff():
        await loop(Retry(backoff="constant", delay=30.0, clock=clock), block, mode)
    assert clock.sleeps == []
    assert block.runs == 3


# ---------------------------------------------------------------------- cancellation


async def test_a_timeout_cancelling_the_block(manual_clock: FakeClock) -> None:
    seen: list[Event] = []
    policy = Retry(5, name="r", clock=manual_clock)
    policy.subscribe(seen.append, RetryGaveUp)
    hang = asyncio.Event()
    runs = 0

    async def job() -> None:
        nonlocal runs
        async for attempt in policy.attempts():
            with attempt:
                runs += 1
                await hang.wait()

    task = asyncio.ensure_future(Pipeline(Timeout(1.0, clock=manual_clock)).acall(job))
    await tick(3)
    manual_clock.advance(1.0)
    with pytest.raises(TimeoutExceeded):
        await task
    assert runs == 1
    assert [(e.attempts, e.reason) for e in seen if isinstance(e, RetryGaveUp)] == [(1, "timeout")]


async def test_the_caller_cancelling_during_a_wait(manual_clock: FakeClock) -> None:
    seen: list[Event] = []
    policy = Retry(5, delay=10.0, jitter="none", clock=manual_clock)
    policy.subscribe(seen.append, RetryGaveUp)
    runs = 0

    async def job() -> None:
        nonlocal runs
        async for attempt in policy.attempts():
            with attempt:
                runs += 1
                raise ConnectionError

    task = asyncio.ensure_future(job())
    await tick(3)
    assert manual_clock.pending_timers == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    manual_clock.advance(100.0)
    await tick(3)
    assert runs == 1
    assert seen == []

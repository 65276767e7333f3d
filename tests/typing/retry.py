"""The Retry policy's typed API: ``mypy --strict`` must accept this file."""

from __future__ import annotations

from datetime import timedelta
from typing import Any, assert_type

from buttress import CircuitOpen, FakeClock, Matcher, Outcome, is_transient
from buttress.policies.backoff import (
    Backoff,
    Constant,
    DecorrelatedJitter,
    Exponential,
    Fibonacci,
    Linear,
    backoff_from_name,
)
from buttress.policies.retry import (
    Attempt,
    AttemptLoop,
    Jitter,
    Retry,
    RetryGaveUp,
    RetryOptions,
    RetryRecovered,
    RetryScheduled,
)

schedules: list[Backoff] = [
    Constant(1.0),
    Linear(0.5, step=0.25),
    Exponential(initial=0.1, factor=2.0),
    Fibonacci(0.2),
    DecorrelatedJitter(0.1),
    backoff_from_name("exponential", 0.1),
]
assert_type(Exponential().compute(1, 0.0, lambda: 0.5), float)

jitter: Jitter = "equal"
retry = Retry(
    5,
    backoff="fibonacci",
    delay=0.2,
    max_delay=10.0,
    jitter=jitter,
    max_elapsed=30.0,
    on=is_transient,
    on_result=lambda result: result is None,
    retry_after=False,
    reraise=True,
    name="typed",
    clock=FakeClock(),
    random=lambda: 0.5,
)
by_type = Retry(on=ConnectionError, backoff=Constant(0.0))
by_types = Retry(None, on=(ConnectionError, TimeoutError), max_elapsed=5.0)
assert_type(retry.max_attempts, int | None)
assert_type(retry.backoff, Backoff)
assert_type(retry.max_elapsed, float | None)


@retry
def load(user_id: int) -> str:
    return str(user_id)


@by_type
async def aload(user_id: int) -> str:
    return str(user_id)


class Client:
    @by_types
    def get(self, path: str) -> bytes:
        return path.encode()

    @by_types
    async def aget(self, path: str) -> bytes:
        return path.encode()


async def usage() -> None:
    assert_type(load(1), str)
    assert_type(await aload(1), str)
    assert_type(retry.call(load, 2), str)
    assert_type(await by_types.acall(aload, 3), str)
    assert_type(Client().get("/"), bytes)
    assert_type(await Client().aget("/"), bytes)


def on_event(event: RetryScheduled | RetryRecovered | RetryGaveUp) -> None:
    if isinstance(event, RetryScheduled):
        attempt: int = event.attempt
        delay: float = event.delay
        error: BaseException | None = event.error
        result: Any = event.result
        del attempt, delay, error, result
    elif isinstance(event, RetryGaveUp):
        reason: str = event.reason
        del reason


unsubscribe = retry.subscribe(on_event, RetryScheduled, RetryRecovered, RetryGaveUp)


# ------------------------------------------------------------------ options, outcomes


def read_retry_after(outcome: Outcome[Any]) -> float | None:
    return 1.0 if outcome.raised else None


configured = Retry(
    max_delay=timedelta(seconds=5),
    delay=timedelta(milliseconds=100),
    max_elapsed=timedelta(minutes=1),
    on=Matcher() | Matcher(CircuitOpen),
    retry_after=read_retry_after,
)
options: RetryOptions = configured.options
assert_type(Retry.Options, type[RetryOptions])
assert_type(Retry.from_options(options, name="api", clock=FakeClock()), Retry)
assert_type(RetryOptions(max_attempts=2).replace(max_attempts=3), RetryOptions)

# ---------------------------------------------------------------------------- loop form


def block() -> str:
    for attempt in retry.attempts(call="job"):
        assert_type(attempt, Attempt)
        with attempt:
            number: int = attempt.number
            del number
            value = attempt.retry_on(load(1))
            assert_type(value, str)
            return value
    raise AssertionError


async def ablock() -> bytes:
    async for attempt in by_type.attempts():
        with attempt:
            if attempt.number < 2:
                attempt.retry("not yet")
            return await Client().aget("/")
    raise AssertionError


loop: AttemptLoop = retry.attempts()

"""Retry and the one outcome model: what is retried, by default and when asked.

Defaults (``buttress.Matcher()``): transient errors and timeouts, and *returned* HTTP
responses with a transient status; 4xx answers and programming errors never. The
retry's own rule: rejections by policies inside it (an open circuit, a full
bulkhead) and an inner retry's ``RetryExhausted`` fail fast unless ``on=`` names
them; a ``RateLimited`` is retried when its ``retry_after`` fits. Sync and async,
on a fake clock.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx
import pytest

from buttress import (
    Bulkhead,
    BulkheadFull,
    Call,
    CircuitBreaker,
    CircuitOpen,
    Matcher,
    Pipeline,
    Policy,
    RateLimited,
    Rejected,
    Retry,
    RetryExhausted,
    RetryGaveUp,
    RetryScheduled,
)
from buttress.clock import FakeClock
from buttress.events import CallRejected, Event

from tests.helpers import tick
from tests.unit.policies.retry_helpers import MODES, Script, run

R = TypeVar("R")


@pytest.fixture(params=MODES)
def mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


class Refusing(Policy):
    """Refuses its first ``count`` calls with ``error`` (a policy inside the retry)."""

    def __init__(self, error: BaseException, count: int = 1_000) -> None:
        super().__init__(name="refusing")
        self.error = error
        self.count = count
        self.refused = 0

    def _gate(self) -> None:
        if self.refused < self.count:
            self.refused += 1
            raise self.error

    def execute(self, call: Call[R]) -> R:
        self._gate()
        return call()

    async def aexecute(self, call: Call[Awaitable[R]]) -> R:
        self._gate()
        return await call()


def response(status: int, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.Response(status, headers=headers, request=httpx.Request("GET", "https://x.test/"))


# ----------------------------------------------------------------------------- defaults


@pytest.mark.parametrize(
    "error",
    [
        ConnectionResetError(),
        TimeoutError(),
        OSError(110, "timed out"),
        httpx.ConnectError("refused"),
        httpx.ReadTimeout("slow"),
    ],
    ids=repr,
)
async def test_transient_errors_and_timeouts_are_retried(
    mode: str, error: Exception, clock: FakeClock
) -> None:
    script = Script(error)
    assert await run(Retry(clock=clock), script, mode) == "ok"
    assert script.calls == 2


@pytest.mark.parametrize("status", [408, 425, 429, 500, 502, 503, 504])
async def test_a_returned_response_with_a_transient_status_is_retried(
    mode: str, status: int, clock: FakeClock
) -> None:
    script = Script(response(status), response(200))
    result = await run(Retry(clock=clock), script, mode)
    assert result.status_code == 200
    assert script.calls == 2


@pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 422, 501, 505])
async def test_a_permanent_answer_is_returned_not_retried(
    mode: str, status: int, clock: FakeClock
) -> None:
    answer = response(status)
    script = Script(answer)
    assert await run(Retry(clock=clock), script, mode) is answer
    assert script.calls == 1
    assert clock.sleeps == []


async def test_a_raised_permanent_http_error_propagates(mode: str, clock: FakeClock) -> None:
    answer = response(404)
    error = httpx.HTTPStatusError("not found", request=answer.request, response=answer)
    script = Script(error)
    with pytest.raises(httpx.HTTPStatusError) as info:
        await run(Retry(clock=clock), script, mode)
    assert info.value is error
    assert script.calls == 1


async def test_exhausted_on_responses_carries_the_last_one(mode: str, clock: FakeClock) -> None:
    answers = [response(503), response(502), response(500)]
    script = Script(*answers)
    with pytest.raises(RetryExhausted) as info:
        await run(Retry(3, clock=clock), script, mode)
    assert info.value.last_result is answers[2]
    assert info.value.last_error is None
    assert info.value.reason == "max_attempts"


@dataclass
class Reply:
    """A response of one's own: a class annotating ``status`` counts as a response."""

    status: int


async def test_a_response_like_object_of_ones_own(mode: str, clock: FakeClock) -> None:
    script = Script(Reply(503), Reply(404))
    assert await run(Retry(clock=clock), script, mode) == Reply(404)
    assert script.calls == 2


async def test_plain_values_are_never_failures(mode: str, clock: FakeClock) -> None:
    for value in (None, 0, 503, "503", {"status": 503}, [503], b"", 1.5):
        script = Script(value)
        assert await run(Retry(clock=clock), script, mode) == value
        assert script.calls == 1
    assert clock.sleeps == []


@pytest.mark.parametrize(
    "error",
    [TypeError("bug"), AttributeError("bug"), NameError("bug"), AssertionError("bug")],
    ids=repr,
)
async def test_programming_errors_are_never_retried_unless_named(
    mode: str, error: Exception, clock: FakeClock
) -> None:
    for on in (None, Exception, lambda exc: True):
        script = Script(error)
        with pytest.raises(type(error)):
            await run(Retry(clock=clock, on=on), script, mode)
        assert script.calls == 1
    script = Script(error)
    assert await run(Retry(clock=clock, on=type(error)), script, mode) == "ok"
    assert script.calls == 2


async def test_a_programming_error_flagged_transient_is_still_not_retried(
    mode: str, clock: FakeClock
) -> None:
    class Odd(TypeError):
        transient = True

    script = Script(Odd())
    with pytest.raises(Odd):
        await run(Retry(clock=clock), script, mode)
    assert script.calls == 1


# --------------------------------------------------------------------- on= and on_result=


async def test_on_accepts_a_matcher(mode: str, clock: FakeClock) -> None:
    matcher = Matcher(KeyError, results=lambda r: r == "again")
    script = Script(KeyError(), "again", "done")
    assert await run(Retry(clock=clock, on=matcher), script, mode) == "done"
    assert script.calls == 3
    script = Script(ConnectionError())
    with pytest.raises(ConnectionError):
        await run(Retry(clock=clock, on=matcher), script, mode)


async def test_default_matcher_plus_one_type(mode: str, clock: FakeClock) -> None:
    policy = Retry(5, clock=clock, on=Matcher() | Matcher(KeyError))
    script = Script(KeyError(), ConnectionError(), response(503), "done")
    assert await run(policy, script, mode) == "done"
    assert script.calls == 4


async def test_on_result_replaces_the_rule_for_results_only(mode: str, clock: FakeClock) -> None:
    policy = Retry(5, clock=clock, on_result=lambda r: r is None)
    script = Script(None, ConnectionError(), response(503))
    # The error rule is still the default; a 503 is now an answer like any value.
    assert (await run(policy, script, mode)).status_code == 503
    assert script.calls == 3


async def test_on_replaces_the_rule_for_errors_only(mode: str, clock: FakeClock) -> None:
    policy = Retry(5, clock=clock, on=KeyError)
    script = Script(KeyError(), response(503), "done")
    assert await run(policy, script, mode) == "done"
    assert script.calls == 3


# ------------------------------------------------------------- rejections fail fast


@pytest.mark.parametrize(
    "error",
    [
        CircuitOpen("breaker", 30.0, 30.0),
        BulkheadFull("slots"),
        Rejected(),
        RetryExhausted("inner", 3, ConnectionError()),
    ],
    ids=lambda e: type(e).__name__,
)
async def test_inner_rejections_are_not_retried_by_default(
    mode: str, error: Exception, clock: FakeClock
) -> None:
    refusing = Refusing(error)
    seen: list[Event] = []
    retry = Retry(5, clock=clock)
    retry.subscribe(seen.append)
    script = Script()
    with pytest.raises(type(error)) as info:
        await run(Pipeline(retry, refusing), script, mode)
    assert info.value is error
    assert refusing.refused == 1
    assert script.calls == 0
    assert clock.sleeps == []
    assert seen == []


@pytest.mark.parametrize(
    ("error", "on"),
    [
        (CircuitOpen("breaker", 1.0, 1.0), CircuitOpen),
        (BulkheadFull("slots"), BulkheadFull),
        (BulkheadFull("slots"), Rejected),
        (BulkheadFull("slots"), (ConnectionError, BulkheadFull)),
        (RetryExhausted("inner", 3, ConnectionError()), RetryExhausted),
        (CircuitOpen("breaker", 1.0, 1.0), Matcher() | Matcher(CircuitOpen)),
    ],
    ids=lambda v: getattr(v, "__name__", type(v).__name__),
)
async def test_named_rejections_are_retried(
    mode: str, error: Exception, on: Any, clock: FakeClock
) -> None:
    refusing = Refusing(error, count=2)
    script = Script()
    assert await run(Pipeline(Retry(5, clock=clock, on=on), refusing), script, mode) == "ok"
    assert refusing.refused == 2
    assert script.calls == 1


async def test_a_predicate_does_not_name_a_rejection(mode: str, clock: FakeClock) -> None:
    refusing = Refusing(BulkheadFull("slots"))
    with pytest.raises(BulkheadFull):
        await run(Pipeline(Retry(5, clock=clock, on=lambda exc: True), refusing), Script(), mode)
    assert refusing.refused == 1


async def test_rate_limited_is_retried_when_its_wait_fits(mode: str, clock: FakeClock) -> None:
    refusing = Refusing(RateLimited("limit", 2.5), count=2)
    script = Script()
    retry = Retry(5, delay=1.0, jitter="none", clock=clock)
    assert await run(Pipeline(retry, refusing), script, mode) == "ok"
    assert clock.sleeps == [2.5, 2.5]  # the limiter's wait, which beats the schedule's 1 and 2


async def test_rate_limited_is_retried_on_its_wait_even_with_retry_after_off(
    mode: str, clock: FakeClock
) -> None:
    refusing = Refusing(RateLimited("limit", 2.5), count=1)
    retry = Retry(5, delay=1.0, jitter="none", retry_after=False, clock=clock)
    assert await run(Pipeline(retry, refusing), Script(), mode) == "ok"
    assert clock.sleeps == [2.5]


async def test_rate_limited_beyond_max_delay_is_not_waited_for(mode: str, clock: FakeClock) -> None:
    error = RateLimited("limit", 60.0)
    refusing = Refusing(error)
    seen: list[Event] = []
    retry = Retry(5, max_delay=30.0, clock=clock, name="api")
    retry.subscribe(seen.append)
    with pytest.raises(RetryExhausted) as info:
        await run(Pipeline(retry, refusing), Script(), mode)
    assert info.value.reason == "retry_after"
    assert info.value.last_error is error
    assert info.value.__cause__ is error
    assert "Retry-After 60 s exceeds max_delay 30 s" in str(info.value)
    assert refusing.refused == 1
    assert clock.sleeps == []
    assert [(type(e), getattr(e, "reason", None)) for e in seen] == [(RetryGaveUp, "retry_after")]


async def test_rate_limited_that_can_never_pass_is_not_retried(mode: str, clock: FakeClock) -> None:
    error = RateLimited("limit", math.inf)
    for max_delay in (30.0, math.inf):
        refusing = Refusing(error)
        retry = Retry(5, max_delay=max_delay, clock=clock)
        with pytest.raises(RetryExhausted) as info:
            await run(Pipeline(retry, refusing), Script(), mode)
        assert info.value.reason == "retry_after"
        assert info.value.last_error is error
        assert refusing.refused == 1
    assert clock.sleeps == []


# --------------------------------------------------- item 4: no waiting out a breaker


async def test_an_open_breaker_fails_fast_through_a_default_retry(mode: str) -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(consecutive_failures=2, clock=clock)
    retry = Retry(clock=clock)
    scheduled: list[Event] = []
    retry.subscribe(scheduled.append, RetryScheduled)
    pipeline = Pipeline(retry, breaker)
    failing = Script(*[ConnectionError()] * 10)
    # Attempts 1 and 2 fail and trip it; attempt 3 is refused, and that ends the retry.
    with pytest.raises(CircuitOpen):
        await run(pipeline, failing, mode)
    assert failing.calls == 2
    assert breaker.state == "open"
    waited = list(clock.sleeps)
    start = clock.monotonic()

    later = Script()
    for _ in range(5):
        with pytest.raises(CircuitOpen):
            await run(pipeline, later, mode)
    assert later.calls == 0
    assert clock.sleeps == waited  # no caller slept the breaker out
    assert clock.monotonic() == start
    assert len(scheduled) == 2  # only the two real failures were retried


async def test_a_breaker_isolated_by_hand_fails_fast(mode: str, clock: FakeClock) -> None:
    breaker = CircuitBreaker(clock=clock)
    breaker.isolate()
    script = Script()
    with pytest.raises(CircuitOpen):
        await run(Pipeline(Retry(clock=clock), breaker), script, mode)
    assert script.calls == 0
    assert clock.sleeps == []


async def test_forty_callers_over_a_full_bulkhead_are_not_retried(clock: FakeClock) -> None:
    bulkhead = Bulkhead(1, name="one-slot")
    retry = Retry(clock=clock)
    retried: list[Event] = []
    retry.subscribe(retried.append)
    rejected: list[Event] = []
    bulkhead.subscribe(rejected.append, CallRejected)
    pipeline = Pipeline(retry, bulkhead)
    release = asyncio.Event()
    started = 0

    async def hold() -> str:
        nonlocal started
        started += 1
        await release.wait()
        return "done"

    holder = asyncio.ensure_future(pipeline.acall(hold))
    await tick(2)
    outcomes = await asyncio.gather(
        *(pipeline.acall(hold) for _ in range(40)), return_exceptions=True
    )
    assert all(isinstance(outcome, BulkheadFull) for outcome in outcomes)
    assert len(rejected) == 40  # one refusal each: none was tried again
    assert retried == []
    assert clock.sleeps == []
    release.set()
    assert await holder == "done"
    assert started == 1


def test_forty_sync_callers_over_a_full_bulkhead_are_not_retried(clock: FakeClock) -> None:
    bulkhead = Bulkhead(1)
    rejected: list[Event] = []
    bulkhead.subscribe(rejected.append, CallRejected)
    pipeline = Pipeline(Retry(clock=clock), bulkhead)
    outcomes: list[object] = []

    def inside() -> str:
        for _ in range(40):
            try:
                pipeline.call(str)
            except BulkheadFull as exc:
                outcomes.append(exc)
        return "held"

    assert pipeline.call(inside) == "held"
    assert len(outcomes) == 40
    assert len(rejected) == 40
    assert clock.sleeps == []


async def test_an_error_not_retried_on_a_later_attempt_ends_the_retry(
    mode: str, clock: FakeClock
) -> None:
    refusing = Refusing(CircuitOpen("breaker", 5.0, 5.0), count=1)
    seen: list[Event] = []
    retry = Retry(5, clock=clock, name="r")
    retry.subscribe(seen.append, RetryGaveUp)
    script = Script(ConnectionError())

    class Second(Policy):
        """Lets the first call through, then refuses (the breaker opened meanwhile)."""

        def __init__(self) -> None:
            super().__init__(name="second")
            self.calls = 0

        def execute(self, call: Call[R]) -> R:
            self.calls += 1
            if self.calls > 1:
                refusing._gate()
            return call()

        async def aexecute(self, call: Call[Awaitable[R]]) -> R:
            self.calls += 1
            if self.calls > 1:
                refusing._gate()
            return await call()

    with pytest.raises(CircuitOpen):
        await run(Pipeline(retry, Second()), script, mode)
    assert script.calls == 1
    assert [(e.attempts, e.reason) for e in seen if isinstance(e, RetryGaveUp)] == [
        (2, "not_retryable")
    ]

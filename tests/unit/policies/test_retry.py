"""Retry: which failures are retried, how long it waits, when it gives up, what it emits.

Every test runs on a fake clock: a 30-second backoff takes microseconds, and the
waits are asserted exactly from ``clock.sleeps``.
"""

from __future__ import annotations

import asyncio
import email.utils
import functools
import math
import threading
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import buttress.policies.retry._engine as retry_engine
import buttress.policies.retry._policy as retry_policy
from buttress import events
from buttress._strategy import AsyncRunner, Strategy, SyncRunner
from buttress.clock import FakeClock
from buttress.errors import ConfigError, RetryExhausted
from buttress.pipeline import Pipeline
from buttress.policies.backoff import (
    Constant,
    DecorrelatedJitter,
    Exponential,
    Linear,
)
from buttress.policies.retry import Retry, RetryGaveUp, RetryRecovered, RetryScheduled
from buttress.testing import zero_backoff

from tests.helpers import tick

# ---------------------------------------------------------------------------- helpers


class Script:
    """A function that plays ``outcomes`` in order (exceptions are raised, anything else
    returned), then returns ``"ok"`` forever. It can take ``duration`` fake seconds."""

    def __init__(
        self, *outcomes: object, clock: FakeClock | None = None, duration: float = 0.0
    ) -> None:
        self.outcomes = list(outcomes)
        self.clock = clock
        self.duration = duration
        self.calls = 0
        self.starts: list[float] = []
        self.seen: list[tuple[tuple[Any, ...], dict[str, Any]]] = []

    def sync(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        self.seen.append((args, kwargs))
        if self.clock is not None:
            self.starts.append(self.clock.monotonic())
            if self.duration:
                self.clock.advance(self.duration)
        outcome = self.outcomes.pop(0) if self.outcomes else "ok"
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    async def async_(self, *args: Any, **kwargs: Any) -> Any:
        return self.sync(*args, **kwargs)


MODES = ["sync", "async"]
ENTRIES = ["call", "decorator", "pipeline", "runner"]
# "plain" takes the bare try/except fast paths; "checked" (an elapsed cap too large
# to matter) takes the ones that read the clock first.
SHAPES = {"plain": {}, "checked": {"max_elapsed": 1e9}}


async def drive(policy: Strategy, script: Script, mode: str, entry: str = "call") -> Any:
    """Run ``script`` once through ``policy`` the way ``mode`` and ``entry`` say."""
    if mode == "sync":
        fn: Callable[..., Any] = script.sync
        if entry == "call":
            return policy.call(fn)
        if entry == "decorator":
            return policy(fn)()
        if entry == "pipeline":
            return Pipeline(policy).call(fn)
        return policy(fn, "arg")
    afn: Callable[..., Awaitable[Any]] = script.async_
    if entry == "call":
        return await policy.acall(afn)
    if entry == "decorator":
        return await policy(afn)()
    if entry == "pipeline":
        return await Pipeline(policy).acall(afn)
    return await policy(afn, "arg")


@pytest.fixture(params=MODES)
def mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(params=ENTRIES)
def entry(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(params=list(SHAPES))
def shape(request: pytest.FixtureRequest) -> dict[str, Any]:
    return dict(SHAPES[request.param])


class Recorder:
    """A listener keeping every event it is given."""

    def __init__(self) -> None:
        self.events: list[events.Event] = []

    def __call__(self, event: events.Event) -> None:
        self.events.append(event)


class CountingClock(FakeClock):
    """A fake clock that counts how often it is read."""

    def __init__(self) -> None:
        super().__init__()
        self.monotonic_reads = 0
        self.time_reads = 0

    def monotonic(self) -> float:
        self.monotonic_reads += 1
        return super().monotonic()

    def time(self) -> float:
        self.time_reads += 1
        return super().time()


def called(mode: str) -> str:
    """The ``call`` of events about a :class:`Script` run in ``mode``."""
    return f"{__name__}.Script.{'sync' if mode == 'sync' else 'async_'}"


def fixed(value: float) -> Callable[[], float]:
    return lambda: value


def transient(n: int) -> list[BaseException]:
    return [ConnectionError(f"transient {i}") for i in range(1, n + 1)]


class HTTPError(Exception):
    """Shaped like httpx.HTTPStatusError: the status and headers live on ``response``."""

    def __init__(self, status: int, headers: dict[str, str]) -> None:
        super().__init__(f"HTTP {status}")
        self.response = type("Response", (), {"status_code": status, "headers": headers})()


class Throttled(Exception):
    """Carries its own ``retry_after`` attribute, like buttress's rejections."""

    transient = True

    def __init__(self, retry_after: float) -> None:
        super().__init__(f"come back in {retry_after}s")
        self.retry_after = retry_after


# ----------------------------------------------------------------------- core behaviour


async def test_success_first_try_does_nothing(
    mode: str, entry: str, shape: dict[str, Any], clock: FakeClock
) -> None:
    script = Script(42, clock=clock)
    policy = Retry(clock=clock, **shape)
    assert await drive(policy, script, mode, entry) == 42
    assert script.calls == 1
    assert clock.sleeps == []


async def test_arguments_are_passed_through(mode: str, clock: FakeClock) -> None:
    script = Script(ConnectionError(), clock=clock)
    policy = Retry(clock=clock)
    fn = script.sync if mode == "sync" else script.async_
    result = policy(fn, 1, 2, key="v")
    if mode == "async":
        result = await result
    assert result == "ok"
    assert script.seen == [((1, 2), {"key": "v"})] * 2


async def test_transient_errors_are_retried_with_backoff(
    mode: str, entry: str, shape: dict[str, Any], clock: FakeClock
) -> None:
    script = Script(*transient(2), "done", clock=clock)
    policy = Retry(clock=clock, jitter="none", **shape)
    assert await drive(policy, script, mode, entry) == "done"
    assert script.calls == 3
    assert clock.sleeps == [0.1, 0.2]
    assert script.starts == [0.0, 0.1, pytest.approx(0.3)]


async def test_exhaustion_raises_retry_exhausted_from_the_last_error(
    mode: str, entry: str, shape: dict[str, Any], clock: FakeClock
) -> None:
    errors = transient(4)
    script = Script(*errors, clock=clock)
    policy = Retry(3, clock=clock, jitter="none", name="fetch", **shape)
    with pytest.raises(RetryExhausted) as info:
        await drive(policy, script, mode, entry)
    assert script.calls == 3
    assert clock.sleeps == [0.1, 0.2]
    assert info.value.name == "fetch"
    assert info.value.attempts == 3
    assert info.value.last_error is errors[2]
    assert info.value.__cause__ is errors[2]
    assert info.value.last_result is None


async def test_reraise_raises_the_last_error_itself(
    mode: str, entry: str, shape: dict[str, Any], clock: FakeClock
) -> None:
    errors = transient(3)
    script = Script(*errors, clock=clock)
    policy = Retry(3, clock=clock, reraise=True, **shape)
    with pytest.raises(ConnectionError) as info:
        await drive(policy, script, mode, entry)
    assert info.value is errors[2]
    assert script.calls == 3


async def test_permanent_error_propagates_at_once(
    mode: str, entry: str, shape: dict[str, Any], clock: FakeClock
) -> None:
    error = ValueError("bad input")
    script = Script(error, clock=clock)
    with pytest.raises(ValueError) as info:
        await drive(Retry(clock=clock, **shape), script, mode, entry)
    assert info.value is error
    assert info.value.__context__ is None
    assert script.calls == 1
    assert clock.sleeps == []


async def test_permanent_error_after_retries_propagates_unchanged(
    mode: str, shape: dict[str, Any], clock: FakeClock
) -> None:
    error = KeyError("gone")
    script = Script(ConnectionError(), error, clock=clock)
    with pytest.raises(KeyError) as info:
        await drive(Retry(5, clock=clock, jitter="none", **shape), script, mode)
    assert info.value is error
    assert script.calls == 2
    assert clock.sleeps == [0.1]


async def test_later_errors_do_not_chain_to_earlier_ones(mode: str, clock: FakeClock) -> None:
    errors = transient(3)
    with pytest.raises(RetryExhausted):
        await drive(Retry(3, clock=clock), Script(*errors), mode)
    assert [e.__context__ for e in errors] == [None, None, None]


async def test_max_attempts_one_never_retries(mode: str, clock: FakeClock) -> None:
    script = Script(ConnectionError())
    with pytest.raises(RetryExhausted) as info:
        await drive(Retry(1, clock=clock), script, mode)
    assert info.value.attempts == 1
    assert script.calls == 1
    assert clock.sleeps == []


# ------------------------------------------------------------------------ what is retried


async def test_on_type_replaces_the_transient_rule(mode: str, clock: FakeClock) -> None:
    script = Script(ValueError("a"), ValueError("b"), clock=clock)
    assert await drive(Retry(clock=clock, on=ValueError), script, mode) == "ok"
    assert script.calls == 3

    error = ConnectionError()
    script = Script(error, clock=clock)
    with pytest.raises(ConnectionError) as info:
        await drive(Retry(clock=clock, on=ValueError), script, mode)
    assert info.value is error
    assert script.calls == 1


async def test_on_tuple(mode: str, clock: FakeClock) -> None:
    script = Script(ValueError(), KeyError(), TypeError(), clock=clock)
    with pytest.raises(TypeError):
        await drive(Retry(5, clock=clock, on=(ValueError, KeyError)), script, mode)
    assert script.calls == 3


async def test_on_predicate(mode: str, clock: FakeClock) -> None:
    seen: list[BaseException] = []

    def worth_it(exc: BaseException) -> bool:
        seen.append(exc)
        return "again" in str(exc)

    errors = [RuntimeError("again"), RuntimeError("stop")]
    script = Script(*errors, clock=clock)
    with pytest.raises(RuntimeError, match="stop"):
        await drive(Retry(5, clock=clock, on=worth_it), script, mode)
    assert seen == errors
    assert script.calls == 2


async def test_subclasses_match_on_types(mode: str, clock: FakeClock) -> None:
    script = Script(ConnectionResetError(), clock=clock)
    assert await drive(Retry(clock=clock, on=OSError), script, mode) == "ok"
    assert script.calls == 2


async def test_default_follows_is_transient(mode: str, clock: FakeClock) -> None:
    class Flagged(Exception):
        transient = True

    script = Script(TimeoutError(), HTTPError(503, {}), Flagged(), HTTPError(404, {}), clock=clock)
    with pytest.raises(HTTPError) as info:
        await drive(Retry(10, clock=clock), script, mode)
    assert info.value.response.status_code == 404
    assert script.calls == 4


@pytest.mark.parametrize("error", [KeyboardInterrupt(), SystemExit(1), GeneratorExit()])
async def test_base_exceptions_are_never_retried(
    mode: str, error: BaseException, clock: FakeClock
) -> None:
    script = Script(error, clock=clock)
    with pytest.raises(type(error)):
        await drive(Retry(5, clock=clock, on=lambda exc: True), script, mode)
    assert script.calls == 1


async def test_cancelled_error_from_the_call_is_never_retried(clock: FakeClock) -> None:
    script = Script(asyncio.CancelledError(), clock=clock)
    with pytest.raises(asyncio.CancelledError):
        await Retry(5, clock=clock, on=lambda exc: True).acall(script.async_)
    assert script.calls == 1


@pytest.mark.parametrize(
    "on",
    [KeyboardInterrupt, asyncio.CancelledError, BaseException, (ValueError, SystemExit), (), 42],
)
def test_on_refuses_what_must_never_be_retried(on: Any) -> None:
    with pytest.raises(ConfigError) as info:
        Retry(on=on)
    assert info.value.path == "on"


# ------------------------------------------------------------------------- result predicate


async def test_on_result_retries_rejected_values(mode: str, entry: str, clock: FakeClock) -> None:
    script = Script(None, None, "value", clock=clock)
    policy = Retry(clock=clock, jitter="none", on_result=lambda r: r is None)
    assert await drive(policy, script, mode, entry) == "value"
    assert script.calls == 3
    assert clock.sleeps == [0.1, 0.2]


async def test_on_result_exhaustion_carries_the_last_result(
    mode: str, entry: str, clock: FakeClock
) -> None:
    script = Script(1, 2, 3, clock=clock)
    policy = Retry(clock=clock, on_result=lambda r: isinstance(r, int))
    with pytest.raises(RetryExhausted) as info:
        await drive(policy, script, mode, entry)
    assert info.value.attempts == 3
    assert info.value.last_result == 3
    assert info.value.last_error is None
    assert info.value.__cause__ is None


async def test_on_result_reraise_returns_the_last_result(mode: str, clock: FakeClock) -> None:
    script = Script(1, 2, 3, 4, clock=clock)
    policy = Retry(clock=clock, on_result=lambda r: isinstance(r, int), reraise=True)
    assert await drive(policy, script, mode) == 3
    assert script.calls == 3


async def test_errors_and_results_mix(mode: str, clock: FakeClock) -> None:
    script = Script(None, ConnectionError(), None, "fine", clock=clock)
    policy = Retry(4, clock=clock, on_result=lambda r: r is None)
    assert await drive(policy, script, mode) == "fine"
    assert script.calls == 4


async def test_exhaustion_after_result_then_error_raises_from_the_error(
    mode: str, clock: FakeClock
) -> None:
    error = ConnectionError()
    script = Script(None, error, clock=clock)
    policy = Retry(2, clock=clock, on_result=lambda r: r is None)
    with pytest.raises(RetryExhausted) as info:
        await drive(policy, script, mode)
    assert info.value.__cause__ is error


# -------------------------------------------------------------------------------- waits


async def test_long_backoff_runs_instantly_on_the_fake_clock(mode: str, clock: FakeClock) -> None:
    script = Script(*transient(5), clock=clock)
    policy = Retry(5, backoff="constant", delay=30.0, jitter="none", clock=clock)
    with pytest.raises(RetryExhausted):
        await drive(policy, script, mode)
    assert clock.sleeps == [30.0, 30.0, 30.0, 30.0]
    assert clock.monotonic() == 120.0
    assert script.starts == [0.0, 30.0, 60.0, 90.0, 120.0]


@pytest.mark.parametrize(
    ("backoff", "expected"),
    [
        ("constant", [1.0, 1.0, 1.0, 1.0]),
        ("linear", [1.0, 2.0, 3.0, 4.0]),
        ("exponential", [1.0, 2.0, 4.0, 8.0]),
        ("fibonacci", [1.0, 1.0, 2.0, 3.0]),
        (Linear(1.0, step=0.5), [1.0, 1.5, 2.0, 2.5]),
        (Exponential(1.0, factor=3.0), [1.0, 3.0, 9.0, 27.0]),
    ],
)
async def test_schedules(mode: str, backoff: Any, expected: list[float], clock: FakeClock) -> None:
    delay = 1.0 if isinstance(backoff, str) else None
    policy = Retry(5, backoff=backoff, delay=delay, jitter="none", clock=clock)
    with pytest.raises(RetryExhausted):
        await drive(policy, Script(*transient(5)), mode)
    assert clock.sleeps == expected


async def test_max_delay_caps_each_wait(mode: str, clock: FakeClock) -> None:
    policy = Retry(6, delay=1.0, max_delay=5.0, jitter="none", clock=clock)
    with pytest.raises(RetryExhausted):
        await drive(policy, Script(*transient(6)), mode)
    assert clock.sleeps == [1.0, 2.0, 4.0, 5.0, 5.0]


async def test_full_jitter_scales_by_random(mode: str, clock: FakeClock) -> None:
    policy = Retry(4, delay=1.0, jitter="full", random=fixed(0.25), clock=clock)
    with pytest.raises(RetryExhausted):
        await drive(policy, Script(*transient(4)), mode)
    assert clock.sleeps == [0.25, 0.5, 1.0]


async def test_full_jitter_is_the_default(clock: FakeClock) -> None:
    policy = Retry(2, delay=1.0, random=fixed(0.5), clock=clock)
    with pytest.raises(RetryExhausted):
        policy.call(Script(*transient(2)).sync)
    assert clock.sleeps == [0.5]


async def test_equal_jitter_keeps_half(mode: str, clock: FakeClock) -> None:
    policy = Retry(3, delay=2.0, jitter="equal", random=fixed(0.5), clock=clock)
    with pytest.raises(RetryExhausted):
        await drive(policy, Script(*transient(3)), mode)
    assert clock.sleeps == [1.5, 3.0]


async def test_jitter_applies_after_the_cap(clock: FakeClock) -> None:
    policy = Retry(3, delay=10.0, max_delay=4.0, jitter="full", random=fixed(0.5), clock=clock)
    with pytest.raises(RetryExhausted):
        policy.call(Script(*transient(3)).sync)
    assert clock.sleeps == [2.0, 2.0]


async def test_decorrelated_jitter_gets_no_extra_jitter(mode: str, clock: FakeClock) -> None:
    policy = Retry(
        4, backoff="decorrelated_jitter", delay=1.0, jitter="full", random=fixed(0.5), clock=clock
    )
    assert policy.jitter == "none"
    with pytest.raises(RetryExhausted):
        await drive(policy, Script(*transient(4)), mode)
    # uniform(1, 3 * max(previous, 1)) at 0.5: 2, then 1 + 0.5 * 5 = 3.5, then 1 + 0.5 * 9.5
    assert clock.sleeps == [2.0, 3.5, 5.75]


async def test_decorrelated_jitter_feeds_back_the_capped_delay(clock: FakeClock) -> None:
    policy = Retry(
        4, backoff=DecorrelatedJitter(1.0), max_delay=2.0, random=fixed(0.5), clock=clock
    )
    with pytest.raises(RetryExhausted):
        policy.call(Script(*transient(4)).sync)
    # 2.0 (capped at 2), then uniform(1, 6) = 3.5 -> capped 2.0, and so on.
    assert clock.sleeps == [2.0, 2.0, 2.0]


async def test_zero_delay_never_sleeps(mode: str) -> None:
    class NoSleep(FakeClock):
        def sleep(self, seconds: float) -> None:
            raise AssertionError(f"slept {seconds}")

        async def asleep(self, seconds: float) -> None:
            raise AssertionError(f"slept {seconds}")

    script = Script(*transient(2))
    policy = Retry(backoff="constant", delay=0, clock=NoSleep())
    assert await drive(policy, script, mode) == "ok"
    assert script.calls == 3


async def test_zero_backoff_switch_zeroes_every_wait(mode: str, clock: FakeClock) -> None:
    recorder = Recorder()
    policy = Retry(4, backoff="constant", delay=30.0, jitter="none", clock=clock)
    policy.subscribe(recorder)
    with zero_backoff(), pytest.raises(RetryExhausted) as info:
        await drive(policy, Script(*transient(4)), mode)
    assert info.value.attempts == 4
    assert clock.sleeps == []
    assert [e.delay for e in recorder.events if isinstance(e, RetryScheduled)] == [0.0] * 3


async def test_zero_backoff_is_read_only_on_the_failure_path(
    monkeypatch: pytest.MonkeyPatch, mode: str, clock: FakeClock
) -> None:
    reads = []

    class Switches:
        @property
        def zero_backoff(self) -> bool:
            reads.append(1)
            return True

    monkeypatch.setattr(retry_engine, "SWITCHES", Switches())
    policy = Retry(clock=clock)
    for entry in ENTRIES:
        await drive(policy, Script(), mode, entry)
    assert reads == []
    await drive(policy, Script(ConnectionError()), mode)
    assert reads == [1]
    assert clock.sleeps == []


async def test_custom_backoff_negative_or_nan_means_no_wait(mode: str, clock: FakeClock) -> None:
    class Odd:
        randomized = False

        def compute(self, attempt: int, previous: float, random: Callable[[], float]) -> float:
            return -1.0 if attempt == 1 else math.nan

    policy = Retry(3, backoff=Odd(), clock=clock)
    assert await drive(policy, Script(*transient(2)), mode) == "ok"
    assert clock.sleeps == []


# -------------------------------------------------------------------------- Retry-After


async def test_retry_after_attribute_raises_the_wait(mode: str, clock: FakeClock) -> None:
    policy = Retry(3, delay=1.0, jitter="none", clock=clock)
    assert await drive(policy, Script(Throttled(5.0), Throttled(0.5)), mode) == "ok"
    # max(1.0, 5.0), then max(2.0, 0.5)
    assert clock.sleeps == [5.0, 2.0]


async def test_retry_after_header_on_the_response(mode: str, clock: FakeClock) -> None:
    error = HTTPError(503, {"Retry-After": "7"})
    policy = Retry(3, jitter="none", clock=clock)
    assert await drive(policy, Script(error), mode) == "ok"
    assert clock.sleeps == [7.0]


async def test_retry_after_http_date_is_measured_on_the_clock(mode: str, clock: FakeClock) -> None:
    when = email.utils.formatdate(clock.time() + 12, usegmt=True)
    error = HTTPError(429, {"Retry-After": when})
    policy = Retry(3, jitter="none", clock=clock)
    assert await drive(policy, Script(error), mode) == "ok"
    assert clock.sleeps == [12.0]


async def test_retry_after_from_a_real_httpx_error(mode: str, clock: FakeClock) -> None:
    httpx = pytest.importorskip("httpx")
    request = httpx.Request("GET", "https://example.test/")
    response = httpx.Response(429, headers={"Retry-After": "3"}, request=request)
    error = httpx.HTTPStatusError("slow down", request=request, response=response)
    policy = Retry(3, jitter="none", clock=clock)
    assert await drive(policy, Script(error), mode) == "ok"
    assert clock.sleeps == [3.0]


async def test_retry_after_can_be_ignored(mode: str, clock: FakeClock) -> None:
    policy = Retry(3, jitter="none", retry_after=False, clock=clock)
    assert await drive(policy, Script(Throttled(20.0)), mode) == "ok"
    assert clock.sleeps == [0.1]


async def test_retry_after_beyond_max_delay_gives_up_at_once(mode: str, clock: FakeClock) -> None:
    error = Throttled(60.0)
    recorder = Recorder()
    policy = Retry(5, max_delay=30.0, clock=clock, name="api")
    policy.subscribe(recorder)
    script = Script(error)
    with pytest.raises(RetryExhausted) as info:
        await drive(policy, script, mode)
    assert info.value.attempts == 1
    assert info.value.__cause__ is error
    assert script.calls == 1
    assert clock.sleeps == []
    assert recorder.events == [RetryGaveUp("api", 1, "retry_after", error, None, call=called(mode))]


async def test_retry_after_equal_to_max_delay_is_honoured(clock: FakeClock) -> None:
    policy = Retry(5, max_delay=30.0, clock=clock)
    assert policy.call(Script(Throttled(30.0)).sync) == "ok"
    assert clock.sleeps == [30.0]


def test_wall_clock_is_read_only_to_honour_retry_after() -> None:
    clock = CountingClock()
    Retry(3, backoff="constant", delay=0, clock=clock).call(Script(*transient(2)).sync)
    assert clock.time_reads == 2
    clock = CountingClock()
    Retry(3, retry_after=False, clock=clock).call(Script(*transient(2)).sync)
    assert clock.time_reads == 0
    assert clock.monotonic_reads == 0


# -------------------------------------------------------------------------- elapsed cap


async def test_max_elapsed_stops_before_a_wait_that_would_cross_it(
    mode: str, entry: str, clock: FakeClock
) -> None:
    # Each attempt takes 1 s and each wait 2 s: attempts start at 0, 3, 6, 9; the
    # wait after the one ending at 10 would end at 12 > 10, so it is never begun.
    script = Script(*transient(10), clock=clock, duration=1.0)
    recorder = Recorder()
    policy = Retry(
        None, backoff="constant", delay=2.0, jitter="none", max_elapsed=10.0, clock=clock
    )
    policy.subscribe(recorder)
    with pytest.raises(RetryExhausted) as info:
        await drive(policy, script, mode, entry)
    assert script.starts == [0.0, 3.0, 6.0, 9.0]
    assert info.value.attempts == 4
    assert clock.sleeps == [2.0, 2.0, 2.0]
    assert clock.monotonic() == 10.0
    assert isinstance(recorder.events[-1], RetryGaveUp)
    assert recorder.events[-1].reason == "max_elapsed"


async def test_max_elapsed_counts_from_the_first_attempt(mode: str) -> None:
    clock = FakeClock(start=1000.0)
    script = Script(*transient(10), clock=clock, duration=4.0)
    policy = Retry(None, backoff="constant", delay=0.5, jitter="none", max_elapsed=5.0, clock=clock)
    with pytest.raises(RetryExhausted):
        await drive(policy, script, mode)
    assert script.starts == [1000.0, 1004.5]


async def test_attempt_cap_wins_when_reached_first(mode: str, clock: FakeClock) -> None:
    policy = Retry(2, max_elapsed=100.0, clock=clock)
    with pytest.raises(RetryExhausted) as info:
        await drive(policy, Script(*transient(5)), mode)
    assert info.value.attempts == 2


async def test_monotonic_clock_is_read_only_for_max_elapsed(mode: str) -> None:
    clock = CountingClock()
    await drive(Retry(clock=clock), Script(*transient(2)), mode)
    assert clock.monotonic_reads == 0
    clock = CountingClock()
    await drive(Retry(max_elapsed=60.0, clock=clock), Script(), mode)
    assert clock.monotonic_reads == 1
    clock = CountingClock()
    await drive(Retry(max_elapsed=60.0, clock=clock), Script(*transient(2)), mode)
    assert clock.monotonic_reads == 3


# -------------------------------------------------------------------------------- events


async def test_events_of_a_recovered_call(mode: str, clock: FakeClock) -> None:
    errors = transient(2)
    recorder = Recorder()
    policy = Retry(jitter="none", clock=clock, name="db")
    policy.subscribe(recorder)
    await drive(policy, Script(*errors), mode)
    assert recorder.events == [
        RetryScheduled("db", 1, 0.1, errors[0], None, call=called(mode)),
        RetryScheduled("db", 2, 0.2, errors[1], None, call=called(mode)),
        RetryRecovered("db", 3, call=called(mode)),
    ]


async def test_events_of_an_exhausted_call(mode: str, clock: FakeClock) -> None:
    errors = transient(3)
    recorder = Recorder()
    policy = Retry(jitter="none", clock=clock, name="db")
    policy.subscribe(recorder)
    with pytest.raises(RetryExhausted):
        await drive(policy, Script(*errors), mode)
    assert recorder.events == [
        RetryScheduled("db", 1, 0.1, errors[0], None, call=called(mode)),
        RetryScheduled("db", 2, 0.2, errors[1], None, call=called(mode)),
        RetryGaveUp("db", 3, "max_attempts", errors[2], None, call=called(mode)),
    ]


async def test_events_of_rejected_results(mode: str, clock: FakeClock) -> None:
    recorder = Recorder()
    policy = Retry(2, jitter="none", clock=clock, name="poll", on_result=lambda r: r < 10)
    policy.subscribe(recorder)
    with pytest.raises(RetryExhausted):
        await drive(policy, Script(1, 2), mode)
    assert recorder.events == [
        RetryScheduled("poll", 1, 0.1, None, 1, call=called(mode)),
        RetryGaveUp("poll", 2, "max_attempts", None, 2, call=called(mode)),
    ]


async def test_events_when_a_later_error_is_not_retried(mode: str, clock: FakeClock) -> None:
    first, second = ConnectionError(), ValueError()
    recorder = Recorder()
    policy = Retry(jitter="none", clock=clock, name="x")
    policy.subscribe(recorder)
    with pytest.raises(ValueError):
        await drive(policy, Script(first, second), mode)
    assert recorder.events == [
        RetryScheduled("x", 1, 0.1, first, None, call=called(mode)),
        RetryGaveUp("x", 2, "not_retryable", second, None, call=called(mode)),
    ]


async def test_no_events_for_a_first_permanent_error_or_a_success(
    mode: str, clock: FakeClock
) -> None:
    recorder = Recorder()
    policy = Retry(clock=clock)
    policy.subscribe(recorder)
    await drive(policy, Script(), mode)
    with pytest.raises(ValueError):
        await drive(policy, Script(ValueError()), mode)
    assert recorder.events == []


async def test_global_listeners_hear_retry_events(clock: FakeClock) -> None:
    recorder = Recorder()
    unsubscribe = events.subscribe(recorder, RetryRecovered)
    try:
        Retry(clock=clock, name="g").call(Script(ConnectionError()).sync)
    finally:
        unsubscribe()
    assert recorder.events == [RetryRecovered("g", 2, call=called("sync"))]


async def test_no_event_is_built_without_listeners(
    monkeypatch: pytest.MonkeyPatch, mode: str, clock: FakeClock
) -> None:
    built: list[str] = []

    def spy(name: str) -> Callable[..., None]:
        def build(*args: Any, **kwargs: Any) -> None:
            built.append(name)

        return build

    for name in ("RetryScheduled", "RetryRecovered", "RetryGaveUp"):
        monkeypatch.setattr(retry_policy, name, spy(name))
    policy = Retry(2, clock=clock)
    unsubscribe = policy.subscribe(Recorder())
    unsubscribe()
    await drive(policy, Script(ConnectionError()), mode)
    with pytest.raises(RetryExhausted):
        await drive(policy, Script(*transient(2)), mode)
    with pytest.raises(ValueError):
        await drive(policy, Script(ConnectionError(), ValueError()), mode)
    assert built == []

    policy.subscribe(Recorder())
    await drive(policy, Script(ConnectionError()), mode)
    assert built == ["RetryScheduled", "RetryRecovered"]


def test_events_are_frozen() -> None:
    event = RetryRecovered("p", 2)
    with pytest.raises(AttributeError):
        event.attempts = 3  # type: ignore[misc]


# ---------------------------------------------------------------------- state & safety


async def test_no_retry_state_on_the_happy_path(
    monkeypatch: pytest.MonkeyPatch, mode: str, entry: str, shape: dict[str, Any]
) -> None:
    created: list[float] = []
    original = retry_engine.Attempts

    def counting(deadline: float) -> Any:
        created.append(deadline)
        return original(deadline)

    monkeypatch.setattr(retry_engine, "Attempts", counting)
    policy = Retry(**shape)
    await drive(policy, Script(), mode, entry)
    assert created == []
    await drive(policy, Script(ConnectionError()), mode, entry)
    assert len(created) == 1


async def test_cancellation_during_a_backoff_wait_stops_retrying(
    manual_clock: FakeClock,
) -> None:
    script = Script(*transient(5))
    policy = Retry(5, backoff="constant", delay=10.0, jitter="none", clock=manual_clock)
    task = asyncio.ensure_future(policy.acall(script.async_))
    await tick(3)
    assert script.calls == 1
    assert manual_clock.pending_timers == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert manual_clock.pending_timers == 0
    manual_clock.advance(100.0)
    await tick(3)
    assert script.calls == 1


async def test_cancellation_during_a_decorated_wait(manual_clock: FakeClock) -> None:
    script = Script(*transient(5))
    decorated = Retry(5, delay=1.0, clock=manual_clock)(script.async_)
    task = asyncio.ensure_future(decorated())
    await tick(3)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    manual_clock.advance(100.0)
    await tick(3)
    assert script.calls == 1


async def test_a_waiting_call_resumes_when_time_comes(manual_clock: FakeClock) -> None:
    script = Script(ConnectionError())
    policy = Retry(3, backoff="constant", delay=5.0, jitter="none", clock=manual_clock)
    task = asyncio.ensure_future(policy.acall(script.async_))
    await tick(3)
    manual_clock.advance(4.9)
    await tick(3)
    assert script.calls == 1
    manual_clock.advance(0.1)
    await tick(3)
    assert await task == "ok"
    assert script.calls == 2


def test_concurrent_threads_keep_separate_state() -> None:
    policy = Retry(4, backoff="constant", delay=0)
    barrier = threading.Barrier(4)
    results: dict[int, object] = {}

    def worker(i: int) -> None:
        script = Script(*transient(i))
        barrier.wait()
        try:
            results[i] = (policy.call(script.sync), script.calls)
        except RetryExhausted as exc:
            results[i] = ("exhausted", exc.attempts)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == {0: ("ok", 1), 1: ("ok", 2), 2: ("ok", 3), 3: ("ok", 4)}


# ------------------------------------------------------------------------- decorators


def test_decorated_function_keeps_its_identity() -> None:
    policy = Retry()

    def fetch(x: int) -> int:
        """Fetch it."""
        return x

    async def afetch(x: int) -> int:
        """Fetch it, async."""
        return x

    for fn in (fetch, afetch):
        wrapped = policy(fn)
        assert wrapped.__name__ == fn.__name__
        assert wrapped.__doc__ == fn.__doc__
        assert wrapped.__wrapped__ is fn  # type: ignore[attr-defined]
    assert asyncio.iscoroutinefunction(policy(afetch))


@pytest.mark.parametrize("shape_kwargs", list(SHAPES.values()), ids=list(SHAPES))
async def test_decorated_methods(shape_kwargs: dict[str, Any], clock: FakeClock) -> None:
    policy = Retry(clock=clock, jitter="none", **shape_kwargs)

    class Client:
        def __init__(self) -> None:
            self.script = Script(ConnectionError(), "sync")
            self.ascript = Script(ConnectionError(), "async")

        @policy
        def get(self, path: str) -> Any:
            return self.script.sync(path)

        @policy
        async def aget(self, path: str) -> Any:
            return await self.ascript.async_(path)

        @policy
        @staticmethod
        def ping() -> str:
            return "pong"

    client = Client()
    assert client.get("/a") == "sync"
    assert await client.aget("/b") == "async"
    assert client.script.seen == [(("/a",), {})] * 2
    assert client.ascript.seen == [(("/b",), {})] * 2
    assert Client.ping() == "pong"
    assert clock.sleeps == [0.1, 0.1]


async def test_decorated_with_result_predicate(clock: FakeClock) -> None:
    policy = Retry(clock=clock, on_result=lambda r: r == "again")
    script = Script("again", "done")
    assert policy(script.sync)() == "done"
    ascript = Script("again", "done")
    assert await policy(ascript.async_)() == "done"
    assert (script.calls, ascript.calls) == (2, 2)


async def test_a_decorated_call_may_be_reused(mode: str, clock: FakeClock) -> None:
    script = Script(ConnectionError(), 1, ConnectionError(), ConnectionError(), 2)
    fn = script.sync if mode == "sync" else script.async_
    wrapped = Retry(clock=clock)(fn)
    first = wrapped()
    second = wrapped()
    if mode == "async":
        first, second = await first, await second
    assert (first, second) == (1, 2)
    assert script.calls == 5


# ---------------------------------------------------------------------------- pipelines


class Counting(Strategy):
    """A tiny local strategy: counts the calls that pass through it."""

    __slots__ = ("count",)

    def __init__(self) -> None:
        self.count = 0
        self._init_strategy(None, "counting")
        self._build()

    def _sync_runner(self, inner: SyncRunner) -> SyncRunner:
        def run(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
            self.count += 1
            return inner(fn, args, kwargs)

        return run

    def _async_runner(self, inner: AsyncRunner) -> AsyncRunner:
        async def run(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
            self.count += 1
            return await inner(fn, args, kwargs)

        return run


class Gate(Strategy):
    """A tiny local strategy that rejects its first ``closed`` calls with a transient error."""

    __slots__ = ("closed",)

    def __init__(self, closed: int) -> None:
        self.closed = closed
        self._init_strategy(None, "gate")
        self._build()

    def _check(self) -> None:
        if self.closed:
            self.closed -= 1
            raise Throttled(1.5)

    def _sync_runner(self, inner: SyncRunner) -> SyncRunner:
        def run(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
            self._check()
            return inner(fn, args, kwargs)

        return run

    def _async_runner(self, inner: AsyncRunner) -> AsyncRunner:
        async def run(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
            self._check()
            return await inner(fn, args, kwargs)

        return run


async def run_pipeline(pipeline: Pipeline, script: Script, mode: str) -> Any:
    if mode == "sync":
        return pipeline.call(script.sync)
    return await pipeline.acall(script.async_)


@pytest.mark.parametrize("shape_kwargs", list(SHAPES.values()), ids=list(SHAPES))
async def test_retry_inside_and_outside_another_strategy(
    mode: str, shape_kwargs: dict[str, Any], clock: FakeClock
) -> None:
    outer, inner = Counting(), Counting()
    pipeline = Pipeline(outer, Retry(clock=clock, **shape_kwargs), inner)
    assert await run_pipeline(pipeline, Script(*transient(2)), mode) == "ok"
    assert (outer.count, inner.count) == (1, 3)


async def test_retry_retries_rejections_from_inner_strategies(mode: str, clock: FakeClock) -> None:
    gate = Gate(closed=2)
    script = Script()
    pipeline = Pipeline(Retry(4, delay=1.0, jitter="none", clock=clock), gate)
    assert await run_pipeline(pipeline, script, mode) == "ok"
    assert script.calls == 1
    # The gate's retry_after (1.5 s) beats the schedule's 1 s, but not its 2 s.
    assert clock.sleeps == [1.5, 2.0]


async def test_retry_in_a_nested_pipeline(mode: str, clock: FakeClock) -> None:
    outer, inner = Counting(), Counting()
    retry = Retry(3, backoff="constant", delay=1.0, jitter="none", clock=clock)
    pipeline = Pipeline(outer, Pipeline(retry, inner))
    script = Script(*transient(2))
    assert await run_pipeline(pipeline, script, mode) == "ok"
    assert (outer.count, inner.count, script.calls) == (1, 3, 3)
    assert clock.sleeps == [1.0, 1.0]


async def test_outer_retry_lets_inner_exhaustion_through(mode: str, clock: FakeClock) -> None:
    inner_retry = Retry(2, backoff="constant", delay=1.0, jitter="none", clock=clock)
    outer_retry = Retry(3, backoff="constant", delay=10.0, jitter="none", clock=clock)
    script = Script(*transient(3))
    with pytest.raises(RetryExhausted) as info:
        await run_pipeline(Pipeline(outer_retry, inner_retry), script, mode)
    assert info.value.name == inner_retry.name
    assert script.calls == 2
    assert clock.sleeps == [1.0]


async def test_outer_retry_can_retry_inner_exhaustion(mode: str, clock: FakeClock) -> None:
    inner_retry = Retry(2, backoff="constant", delay=1.0, jitter="none", clock=clock)
    outer_retry = Retry(
        3, backoff="constant", delay=10.0, jitter="none", clock=clock, on=RetryExhausted
    )
    script = Script(*transient(3))
    assert await run_pipeline(Pipeline(outer_retry, inner_retry), script, mode) == "ok"
    assert script.calls == 4
    assert clock.sleeps == [1.0, 10.0, 1.0]


# --------------------------------------------------------------------------- configuration


@pytest.mark.parametrize(
    ("kwargs", "path"),
    [
        ({"max_attempts": 0}, "max_attempts"),
        ({"max_attempts": -1}, "max_attempts"),
        ({"max_attempts": 2.5}, "max_attempts"),
        ({"max_attempts": True}, "max_attempts"),
        ({"max_attempts": None}, "max_attempts"),
        ({"max_attempts": None, "max_elapsed": None}, "max_attempts"),
        ({"max_elapsed": 0}, "max_elapsed"),
        ({"max_elapsed": -5}, "max_elapsed"),
        ({"max_elapsed": math.inf}, "max_elapsed"),
        ({"max_elapsed": "10"}, "max_elapsed"),
        ({"delay": -0.1}, "delay"),
        ({"delay": math.nan}, "delay"),
        ({"delay": 1.0, "backoff": Constant(1.0)}, "delay"),
        ({"backoff": "quadratic"}, "backoff"),
        ({"backoff": 3}, "backoff"),
        ({"max_delay": -1}, "max_delay"),
        ({"max_delay": math.nan}, "max_delay"),
        ({"jitter": "half"}, "jitter"),
        ({"jitter": None}, "jitter"),
        ({"on_result": "yes"}, "on_result"),
        ({"random": 0.5}, "random"),
    ],
)
def test_invalid_options_name_the_option(kwargs: dict[str, Any], path: str) -> None:
    with pytest.raises(ConfigError) as info:
        Retry(**kwargs)
    assert info.value.path == path


def test_schedule_parameters_are_validated_under_their_own_names() -> None:
    with pytest.raises(ConfigError) as info:
        Retry(backoff=Exponential(0.1, factor=0.5))
    assert info.value.path == "factor"


def test_unbounded_attempts_with_a_time_budget() -> None:
    policy = Retry(None, max_elapsed=5.0)
    assert policy.max_attempts is None
    assert policy.max_elapsed == 5.0


def test_options_are_visible() -> None:
    policy = Retry(5, backoff="linear", delay=0.5, max_delay=math.inf, jitter="equal")
    assert policy.max_attempts == 5
    assert policy.backoff == Linear(0.5, 0.5)
    assert policy.max_delay == math.inf
    assert policy.jitter == "equal"
    assert policy.max_elapsed is None


def test_defaults() -> None:
    policy = Retry()
    assert policy.max_attempts == 3
    assert policy.backoff == Exponential(0.1, 2.0)
    assert policy.max_delay == 30.0
    assert policy.jitter == "full"
    assert policy.max_elapsed is None
    assert policy.name.startswith("retry-")


def test_repr() -> None:
    assert repr(Retry(2, backoff=Constant(1.0), jitter="none", name="r")) == (
        "Retry(max_attempts=2, backoff=Constant(delay=1.0), max_delay=30.0, jitter='none', "
        "max_elapsed=None, name='r')"
    )


def test_policy_holds_no_per_instance_dict() -> None:
    assert not hasattr(Retry(), "__dict__")


# ------------------------------------------------------------------------------ property

outcomes = st.lists(
    st.one_of(
        st.tuples(st.just("ok"), st.none()),
        st.tuples(st.just("bad_result"), st.none()),
        st.tuples(st.just("permanent"), st.none()),
        st.tuples(
            st.just("transient"),
            st.none() | st.floats(min_value=0, max_value=100, allow_nan=False),
        ),
    ).flatmap(
        lambda kind: st.tuples(
            st.just(kind[0]), st.just(kind[1]), st.sampled_from([0.0, 0.0, 0.3, 1.0, 7.5])
        )
    ),
    max_size=30,
)


@st.composite
def configs(draw: st.DrawFn) -> dict[str, Any]:
    max_attempts = draw(st.none() | st.integers(min_value=1, max_value=8))
    max_elapsed = draw(
        (st.none() if max_attempts is not None else st.nothing())
        | st.floats(min_value=0.01, max_value=120.0)
    )
    return {
        "max_attempts": max_attempts,
        "max_elapsed": max_elapsed,
        "backoff": draw(
            st.sampled_from(
                ["constant", "linear", "exponential", "fibonacci", "decorrelated_jitter"]
            )
        ),
        "delay": draw(st.sampled_from([0.0, 0.01, 0.5, 3.0])),
        "max_delay": draw(st.sampled_from([0.5, 1.0, 30.0, math.inf])),
        "jitter": draw(st.sampled_from(["none", "full", "equal"])),
        "retry_after": draw(st.booleans()),
        "reraise": draw(st.booleans()),
        "on_result": draw(st.sampled_from([None, lambda r: r == "bad"])),
    }


def _program(script: list[tuple[str, float | None, float]], clock: FakeClock) -> Script:
    played: list[object] = []
    for kind, retry_after, _ in script:
        if kind == "ok":
            played.append("good")
        elif kind == "bad_result":
            played.append("bad")
        elif kind == "permanent":
            played.append(ValueError("permanent"))
        else:
            played.append(Throttled(retry_after) if retry_after is not None else TimeoutError())
    durations = [d for _, _, d in script]

    class Timed(Script):
        def sync(self, *args: Any, **kwargs: Any) -> Any:
            duration = durations[self.calls] if self.calls < len(durations) else 0.0
            self.duration = duration
            return super().sync(*args, **kwargs)

    return Timed(*played, clock=clock)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    config=configs(),
    script=outcomes,
    rng=st.randoms(use_true_random=False),
    mode=st.sampled_from(MODES),
)
def test_attempts_and_elapsed_time_stay_within_their_caps(
    config: dict[str, Any],
    script: list[tuple[str, float | None, float]],
    rng: Any,
    mode: str,
) -> None:
    clock = FakeClock(start=50.0)
    played = _program(script, clock)
    policy = Retry(clock=clock, random=rng.random, **config)
    fn = played.sync if mode == "sync" else played.async_
    try:
        if mode == "sync":
            outcome: object = policy.call(fn)
        else:
            outcome = asyncio.run(policy.acall(fn))
    except (RetryExhausted, ValueError, TimeoutError, Throttled) as exc:
        outcome = exc

    max_attempts, max_elapsed = config["max_attempts"], config["max_elapsed"]
    assert played.calls >= 1
    if max_attempts is not None:
        assert played.calls <= max_attempts
    if max_elapsed is not None:
        assert all(start <= 50.0 + max_elapsed for start in played.starts)
        if all(d == 0.0 for _, _, d in script):
            assert clock.monotonic() <= 50.0 + max_elapsed
    # Every wait honoured the single-delay cap and none was a useless sleep(0).
    assert all(0.0 < s <= config["max_delay"] for s in clock.sleeps)
    assert len(clock.sleeps) <= played.calls - 1
    if isinstance(outcome, RetryExhausted):
        assert outcome.attempts == played.calls
    if isinstance(outcome, ValueError):
        assert str(outcome) == "permanent"


def test_functools_partial_is_retried(clock: FakeClock) -> None:
    script = Script(ConnectionError())
    assert Retry(clock=clock).call(functools.partial(script.sync, 1)) == "ok"
    assert script.seen == [((1,), {})] * 2

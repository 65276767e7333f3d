"""Fallback: alternatives in order, the constant value, predicates, chaining, events."""

from __future__ import annotations

import asyncio
import dataclasses
import errno
import inspect
import pickle
import traceback
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from buttress import Bulkhead, CircuitBreaker, FakeClock, Retry, Timeout
from buttress import events as events_module
from buttress._outcome import NEVER, Matcher
from buttress._strategy import AsyncRunner, Strategy, SyncRunner
from buttress.errors import (
    BulkheadFull,
    CircuitOpen,
    ConfigError,
    RateLimited,
    RetryExhausted,
    TimeoutExceeded,
    is_transient,
)
from buttress.events import Event, call_name
from buttress.pipeline import Pipeline
from buttress.policies.fallback import (
    ErrorHandler,
    Fallback,
    FallbackOptions,
    FallbackUsed,
    UnacceptableResult,
)
from buttress.policies.fallback import _events as fallback_events

from tests.helpers import tick


class Boom(Exception):
    """A dependency failure the tests fall back on (transient, so the default answers)."""

    transient = True


class Other(Exception):
    """A permanent failure: outside the default rule and outside ``on=Boom``."""


class Recorder:
    """A callable that records its calls and answers from a script."""

    def __init__(self, *outcomes: Any) -> None:
        self.outcomes = list(outcomes)
        self.calls: list[tuple[tuple[Any, ...], dict[str, Any]]] = []

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.calls.append((args, kwargs))
        outcome = self.outcomes.pop(0) if len(self.outcomes) > 1 else self.outcomes[0]
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome


class AsyncRecorder(Recorder):
    async def __call__(self, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        return super().__call__(*args, **kwargs)


# Every way to run a sync callable through a fallback must behave the same.
Args = tuple[Any, ...]
Kwargs = dict[str, Any]
SyncMode = Callable[[Fallback, Callable[..., Any], Args, Kwargs], Any]
SYNC_MODES: dict[str, SyncMode] = {
    "decorated": lambda fb, fn, a, k: fb(fn)(*a, **k),
    "call": lambda fb, fn, a, k: fb.call(fn, *a, **k),
    # strategy(fn) with no arguments decorates, so give it at least one or call through.
    "dunder-call": lambda fb, fn, a, k: fb(fn, *a, **k) if a or k else fb(fn)(),
    "pipeline-call": lambda fb, fn, a, k: Pipeline(fb).call(fn, *a, **k),
    "pipeline-decorated": lambda fb, fn, a, k: Pipeline(Pipeline(fb))(fn)(*a, **k),
}
AsyncMode = Callable[
    [Fallback, Callable[..., Any], tuple[Any, ...], dict[str, Any]], Awaitable[Any]
]
ASYNC_MODES: dict[str, AsyncMode] = {
    "decorated": lambda fb, fn, a, k: fb(fn)(*a, **k),
    "acall": lambda fb, fn, a, k: fb.acall(fn, *a, **k),
    "dunder-call": lambda fb, fn, a, k: fb(fn, *a, **k) if a or k else fb(fn)(),
    "pipeline-acall": lambda fb, fn, a, k: Pipeline(fb).acall(fn, *a, **k),
    "pipeline-decorated": lambda fb, fn, a, k: Pipeline(Pipeline(fb))(fn)(*a, **k),
}


@pytest.fixture(params=list(SYNC_MODES))
def run(request: pytest.FixtureRequest) -> Callable[..., Any]:
    mode = SYNC_MODES[request.param]

    def go(fb: Fallback, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return mode(fb, fn, args, kwargs)

    return go


@pytest.fixture(params=list(ASYNC_MODES))
def arun(request: pytest.FixtureRequest) -> Callable[..., Awaitable[Any]]:
    mode = ASYNC_MODES[request.param]

    def go(fb: Fallback, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Awaitable[Any]:
        return mode(fb, fn, args, kwargs)

    return go


@pytest.fixture
def seen() -> Any:
    """Every event emitted anywhere during the test."""
    found: list[Event] = []
    unsubscribe = events_module.subscribe(found.append)
    yield found
    unsubscribe()


# ------------------------------------------------------------------------ configuration


def test_needs_an_alternative_or_a_value() -> None:
    with pytest.raises(ConfigError, match=r"^alternatives: ") as info:
        Fallback()
    assert info.value.path == "alternatives"


def test_rejects_a_non_callable_alternative() -> None:
    with pytest.raises(ConfigError) as info:
        Fallback(len, "cache")  # type: ignore[arg-type]
    assert info.value.path == "alternatives[1]"
    assert "str" in str(info.value)


@pytest.mark.parametrize(
    "on",
    [
        BaseException,
        KeyboardInterrupt,
        asyncio.CancelledError,
        (ValueError, SystemExit),
        (),
        "ValueError",
        (ValueError, "KeyError"),
        int,
    ],
)
def test_rejects_a_bad_on(on: Any) -> None:
    with pytest.raises(ConfigError) as info:
        Fallback(value=1, on=on)
    assert info.value.path == "on"


def test_rejects_a_non_callable_on_result() -> None:
    with pytest.raises(ConfigError) as info:
        Fallback(value=1, on_result=True)  # type: ignore[arg-type]
    assert info.value.path == "on_result"


def test_names_and_repr() -> None:
    first, second = Fallback(value=0), Fallback(value=0)
    assert first.name.startswith("fallback-")
    assert first.name != second.name
    named = Fallback(len, value=0, name="prices")
    assert named.name == "prices"
    assert repr(named) == "Fallback(name='prices', alternatives=1)"
    assert named.alternatives == (len,)


# ------------------------------------------------------------------------- sync behaviour


def test_happy_path_returns_the_primary_result(run: Callable[..., Any], seen: list[Event]) -> None:
    alternative = Recorder("alt")
    primary = Recorder("primary")
    assert run(Fallback(alternative, value="value"), primary, 1, k=2) == "primary"
    assert primary.calls == [((1,), {"k": 2})]
    assert alternative.calls == []
    assert seen == []


def test_alternative_gets_the_same_arguments(run: Callable[..., Any]) -> None:
    alternative = Recorder("alt")
    assert run(Fallback(alternative), Recorder(Boom()), 1, "x", k=2) == "alt"
    assert alternative.calls == [((1, "x"), {"k": 2})]


def test_alternatives_are_tried_in_order(run: Callable[..., Any], seen: list[Event]) -> None:
    first, second, third = Recorder(Boom("1")), Recorder("second"), Recorder("third")
    fb = Fallback(first, second, third, name="chain")
    primary_error = Boom("primary")
    assert run(fb, Recorder(primary_error), 7) == "second"
    assert (len(first.calls), len(second.calls), len(third.calls)) == (1, 1, 0)
    assert [(e.policy, e.alternative_index) for e in seen] == [("chain", 0), ("chain", 1)]
    assert all(isinstance(e, FallbackUsed) for e in seen)
    assert seen[0].error is primary_error  # type: ignore[attr-defined]
    assert str(seen[1].error) == "1"  # type: ignore[attr-defined]


def test_value_answers_when_every_alternative_fails(
    run: Callable[..., Any], seen: list[Event]
) -> None:
    last = Boom("alt 1")
    fb = Fallback(Recorder(Boom("alt 0")), Recorder(last), value="default")
    assert run(fb, Recorder(Boom("primary"))) == "default"
    assert [e.alternative_index for e in seen] == [0, 1, 2]  # type: ignore[attr-defined]
    assert seen[2].error is last  # type: ignore[attr-defined]


@pytest.mark.parametrize("value", [None, 0, "", False, []])
def test_falsy_values_are_values(run: Callable[..., Any], value: object) -> None:
    assert run(Fallback(value=value), Recorder(Boom()), 1) is value


def test_last_error_propagates_chained_to_the_earlier_ones(run: Callable[..., Any]) -> None:
    primary, first, last = Boom("primary"), Boom("first"), KeyError("last")
    fb = Fallback(Recorder(first), Recorder(last))
    with pytest.raises(KeyError) as info:
        run(fb, Recorder(primary))
    assert info.value is last
    assert last.__context__ is first
    assert first.__context__ is primary
    assert primary.__context__ is None
    assert last.__cause__ is None  # the user's own causes are not touched


def test_an_alternatives_own_cause_is_kept(run: Callable[..., Any]) -> None:
    primary, root = Boom("primary"), OSError("socket")

    def alternative(*_: Any) -> None:
        try:
            raise root
        except OSError as exc:
            raise Boom("mapped") from exc

    with pytest.raises(Boom, match="mapped") as info:
        run(Fallback(alternative), Recorder(primary))
    assert info.value.__cause__ is root
    assert root.__context__ is primary  # the primary stays reachable


def test_on_type_lets_other_errors_through(run: Callable[..., Any], seen: list[Event]) -> None:
    alternative = Recorder("alt")
    other = Other("no")
    with pytest.raises(Other) as info:
        run(Fallback(alternative, on=Boom), Recorder(other))
    assert info.value is other
    assert other.__context__ is None
    assert alternative.calls == []
    assert seen == []


def test_on_tuple(run: Callable[..., Any]) -> None:
    fb = Fallback(value="v", on=(KeyError, Boom))
    assert run(fb, Recorder(KeyError("k"))) == "v"
    assert run(fb, Recorder(Boom())) == "v"
    with pytest.raises(Other):
        run(fb, Recorder(Other()))


def test_on_subclass_matches(run: Callable[..., Any]) -> None:
    assert run(Fallback(value="v", on=OSError), Recorder(ConnectionResetError())) == "v"


def test_on_predicate(run: Callable[..., Any]) -> None:
    fb = Fallback(value="cached", on=is_transient)
    assert run(fb, Recorder(ConnectionResetError())) == "cached"
    with pytest.raises(ValueError, match="permanent"):
        run(fb, Recorder(ValueError("permanent")))


def test_on_applies_to_the_alternatives(run: Callable[..., Any]) -> None:
    after = Recorder("after")
    alternative_error = Other("alternative broke")
    fb = Fallback(Recorder(alternative_error), after, value="v", on=Boom)
    with pytest.raises(Other) as info:
        run(fb, Recorder(Boom()))
    assert info.value is alternative_error
    assert after.calls == []


def test_base_exceptions_propagate(run: Callable[..., Any]) -> None:
    alternative = Recorder("alt")
    fb = Fallback(alternative, value="v")
    with pytest.raises(KeyboardInterrupt):
        run(fb, Recorder(KeyboardInterrupt()))
    with pytest.raises(SystemExit):
        run(Fallback(Recorder(SystemExit(3)), value="v"), Recorder(Boom()))
    assert alternative.calls == []


def test_on_result_falls_back_on_a_result(run: Callable[..., Any], seen: list[Event]) -> None:
    alternative = Recorder("fresh")
    fb = Fallback(alternative, on_result=lambda r: r is None, name="nil")
    assert run(fb, Recorder(None), 3) == "fresh"
    assert alternative.calls == [((3,), {})]
    (event,) = seen
    assert isinstance(event, FallbackUsed)
    assert isinstance(event.error, UnacceptableResult)
    assert event.error.result is None
    assert event.error.name == "nil"


def test_on_result_checks_the_alternatives_but_not_the_value(run: Callable[..., Any]) -> None:
    second = Recorder(None)
    fb = Fallback(Recorder(None), second, value=None, on_result=lambda r: r is None)
    assert run(fb, Recorder(None)) is None
    assert len(second.calls) == 1


def test_on_result_accepts_a_good_result(run: Callable[..., Any]) -> None:
    alternative = Recorder(0)
    fb = Fallback(alternative, on_result=lambda r: r < 0)
    assert run(fb, Recorder(5)) == 5
    assert run(fb, Recorder(-5)) == 0
    assert len(alternative.calls) == 1


def test_rejected_last_result_raises_unacceptable_result(run: Callable[..., Any]) -> None:
    fb = Fallback(Recorder(-2), on_result=lambda r: r < 0, name="neg")
    with pytest.raises(UnacceptableResult) as info:
        run(fb, Recorder(-1))
    assert info.value.result == -2
    assert info.value.name == "neg"
    assert str(info.value) == "fallback 'neg': result -2 rejected by on_result"
    previous = info.value.__context__
    assert isinstance(previous, UnacceptableResult)
    assert previous.result == -1


def test_error_then_rejected_result_then_error_chain(run: Callable[..., Any]) -> None:
    primary, last = Boom("primary"), Boom("last")
    fb = Fallback(Recorder(None), Recorder(last), on_result=lambda r: r is None)
    with pytest.raises(Boom) as info:
        run(fb, Recorder(primary))
    assert info.value is last
    middle = last.__context__
    assert isinstance(middle, UnacceptableResult)
    assert middle.__context__ is primary


def test_on_result_not_consulted_for_errors(run: Callable[..., Any]) -> None:
    checked: list[Any] = []

    def on_result(result: Any) -> bool:
        checked.append(result)
        return False

    assert run(Fallback(Recorder("alt"), on_result=on_result), Recorder(Boom())) == "alt"
    assert checked == ["alt"]


def test_handler_sees_the_error_it_answers_for(run: Callable[..., Any]) -> None:
    received: list[tuple[Exception, tuple[Any, ...], dict[str, Any]]] = []

    def handle(error: Exception, *args: Any, **kwargs: Any) -> str:
        received.append((error, args, kwargs))
        return f"handled {error}"

    primary, first = Boom("primary"), Boom("first")
    fb = Fallback(Fallback.handler(handle), value="unused")
    assert run(fb, Recorder(primary), 1, k=2) == "handled primary"
    assert received == [(primary, (1,), {"k": 2})]

    received.clear()
    fb = Fallback(Recorder(first), Fallback.handler(handle))
    assert run(fb, Recorder(primary), 9) == "handled first"
    assert received == [(first, (9,), {})]


def test_handler_of_a_rejected_result(run: Callable[..., Any]) -> None:
    fb = Fallback(
        Fallback.handler(lambda error, *_: ("was", error.result)),
        on_result=lambda r: r == "stale",
    )
    assert run(fb, Recorder("stale")) == ("was", "stale")


def test_error_handler_object() -> None:
    def fn(error: Exception, x: int) -> str:
        return f"{error}:{x}"

    handler = Fallback.handler(fn)
    assert isinstance(handler, ErrorHandler)
    assert handler.fn is fn
    assert handler(Boom("b"), 3) == "b:3"
    assert repr(handler).startswith("Fallback.handler(<function")


@pytest.mark.parametrize("mode", ["call", "dunder-call", "pipeline-call"])
def test_sync_call_with_an_async_alternative_is_refused(mode: str) -> None:
    first = Boom("first")
    fb = Fallback(Recorder(first), AsyncRecorder("never"))
    with pytest.raises(TypeError, match="alternative 1 is async") as info:
        SYNC_MODES[mode](fb, Recorder(Boom()), (1,), {})
    assert info.value.__context__ is first
    # No coroutine was created: an un-awaited one would fail the test (warnings are errors).


def test_decorating_a_sync_function_with_an_async_alternative_fails_at_once() -> None:
    async def replica() -> str:
        return "never"

    fb = Fallback(len, Fallback.handler(replica))
    with pytest.raises(ConfigError, match="async alternative") as info:
        fb(lambda: "sync")
    assert info.value.path == "alternatives[1]"
    assert inspect.iscoroutinefunction(fb(replica))  # an async function is fine


@pytest.mark.parametrize("extra", [(), (Retry(1),)], ids=["alone", "outermost of two"])
def test_decorating_through_a_pipeline_with_an_async_alternative_fails_at_once(
    extra: tuple[Any, ...],
) -> None:
    fb = Fallback(Recorder(Boom("first")), AsyncRecorder("never"))
    with pytest.raises(ConfigError, match="async alternative") as info:
        Pipeline(fb, *extra)(lambda: "sync")
    assert info.value.path == "alternatives[1]"


def test_sync_call_with_an_async_handler_is_refused() -> None:
    async def handle(error: Exception) -> str:
        return "never"

    with pytest.raises(TypeError, match="alternative 0 is async"):
        Fallback(Fallback.handler(handle)).call(Recorder(Boom()))


def test_decorated_method_passes_self() -> None:
    seen_self: list[Any] = []

    def from_cache(self: Service, key: str) -> str:
        seen_self.append(self)
        return f"cached {key}"

    class Service:
        @Fallback(from_cache)
        def get(self, key: str) -> str:
            raise Boom(key)

    service = Service()
    assert service.get("k") == "cached k"
    assert seen_self == [service]


def test_decorating_keeps_the_signature() -> None:
    def fetch(user_id: int) -> str:
        """Fetch a user."""
        return str(user_id)

    wrapped = Fallback(value="")(fetch)
    assert wrapped.__name__ == "fetch"
    assert wrapped.__doc__ == "Fetch a user."
    assert wrapped.__wrapped__ is fetch  # type: ignore[attr-defined]


def test_decorated_happy_path_adds_one_frame() -> None:
    def primary() -> None:
        raise Other("through")

    wrapped = Fallback(value=0, on=Boom)(primary)
    with pytest.raises(Other) as info:
        wrapped()
    names = [frame.name for frame in traceback.extract_tb(info.value.__traceback__)]
    assert names == ["test_decorated_happy_path_adds_one_frame", "fallback", "primary"]


def test_no_event_object_without_listeners(monkeypatch: pytest.MonkeyPatch) -> None:
    def forbidden(*_: Any, **__: Any) -> None:
        raise AssertionError("an event was built with nobody listening")

    monkeypatch.setattr(fallback_events, "FallbackUsed", forbidden)
    fb = Fallback(Recorder(Boom()), value="v")
    assert fb.call(Recorder(Boom())) == "v"
    fb.subscribe(lambda event: None)  # the replacement is the one used: now it is built
    with pytest.raises(AssertionError, match="nobody listening"):
        fb.call(Recorder(Boom()))


def test_per_policy_listener_and_event_shape() -> None:
    fb = Fallback(value="v", name="solo")
    got: list[Event] = []
    unsubscribe = fb.subscribe(got.append, FallbackUsed)
    error = Boom()
    primary = Recorder(error)
    assert fb.call(primary) == "v"
    unsubscribe()
    assert got == [FallbackUsed("solo", 0, error, call=call_name(primary))]
    assert got[0].call == "tests.unit.policies.test_fallback.Recorder"
    assert fb.call(Recorder(Boom())) == "v"
    assert len(got) == 1
    with pytest.raises(AttributeError):
        got[0].alternative_index = 3  # type: ignore[misc]


def test_unacceptable_result_pickles() -> None:
    error = pickle.loads(pickle.dumps(UnacceptableResult("p", [1, 2])))
    assert (error.name, error.result) == ("p", [1, 2])
    assert str(error) == "fallback 'p': result [1, 2] rejected by on_result"
    assert not is_transient(error)


# ------------------------------------------------------------------------ inside pipelines


class Failing(Strategy):
    """A strategy that fails the call without running it."""

    __slots__ = ("calls",)

    def __init__(self) -> None:
        self.calls = 0
        self._init_strategy(None, "failing")
        self._build()

    def _sync_runner(self, inner: SyncRunner) -> SyncRunner:
        def run(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
            self.calls += 1
            raise Boom("refused")

        return run

    def _async_runner(self, inner: AsyncRunner) -> AsyncRunner:
        async def run(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
            self.calls += 1
            raise Boom("refused")

        return run


def test_fallback_answers_for_the_strategies_inside_it() -> None:
    failing = Failing()
    pipeline = Pipeline(Fallback(lambda x: x * 2), failing)
    primary = Recorder("never")
    assert pipeline.call(primary, 21) == 42
    assert pipeline(primary)(4) == 8
    assert primary.calls == []
    assert failing.calls == 2


async def test_fallback_answers_for_async_strategies_inside_it() -> None:
    pipeline = Pipeline(Fallback(lambda x: x * 2), Failing())
    assert await pipeline.acall(AsyncRecorder("never"), 21) == 42


def test_fallback_inside_a_failing_strategy_is_not_reached() -> None:
    alternative = Recorder("alt")
    pipeline = Pipeline(Failing(), Fallback(alternative))
    with pytest.raises(Boom):
        pipeline.call(Recorder("x"))
    assert alternative.calls == []


# ------------------------------------------------------------------------ async behaviour


async def test_async_happy_path(arun: Callable[..., Awaitable[Any]], seen: list[Event]) -> None:
    alternative = AsyncRecorder("alt")
    primary = AsyncRecorder("primary")
    assert await arun(Fallback(alternative, value="v"), primary, 1, k=2) == "primary"
    assert primary.calls == [((1,), {"k": 2})]
    assert alternative.calls == []
    assert seen == []


async def test_async_alternatives_may_be_sync_or_async(
    arun: Callable[..., Awaitable[Any]], seen: list[Event]
) -> None:
    sync_alt, async_alt = Recorder(Boom("sync")), AsyncRecorder("async answer")
    fb = Fallback(sync_alt, async_alt, value="v")
    assert await arun(fb, AsyncRecorder(Boom("primary")), 5) == "async answer"
    assert sync_alt.calls == [((5,), {})]
    assert async_alt.calls == [((5,), {})]
    assert [e.alternative_index for e in seen] == [0, 1]  # type: ignore[attr-defined]


async def test_async_sync_alternative_answers(arun: Callable[..., Awaitable[Any]]) -> None:
    assert await arun(Fallback(lambda x: x + 1), AsyncRecorder(Boom()), 1) == 2


async def test_async_value_and_chain(arun: Callable[..., Awaitable[Any]]) -> None:
    fb = Fallback(AsyncRecorder(Boom()), Recorder(Boom()), value=None)
    assert await arun(fb, AsyncRecorder(Boom())) is None


async def test_async_last_error_chained(arun: Callable[..., Awaitable[Any]]) -> None:
    primary, first, last = Boom("primary"), Boom("first"), KeyError("last")
    fb = Fallback(AsyncRecorder(first), Recorder(last))
    with pytest.raises(KeyError) as info:
        await arun(fb, AsyncRecorder(primary))
    assert info.value is last
    assert last.__context__ is first
    assert first.__context__ is primary


async def test_async_on_lets_other_errors_through(arun: Callable[..., Awaitable[Any]]) -> None:
    alternative = AsyncRecorder("alt")
    with pytest.raises(Other):
        await arun(Fallback(alternative, on=Boom), AsyncRecorder(Other()))
    assert alternative.calls == []


async def test_async_on_result(arun: Callable[..., Awaitable[Any]]) -> None:
    fb = Fallback(AsyncRecorder(None), Recorder("sync ok"), on_result=lambda r: r is None)
    assert await arun(fb, AsyncRecorder(None)) == "sync ok"
    fb = Fallback(AsyncRecorder(None), on_result=lambda r: r is None)
    with pytest.raises(UnacceptableResult) as info:
        await arun(fb, AsyncRecorder(None))
    assert isinstance(info.value.__context__, UnacceptableResult)


async def test_async_handler(arun: Callable[..., Awaitable[Any]]) -> None:
    async def handle(error: Exception, x: int) -> str:
        return f"{error}/{x}"

    fb = Fallback(Fallback.handler(handle))
    assert await arun(fb, AsyncRecorder(Boom("b")), 4) == "b/4"
    fb = Fallback(Fallback.handler(lambda error, x: f"sync {error}/{x}"))
    assert await arun(fb, AsyncRecorder(Boom("c")), 5) == "sync c/5"


async def test_async_cancellation_propagates(arun: Callable[..., Awaitable[Any]]) -> None:
    alternative = AsyncRecorder("alt")
    fb = Fallback(alternative, value="v")
    with pytest.raises(asyncio.CancelledError):
        await arun(fb, AsyncRecorder(asyncio.CancelledError()))
    assert alternative.calls == []
    with pytest.raises(asyncio.CancelledError):
        await arun(
            Fallback(AsyncRecorder(asyncio.CancelledError()), value="v"), AsyncRecorder(Boom())
        )


async def test_async_task_cancelled_while_in_an_alternative() -> None:
    started = asyncio.Event()
    after = Recorder("never")

    async def slow(*_: Any) -> str:
        started.set()
        await asyncio.Event().wait()
        return "never"

    fb = Fallback(slow, after, value="v")
    task = asyncio.ensure_future(fb.acall(AsyncRecorder(Boom())))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert after.calls == []


async def test_async_decorated_keeps_coroutine_function() -> None:
    async def fetch(x: int) -> int:
        return x

    wrapped = Fallback(value=0)(fetch)
    assert asyncio.iscoroutinefunction(wrapped)
    assert wrapped.__wrapped__ is fetch  # type: ignore[attr-defined]
    assert await wrapped(3) == 3


async def test_async_decorated_method() -> None:
    class Service:
        async def cached(self, key: str) -> str:
            return f"cached {key}"

        @Fallback(Fallback.handler(lambda error, self, key: self.cached(key)))
        async def get(self, key: str) -> str:
            raise Boom(key)

    assert await Service().get("k") == "cached k"


# ------------------------------------------------------------------- the one outcome model


@dataclasses.dataclass
class Response:
    """A returned HTTP response (a class annotating ``status_code`` is one)."""

    status_code: int


class HTTPError(Exception):
    """An error carrying an HTTP status, as clients raise them."""

    def __init__(self, status_code: int) -> None:
        super().__init__(status_code)
        self.status_code = status_code


DEPENDENCY_FAILURES = [
    ConnectionResetError("reset"),
    TimeoutError("slow"),
    OSError(errno.ECONNREFUSED, "refused"),
    HTTPError(503),
    HTTPError(429),
    TimeoutExceeded("t", 1.0),
    CircuitOpen("breaker", 10.0, 5.0),
    BulkheadFull("bulkhead"),
    RateLimited("limiter", 1.0),
    RetryExhausted("retry", 3, last_error=ConnectionResetError()),
]
NOT_FAILURES = [
    AttributeError("bug"),
    TypeError("bug"),
    NameError("bug"),
    AssertionError("bug"),
    NotImplementedError("bug"),
    ConfigError("bad", path="x"),
    ValueError("permanent"),
    KeyError("permanent"),
    HTTPError(404),
    HTTPError(501),
]


@pytest.mark.parametrize("error", DEPENDENCY_FAILURES, ids=repr)
def test_default_answers_dependency_failures_and_rejections(
    run: Callable[..., Any], error: Exception
) -> None:
    assert run(Fallback(value="v"), Recorder(error)) == "v"


@pytest.mark.parametrize("error", DEPENDENCY_FAILURES, ids=repr)
async def test_default_answers_dependency_failures_and_rejections_async(
    arun: Callable[..., Awaitable[Any]], error: Exception
) -> None:
    assert await arun(Fallback(value="v"), AsyncRecorder(error)) == "v"


@pytest.mark.parametrize("error", NOT_FAILURES, ids=repr)
def test_default_lets_bugs_and_answers_propagate(
    run: Callable[..., Any], error: Exception, seen: list[Event]
) -> None:
    alternative = Recorder("alt")
    with pytest.raises(type(error)) as info:
        run(Fallback(alternative, value="v"), Recorder(error))
    assert info.value is error
    assert alternative.calls == []
    assert seen == []


@pytest.mark.parametrize("error", NOT_FAILURES, ids=repr)
async def test_default_lets_bugs_and_answers_propagate_async(
    arun: Callable[..., Awaitable[Any]], error: Exception
) -> None:
    alternative = AsyncRecorder("alt")
    with pytest.raises(type(error)) as info:
        await arun(Fallback(alternative, value="v"), AsyncRecorder(error))
    assert info.value is error
    assert alternative.calls == []


def test_a_bug_in_an_alternative_propagates_at_once(run: Callable[..., Any]) -> None:
    after = Recorder("after")
    bug = AttributeError("'NoneType' object has no attribute 'get'")
    with pytest.raises(AttributeError) as info:
        run(Fallback(Recorder(bug), after, value="v"), Recorder(ConnectionResetError()))
    assert info.value is bug
    assert isinstance(bug.__context__, ConnectionResetError)
    assert after.calls == []


def test_a_programming_error_is_answered_only_when_named(run: Callable[..., Any]) -> None:
    # Exception names no programming error: a bug still propagates.
    with pytest.raises(AttributeError):
        run(Fallback(value="v", on=Exception), Recorder(AttributeError()))
    assert run(Fallback(value="v", on=(Exception, AttributeError)), Recorder(AttributeError())) == (
        "v"
    )
    assert run(Fallback(value="v", on=LookupError), Recorder(KeyError())) == "v"
    # A predicate never sees a programming error.
    asked: list[Exception] = []
    with pytest.raises(TypeError):
        run(Fallback(value="v", on=lambda e: asked.append(e) or True), Recorder(TypeError()))
    assert asked == []


@pytest.mark.parametrize("status", [500, 502, 503, 504, 408, 425, 429])
def test_a_returned_transient_response_falls_back(
    run: Callable[..., Any], status: int, seen: list[Event]
) -> None:
    response = Response(status)
    assert run(Fallback(value="cached"), Recorder(response)) == "cached"
    (event,) = seen
    assert isinstance(event, FallbackUsed)
    assert isinstance(event.error, UnacceptableResult)
    assert event.error.result is response


@pytest.mark.parametrize("status", [200, 201, 204, 301, 400, 401, 403, 404, 409, 422, 501, 505])
def test_a_returned_answer_is_kept(run: Callable[..., Any], status: int) -> None:
    alternative = Recorder("alt")
    response = Response(status)
    assert run(Fallback(alternative, value="cached"), Recorder(response)) is response
    assert alternative.calls == []


async def test_a_returned_transient_response_falls_back_async(
    arun: Callable[..., Awaitable[Any]],
) -> None:
    fb = Fallback(AsyncRecorder(Response(502)), Recorder(Response(200)))
    assert await arun(fb, AsyncRecorder(Response(503))) == Response(200)
    assert await arun(Fallback(value="v"), AsyncRecorder(Response(404))) == Response(404)
    with pytest.raises(UnacceptableResult) as info:
        await arun(Fallback(AsyncRecorder(Response(504))), AsyncRecorder(Response(503)))
    assert info.value.result == Response(504)
    assert isinstance(info.value.__context__, UnacceptableResult)


@pytest.mark.parametrize(("status", "falls_back"), [(503, True), (429, True), (404, False)])
def test_httpx_responses_returned_or_raised(
    run: Callable[..., Any], status: int, falls_back: bool
) -> None:
    httpx = pytest.importorskip("httpx")
    response = httpx.Response(status, request=httpx.Request("GET", "https://example.test/"))

    def returned() -> Any:
        return response

    def raised() -> Any:
        response.raise_for_status()

    fb = Fallback(value="cached")
    if falls_back:
        assert run(fb, returned) == "cached"
        assert run(fb, raised) == "cached"
    else:
        assert run(fb, returned) is response
        with pytest.raises(httpx.HTTPStatusError):
            run(fb, raised)


def test_alternatives_are_judged_by_the_default_result_rule(run: Callable[..., Any]) -> None:
    second = Recorder("second")
    fb = Fallback(Recorder(Response(503)), second)
    assert run(fb, Recorder(ConnectionResetError())) == "second"
    with pytest.raises(UnacceptableResult) as info:
        run(Fallback(Recorder(Response(503))), Recorder(Response(500)))
    assert info.value.result == Response(503)


def test_on_result_replaces_the_rule_for_results(run: Callable[..., Any]) -> None:
    fb = Fallback(value="v", on_result=lambda r: r is None)
    assert run(fb, Recorder(Response(503))) == Response(503)
    assert run(fb, Recorder(None)) == "v"
    # ... and leaves the rule for errors at its default.
    assert run(fb, Recorder(ConnectionResetError())) == "v"
    with pytest.raises(ValueError, match="x"):
        run(fb, Recorder(ValueError("x")))


def test_on_replaces_the_rule_for_errors_only(run: Callable[..., Any]) -> None:
    fb = Fallback(value="v", on=KeyError)
    assert run(fb, Recorder(KeyError())) == "v"
    with pytest.raises(ConnectionResetError):
        run(fb, Recorder(ConnectionResetError()))
    assert run(fb, Recorder(Response(503))) == "v"  # results keep the default rule


def test_on_accepts_a_matcher(run: Callable[..., Any]) -> None:
    # The default rule plus a cache miss; a result predicate of its own.
    matcher = Matcher() | Matcher(KeyError, results=lambda r: r == "")
    fb = Fallback(value="v", on=matcher)
    assert run(fb, Recorder(KeyError())) == "v"
    assert run(fb, Recorder(ConnectionResetError())) == "v"
    assert run(fb, Recorder("")) == "v"
    assert run(fb, Recorder(Response(503))) == "v"
    with pytest.raises(ValueError, match="no"):
        run(fb, Recorder(ValueError("no")))
    only_errors = Fallback(value="v", on=Matcher(KeyError), on_result=lambda r: r is None)
    assert run(only_errors, Recorder(None)) == "v"
    assert run(only_errors, Recorder("")) == ""


def test_nothing_is_a_failure_with_never(run: Callable[..., Any]) -> None:
    fb = Fallback(value="v", on=NEVER)
    assert run(fb, Recorder(Response(503))) == Response(503)
    with pytest.raises(ConnectionResetError):
        run(fb, Recorder(ConnectionResetError()))


def test_answers_for_the_rejections_of_real_policies() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(consecutive_failures=2, clock=clock)
    calls = Recorder(ConnectionResetError())
    pipeline = Pipeline(Fallback(value="cached"), breaker)
    assert [pipeline.call(calls) for _ in range(4)] == ["cached"] * 4
    assert len(calls.calls) == 2  # then the open circuit answered, and was answered for

    exhausted = Pipeline(Fallback(value="cached"), Retry(3, delay=0, clock=clock))
    flaky = Recorder(ConnectionResetError())
    assert exhausted.call(flaky) == "cached"
    assert len(flaky.calls) == 3

    full = Bulkhead(1, max_queue=0)
    limited = Pipeline(Fallback(value="cached"), full)
    assert limited.call(lambda: limited.call(lambda: "inner")) == "cached"


async def test_answers_for_the_rejections_of_real_policies_async() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(consecutive_failures=1, clock=clock)
    pipeline = Pipeline(Fallback(value="cached"), breaker)
    down = AsyncRecorder(ConnectionResetError())
    assert await pipeline.acall(down) == "cached"
    assert await pipeline.acall(down) == "cached"
    assert len(down.calls) == 1

    gate = asyncio.Event()

    async def busy() -> str:
        await gate.wait()
        return "busy"

    limited = Pipeline(Fallback(value="cached"), Bulkhead(1, max_queue=0))
    first = asyncio.ensure_future(limited.acall(busy))
    await tick()
    assert await limited.acall(busy) == "cached"
    gate.set()
    assert await first == "busy"


async def _hang_in(run: Callable[[Callable[[], Awaitable[str]]], Awaitable[Any]]) -> Any:
    """Start ``run(hang)`` as a task; return it once the call hangs."""
    started = asyncio.Event()

    async def hang() -> str:
        started.set()
        await asyncio.Event().wait()
        return "never"

    task = asyncio.ensure_future(run(hang))
    await started.wait()
    return task


def test_a_sync_timeout_inside_is_answered_for() -> None:
    clock = FakeClock()
    pipeline = Pipeline(Fallback(value="cached"), Timeout(1.0, clock=clock))

    def late() -> str:
        clock.advance(2.0)  # returns after its deadline: the timeout raises
        return "late"

    assert pipeline.call(late) == "cached"
    # Inside the timeout, the fallback saw a success; the timeout raised after it.
    inside = Pipeline(Timeout(1.0, clock=clock), Fallback(value="cached"))
    with pytest.raises(TimeoutExceeded):
        inside.call(late)


async def test_a_timeout_inside_is_answered_for() -> None:
    clock = FakeClock(auto_advance=False)
    alternative = Recorder("cached")
    pipeline = Pipeline(Fallback(alternative), Timeout(1.0, clock=clock))
    task = await _hang_in(pipeline.acall)
    clock.advance(1.0)
    assert await task == "cached"
    assert len(alternative.calls) == 1


async def test_a_cancellation_is_never_answered_even_by_a_timeout() -> None:
    clock = FakeClock(auto_advance=False)
    alternative = Recorder("never")
    # The fallback is inside the timeout: the timeout's cancellation passes through it.
    pipeline = Pipeline(Timeout(1.0, clock=clock), Fallback(alternative, value="v"))
    task = await _hang_in(pipeline.acall)
    clock.advance(1.0)
    with pytest.raises(TimeoutExceeded):
        await task
    # And a cancellation by the caller, too.
    task = await _hang_in(Fallback(alternative, value="v").acall)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert alternative.calls == []


async def test_cancelled_alternative_is_not_answered_for() -> None:
    after = Recorder("never")
    fb = Fallback(AsyncRecorder(asyncio.CancelledError()), after, value="v", on=Exception)
    with pytest.raises(asyncio.CancelledError):
        await fb.acall(AsyncRecorder(ConnectionResetError()))
    assert after.calls == []


@pytest.mark.parametrize(
    ("on", "on_result", "path"),
    [
        ("ConnectionError", None, "on"),
        ((ConnectionError, 3), None, "on"),
        (asyncio.CancelledError, None, "on"),
        (None, "not a predicate", "on_result"),
        (None, 503, "on_result"),
    ],
)
def test_bad_matchers_name_the_option(on: Any, on_result: Any, path: str) -> None:
    with pytest.raises(ConfigError) as info:
        Fallback(value=1, on=on, on_result=on_result)
    assert info.value.path == path


# ------------------------------------------------------------------------------- options


def test_options_are_kept_frozen_and_validated() -> None:
    def cache(key: str) -> str:
        return key

    fb = Fallback(cache, value=0, on=KeyError, name="opts")
    assert Fallback.Options is FallbackOptions
    assert isinstance(fb.options, FallbackOptions)
    assert fb.options.alternatives == (cache,)
    assert (fb.options.value, fb.options.on, fb.options.on_result) == (0, KeyError, None)
    assert fb.alternatives == (cache,)
    with pytest.raises(dataclasses.FrozenInstanceError):
        fb.options.value = 1  # type: ignore[misc]
    assert repr(FallbackOptions().value) == "<unset>"


def test_options_check_every_field() -> None:
    with pytest.raises(ConfigError) as info:
        FallbackOptions(alternatives=(len, "cache"))  # type: ignore[arg-type]
    assert info.value.path == "alternatives[1]"
    with pytest.raises(ConfigError) as info:
        FallbackOptions(alternatives=len)  # type: ignore[arg-type]
    assert info.value.path == "alternatives"
    with pytest.raises(ConfigError) as info:
        FallbackOptions(on="KeyError")  # type: ignore[arg-type]
    assert info.value.path == "on"
    with pytest.raises(ConfigError) as info:
        FallbackOptions(value=1).replace(on_result=1)
    assert info.value.path == "on_result"
    assert FallbackOptions(alternatives=[len]).alternatives == (len,)  # type: ignore[arg-type]


def test_from_options() -> None:
    options = FallbackOptions(value="v", on=KeyError)
    fb = Fallback.from_options(options, name="from-options")
    assert fb.options is options
    assert fb.name == "from-options"
    assert fb.call(Recorder(KeyError())) == "v"
    with pytest.raises(ConnectionResetError):
        fb.call(Recorder(ConnectionResetError()))
    assert Fallback.from_options(FallbackOptions(value=0)).name.startswith("fallback-")
    with pytest.raises(ConfigError, match="alternative or a value") as info:
        Fallback.from_options(FallbackOptions(on=KeyError))
    assert info.value.path == "alternatives"
    with pytest.raises(ConfigError) as info:
        Fallback.from_options({"value": 1})  # type: ignore[arg-type]
    assert info.value.path == "options"


def test_options_from_a_configuration_table() -> None:
    options = FallbackOptions.from_mapping(
        {"on": ["ConnectionError", "CircuitOpen", "builtins.KeyError"]}, path="policies.rates"
    )
    assert options.on == (ConnectionError, CircuitOpen, KeyError)
    fb = Fallback.from_options(options.replace(value=1.0), name="rates")
    assert fb.call(Recorder(CircuitOpen("b", 1.0, 1.0))) == 1.0
    assert fb.call(Recorder(KeyError())) == 1.0
    with pytest.raises(TimeoutError):
        fb.call(Recorder(TimeoutError()))
    assert FallbackOptions.toml_keys() == ("value", "on")
    constant = FallbackOptions.from_mapping({"value": {"rate": 1.5}}, path="policies.rates")
    assert Fallback.from_options(constant).call(Recorder(TimeoutError())) == {"rate": 1.5}
    for code_only in ("alternatives", "on_result"):
        with pytest.raises(ConfigError, match="unknown option; valid keys: value, on") as info:
            FallbackOptions.from_mapping({code_only: 1}, path="policies.rates")
        assert info.value.path == f"policies.rates.{code_only}"
    with pytest.raises(ConfigError, match="give at least one alternative or a value") as info:
        Fallback.from_options(FallbackOptions.from_mapping({}, path="policies.rates"))
    assert info.value.path == "alternatives"
    with pytest.raises(ConfigError) as info:
        FallbackOptions.from_mapping({"on": "KeyboardInterrupt"}, path="policies.rates")
    assert info.value.path == "policies.rates.on"
    for field in FallbackOptions.fields():
        assert field.metadata["doc"]


# ------------------------------------------------------------------------- event call names


def _named_primary() -> str:
    raise ConnectionResetError


async def _anamed_primary() -> str:
    raise ConnectionResetError


def test_events_name_the_protected_call(run: Callable[..., Any]) -> None:
    got: list[FallbackUsed] = []
    fb = Fallback(Recorder(ConnectionResetError()), value="v")
    fb.subscribe(got.append)
    assert run(fb, _named_primary) == "v"
    assert [event.call for event in got] == [call_name(_named_primary)] * 2
    assert got[0].call == "tests.unit.policies.test_fallback._named_primary"


async def test_events_name_the_protected_call_async(
    arun: Callable[..., Awaitable[Any]],
) -> None:
    got: list[FallbackUsed] = []
    fb = Fallback(AsyncRecorder(ConnectionResetError()), value="v")
    fb.subscribe(got.append)
    assert await arun(fb, _anamed_primary) == "v"
    assert [event.call for event in got] == [
        "tests.unit.policies.test_fallback._anamed_primary"
    ] * 2


# ---------------------------------------------------------------------- generated drivers


def test_drivers_are_generated_from_one_template() -> None:
    fb = Fallback(value=0)

    def sync() -> int:
        return 1

    async def asynchronous() -> int:
        return 1

    made = [
        fb._sync,
        fb._async,
        fb._sync_runner(lambda fn, args, kwargs: fn()),
        fb._async_runner(lambda fn, args, kwargs: fn()),
        fb(sync),
        fb(asynchronous),
    ]
    files = {driver.__code__.co_filename for driver in made}
    assert len(files) == 6
    assert all(name.startswith("<buttress fallback ") for name in files)


@pytest.mark.parametrize("mode", list(SYNC_MODES))
def test_a_sync_alternative_returning_a_coroutine_is_refused(mode: str) -> None:
    async def replica(x: int) -> str:
        return "never"

    def looks_sync(x: int) -> Any:
        return replica(x)

    fb = Fallback(looks_sync)
    with pytest.raises(TypeError, match="alternative 0 is async"):
        SYNC_MODES[mode](fb, Recorder(ConnectionResetError()), (1,), {})
    # The coroutine was closed: an un-awaited one would fail the test (warnings are errors).


def test_sync_call_of_an_async_function_is_refused_not_answered() -> None:
    async def primary() -> str:
        return "never"

    fb = Fallback(value="v", on=(Exception, TypeError))
    with pytest.raises(TypeError, match="acall"):
        fb.call(primary)
    with pytest.raises(TypeError, match="acall"):
        Pipeline(fb).call(primary)


# ----------------------------------------------------------------- model-based property

OUTCOMES = ("ok", "fail", "other", "reject")


def _outcome(kind: str, index: int) -> Any:
    return {
        "ok": f"ok{index}",
        "fail": Boom(f"fail{index}"),
        "other": Other(f"other{index}"),
        "reject": None,
    }[kind]


def _model(kinds: list[str], has_value: bool) -> tuple[str, str, int]:
    """What a fallback should do, written the obvious way: (kind, label, calls made)."""
    for index, kind in enumerate(kinds):
        if kind == "ok":
            return ("result", f"ok{index}", index + 1)
        if kind == "other":
            return ("raise", f"other{index}", index + 1)
    if has_value:
        return ("result", "value", len(kinds))
    last = len(kinds) - 1
    if kinds[last] == "fail":
        return ("raise", f"fail{last}", len(kinds))
    return ("unacceptable", "", len(kinds))


def _observe(attempt: Callable[[], Any]) -> tuple[str, str]:
    try:
        return ("result", attempt())
    except UnacceptableResult:
        return ("unacceptable", "")
    except (Boom, Other) as exc:
        return ("raise", str(exc))


chains = st.lists(st.sampled_from(OUTCOMES), min_size=1, max_size=5)


@given(kinds=chains, has_value=st.booleans())
def test_sync_matches_the_model(kinds: list[str], has_value: bool) -> None:
    recorders = [Recorder(_outcome(kind, i)) for i, kind in enumerate(kinds)]
    if len(kinds) == 1:
        has_value = True  # a fallback needs at least one answer
    options: dict[str, Any] = {"value": "value"} if has_value else {}
    fb = Fallback(*recorders[1:], on=Boom, on_result=lambda r: r is None, **options)
    kind, label, calls = _model(kinds, has_value)
    assert _observe(lambda: fb.call(recorders[0])) == (kind, label)
    assert sum(len(r.calls) for r in recorders) == calls
    assert [len(r.calls) for r in recorders] == [1] * calls + [0] * (len(kinds) - calls)


@given(kinds=chains, has_value=st.booleans(), asyncs=st.lists(st.booleans(), min_size=5))
def test_async_matches_the_model(kinds: list[str], has_value: bool, asyncs: list[bool]) -> None:
    recorders = [
        (AsyncRecorder if asyncs[i] or i == 0 else Recorder)(_outcome(kind, i))
        for i, kind in enumerate(kinds)
    ]
    if len(kinds) == 1:
        has_value = True  # a fallback needs at least one answer
    options: dict[str, Any] = {"value": "value"} if has_value else {}
    fb = Fallback(*recorders[1:], on=Boom, on_result=lambda r: r is None, **options)
    kind, label, calls = _model(kinds, has_value)

    async def attempt() -> tuple[str, str]:
        try:
            return ("result", await fb.acall(recorders[0]))
        except UnacceptableResult:
            return ("unacceptable", "")
        except (Boom, Other) as exc:
            return ("raise", str(exc))

    assert asyncio.run(attempt()) == (kind, label)
    assert [len(r.calls) for r in recorders] == [1] * calls + [0] * (len(kinds) - calls)

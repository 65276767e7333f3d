"""Pipelines: order, nesting, the call/acall/decorator surface, what decorating keeps."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pytest

from buttress import Bulkhead, CircuitBreaker, Fallback, FallbackUsed, Retry, Timeout
from buttress._strategy import AsyncRunner, Call, Policy, Strategy, SyncRunner
from buttress.clock import FakeClock
from buttress.errors import ConfigError
from buttress.events import CallRejected, Event, RetryScheduled, call_name, subscribe
from buttress.pipeline import Pipeline

R = TypeVar("R")


class Record(Strategy):
    """Logs ``label>`` on the way in and ``<label`` on the way out."""

    __slots__ = ("label", "log")

    def __init__(self, label: str, log: list[str]) -> None:
        self.label = label
        self.log = log
        self._init_strategy(None, "record")
        self._build()

    def _sync_runner(self, inner: SyncRunner) -> SyncRunner:
        label, log = self.label, self.log

        def run(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
            log.append(f"{label}>")
            try:
                return inner(fn, args, kwargs)
            finally:
                log.append(f"<{label}")

        return run

    def _async_runner(self, inner: AsyncRunner) -> AsyncRunner:
        label, log = self.label, self.log

        async def run(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
            log.append(f"{label}>")
            try:
                return await inner(fn, args, kwargs)
            finally:
                log.append(f"<{label}")

        return run


class Double(Strategy):
    """Doubles the result of everything inside it."""

    __slots__ = ()

    def __init__(self) -> None:
        self._init_strategy(None, "double")
        self._build()

    def _sync_runner(self, inner: SyncRunner) -> SyncRunner:
        def run(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
            return inner(fn, args, kwargs) * 2

        return run

    def _async_runner(self, inner: AsyncRunner) -> AsyncRunner:
        async def run(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
            return (await inner(fn, args, kwargs)) * 2

        return run


@pytest.fixture
def log() -> list[str]:
    return []


@pytest.fixture
def pipeline(log: list[str]) -> Pipeline:
    return Pipeline(Record("a", log), Record("b", log), Record("c", log))


AROUND = ["a>", "b>", "c>", "fn", "<c", "<b", "<a"]


def traced(log: list[str], result: Any = "result") -> Callable[..., Any]:
    def fn(*args: Any, **kwargs: Any) -> Any:
        log.append("fn")
        return (result, args, kwargs) if args or kwargs else result

    return fn


def atraced(log: list[str], result: Any = "result") -> Callable[..., Any]:
    async def fn(*args: Any, **kwargs: Any) -> Any:
        log.append("fn")
        return (result, args, kwargs) if args or kwargs else result

    return fn


# ------------------------------------------------------------------------------ ordering


def test_outermost_first(pipeline: Pipeline, log: list[str]) -> None:
    assert pipeline.call(traced(log)) == "result"
    assert log == AROUND


async def test_outermost_first_async(pipeline: Pipeline, log: list[str]) -> None:
    assert await pipeline.acall(atraced(log)) == "result"
    assert log == AROUND


def test_errors_unwind_through_every_strategy(pipeline: Pipeline, log: list[str]) -> None:
    def fail() -> None:
        log.append("fn")
        raise KeyError("boom")

    with pytest.raises(KeyError, match="boom"):
        pipeline.call(fail)
    assert log == AROUND


def test_order_matters() -> None:
    assert Pipeline(Double()).call(lambda: 3) == 6
    log: list[str] = []
    doubled_outside = Pipeline(Double(), Record("r", log))
    assert doubled_outside.call(lambda: "x") == "xx"
    assert log == ["r>", "<r"]


def test_nested_pipelines_flatten_in_order(log: list[str]) -> None:
    inner = Pipeline(Record("b", log), Record("c", log))
    outer = Pipeline(Record("a", log), inner, Record("d", log))
    assert outer.call(traced(log)) == "result"
    assert log == ["a>", "b>", "c>", "d>", "fn", "<d", "<c", "<b", "<a"]
    assert len(outer) == 3
    assert outer[1] is inner
    assert list(outer) == [outer[0], inner, outer[2]]


async def test_nested_pipelines_async(log: list[str]) -> None:
    outer = Pipeline(Pipeline(Record("a", log)), Pipeline(Pipeline(Record("b", log))))
    assert await outer.acall(atraced(log)) == "result"
    assert log == ["a>", "b>", "fn", "<b", "<a"]


def test_one_strategy_in_two_pipelines(log: list[str]) -> None:
    shared = Record("shared", log)
    first = Pipeline(Record("1", log), shared)
    second = Pipeline(shared, Record("2", log))
    first.call(lambda: None)
    second.call(lambda: None)
    assert log == ["1>", "shared>", "<shared", "<1", "shared>", "2>", "<2", "<shared"]


def test_an_empty_pipeline_is_a_configuration_error() -> None:
    # An empty pipeline protects nothing: almost surely a list that did not unpack.
    with pytest.raises(ConfigError, match="at least one policy") as info:
        Pipeline()
    assert info.value.path == "strategies"
    with pytest.raises(ConfigError, match="at least one policy"):
        Pipeline(*[], name="payments")


def test_names_and_repr(log: list[str]) -> None:
    first, second = Pipeline(Record("x", log)), Pipeline(Record("y", log))
    assert first.name.startswith("pipeline-")
    assert first.name != second.name
    named = Pipeline(Record("a", log), name="payments")
    assert named.name == "payments"
    assert repr(named) == f"Pipeline(Record(name={named[0].name!r}), name='payments')"


@pytest.mark.parametrize("bad", [None, "retry", lambda fn: fn, Record])
def test_non_strategies_are_refused(log: list[str], bad: object) -> None:
    with pytest.raises(ConfigError) as info:
        Pipeline(Record("a", log), bad)  # type: ignore[arg-type]
    assert info.value.path == "strategies[1]"
    assert str(info.value).startswith("strategies[1]: expected a policy or pipeline, got ")


# ----------------------------------------------------------------- call / acall / __call__


def test_call_passes_arguments(pipeline: Pipeline, log: list[str]) -> None:
    assert pipeline.call(traced(log), 1, 2, k=3) == ("result", (1, 2), {"k": 3})


async def test_acall_passes_arguments(pipeline: Pipeline, log: list[str]) -> None:
    assert await pipeline.acall(atraced(log), 1, k=3) == ("result", (1,), {"k": 3})


def test_dunder_call_with_only_a_function_decorates(pipeline: Pipeline, log: list[str]) -> None:
    fn = traced(log)
    wrapped = pipeline(fn)
    assert log == []  # nothing ran yet
    assert callable(wrapped)
    assert wrapped() == "result"
    assert log == AROUND


def test_dunder_call_with_arguments_calls(pipeline: Pipeline, log: list[str]) -> None:
    assert pipeline(traced(log), 1) == ("result", (1,), {})
    assert log == AROUND
    log.clear()
    assert pipeline(traced(log), k="v") == ("result", (), {"k": "v"})
    assert log == AROUND


async def test_dunder_call_with_an_async_function_returns_an_awaitable(
    pipeline: Pipeline, log: list[str]
) -> None:
    pending = pipeline(atraced(log), 5)
    assert inspect.isawaitable(pending)
    assert log == []  # not started until awaited
    assert await pending == ("result", (5,), {})
    assert log == AROUND


# ---------------------------------------------------------------------------- decorating


def test_decorates_a_function(pipeline: Pipeline, log: list[str]) -> None:
    @pipeline
    def add(x: int, y: int = 1) -> int:
        log.append("fn")
        return x + y

    assert add(2, y=3) == 5
    assert log == AROUND


def test_decorates_methods(log: list[str]) -> None:
    pipeline = Pipeline(Record("p", log))

    class Account:
        def __init__(self) -> None:
            self.balance = 10

        @pipeline
        def withdraw(self, amount: int) -> int:
            self.balance -= amount
            return self.balance

        @staticmethod
        @pipeline
        def static_below(x: int) -> int:
            return x * 2

        @pipeline
        @staticmethod
        def static_above(x: int) -> int:
            return x * 3

        @classmethod
        @pipeline
        def class_below(cls, x: int) -> tuple[str, int]:
            return (cls.__name__, x)

        @pipeline
        @classmethod
        def class_above(cls, x: int) -> tuple[str, int]:
            return (cls.__name__, x)

    account = Account()
    assert account.withdraw(3) == 7
    assert Account.withdraw(account, 2) == 5
    assert (account.static_below(2), Account.static_below(2)) == (4, 4)
    assert (account.static_above(2), Account.static_above(2)) == (6, 6)
    assert account.class_below(1) == Account.class_below(1) == ("Account", 1)
    assert account.class_above(1) == Account.class_above(1) == ("Account", 1)
    assert log == ["p>", "<p"] * 10


async def test_decorates_async_functions_and_methods(log: list[str]) -> None:
    pipeline = Pipeline(Record("p", log))

    @pipeline
    async def fetch(x: int) -> int:
        return x + 1

    class Client:
        @pipeline
        async def get(self, path: str) -> str:
            return f"GET {path}"

        @pipeline
        @staticmethod
        async def ping() -> str:
            return "pong"

    assert inspect.iscoroutinefunction(fetch)
    assert inspect.iscoroutinefunction(Client.get)
    assert await fetch(1) == 2
    assert await Client().get("/x") == "GET /x"
    assert await Client().ping() == "pong"
    assert log == ["p>", "<p"] * 3


async def test_decorates_a_partial_of_an_async_function(log: list[str]) -> None:
    pipeline = Pipeline(Record("p", log))

    async def scale(factor: int, x: int) -> int:
        return factor * x

    triple = pipeline(functools.partial(scale, 3))
    assert inspect.iscoroutinefunction(triple)
    assert await triple(4) == 12
    assert await pipeline(functools.partial(functools.partial(scale), 2), 5) == 10
    assert log == ["p>", "<p"] * 2


async def test_decorates_an_object_with_async_call(log: list[str]) -> None:
    pipeline = Pipeline(Record("p", log))

    class Handler:
        async def __call__(self, event: str) -> str:
            return f"handled {event}"

    handle = pipeline(Handler())
    assert inspect.iscoroutinefunction(handle)
    assert await handle("e") == "handled e"
    assert await pipeline.acall(Handler(), "f") == "handled f"
    assert log == ["p>", "<p"] * 2


def test_decorates_an_object_with_sync_call(log: list[str]) -> None:
    pipeline = Pipeline(Record("p", log))

    class Adder:
        def __call__(self, x: int) -> int:
            return x + 100

    assert pipeline(Adder())(1) == 101
    assert pipeline(Adder(), 2) == 102
    assert log == ["p>", "<p"] * 2


def test_decorating_preserves_the_signature(pipeline: Pipeline) -> None:
    def transfer(source: str, target: str, *, amount: int = 0) -> bool:
        """Move money."""
        return True

    wrapped = pipeline(transfer)
    assert wrapped.__name__ == "transfer"
    assert wrapped.__qualname__ == transfer.__qualname__
    assert wrapped.__doc__ == "Move money."
    assert wrapped.__module__ == transfer.__module__
    assert wrapped.__wrapped__ is transfer  # type: ignore[attr-defined]
    assert inspect.signature(wrapped) == inspect.signature(transfer)
    assert not inspect.iscoroutinefunction(wrapped)


async def test_decorating_preserves_an_async_signature(pipeline: Pipeline) -> None:
    async def load(key: str, default: int | None = None) -> int | None:
        return default

    wrapped = pipeline(load)
    assert wrapped.__name__ == "load"
    assert wrapped.__wrapped__ is load  # type: ignore[attr-defined]
    assert inspect.signature(wrapped) == inspect.signature(load)
    assert await wrapped("k", 4) == 4


def test_decorators_stack(log: list[str]) -> None:
    outer, inner = Pipeline(Record("outer", log)), Pipeline(Record("inner", log))

    @outer
    @inner
    def fn() -> str:
        log.append("fn")
        return "ok"

    assert fn() == "ok"
    assert log == ["outer>", "inner>", "fn", "<inner", "<outer"]
    assert fn.__name__ == "fn"


def test_calling_decides_sync_or_async_per_callable() -> None:
    import functools as _functools

    from buttress._strategy import is_async_callable

    async def coro() -> int:
        return 1

    def plain() -> int:
        return 1

    @_functools.wraps(coro)
    def wrapped_sync() -> int:
        return 1

    class Obj:
        async def __call__(self) -> int:
            return 1

    assert is_async_callable(coro) is True
    assert is_async_callable(plain) is False
    assert is_async_callable(wrapped_sync) is False
    assert is_async_callable(_functools.partial(coro)) is True
    assert is_async_callable(Obj()) is True
    assert is_async_callable(Obj().__call__) is True


# -------------------------------------------------------------------------------- events


def _down() -> None:
    raise ConnectionResetError("down")


async def _adown() -> None:
    raise ConnectionResetError("down")


def _policies() -> tuple[Fallback, Retry, CircuitBreaker]:
    clock = FakeClock()
    return (
        Fallback(value="cached", name="fb"),
        Retry(3, delay=0.0, name="retry", clock=clock),
        CircuitBreaker(consecutive_failures=2, name="breaker", clock=clock),
    )


def _kinds(events: list[Event]) -> list[tuple[str, str]]:
    return [(type(event).__name__, event.policy) for event in events]


# Two failures open the breaker; the retry does not retry its rejection, and gives up;
# the fallback answers for it.
EXPECTED = [
    ("RetryScheduled", "retry"),
    ("CircuitStateChanged", "breaker"),
    ("RetryScheduled", "retry"),
    ("CallRejected", "breaker"),
    ("RetryGaveUp", "retry"),
    ("FallbackUsed", "fb"),
]


def test_subscribe_receives_the_events_of_its_policies() -> None:
    fallback, retry, breaker = _policies()
    pipeline = Pipeline(fallback, retry, breaker)
    got: list[Event] = []
    unsubscribe = pipeline.subscribe(got.append)
    assert pipeline.call(_down) == "cached"
    assert _kinds(got) == EXPECTED
    assert all(event.call == call_name(_down) for event in got if event.call)
    unsubscribe()
    got.clear()
    assert pipeline.call(_down) == "cached"
    assert got == []


async def test_subscribe_receives_the_events_of_its_policies_async() -> None:
    fallback, retry, breaker = _policies()
    pipeline = Pipeline(fallback, retry, breaker)
    got: list[Event] = []
    unsubscribe = pipeline.subscribe(got.append)
    assert await pipeline.acall(_adown) == "cached"
    assert _kinds(got) == EXPECTED
    unsubscribe()
    got.clear()
    assert await pipeline.acall(_adown) == "cached"
    assert got == []


def test_subscribe_filters_by_type() -> None:
    pipeline = Pipeline(*_policies())
    got: list[Event] = []
    pipeline.subscribe(got.append, FallbackUsed, CallRejected)
    pipeline.call(_down)
    assert _kinds(got) == [("CallRejected", "breaker"), ("FallbackUsed", "fb")]


def test_subscribe_walks_nested_pipelines_and_counts_a_shared_policy_once() -> None:
    fallback, retry, breaker = _policies()
    pipeline = Pipeline(fallback, Pipeline(retry, Pipeline(breaker)), Pipeline(breaker))
    got: list[Event] = []
    unsubscribe = pipeline.subscribe(got.append)
    each: list[Event] = []  # what the policies emitted, heard from each of them once
    stops = [policy.subscribe(each.append) for policy in (fallback, retry, breaker)]
    assert pipeline.call(_down) == "cached"
    assert got == each
    assert len({id(event) for event in got}) == len(got)
    assert {"CircuitStateChanged", "CallRejected", "FallbackUsed"} <= {
        type(event).__name__ for event in got
    }
    unsubscribe()
    for stop in stops:
        stop()
    for policy in (fallback, retry, breaker):
        assert policy._events.enabled is False  # nothing left subscribed anywhere


def test_unsubscribe_leaves_other_listeners_alone() -> None:
    fallback, retry, breaker = _policies()
    pipeline = Pipeline(fallback, retry, breaker)
    own: list[Event] = []
    everywhere: list[Event] = []
    breaker.subscribe(own.append)
    stop_global = subscribe(everywhere.append, FallbackUsed)
    try:
        piped: list[Event] = []
        pipeline.subscribe(piped.append)()  # subscribed, then unsubscribed at once
        pipeline.call(_down)
        assert piped == []
        assert _kinds(own) == [("CircuitStateChanged", "breaker"), ("CallRejected", "breaker")]
        assert _kinds(everywhere) == [("FallbackUsed", "fb")]
    finally:
        stop_global()
    assert breaker._events.enabled is True


def test_subscribe_with_strategies_that_emit_nothing(log: list[str]) -> None:
    pipeline = Pipeline(Record("a", log), Pipeline(Record("b", log)))
    got: list[Event] = []
    unsubscribe = pipeline.subscribe(got.append)
    assert pipeline.call(lambda: 1) == 1
    unsubscribe()
    unsubscribe()  # twice is harmless
    assert got == []


class Announce(Policy):
    """A user's own policy, emitting an event of its own per call."""

    def execute(self, call: Call[R]) -> R:
        self.emit(Event(self.name, call=call.name))
        return call()

    async def aexecute(self, call: Call[Awaitable[R]]) -> R:
        self.emit(Event(self.name, call=call.name))
        return await call()


async def test_subscribe_hears_users_own_policies() -> None:
    pipeline = Pipeline(Pipeline(Announce(name="announce")), Fallback(value=0, name="fb"))
    got: list[Event] = []
    unsubscribe = pipeline.subscribe(got.append)
    assert pipeline.call(lambda: 1) == 1
    assert await pipeline.acall(_adown) == 0
    assert [(type(e).__name__, e.policy) for e in got] == [
        ("Event", "announce"),
        ("Event", "announce"),
        ("FallbackUsed", "fb"),
    ]
    assert got[1].call == call_name(_adown)
    unsubscribe()
    pipeline.call(lambda: 1)
    assert len(got) == 3


# ------------------------------------- a decorated pipeline: the outermost policy's wrapper


def _outermost() -> list[Strategy]:
    return [
        Timeout(30.0),
        Timeout(30.0, mode="pessimistic"),
        Retry(2, delay=0),
        CircuitBreaker(),
        Bulkhead(2),
        Fallback(value="fallen back"),
        Pipeline(Bulkhead(3)),
        Double(),
    ]


def _flaky(failures: int) -> Callable[[int], int]:
    left = [failures]

    def fetch(x: int) -> int:
        if left[0]:
            left[0] -= 1
            raise ConnectionError("reset")
        return x + 1

    return fetch


def _aflaky(failures: int) -> Callable[[int], Awaitable[int]]:
    fetch = _flaky(failures)

    async def afetch(x: int) -> int:
        return fetch(x)

    return afetch


def _id(strategy: Strategy) -> str:
    mode = getattr(strategy, "mode", "")
    return f"{type(strategy).__name__}{'-' + mode if mode else ''}"


@pytest.mark.parametrize("outer", _outermost(), ids=_id)
def test_a_decorated_pipeline_runs_every_policy_inside_its_outermost(outer: Strategy) -> None:
    retry = Retry(3, delay=0)
    pipeline = Pipeline(outer, retry, CircuitBreaker(consecutive_failures=10))
    got: list[Event] = []
    retry.subscribe(got.append)
    fetch = _flaky(2)
    decorated = pipeline(fetch)
    assert decorated.__wrapped__ is fetch  # type: ignore[attr-defined]
    expected = 4 if isinstance(outer, Double) else 2
    assert decorated(1) == expected
    scheduled = [e for e in got if isinstance(e, RetryScheduled)]
    assert [e.call for e in scheduled] == [call_name(fetch)] * 2
    assert pipeline.call(_flaky(2), 1) == expected  # the same as the runners' path


@pytest.mark.parametrize("outer", _outermost(), ids=_id)
async def test_a_decorated_pipeline_runs_every_policy_inside_its_outermost_async(
    outer: Strategy,
) -> None:
    retry = Retry(3, delay=0)
    pipeline = Pipeline(outer, retry, CircuitBreaker(consecutive_failures=10))
    got: list[Event] = []
    retry.subscribe(got.append)
    afetch = _aflaky(2)
    decorated = pipeline(afetch)
    assert inspect.iscoroutinefunction(decorated)
    expected = 4 if isinstance(outer, Double) else 2
    assert await decorated(1) == expected
    assert [e.call for e in got if isinstance(e, RetryScheduled)] == [call_name(afetch)] * 2
    assert await pipeline.acall(_aflaky(2), 1) == expected


def test_a_decorated_pipeline_of_generated_policies_adds_no_wrapper_of_its_own() -> None:
    def fetch() -> int:
        return 1

    decorated = Pipeline(Timeout(5.0), Retry(), Bulkhead(1))(fetch)
    # The function called is the outermost policy's generated driver itself.
    assert decorated.__code__.co_filename.startswith("<buttress timeout")  # type: ignore[attr-defined]
    assert decorated() == 1


def test_a_decorated_pipeline_refuses_a_coroutine_from_a_sync_looking_callable() -> None:
    class Sneaky:
        def __call__(self) -> Any:
            return _coroutine()

    async def _coroutine() -> int:
        return 1

    decorated = Pipeline(Retry(2, delay=0), Bulkhead(1))(Sneaky())
    with pytest.raises(TypeError, match="acall"):
        decorated()

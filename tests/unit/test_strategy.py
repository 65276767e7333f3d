"""The execution core: sync entry points refuse async functions; the public Policy base."""

from __future__ import annotations

import asyncio
import functools
import warnings
from collections.abc import Awaitable
from typing import Any, TypeVar

import pytest

from buttress import (
    Bulkhead,
    CircuitBreaker,
    Event,
    Fallback,
    Pipeline,
    RateLimiter,
    Retry,
    Timeout,
)
from buttress._strategy import Call, Policy
from buttress.clock import FakeClock

R = TypeVar("R")


async def fetch(x: int = 1) -> int:
    return x


class AsyncCallable:
    async def __call__(self) -> int:
        return 1


def policies() -> list[Any]:
    return [
        Retry(3, delay=0),
        CircuitBreaker(),
        Timeout(1.0),
        Timeout(1.0, mode="pessimistic"),
        Bulkhead(2),
        Fallback(value=0),
        RateLimiter("100/second"),
        Pipeline(Timeout(1.0), Retry(3, delay=0), CircuitBreaker(), Bulkhead(2)),
    ]


@pytest.mark.parametrize("policy", policies(), ids=repr)
@pytest.mark.parametrize(
    "fn",
    [fetch, functools.partial(fetch, 2), AsyncCallable(), lambda: fetch()],  # noqa: PLW0108
    ids=["function", "partial", "object", "sync-returning-coroutine"],
)
def test_a_sync_call_of_an_async_function_is_refused(policy: Any, fn: Any) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the coroutine is closed, never left un-awaited
        with pytest.raises(TypeError, match="acall"):
            policy.call(fn)


@pytest.mark.parametrize("policy", policies(), ids=repr)
def test_a_decorated_sync_function_returning_a_coroutine_is_refused(policy: Any) -> None:
    @policy
    def sneaky() -> Awaitable[int]:
        return fetch()

    with pytest.raises(TypeError, match="sneaky returned a coroutine"):
        sneaky()


def test_retry_does_not_retry_the_refusal_and_the_breaker_does_not_count_it() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(consecutive_failures=1, clock=clock)
    retry = Retry(5, delay=0, clock=clock)
    pipeline = Pipeline(retry, breaker)
    attempts = 0

    async def counted() -> int:
        nonlocal attempts
        attempts += 1
        return 1

    for _ in range(3):
        with pytest.raises(TypeError):
            pipeline.call(counted)
    assert attempts == 0
    assert breaker.state == "closed"


@pytest.mark.parametrize("policy", policies(), ids=repr)
async def test_acall_still_works(policy: Any) -> None:
    assert await policy.acall(fetch, 5) == 5


# --------------------------------------------------------------------- public base


class Counting(Policy):
    """Counts calls; doubles the result to show it sees it."""

    def __init__(self, *, name: str | None = None) -> None:
        super().__init__(name=name)
        self.calls: list[str] = []

    def execute(self, call: Call[R]) -> R:
        self.calls.append(call.name)
        return call()

    async def aexecute(self, call: Call[Awaitable[R]]) -> R:
        self.calls.append(call.name)
        return await call()


def add(x: int, y: int) -> int:
    return x + y


async def aadd(x: int, y: int) -> int:
    return x + y


def test_a_policy_of_ones_own_runs_everywhere() -> None:
    counting = Counting(name="counting")
    assert counting.call(add, 1, 2) == 3
    assert counting(add)(2, 3) == 5
    assert asyncio.run(counting.acall(aadd, 3, 4)) == 7
    assert asyncio.run(counting(aadd)(4, 5)) == 9
    assert Pipeline(Retry(2, delay=0), counting).call(add, 5, 6) == 11
    assert counting.calls == [f"{__name__}.add", f"{__name__}.add", f"{__name__}.aadd"] * 1 + [
        f"{__name__}.aadd",
        f"{__name__}.add",
    ]
    assert counting.name == "counting"


def test_a_policy_that_forgets_super_init_still_works() -> None:
    class Bare(Policy):
        def __init__(self) -> None:
            pass

    bare = Bare()
    assert bare.call(add, 1, 1) == 2
    assert bare.name.startswith("bare-")


def test_a_policy_can_retry_and_emit() -> None:
    class Twice(Policy):
        def execute(self, call: Call[R]) -> R:
            try:
                return call()
            except ConnectionError:
                self.emit(Event(self.name, call=call.name))
                return call()

    seen: list[Event] = []
    twice = Twice(name="twice")
    twice.subscribe(seen.append)
    outcomes = iter([ConnectionError(), 7])

    def flaky() -> int:
        outcome = next(outcomes)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    assert twice.call(flaky) == 7
    assert seen == [
        Event("twice", call=f"{__name__}.test_a_policy_can_retry_and_emit.<locals>.flaky")
    ]
    assert twice.listening
    assert "flaky" in repr(Call(lambda f, a, k: None, flaky, (), {}))


def test_subclasses_of_subclasses_are_built_once_after_their_own_init() -> None:
    class Base(Policy):
        def __init__(self, *, name: str | None = None) -> None:
            super().__init__(name=name)
            self.log: list[str] = []

        def execute(self, call: Call[R]) -> R:
            self.log.append(self.tag)
            return call()

        tag = "base"

    class Inherits(Base):
        tag = "inherits"

    class Extends(Base):
        def __init__(self) -> None:
            super().__init__(name="extends")
            self.tag = "extends"  # set after the base's __init__, seen by execute

    class Plain(Policy):
        pass

    for policy, tag in ((Base(), "base"), (Inherits(), "inherits"), (Extends(), "extends")):
        assert policy.call(add, 1, 2) == 3
        assert policy.log == [tag]
    assert Plain().call(add, 2, 2) == 4
    assert Plain(name="p").name == "p"


def test_no_getattr_hook_on_the_strategies() -> None:
    # A __getattr__ on a class turns off CPython 3.11's specialised attribute reads
    # for its instances: every driver reading self.* would pay for it.
    from buttress import Bulkhead, CircuitBreaker, Fallback, Pipeline, RateLimiter, Retry, Timeout
    from buttress._strategy import Strategy

    for kind in (
        Strategy,
        Retry,
        CircuitBreaker,
        Timeout,
        Bulkhead,
        Fallback,
        RateLimiter,
        Pipeline,
    ):
        assert "__getattr__" not in {k for c in kind.__mro__ for k in vars(c)}, kind

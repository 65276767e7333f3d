"""The circuit breaker's typed API: ``mypy --strict`` must accept this file."""

from __future__ import annotations

from collections.abc import Coroutine
from datetime import timedelta
from typing import Any, assert_type

from buttress import BreakerHub, Matcher, Pipeline, UseAcall
from buttress.clock import FakeClock
from buttress.policies.circuit import (
    BreakerStore,
    CircuitBreaker,
    CircuitMetrics,
    CircuitOptions,
    CircuitState,
    CircuitStateChanged,
)

breaker = CircuitBreaker(
    failure_ratio=0.25,
    min_calls=5,
    window=20,
    consecutive_failures=3,
    slow_call_duration=timedelta(milliseconds=250),
    slow_call_ratio=0.8,
    open_duration=timedelta(seconds=30),
    open_duration_factor=2.0,
    max_open_duration=300.0,
    half_open_calls=2,
    half_open_successes=3,
    on=(ConnectionError, TimeoutError),
    on_result=lambda result: result is None,
    ignore=KeyError,
    name="typed",
    clock=FakeClock(),
)
by_matcher = CircuitBreaker(on=Matcher(ConnectionError), window_seconds=60.0)
by_predicate = CircuitBreaker(on=lambda exc: "unavailable" in str(exc))
former_name = CircuitBreaker(failure_on=ConnectionError)

assert_type(breaker.options, CircuitOptions)
assert_type(CircuitBreaker.Options, type[CircuitOptions])
assert_type(breaker.state, CircuitState)
assert_type(breaker.until, float | None)
assert_type(breaker.metrics, CircuitMetrics)
assert_type(breaker.shared_metrics, CircuitMetrics | None)
assert_type(breaker.hub, BreakerHub | None)

options = CircuitOptions(window=10, min_calls=5, open_duration=timedelta(seconds=5))
assert_type(options.replace(failure_ratio=0.9), CircuitOptions)
rebuilt = CircuitBreaker.from_options(options, name="again", clock=FakeClock())
assert_type(rebuilt, CircuitBreaker)


def shared(store: BreakerStore) -> CircuitBreaker:
    hub = BreakerHub(store, interval=timedelta(milliseconds=100), background=False)
    return CircuitBreaker.from_options(options, name="payments", hub=hub)


@breaker
def charge(amount: int, *, currency: str = "EUR") -> str:
    return f"{amount} {currency}"


@breaker
async def acharge(amount: int) -> str:
    return str(amount)


assert_type(charge(10, currency="USD"), str)
pending: Coroutine[Any, Any, str] = acharge(10)  # the decorator keeps it a coroutine function
pending.close()
assert_type(breaker.call(charge, 10), str)
assert_type(breaker.call(acharge, 10), UseAcall)  # refused: use acall


async def use() -> None:
    assert_type(await breaker.acall(acharge, 10), str)
    async with breaker:
        pass
    with breaker:
        pass


pipeline = Pipeline(breaker)
listener_seen: list[CircuitStateChanged] = []
unsubscribe = breaker.subscribe(listener_seen.append, CircuitStateChanged)
unsubscribe()

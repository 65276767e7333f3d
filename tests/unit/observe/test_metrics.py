"""buttress.observe.metrics: counted events and live state, in one neutral form."""

from __future__ import annotations

import asyncio
import gc
from typing import Any

import pytest

from buttress import Bulkhead, CircuitBreaker, Fallback, Pipeline, RateLimiter, Retry, Timeout
from buttress.clock import FakeClock
from buttress.errors import BulkheadFull, CircuitOpen, ConfigError, RateLimited, TimeoutExceeded
from buttress.observe.measure import Measure
from buttress.observe.metrics import Family, Sample, collect, register_source, tally

from tests.helpers import tick


def families() -> dict[str, Family]:
    return {family.name: family for family in collect()}


def value(name: str, **labels: str) -> float:
    family = families().get(name)
    if family is None:
        return 0.0
    found = [
        s.value for s in family.samples if all(s.labels.get(k) == v for k, v in labels.items())
    ]
    assert len(found) <= 1, f"{name}{labels} matches {len(found)} samples"
    return found[0] if found else 0.0


def fail() -> None:
    raise ConnectionError("down")


def test_rejections_retries_and_transitions_are_counted_by_kind_and_reason() -> None:
    tally()
    breaker = CircuitBreaker(name="obs-api", consecutive_failures=2)
    retry = Retry(3, delay=0, name="r")
    pipeline = Pipeline(retry, breaker)
    with pytest.raises(CircuitOpen):
        pipeline.call(fail)
    assert value("buttress_retries_total", policy="r") == 2
    assert value("buttress_retry_gave_up_total", policy="r", reason="not_retryable") == 1
    assert value("buttress_circuit_transitions_total", policy="obs-api", state="open") == 1
    assert (
        value(
            "buttress_rejections_total",
            policy="obs-api",
            kind="circuit_breaker",
            reason="circuit_open",
        )
        == 1
    )


def test_nothing_is_counted_before_the_tally_listens() -> None:
    breaker = CircuitBreaker(name="obs-quiet", consecutive_failures=1)
    with pytest.raises(ConnectionError):
        breaker.call(fail)
    assert value("buttress_circuit_transitions_total", policy="obs-quiet", state="open") == 0
    # The state is read live whatever listens.
    assert value("buttress_circuit_state", policy="obs-quiet", state="open") == 1


def test_a_success_builds_no_event_even_while_instrumented() -> None:
    tally()
    seen: list[object] = []
    import buttress

    unsubscribe = buttress.subscribe(seen.append)
    try:
        Pipeline(Retry(3), CircuitBreaker(), Bulkhead(2), Timeout(1.0)).call(lambda: 1)
    finally:
        unsubscribe()
    assert seen == []


def test_breaker_state_and_window_are_read_live() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(name="obs-db", failure_ratio=0.5, window=4, min_calls=4, clock=clock)
    breaker.call(lambda: 1)
    with pytest.raises(ConnectionError):
        breaker.call(fail)
    assert value("buttress_circuit_state", policy="obs-db", state="closed") == 1
    assert value("buttress_circuit_state", policy="obs-db", state="open") == 0
    assert value("buttress_circuit_window_calls", policy="obs-db", outcome="failure") == 1
    assert value("buttress_circuit_window_calls", policy="obs-db", outcome="success") == 1
    assert value("buttress_circuit_failure_rate", policy="obs-db") == 0.5
    breaker.isolate()
    assert value("buttress_circuit_state", policy="obs-db", state="isolated") == 1


async def test_bulkhead_in_flight_queued_and_limit() -> None:
    bulkhead = Bulkhead(1, max_queue=2, name="obs-pool")
    gate = asyncio.Event()

    async def hold() -> None:
        await gate.wait()

    tasks = [asyncio.create_task(bulkhead.acall(hold)) for _ in range(3)]
    await tick(2)
    assert value("buttress_bulkhead_in_flight", policy="obs-pool") == 1
    assert value("buttress_bulkhead_queued", policy="obs-pool") == 2
    assert value("buttress_bulkhead_limit", policy="obs-pool") == 1
    gate.set()
    await asyncio.gather(*tasks)
    assert value("buttress_bulkhead_in_flight", policy="obs-pool") == 0


def test_bulkhead_and_limiter_rejections() -> None:
    tally()
    limiter = RateLimiter("1/minute", name="obs-lim")
    limiter.call(lambda: 1)
    with pytest.raises(RateLimited):
        limiter.call(lambda: 1)
    assert (
        value(
            "buttress_rejections_total",
            policy="obs-lim",
            kind="rate_limiter",
            reason="rate_limited",
        )
        == 1
    )
    bulkhead = Bulkhead(1, name="obs-one")
    with bulkhead, pytest.raises(BulkheadFull):
        bulkhead.call(lambda: 1)
    assert (
        value(
            "buttress_rejections_total", policy="obs-one", kind="bulkhead", reason="bulkhead_full"
        )
        == 1
    )


def test_timeouts_and_fallbacks() -> None:
    tally()
    clock = FakeClock()
    timeout = Timeout(0.5, name="t", clock=clock)

    def slow() -> int:
        clock.advance(1.0)
        return 1

    with pytest.raises(TimeoutExceeded):
        timeout.call(slow)
    assert value("buttress_timeouts_total", policy="t") == 1
    fallback = Fallback(value=0, name="fb")
    assert fallback.call(fail) == 0
    assert value("buttress_fallbacks_total", policy="fb") == 1


def test_policies_with_one_name_add_up() -> None:
    first = Bulkhead(2, name="obs-same")
    second = Bulkhead(3, name="obs-same")
    assert value("buttress_bulkhead_limit", policy="obs-same") == 5
    del first, second


def test_a_dropped_policy_leaves_the_figures() -> None:
    bulkhead = Bulkhead(2, name="obs-gone")
    assert value("buttress_bulkhead_limit", policy="obs-gone") == 2
    del bulkhead
    gc.collect()
    assert value("buttress_bulkhead_limit", policy="obs-gone") == 0


def test_sources_are_read_at_collection_and_removed() -> None:
    reads: list[int] = []

    def source() -> list[Family]:
        reads.append(1)
        return [
            Family("buttress_health_check_up", "gauge", "up", [Sample({"check": "obs-db"}, 1.0)])
        ]

    remove = register_source("test", source)
    try:
        assert value("buttress_health_check_up", check="obs-db") == 1
        assert reads == [1]
    finally:
        remove()
    assert value("buttress_health_check_up", check="obs-db") == 0


# ------------------------------------------------------------------------- Measure


class Response:
    status_code: int

    def __init__(self, status_code: int) -> None:
        self.status_code = status_code


def test_measure_counts_outcomes_and_times_calls_into_buckets() -> None:
    clock = FakeClock()
    measure = Measure(name="m", buckets=(0.1, 1.0), clock=clock)

    def took(seconds: float, result: Any = 1) -> Any:
        clock.advance(seconds)
        return result

    measure.call(took, 0.05)
    measure.call(took, 0.5)
    measure.call(took, 0.05, Response(503))  # a failing result
    measure.call(took, 0.05, Response(404))  # an answer
    with pytest.raises(ConnectionError):
        measure.call(fail)

    def bug() -> None:
        raise TypeError("a bug")

    with pytest.raises(TypeError):
        measure.call(bug)
    assert measure.count("success") == 3
    assert measure.count("failure") == 2
    assert measure.count("error") == 1
    assert measure.count() == 6
    durations = families()["buttress_call_duration_seconds"]
    success = next(
        s for s in durations.samples if s.labels == {"policy": "m", "outcome": "success"}
    )
    assert success.buckets == ((0.1, 2.0), (1.0, 3.0), (float("inf"), 3.0))
    assert success.sum == pytest.approx(0.6)
    assert value("buttress_calls_total", policy="m", kind="measure", outcome="failure") == 2


def test_measure_counts_rejections_from_inside() -> None:
    measure = Measure(name="outer")
    pipeline = Pipeline(measure, CircuitBreaker(consecutive_failures=1))
    with pytest.raises(ConnectionError):
        pipeline.call(fail)
    with pytest.raises(CircuitOpen):
        pipeline.call(fail)
    assert measure.count("failure") == 1
    assert measure.count("rejected") == 1


async def test_measure_async_timeout_is_a_failure_caller_cancel_is_nothing() -> None:
    measure = Measure(name="am")
    timed = Pipeline(Timeout(0.01), measure)

    async def hang() -> None:
        await asyncio.Event().wait()

    with pytest.raises(TimeoutExceeded):
        await timed.acall(hang)
    assert measure.count("failure") == 1

    task = asyncio.create_task(measure.acall(hang))
    await tick()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert measure.count() == 1

    async def ok() -> int:
        return 2

    assert await measure.acall(ok) == 2
    assert measure.count("success") == 1


def test_measure_decorates_and_validates() -> None:
    measure = Measure(name="deco")

    @measure
    def add(a: int, b: int) -> int:
        return a + b

    assert add(1, 2) == 3
    assert measure.count("success") == 1
    with pytest.raises(ValueError, match="unknown outcome"):
        measure.count("nope")
    with pytest.raises(ConfigError, match=r"buckets\[1\]"):
        Measure(buckets=(0.1, -1.0))
    with pytest.raises(ConfigError, match="increase"):
        Measure(buckets=(1.0, 0.5))
    with pytest.raises(ConfigError, match="buckets"):
        Measure(buckets=())
    with pytest.raises(ConfigError, match="clock"):
        Measure(clock="x")  # type: ignore[arg-type]


def test_budgets_and_degradations_are_read_at_collection() -> None:
    from buttress.policies.budget import Degradation, ErrorBudget, LatencyBudget

    clock = FakeClock()
    budget = ErrorBudget(0.99, name="obs-checkout", clock=clock)
    for ok in (True, True, True, False):
        budget.record(ok)
    latency = LatencyBudget(0.3, name="obs-latency", clock=clock)
    flag = [False]
    degradation = Degradation(
        {"full": {"recommendations", "search"}, "minimal": {"search"}},
        when={"minimal": lambda: flag[0]},
        name="obs-shop",
        clock=clock,
    )
    assert value("buttress_error_budget_remaining_ratio", budget="obs-checkout") == pytest.approx(
        budget.snapshot().remaining
    )
    assert value(
        "buttress_error_budget_burn_rate", budget="obs-checkout", window="3600"
    ) == pytest.approx(25.0)
    assert value("buttress_latency_budget_remaining_ratio", budget="obs-latency") == 1.0
    assert (
        value("buttress_degradation_allowed", degradation="obs-shop", feature="recommendations")
        == 1
    )
    flag[0] = True
    clock.advance(2.0)
    assert not degradation.allows("recommendations")
    assert (
        value("buttress_degradation_allowed", degradation="obs-shop", feature="recommendations")
        == 0
    )
    assert value("buttress_degradation_allowed", degradation="obs-shop", feature="search") == 1
    del latency


def test_same_named_ratios_keep_the_worst_not_the_sum() -> None:
    first = CircuitBreaker(name="obs-twin", consecutive_failures=10)
    second = CircuitBreaker(name="obs-twin", consecutive_failures=10)
    with pytest.raises(ConnectionError):
        first.call(fail)
    second.call(lambda: 1)
    assert value("buttress_circuit_failure_rate", policy="obs-twin") == 1.0
    assert value("buttress_circuit_window_calls", policy="obs-twin", outcome="failure") == 1
    assert value("buttress_circuit_window_calls", policy="obs-twin", outcome="success") == 1


def test_a_store_outage_is_counted_per_transition_with_a_degraded_gauge() -> None:
    from buttress.stores import store_from_url

    tally()
    clock = FakeClock()
    # A real outage: nothing listens on port 1, every Redis call is refused.
    store = store_from_url("redis://127.0.0.1:1/0", fallback=True, probe_interval=60, clock=clock)
    limiter = RateLimiter("100/second", store=store, name="obs-outage")
    for _ in range(10):
        assert limiter.allow("k")
    name = store.name  # type: ignore[attr-defined]
    assert value("buttress_store_transitions_total", store=name, state="degraded") == 1
    assert value("buttress_store_degraded", store=name) == 1

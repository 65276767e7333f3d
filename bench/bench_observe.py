"""Instrumentation: what `buttress.observe.instrument()` costs a call that succeeds,
against the same pipeline uninstrumented and against counting every call by hand
with prometheus_client (what a hand-written listener per call would do); and what
one Prometheus scrape costs with 1,000 policies alive."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from buttress import Bulkhead, CircuitBreaker, Pipeline, Retry
from buttress.policies.timeout import Timeout

from _common import baseline, work
from _harness import Case, check_works, main

PIPELINE = "pipeline T+R+C+B, instrumented or not (sync)"
SCRAPE = "one Prometheus scrape, 1,000 live policies"


def pipeline() -> Callable[..., Any]:
    return Pipeline(Timeout(2.0), Retry(), CircuitBreaker(), Bulkhead(10))(work)


def instrumented() -> Callable[..., Any]:
    # What instrument() does, kept to this pipeline: instrument() is process-wide,
    # and pyperf builds every case in each worker. Its listeners (the event tally,
    # the log lines) subscribed to the pipeline's policies, its collector registered.
    from prometheus_client import CollectorRegistry

    from buttress.observe import prometheus
    from buttress.observe.logging import LogListener
    from buttress.observe.metrics import Tally

    policies = [Timeout(2.0), Retry(), CircuitBreaker(), Bulkhead(10)]
    built = Pipeline(*policies)
    built.subscribe(Tally())
    built.subscribe(LogListener(structlog=False))
    prometheus.register(CollectorRegistry())
    wrapped: Callable[..., Any] = built(work)
    return wrapped


def hand_counted() -> Callable[..., Any]:
    from prometheus_client import CollectorRegistry, Counter

    calls = Counter("calls", "calls", ["outcome"], registry=CollectorRegistry())
    ok = calls.labels("success")
    wrapped = pipeline()

    def call(*args: Any, **kwargs: Any) -> Any:
        result = wrapped(*args, **kwargs)
        ok.inc()
        return result

    return call


def scrape() -> Callable[[], Any]:
    from prometheus_client import CollectorRegistry, generate_latest

    from buttress.observe import prometheus

    registry = CollectorRegistry()
    prometheus.register(registry)
    alive: list[object] = []
    for index in range(250):
        alive += [
            CircuitBreaker(name=f"breaker-{index}"),
            Bulkhead(10, name=f"bulkhead-{index}"),
            Retry(name=f"retry-{index}"),
            Timeout(1.0, name=f"timeout-{index}"),
        ]

    def run() -> bytes:
        assert alive
        return generate_latest(registry)

    return run


CASES = [
    *baseline(PIPELINE),
    Case(PIPELINE, "buttress, uninstrumented", pipeline),
    Case(
        PIPELINE,
        "buttress, instrument()",
        instrumented,
        note="target: at most +30 ns over uninstrumented",
    ),
    Case(PIPELINE, "buttress + a prometheus_client Counter.inc() per call", hand_counted),
    Case(SCRAPE, "buttress collector, generate_latest", scrape, target_ns=20_000_000),
]

if __name__ == "__main__":
    if "--check" in sys.argv:
        check_works(CASES)
    else:
        main(CASES)

"""The Prometheus exposition served by a real ASGI app under uvicorn, scraped over HTTP.

Every policy kind is driven through the app's own endpoints, then ``/metrics`` is
fetched and parsed with ``prometheus_client.parser``: the values must match what
happened.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import httpx
import pytest
import uvicorn
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Mount, Route

from buttress import Bulkhead, CircuitBreaker, Fallback, Pipeline, RateLimiter, Retry, Timeout
from buttress.errors import ButtressError
from buttress.observe import instrument, uninstrument
from buttress.observe.measure import Measure
from buttress.observe.prometheus import metrics_app

pytestmark = pytest.mark.integration

Labels = frozenset[tuple[str, str]]


class Server:
    def __init__(self, app: Starlette) -> None:
        config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="off")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        started = threading.Event()
        while not self.server.started:
            started.wait(0.01)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture
def registry() -> Iterator[CollectorRegistry]:
    registry = CollectorRegistry()
    instrument(registry=registry, logs=False, otel=False)
    yield registry
    uninstrument()


def test_the_exposition_matches_what_happened(registry: CollectorRegistry) -> None:
    measure = Measure(name="it-work")
    breaker = CircuitBreaker(name="it-breaker", consecutive_failures=3)
    retry = Retry(3, delay=0, name="it-retry")
    bulkhead = Bulkhead(4, name="it-bulkhead")
    limiter = RateLimiter("2/minute", name="it-limiter")
    timeout = Timeout(0.05, name="it-timeout")
    fallback = Fallback(value="cached", name="it-fallback")
    work = Pipeline(measure, retry, breaker, bulkhead)

    async def flaky(request: Request) -> JSONResponse:
        def down() -> None:
            raise ConnectionError("dependency down")

        try:
            await work.acall(asyncio.to_thread, down)
        except ButtressError as exc:
            return JSONResponse({"error": type(exc).__name__}, status_code=503)
        except ConnectionError:
            return JSONResponse({"error": "down"}, status_code=502)
        return JSONResponse({})

    async def limited(request: Request) -> JSONResponse:
        try:
            limiter.call(lambda: None)
        except ButtressError:
            return JSONResponse({}, status_code=429)
        return JSONResponse({})

    async def slow(request: Request) -> JSONResponse:
        try:
            await timeout.acall(asyncio.sleep, 5)
        except ButtressError:
            return JSONResponse({}, status_code=504)
        return JSONResponse({})

    async def degraded(request: Request) -> JSONResponse:
        def down() -> str:
            raise ConnectionError("x")

        return JSONResponse({"value": fallback.call(down)})

    app = Starlette(
        routes=[
            Route("/flaky", flaky),
            Route("/limited", limited),
            Route("/slow", slow),
            Route("/degraded", degraded),
            Mount("/metrics", metrics_app(registry)),
        ]
    )
    with Server(app) as base, httpx.Client(base_url=base, timeout=10) as client:
        statuses = [client.get("/flaky").status_code for _ in range(2)]
        assert statuses == [503, 503]  # 3 attempts trip the breaker; the next is rejected
        assert [client.get("/limited").status_code for _ in range(3)] == [200, 200, 429]
        assert client.get("/slow").status_code == 504
        assert client.get("/degraded").json() == {"value": "cached"}
        text = client.get("/metrics/").text

    samples: dict[tuple[str, Labels], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value

    def value(name: str, **labels: str) -> float:
        return samples[(name, frozenset(labels.items()))]

    # Retry: two retries in the first request, which then gave up; in the second the
    # open circuit's rejection is not retried (and not a give-up: it was never retried).
    assert value("buttress_retries_total", policy="it-retry") == 2
    assert value("buttress_retry_gave_up_total", policy="it-retry", reason="max_attempts") == 1
    # Breaker: opened once after three failures; the second request was rejected.
    assert value("buttress_circuit_transitions_total", policy="it-breaker", state="open") == 1
    assert value("buttress_circuit_state", policy="it-breaker", state="open") == 1
    assert value("buttress_circuit_window_calls", policy="it-breaker", outcome="failure") == 3
    assert (
        value(
            "buttress_rejections_total",
            policy="it-breaker",
            kind="circuit_breaker",
            reason="circuit_open",
        )
        == 1
    )
    # Bulkhead: nothing in flight once the requests are answered.
    assert value("buttress_bulkhead_in_flight", policy="it-bulkhead") == 0
    assert value("buttress_bulkhead_limit", policy="it-bulkhead") == 4
    # Limiter: one of three refused.
    assert (
        value(
            "buttress_rejections_total",
            policy="it-limiter",
            kind="rate_limiter",
            reason="rate_limited",
        )
        == 1
    )
    # Timeout and fallback.
    assert value("buttress_timeouts_total", policy="it-timeout") == 1
    assert value("buttress_fallbacks_total", policy="it-fallback") == 1
    # Measure: the first /flaky call failed (retries exhausted), the second was rejected.
    assert value("buttress_calls_total", policy="it-work", kind="measure", outcome="failure") == 1
    assert value("buttress_calls_total", policy="it-work", kind="measure", outcome="rejected") == 1
    assert value("buttress_calls_total", policy="it-work", kind="measure", outcome="success") == 0
    assert value("buttress_call_duration_seconds_count", policy="it-work", outcome="failure") == 1

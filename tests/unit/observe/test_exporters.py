"""The Prometheus collector, the OpenTelemetry instruments, and instrument()."""

from __future__ import annotations

import logging

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from buttress import Bulkhead, CircuitBreaker, Pipeline, Retry
from buttress.errors import CircuitOpen, ConfigError
from buttress.observe import instrument, prometheus, uninstrument
from buttress.observe.measure import Measure
from buttress.observe.otel import instrument as otel_instrument


def fail() -> None:
    raise ConnectionError("down")


def scrape(registry: CollectorRegistry) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    text = generate_latest(registry).decode()
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def test_prometheus_exposition_parses_and_matches() -> None:
    registry = CollectorRegistry()
    prometheus.register(registry)
    measure = Measure(name="calls", buckets=(1.0,))
    pipeline = Pipeline(
        measure, Retry(3, delay=0, name="retry"), CircuitBreaker(name="cb", consecutive_failures=2)
    )
    with pytest.raises(CircuitOpen):
        pipeline.call(fail)
    samples = scrape(registry)
    assert samples[("buttress_retries_total", frozenset({("policy", "retry")}))] == 2
    assert (
        samples[("buttress_circuit_state", frozenset({("policy", "cb"), ("state", "open")}))] == 1
    )
    assert (
        samples[
            (
                "buttress_calls_total",
                frozenset({("policy", "calls"), ("kind", "measure"), ("outcome", "rejected")}),
            )
        ]
        == 1
    )
    assert (
        samples[
            (
                "buttress_call_duration_seconds_bucket",
                frozenset({("policy", "calls"), ("outcome", "rejected"), ("le", "+Inf")}),
            )
        ]
        == 1
    )
    prometheus.unregister(registry)
    assert not any(name.startswith("buttress_") for name, _ in scrape(registry))


def test_registering_twice_is_one_collector() -> None:
    registry = CollectorRegistry()
    first = prometheus.register(registry)
    assert prometheus.register(registry) is first
    Bulkhead(3, name="b")
    text = generate_latest(registry).decode()
    assert text.count('buttress_bulkhead_limit{policy="b"}') == 1
    prometheus.unregister(registry)
    prometheus.unregister(registry)  # no error


async def test_metrics_app_serves_the_exposition() -> None:
    registry = CollectorRegistry()
    app = prometheus.metrics_app(registry)
    Bulkhead(7, name="served")
    sent: list[dict[str, object]] = []

    async def receive() -> dict[str, object]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, object]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "GET", "path": "/", "query_string": b"", "headers": []}
    await app(scope, receive, send)
    assert sent[0]["status"] == 200
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")  # type: ignore[misc]
    assert b'buttress_bulkhead_limit{policy="served"} 7.0' in body
    prometheus.unregister(registry)


def test_opentelemetry_instruments_observe_the_same_figures() -> None:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    otel_instrument(provider)
    otel_instrument(provider)  # once per provider
    breaker = CircuitBreaker(name="otel-cb", consecutive_failures=1)
    with pytest.raises(ConnectionError):
        breaker.call(fail)
    points: dict[str, list[tuple[dict[str, object], float]]] = {}
    data = reader.get_metrics_data()
    assert data is not None
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                points.setdefault(metric.name, []).extend(
                    (dict(p.attributes or {}), p.value)  # type: ignore[union-attr]
                    for p in metric.data.data_points
                )
    assert ({"policy": "otel-cb", "state": "open"}, 1) in points["buttress_circuit_state"]
    assert ({"policy": "otel-cb", "state": "open"}, 1) in points["buttress_circuit_transitions"]
    provider.shutdown()


def test_instrument_turns_on_logs_and_metrics(caplog: pytest.LogCaptureFixture) -> None:
    registry = CollectorRegistry()
    done = instrument(registry=registry, otel=False, structlog=False)
    assert (done.logs, done.prometheus, done.otel) == (True, True, False)
    breaker = CircuitBreaker(name="inst", consecutive_failures=1)
    with caplog.at_level(logging.INFO, logger="buttress"), pytest.raises(ConnectionError):
        breaker.call(fail)
    assert any(r.event == "circuit_state_changed" for r in caplog.records)  # type: ignore[attr-defined]
    assert (
        "buttress_circuit_transitions_total",
        frozenset({("policy", "inst"), ("state", "open")}),
    ) in scrape(registry)
    done.close()
    assert not any(name.startswith("buttress_") for name, _ in scrape(registry))
    caplog.clear()
    breaker.reset()
    assert not [r for r in caplog.records if r.name == "buttress"]


def test_instrument_again_replaces_the_first() -> None:
    first_registry, second_registry = CollectorRegistry(), CollectorRegistry()
    instrument(registry=first_registry, otel=False, logs=False)
    instrument(registry=second_registry, otel=False, logs=False)
    Bulkhead(1, name="x")
    assert not any(name.startswith("buttress_") for name, _ in scrape(first_registry))
    assert any(name.startswith("buttress_") for name, _ in scrape(second_registry))
    uninstrument()


@pytest.mark.parametrize("off", ["0", "false", "OFF", "no"])
def test_one_switch_turns_it_off(monkeypatch: pytest.MonkeyPatch, off: str) -> None:
    monkeypatch.setenv("BUTTRESS_INSTRUMENT", off)
    registry = CollectorRegistry()
    done = instrument(registry=registry)
    assert (done.logs, done.prometheus, done.otel) == (False, False, False)
    assert scrape(registry) == {}


def test_a_bad_switch_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BUTTRESS_INSTRUMENT", "maybe")
    with pytest.raises(ConfigError, match="BUTTRESS_INSTRUMENT"):
        instrument()


def test_requiring_a_missing_exporter_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    real = importlib.util.find_spec

    def find_spec(name: str, *args: object) -> object:
        return None if name == "prometheus_client" else real(name, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    with pytest.raises(ImportError, match=r"buttress\[prometheus\]"):
        instrument(prometheus=True)
    done = instrument(otel=False, logs=False)  # auto: left out
    assert done.prometheus is False


def test_opentelemetry_histograms_say_what_they_observe() -> None:
    from buttress.observe import otel

    provider = MeterProvider(metric_readers=[InMemoryMetricReader()])
    otel_instrument(provider)
    made = {i.name: i for i in otel._done[provider]}
    duration = made["buttress_call_duration_seconds_sum"]
    batch = made["buttress_relay_batch_size_sum"]
    assert (duration.unit, batch.unit) == ("s", "1")
    assert duration.description.startswith("Measure's call durations")
    assert batch.description.startswith("The relay's batch sizes")
    assert made["buttress_relay_publish_duration_seconds_sum"].unit == "s"
    assert made["buttress_relay_publish_duration_seconds_count"].unit == "1"
    provider.shutdown()

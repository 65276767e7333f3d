"""The health gauges in every scrape: buttress_health_check_up and _duration_seconds."""

from __future__ import annotations

import gc

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from buttress.clock import FakeClock
from buttress.observe import prometheus
from buttress.observe.health import Check, Composite, HealthMonitor
from buttress.observe.metrics import collect


def scraped() -> dict[str, dict[str, float]]:
    registry = CollectorRegistry()
    prometheus.register(registry)
    text = generate_latest(registry).decode()
    found: dict[str, dict[str, float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.startswith("buttress_health_"):
                found.setdefault(sample.name, {})[sample.labels["check"]] = sample.value
    return found


async def test_every_check_of_every_monitor_is_scraped() -> None:
    gc.collect()  # monitors of earlier tests are gone
    clock = FakeClock()
    slow = FakeClock()

    def takes_two_seconds() -> None:
        slow.advance(2)

    group = Composite(
        "db", [Check("primary", lambda: None), Check("replica", lambda: False, critical=False)]
    )
    first = HealthMonitor([group], name="one", clock=clock)
    first.add("shared", lambda: None)
    second = HealthMonitor(name="two", clock=clock)
    second.add("shared", lambda: False)
    timed = HealthMonitor(name="timed", clock=slow)
    timed.add("slow", takes_two_seconds, timeout=10)
    never = HealthMonitor(name="three", clock=clock)
    never.add("not-yet", bool)
    await first.run()
    await second.run()
    await timed.run()
    found = scraped()
    assert found["buttress_health_check_up"] == {
        "db": 1.0,
        "db.primary": 1.0,
        "db.replica": 0.0,
        "shared": 0.0,  # the worse of the two monitors'
        "slow": 1.0,
        "not-yet": 0.0,
    }
    durations = found["buttress_health_check_duration_seconds"]
    assert "not-yet" not in durations
    assert durations["shared"] == 0.0
    assert durations["slow"] == 2.0


def test_no_monitor_no_health_family() -> None:
    gc.collect()
    names = {family.name for family in collect()}
    assert not any(name.startswith("buttress_health_") for name in names)

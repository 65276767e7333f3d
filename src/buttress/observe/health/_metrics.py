"""The health gauges, read at every scrape from every live monitor's snapshot.

Registered with :func:`buttress.observe.metrics.register_source` when
:mod:`buttress.observe.health` is imported, so Prometheus and OpenTelemetry export
them like the policies' state: ``buttress_health_check_up{check}`` (1 while the
check's status is not ``fail``; 0 when it fails or has not run yet) and
``buttress_health_check_duration_seconds{check}`` (its last run; absent before the
first). Two monitors with a check of the same name give one series: the worse
``up`` and the longer duration.
"""

from __future__ import annotations

from buttress.observe.metrics import Family, Sample

from ._monitor import live_monitors

__all__ = ["families"]

_UP = "buttress_health_check_up"
_DURATION = "buttress_health_check_duration_seconds"


def families() -> list[Family]:
    """The two health families, from :func:`live_monitors` (empty when there is none)."""
    up: dict[str, float] = {}
    duration: dict[str, float] = {}
    for monitor in live_monitors():
        for snap in monitor.snapshot():
            value = 1.0 if snap.up else 0.0
            up[snap.check] = min(up.get(snap.check, value), value)
            if snap.duration is not None:
                duration[snap.check] = max(duration.get(snap.check, 0.0), snap.duration)
    if not up:
        return []
    return [
        Family(
            _UP,
            "gauge",
            "Whether a health check passes or warns (1) or fails or has not run (0).",
            [Sample({"check": name}, value) for name, value in sorted(up.items())],
        ),
        Family(
            _DURATION,
            "gauge",
            "How long the last run of a health check took, in seconds.",
            [Sample({"check": name}, value) for name, value in sorted(duration.items())],
        ),
    ]

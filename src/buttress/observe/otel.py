"""OpenTelemetry export: observable instruments over :func:`buttress.observe.metrics.collect`.

Needs the ``otel`` extra (``pip install 'buttress[otel]'``: the API only; the
application brings the SDK and an exporter). The instruments are observable:
OpenTelemetry asks for their values when its reader collects, so a call costs
nothing more for being exported::

    from buttress.observe import otel

    otel.instrument()  # uses the global MeterProvider

Counters keep buttress's names without ``_total`` (``buttress_retries``; an
OpenTelemetry Prometheus exporter adds it back), gauges keep theirs. OpenTelemetry
has no observable histogram, so ``Measure``'s latency histogram is exported as two
observable counters, ``buttress_call_duration_seconds_count`` and ``..._sum``
(with Prometheus, prefer :mod:`buttress.observe.prometheus`, which exports the
buckets too).
"""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Callable, Iterable
from typing import Any

try:
    from opentelemetry import metrics as otel_metrics
    from opentelemetry.metrics import CallbackOptions, Meter, MeterProvider, Observation
except ImportError as exc:  # pragma: no cover - exercised without the extra only
    raise ImportError(
        "buttress.observe.otel needs opentelemetry-api: pip install 'buttress[otel]'"
    ) from exc

from buttress.observe.metrics import KNOWN, Family, collect, tally

__all__ = ["instrument"]

_SNAPSHOT_SECONDS = 0.5

# What each histogram observes, for its two counters' descriptions.
_HISTOGRAMS = {
    "buttress_call_duration_seconds": "Measure's call durations",
    "buttress_relay_batch_size": "The relay's batch sizes (rows claimed at once)",
    "buttress_relay_publish_duration_seconds": "The relay's publish durations (one batch)",
}


class _Snapshot:
    """One :func:`collect` shared by every instrument of one collection cycle."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._at = -1.0
        self._families: dict[str, Family] = {}

    def families(self) -> dict[str, Family]:
        with self._lock:
            now = time.monotonic()
            if now - self._at > _SNAPSHOT_SECONDS:
                self._families = {family.name: family for family in collect()}
                self._at = now
            return self._families


def _observer(
    snapshot: _Snapshot, name: str, part: str | None = None
) -> Callable[[CallbackOptions], Iterable[Observation]]:
    def observe(options: CallbackOptions) -> Iterable[Observation]:
        family = snapshot.families().get(name)
        if family is None:
            return []
        if part == "count":
            return [Observation(s.value, dict(s.labels)) for s in family.samples]
        if part == "sum":
            return [Observation(s.sum, dict(s.labels)) for s in family.samples]
        return [Observation(s.value, dict(s.labels)) for s in family.samples]

    return observe


# Per provider (held weakly), the instruments created on it: kept alive with it.
_done: weakref.WeakKeyDictionary[Any, list[Any]] = weakref.WeakKeyDictionary()
_lock = threading.Lock()


def instrument(meter_provider: MeterProvider | None = None) -> Meter:
    """Create buttress's observable instruments on ``meter_provider`` (default: the global one).

    Also subscribes the process's event tally. Calling it again for the same
    provider does nothing more; returns the meter (``"buttress"``).
    """
    provider = meter_provider if meter_provider is not None else otel_metrics.get_meter_provider()
    meter = provider.get_meter("buttress")
    tally()
    with _lock:
        if provider in _done:
            return meter
        snapshot = _Snapshot()
        instruments: list[Any] = []
        for name, kind in KNOWN.items():
            if kind == "histogram":
                seconds = name.endswith("_seconds")
                for part in ("count", "sum"):
                    instruments.append(
                        meter.create_observable_counter(
                            f"{name}_{part}",
                            callbacks=[_observer(snapshot, name, part)],
                            unit="s" if part == "sum" and seconds else "1",
                            description=_HISTOGRAMS.get(name, name)
                            + f": the {part} of observations.",
                        )
                    )
            elif kind == "counter":
                instruments.append(
                    meter.create_observable_counter(
                        name.removesuffix("_total"), callbacks=[_observer(snapshot, name)]
                    )
                )
            else:
                instruments.append(
                    meter.create_observable_gauge(name, callbacks=[_observer(snapshot, name)])
                )
        _done[provider] = instruments
    return meter

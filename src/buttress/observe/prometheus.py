"""Prometheus export: a ``prometheus_client`` collector of buttress's figures.

Needs the ``prometheus`` extra (``pip install 'buttress[prometheus]'``). The
collector reads buttress's figures when Prometheus scrapes, so a call costs
nothing more for being exported::

    from buttress.observe import prometheus

    prometheus.register()            # into prometheus_client's default registry
    app = prometheus.metrics_app()   # an ASGI app answering GET /metrics

The exposition format is prometheus_client's own (``generate_latest``, and the
OpenMetrics format when the scraper asks for it).
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

try:
    from prometheus_client import REGISTRY, CollectorRegistry, make_asgi_app
    from prometheus_client.core import (
        CounterMetricFamily,
        GaugeMetricFamily,
        HistogramMetricFamily,
        Metric,
    )
    from prometheus_client.registry import Collector
except ImportError as exc:  # pragma: no cover - exercised without the extra only
    raise ImportError(
        "buttress.observe.prometheus needs prometheus_client: pip install 'buttress[prometheus]'"
    ) from exc

from buttress.observe.metrics import Family, collect, tally

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["ButtressCollector", "metrics_app", "register", "unregister"]


def _label_names(family: Family) -> list[str]:
    names: list[str] = []
    for sample in family.samples:
        for label in sample.labels:
            if label not in names:
                names.append(label)
    return names


def _metric(family: Family) -> Metric:
    labels = _label_names(family)
    if family.type == "histogram":
        histogram = HistogramMetricFamily(family.name, family.help, labels=labels)
        for sample in family.samples:
            buckets = [
                ("+Inf" if bound == float("inf") else repr(bound), count)
                for bound, count in sample.buckets
            ]
            histogram.add_metric(
                [sample.labels.get(label, "") for label in labels], buckets, sample.sum
            )
        return histogram
    if family.type == "counter":
        # prometheus_client appends "_total" itself.
        counter = CounterMetricFamily(
            family.name.removesuffix("_total"), family.help, labels=labels
        )
        for sample in family.samples:
            counter.add_metric([sample.labels.get(label, "") for label in labels], sample.value)
        return counter
    gauge = GaugeMetricFamily(family.name, family.help, labels=labels)
    for sample in family.samples:
        gauge.add_metric([sample.labels.get(label, "") for label in labels], sample.value)
    return gauge


class ButtressCollector(Collector):
    """Yields every buttress family at each scrape (see :mod:`buttress.observe.metrics`)."""

    def collect(self) -> Iterator[Metric]:
        for family in collect():
            yield _metric(family)

    def describe(self) -> list[Metric]:
        # No description up front: the families depend on what is alive at scrape
        # time, and an empty describe() keeps registration from calling collect().
        return []


_lock = threading.Lock()
# Held weakly: a registry dropped by its owner takes its collector with it (an id()
# key could be reused by a new registry and be taken for the old one).
_registered: weakref.WeakKeyDictionary[CollectorRegistry, ButtressCollector] = (
    weakref.WeakKeyDictionary()
)


def register(registry: CollectorRegistry | None = None) -> ButtressCollector:
    """Register buttress's collector into ``registry`` (default: prometheus_client's).

    Also subscribes the process's event tally (rejections, retries, transitions
    ...). Registering twice into one registry returns the first collector.
    """
    target = REGISTRY if registry is None else registry
    tally()
    with _lock:
        collector = _registered.get(target)
        if collector is None:
            collector = ButtressCollector()
            target.register(collector)
            _registered[target] = collector
    return collector


def unregister(registry: CollectorRegistry | None = None) -> None:
    """Remove buttress's collector from ``registry`` (no error if it is not there)."""
    target = REGISTRY if registry is None else registry
    with _lock:
        collector = _registered.pop(target, None)
    if collector is not None:
        target.unregister(collector)


def metrics_app(registry: CollectorRegistry | None = None) -> Callable[..., Any]:
    """An ASGI app serving ``registry``'s exposition (buttress's collector registered in it).

    Mount it at ``/metrics`` (Starlette: ``Mount("/metrics", metrics_app())``).
    """
    target = REGISTRY if registry is None else registry
    register(target)
    app: Callable[..., Any] = make_asgi_app(registry=target)
    return app

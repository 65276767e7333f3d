"""The relays' figures, read at scrape time by :func:`buttress.observe.metrics.collect`.

A :class:`Relay` keeps a :class:`RelayStats`, updated once per batch (never per
event): rows published, retried and dead-lettered, the batch size and the publish
time as histograms, the outbox lag as last measured by the running relay, and the
state of its ``LISTEN`` connection. This module registers one metrics source that
walks the relays alive in the process, so ``buttress.observe.instrument()`` exports
them with the policies' figures. Series are labelled by ``outbox`` (the table):
relays of one process on one table add up.
"""

from __future__ import annotations

import threading
import weakref
from bisect import bisect_left
from collections.abc import Iterable
from typing import TYPE_CHECKING, Final

from buttress.observe.metrics import Family, Sample, register_source

if TYPE_CHECKING:
    from buttress.messaging.relay._driver import Relay

__all__ = ["BATCH_BUCKETS", "PUBLISH_BUCKETS", "Histogram", "RelayStats", "families"]

_INF: Final = float("inf")

BATCH_BUCKETS: Final = (1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, _INF)
"""Upper bounds of the batch size histogram (rows claimed per non-empty batch)."""

PUBLISH_BUCKETS: Final = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, _INF,
)  # fmt: skip
"""Upper bounds (seconds) of the publish duration histogram (one batch, through the
pipeline: retries in place included)."""


class Histogram:
    """Fixed buckets, a count per bucket and a sum: one ``bisect`` per observation."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * len(bounds)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        """Count ``value`` in the first bucket whose bound is >= it."""
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    def add(self, other: Histogram) -> None:
        """Add ``other``'s counts (same bounds) to this one."""
        for index, count in enumerate(other.counts):
            self.counts[index] += count
        self.sum += other.sum

    def sample(self, labels: dict[str, str]) -> Sample:
        """The cumulative buckets as a histogram :class:`Sample`."""
        total, buckets = 0, []
        for bound, count in zip(self.bounds, self.counts, strict=True):
            total += count
            buckets.append((bound, float(total)))
        return Sample(labels, float(total), tuple(buckets), self.sum)


class RelayStats:
    """What one relay counted since it was made (see the module's docs)."""

    __slots__ = (
        "batch_size",
        "dead_lettered",
        "lag",
        "listen_losses",
        "listening",
        "publish_seconds",
        "published",
        "retried",
    )

    def __init__(self) -> None:
        self.published = 0
        self.retried = 0
        self.dead_lettered = 0
        self.listen_losses = 0
        self.listening = False
        self.lag: float | None = None
        self.batch_size = Histogram(BATCH_BUCKETS)
        self.publish_seconds = Histogram(PUBLISH_BUCKETS)


_live: weakref.WeakSet[Relay] = weakref.WeakSet()
_lock = threading.Lock()


def track(relay: Relay) -> None:
    """Report ``relay``'s figures while it is alive."""
    with _lock:
        _live.add(relay)


_COUNTERS: Final = (
    ("buttress_relay_published_total", "published",
     "Outbox events confirmed and marked published."),
    ("buttress_relay_retried_total", "retried",
     "Failed publishes of outbox events that will be retried."),
    ("buttress_relay_dead_lettered_total", "dead_lettered",
     "Outbox events dead-lettered (status 'dead')."),
    ("buttress_relay_listen_losses_total", "listen_losses",
     "Times a relay's LISTEN connection was lost."),
)  # fmt: skip


def families() -> Iterable[Family]:
    """The live relays' families, one series per outbox."""
    with _lock:
        relays = list(_live)
    if not relays:
        return []
    by_outbox: dict[str, list[Relay]] = {}
    for relay in relays:
        by_outbox.setdefault(relay.outbox, []).append(relay)
    result = [Family(name, "counter", help) for name, _, help in _COUNTERS]
    batch = Family(
        "buttress_relay_batch_size", "histogram", "Rows a relay claimed per non-empty batch."
    )
    publish = Family(
        "buttress_relay_publish_duration_seconds",
        "histogram",
        "Time to publish one batch through the relay's pipeline, until the broker confirmed.",
    )
    lag = Family(
        "buttress_relay_lag_seconds",
        "gauge",
        "Age of the oldest pending outbox event, as last measured by a running relay.",
    )
    listening = Family(
        "buttress_relay_listening", "gauge", "1 while every relay of the outbox is LISTENing."
    )
    for outbox, members in sorted(by_outbox.items(), key=lambda item: item[0]):
        labels = {"outbox": outbox}
        stats = [relay.stats for relay in members]
        for family, (_, attribute, _) in zip(result, _COUNTERS, strict=True):
            family.samples.append(Sample(labels, float(sum(getattr(s, attribute) for s in stats))))
        sizes, times = Histogram(BATCH_BUCKETS), Histogram(PUBLISH_BUCKETS)
        for s in stats:
            sizes.add(s.batch_size)
            times.add(s.publish_seconds)
        batch.samples.append(sizes.sample(labels))
        publish.samples.append(times.sample(labels))
        lags = [s.lag for s in stats if s.lag is not None]
        if lags:
            lag.samples.append(Sample(labels, max(lags)))
        listeners = [relay.stats for relay in members if relay.storage.channel is not None]
        if listeners:  # SQLite relays poll: no LISTEN to report
            up = all(s.listening for s in listeners)
            listening.samples.append(Sample(labels, 1.0 if up else 0.0))
    return [*result, batch, publish, lag, listening]


_unregister = register_source("relay", families)

"""The consumer runners' figures, read at scrape time by
:func:`buttress.observe.metrics.collect`.

A :class:`~buttress.messaging.consumer.Consumer` counts what happened to the
messages it settled (handled, duplicates, retried, dead-lettered, poisoned, handler
failures, settles the broker did not take) in plain attributes, once per message.
This module registers one metrics source that walks the consumers alive in the
process, so ``buttress.observe.instrument()`` exports them with the policies' and
the relays' figures. Series are labelled by ``consumer`` (its ``name``): consumers
of one process with one name add up.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterable
from typing import TYPE_CHECKING, Final

from buttress.observe.metrics import Family, Sample, register_source

if TYPE_CHECKING:
    from buttress.messaging.consumer._runner import Consumer

__all__ = ["COUNTERS", "families", "track"]

_live: weakref.WeakSet[Consumer] = weakref.WeakSet()
_lock = threading.Lock()


def track(consumer: Consumer) -> None:
    """Report ``consumer``'s figures while it is alive."""
    with _lock:
        _live.add(consumer)


COUNTERS: Final = (
    ("buttress_consumer_handled_total", "handled",
     "Messages acknowledged after their handler returned."),
    ("buttress_consumer_duplicates_total", "duplicates",
     "Messages acknowledged without running the handler: the inbox had them."),
    ("buttress_consumer_retried_total", "retried",
     "Deliveries handed back to the broker for a later redelivery."),
    ("buttress_consumer_dead_lettered_total", "dead_lettered",
     "Messages moved to the dead-letter queue."),
    ("buttress_consumer_poisoned_total", "poisoned",
     "Messages moved to the poison queue: they could not be decoded."),
    ("buttress_consumer_failures_total", "failures", "Handler calls that raised."),
    ("buttress_consumer_settle_errors_total", "settle_errors",
     "Acks, retries or dead-letterings the broker did not take (redelivered)."),
)  # fmt: skip


def families() -> Iterable[Family]:
    """The live consumers' families, one series per consumer name."""
    with _lock:
        consumers = list(_live)
    if not consumers:
        return []
    by_name: dict[str, list[Consumer]] = {}
    for consumer in consumers:
        by_name.setdefault(consumer.name, []).append(consumer)
    result = [Family(name, "counter", help) for name, _, help in COUNTERS]
    in_flight = Family(
        "buttress_consumer_in_flight", "gauge", "Messages received and not yet settled."
    )
    for name, members in sorted(by_name.items(), key=lambda item: item[0]):
        labels = {"consumer": name}
        for family, (_, attribute, _) in zip(result, COUNTERS, strict=True):
            total = sum(getattr(c, attribute) for c in members)
            family.samples.append(Sample(labels, float(total)))
        in_flight.samples.append(Sample(labels, float(sum(c.in_flight for c in members))))
    return [*result, in_flight]


_unregister = register_source("consumer", families)

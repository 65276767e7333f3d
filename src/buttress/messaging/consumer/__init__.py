"""The consumer side of messaging: the :class:`Consumer` runner and what it runs on.

A broker's consumer module implements :class:`Source` (pull deliveries) and
:class:`Received` (one delivery: decode, ack, retry, dead-letter):
:mod:`buttress.messaging.brokers.rabbitmq_consumer` and
:mod:`buttress.messaging.brokers.redis_streams_consumer`. :class:`Consumer` runs a
handler on each message with bounded concurrency; its sans-I/O :class:`Engine`
decides whether a delivery is acked, retried later, dead-lettered or poisoned.
"""

from __future__ import annotations

from buttress.messaging.consumer._engine import Action, Engine, Verdict
from buttress.messaging.consumer._runner import ClaimInbox, Consumer, Handler
from buttress.messaging.consumer._source import Received, Source, SourceUnavailable

__all__ = [
    "Action",
    "ClaimInbox",
    "Consumer",
    "Engine",
    "Handler",
    "Received",
    "Source",
    "SourceUnavailable",
    "Verdict",
]

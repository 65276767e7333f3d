"""Reliable messaging: the event envelope, the transactional outbox and its relay,
the consumer runner, idempotent consumers and dead letters.

See :mod:`buttress.messaging.envelope`, :mod:`buttress.messaging.outbox`,
:mod:`buttress.messaging.deferred` (deferring work through the outbox),
:mod:`buttress.messaging.relay`, :mod:`buttress.messaging.consumer`,
:mod:`buttress.messaging.inbox` (idempotent consumers),
:mod:`buttress.messaging.deadletters` and the brokers in
:mod:`buttress.messaging.brokers`.
"""

from __future__ import annotations

from buttress.messaging._uuid7 import uuid7
from buttress.messaging.consumer import Consumer
from buttress.messaging.deadletters import DeadLetter, DeadLetters, OutboxDeadLetters
from buttress.messaging.deferred import Deferral, DeferredResult, Operations
from buttress.messaging.envelope import Envelope, EnvelopeError
from buttress.messaging.inbox import InboxError, RedisInbox, SQLInbox
from buttress.messaging.outbox import Outbox, OutboxError, migrate
from buttress.messaging.relay import Relay, SQLiteRelayStore

__all__ = [
    "Consumer",
    "DeadLetter",
    "DeadLetters",
    "Deferral",
    "DeferredResult",
    "Envelope",
    "EnvelopeError",
    "InboxError",
    "Operations",
    "Outbox",
    "OutboxDeadLetters",
    "OutboxError",
    "RedisInbox",
    "Relay",
    "SQLInbox",
    "SQLiteRelayStore",
    "migrate",
    "uuid7",
]

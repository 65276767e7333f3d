"""Reliable messaging: the event envelope, the transactional outbox and its relay.

See :mod:`buttress.messaging.envelope`, :mod:`buttress.messaging.outbox`,
:mod:`buttress.messaging.relay`, :mod:`buttress.messaging.inbox` (idempotent consumers)
and :mod:`buttress.messaging.deadletters`.
"""

from __future__ import annotations

from buttress.messaging._uuid7 import uuid7
from buttress.messaging.deadletters import DeadLetter, DeadLetters, OutboxDeadLetters
from buttress.messaging.envelope import Envelope, EnvelopeError
from buttress.messaging.inbox import InboxError, RedisInbox, SQLInbox
from buttress.messaging.outbox import Outbox, OutboxError, migrate
from buttress.messaging.relay import Relay, SQLiteRelayStore

__all__ = [
    "DeadLetter",
    "DeadLetters",
    "Envelope",
    "EnvelopeError",
    "InboxError",
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

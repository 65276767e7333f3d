"""Reliable messaging: the event envelope, the transactional outbox and its relay.

See :mod:`buttress.messaging.envelope`, :mod:`buttress.messaging.outbox` and
:mod:`buttress.messaging.relay`.
"""

from __future__ import annotations

from buttress.messaging._uuid7 import uuid7
from buttress.messaging.envelope import Envelope, EnvelopeError
from buttress.messaging.outbox import Outbox, OutboxError, migrate
from buttress.messaging.relay import Relay, SQLiteRelayStore

__all__ = [
    "Envelope",
    "EnvelopeError",
    "Outbox",
    "OutboxError",
    "Relay",
    "SQLiteRelayStore",
    "migrate",
    "uuid7",
]

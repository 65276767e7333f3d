"""Reliable messaging: the event envelope and the transactional outbox (relay to come).

See :mod:`buttress.messaging.envelope` and :mod:`buttress.messaging.outbox`.
"""

from __future__ import annotations

from buttress.messaging._uuid7 import uuid7
from buttress.messaging.envelope import Envelope, EnvelopeError
from buttress.messaging.outbox import Outbox, OutboxError, migrate

__all__ = ["Envelope", "EnvelopeError", "Outbox", "OutboxError", "migrate", "uuid7"]

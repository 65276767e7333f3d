"""Reliable messaging: the event envelope (outbox, relay and brokers to come).

See :mod:`buttress.messaging.envelope`.
"""

from __future__ import annotations

from buttress.messaging._uuid7 import uuid7
from buttress.messaging.envelope import Envelope, EnvelopeError

__all__ = ["Envelope", "EnvelopeError", "uuid7"]

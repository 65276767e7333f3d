"""The consumer side of messaging: the :class:`Source`/:class:`Received` protocols.

A broker's consumer module implements :class:`Source` (pull deliveries) and
:class:`Received` (one delivery: decode, ack, retry, dead-letter).
"""

from __future__ import annotations

from buttress.messaging.consumer._source import Received, Source

__all__ = ["Received", "Source"]

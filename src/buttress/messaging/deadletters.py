"""Dead letters: messages that were given up on, kept to inspect, replay or purge.

A message is dead-lettered when its handler (or its publish, for the outbox) failed the
maximum number of times, and sent to a *poison* queue when it could not even be decoded.
Every place that keeps such messages -- the outbox's ``dead`` rows, each broker's
dead-letter and poison queues -- implements the one :class:`DeadLetters` protocol, so
the same code (and the ``buttress dlq`` command) lists, shows, replays and purges them
wherever they are.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol, runtime_checkable

from buttress.messaging.envelope import Envelope

__all__ = ["DeadLetter", "DeadLetters"]


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One dead-lettered message, as its queue keeps it.

    Attributes:
        id: Its id within its queue (the outbox's event id, a stream entry id, ...):
            what :meth:`DeadLetters.get`, :meth:`~DeadLetters.replay` and
            :meth:`~DeadLetters.purge` take.
        envelope: The decoded event, or ``None`` when the message could not be
            decoded (a poison message).
        body: The raw message as stored.
        reason: The last error, or why it was dead-lettered.
        attempts: How many times it was tried (published or handled).
        dead_at: When it was dead-lettered, if the queue records it.
    """

    id: str
    envelope: Envelope | None
    body: bytes
    reason: str
    attempts: int
    dead_at: datetime | None


@runtime_checkable
class DeadLetters(Protocol):
    """A queue of dead letters that can be listed, inspected, replayed and purged."""

    async def list(self, limit: int = 100, after: str | None = None) -> list[DeadLetter]:
        """Return up to ``limit`` dead letters in queue order, starting after id ``after``."""
        ...

    async def get(self, id: str) -> DeadLetter | None:
        """Return the dead letter with this id, or ``None`` if there is none."""
        ...

    async def replay(self, ids: Sequence[str] | None = None) -> int:
        """Send these dead letters (all of them if ``ids`` is ``None``) back to be
        processed again; return how many were replayed."""
        ...

    async def purge(self, ids: Sequence[str] | None = None) -> int:
        """Delete these dead letters (all of them if ``ids`` is ``None``) for good;
        return how many were deleted."""
        ...

"""The relay's events (see :mod:`buttress.events` for how to listen)."""

from __future__ import annotations

from dataclasses import dataclass

from buttress._events import Event

__all__ = ["RelayDeadLettered"]


@dataclass(frozen=True, slots=True)
class RelayDeadLettered(Event):
    """The relay gave up on an outbox event and marked it ``dead``.

    ``policy`` is the relay's name; ``outbox`` its table; ``event_id`` and
    ``subject`` the event's (``subject`` is ``""`` when it has none); ``attempts``
    the attempts it used; ``reason`` its last error (as stored in ``last_error``).
    Emitted once per event, after the mark is committed.
    """

    outbox: str
    event_id: str
    subject: str
    attempts: int
    reason: str

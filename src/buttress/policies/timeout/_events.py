"""The events a :class:`~buttress.policies.timeout.Timeout` emits."""

from __future__ import annotations

from dataclasses import dataclass

from buttress._events import Event

__all__ = ["TimeoutOccurred"]


@dataclass(frozen=True, slots=True)
class TimeoutOccurred(Event):
    """A call ran out of time; ``timeout`` is the limit it had, in seconds.

    Emitted each time a ``Timeout`` raises :class:`~buttress.errors.TimeoutExceeded`,
    also for a wait inside it that could not fit in the time left (a retry's backoff,
    a bulkhead's queue). ``call`` names the function when the timeout runs one.
    """

    timeout: float

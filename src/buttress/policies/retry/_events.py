"""The events Retry emits: one per wait, and one at the end of every retried call.

Built only when somebody listens; ``call`` is the qualified name of the function
being retried (``""`` for a block run with :meth:`Retry.attempts`, unless named).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from buttress._events import Event

__all__ = ["RetryGaveUp", "RetryRecovered", "RetryScheduled"]


@dataclass(frozen=True, slots=True)
class RetryScheduled(Event):
    """Attempt number ``attempt`` (1 for the first) failed; the next starts in ``delay`` s.

    ``error`` is what the attempt raised, or ``None`` when it returned ``result``
    and the result rule called that a failure.
    """

    attempt: int
    delay: float
    error: BaseException | None
    result: Any


@dataclass(frozen=True, slots=True)
class RetryRecovered(Event):
    """A call that had failed succeeded on attempt number ``attempts``."""

    attempts: int


@dataclass(frozen=True, slots=True)
class RetryGaveUp(Event):
    """Retry gave up on a call after ``attempts`` attempts; the call failed.

    ``reason`` is short and stable, fit for a metric label:

    - ``"max_attempts"``, ``"max_elapsed"``: a bound was reached;
    - ``"retry_after"``: the dependency asked for a wait longer than ``max_delay``;
    - ``"deadline"``: the next wait could not end before the deadline of an enclosing
      :class:`~buttress.Timeout` (the call fails with that timeout's error);
    - ``"timeout"``: a buttress ``Timeout`` cancelled the call (async);
    - ``"not_retryable"``: a later attempt raised an error that is not retried; it
      propagates unchanged.

    ``error``/``result`` is the last outcome. A call that fails on its first attempt
    with an error that is not retried emits nothing: the policy did not act on it.
    """

    attempts: int
    reason: str
    error: BaseException | None
    result: Any

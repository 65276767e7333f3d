"""The consumer runner's sans-I/O engine: what a handler's outcome means for a message.

The engine reads nothing and writes nothing. The runner decodes a delivery, runs the
handler, and hands the outcome to the engine, which returns a :class:`Verdict`: ack
it, have the broker redeliver it after a delay, dead-letter it (the handler failed
``max_deliveries`` times) or send it to the poison queue (it could not be decoded).
The runner then applies the verdict through the delivery
(:class:`~buttress.messaging.consumer.Received`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from buttress.errors import Rejected
from buttress.messaging.relay._engine import MAX_ERROR_CHARS, _check_positive, describe
from buttress.messaging.relay._engine import Engine as _Schedule
from buttress.policies.backoff import Backoff

__all__ = ["ACK", "DUPLICATE", "Action", "Engine", "Verdict"]

Action = Literal["ack", "retry", "dead_letter", "poison"]
"""What the runner does with a delivery."""


@dataclass(frozen=True, slots=True)
class Verdict:
    """What to do with one delivery.

    Attributes:
        action: ``"ack"``, ``"retry"`` (redeliver after ``delay``), ``"dead_letter"``
            or ``"poison"``.
        delay: Seconds before the redelivery (``"retry"`` only).
        reason: The error, for the log and the dead-letter / poison queue.
    """

    action: Action
    delay: float = 0.0
    reason: str = ""


ACK = Verdict("ack")
DUPLICATE = Verdict("ack", 0.0, "handled before (the inbox has its id)")


class Engine:
    """Decides, from a handler's outcome, what to do with the delivery.

    Args:
        max_deliveries: Deliveries after which a message whose handler keeps failing
            is dead-lettered (>= 1; 1 means "never retry").
        backoff: The schedule of delays between deliveries of one message (default:
            exponential from ``1 s``, doubling), capped at ``max_delay`` and
            jittered ("equal" jitter: between half the delay and the delay) -- the
            relay's schedule.
        max_delay: The longest wait before a redelivery, in seconds.
        random: Floats in [0, 1) for the jitter (inject a fixed one in tests).

    Rules:

    * the handler returned: ack;
    * the message could not be decoded: poison queue, at once (a redelivery would
      not decode any better);
    * the inbox says the message was handled before: ack, without the handler;
    * a :class:`~buttress.errors.Rejected` (an open circuit breaker or a full
      bulkhead in the handler's pipeline): the handler never ran, so the message is
      redelivered after the rejection's ``retry_after`` (at most ``max_delay``) and
      never dead-lettered for it;
    * an exception that says it is permanent (a ``transient`` attribute that is
      ``False``, as buttress's own :class:`~buttress.messaging.brokers.PublishRefused`,
      :class:`~buttress.messaging.deferred.DeferredError` or the SSRF guard's errors
      have): dead-lettered at once — a redelivery would fail the same way; replay it
      once the cause is fixed;
    * any other exception: redelivered after the backoff delay for its number of
      deliveries, or dead-lettered with the error once it has been delivered
      ``max_deliveries`` times.
    """

    __slots__ = ("_schedule", "max_deliveries")

    def __init__(
        self,
        *,
        max_deliveries: int = 5,
        backoff: Backoff | None = None,
        max_delay: float = 300.0,
        random: Callable[[], float] | None = None,
    ) -> None:
        deliveries = int(_check_positive(max_deliveries, "max_deliveries", integer=True))
        self._schedule = _Schedule(
            max_attempts=deliveries, backoff=backoff, max_delay=max_delay, random=random
        )
        self.max_deliveries = self._schedule.max_attempts

    @property
    def max_delay(self) -> float:
        """The longest wait before a redelivery, in seconds."""
        return self._schedule.max_delay

    def delay(self, deliveries: int) -> float:
        """Seconds before redelivering a message whose handler failed on delivery
        number ``deliveries`` (>= 1)."""
        return self._schedule.delay(max(1, deliveries))

    def handled(self, deliveries: int, error: BaseException | None) -> Verdict:
        """The verdict for a delivery whose handler ended with ``error`` (or returned).

        Args:
            deliveries: How many times the message has been delivered, this time
                included (1 on the first delivery).
            error: ``None`` when the handler returned, else what it (or the
                pipeline around it) raised.
        """
        if error is None:
            return ACK
        reason = describe(error)
        if isinstance(error, Rejected):
            wait = error.retry_after if error.retry_after is not None else self.delay(1)
            if not wait < self.max_delay:  # an isolated breaker says "never" (inf)
                wait = self.max_delay
            return Verdict("retry", max(0.0, wait), reason)
        if deliveries >= self.max_deliveries or _says_permanent(error):
            return Verdict("dead_letter", 0.0, reason)
        return Verdict("retry", self.delay(deliveries), reason)

    @staticmethod
    def undecodable(error: BaseException) -> Verdict:
        """The verdict for a message that could not be decoded: the poison queue."""
        return Verdict("poison", 0.0, describe(error)[:MAX_ERROR_CHARS])

    @staticmethod
    def duplicate() -> Verdict:
        """The verdict for a message the inbox has seen before: ack, skip the handler."""
        return DUPLICATE


def _says_permanent(error: BaseException) -> bool:
    """Whether ``error`` itself says that trying again cannot help (``transient`` is
    ``False``). Errors that say nothing are retried: a handler's own exceptions are
    often transient without saying so."""
    try:
        return getattr(error, "transient", None) is False
    except Exception:  # a raising property is no answer
        return False

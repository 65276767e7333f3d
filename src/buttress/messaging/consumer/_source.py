"""What the consumer runner needs from a broker: a :class:`Source` of :class:`Received`.

Each broker's consumer module (``buttress.messaging.brokers.rabbitmq_consumer``,
``buttress.messaging.brokers.redis_streams_consumer``, ...) implements these two
protocols; :class:`~buttress.messaging.consumer.Consumer` only talks to them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol, runtime_checkable

from buttress.errors import ButtressError
from buttress.messaging.envelope import Envelope

__all__ = ["Received", "Source", "SourceUnavailable"]


class SourceUnavailable(ButtressError):
    """The broker could not be reached, or did not answer in time, while receiving or
    settling a message. Transient: the consumer runner tries again, and a message
    that could not be settled is redelivered by the broker."""

    transient = True


@runtime_checkable
class Received(Protocol):
    """One delivery of one message by a broker."""

    @property
    def message_id(self) -> str:
        """Broker-level id for logs (AMQP ``message_id``, stream entry id, stream seq)."""
        ...

    @property
    def body(self) -> bytes:
        """The raw message body as delivered."""
        ...

    @property
    def headers(self) -> Mapping[str, str]:
        """The message's headers / application properties / fields, as text."""
        ...

    @property
    def deliveries(self) -> int:
        """How many times this message was delivered, 1 on the first delivery."""
        ...

    def envelope(self) -> Envelope:
        """Decode the message (CloudEvents binary content mode).

        Raises:
            EnvelopeError: the message is malformed.
        """
        ...

    async def ack(self) -> None:
        """Acknowledge: the message was handled and is removed from the queue."""
        ...

    async def retry(self, delay: float) -> None:
        """Have the broker redeliver the message later (at least ``delay`` s); never lost."""
        ...

    async def dead_letter(self, reason: str, *, poison: bool = False) -> None:
        """Move the message to the dead-letter or poison queue, recording why, then ack.

        Args:
            reason: why (the last error).
            poison: ``False``: the handler failed ``max_deliveries`` times (dead-letter
                queue); ``True``: the message could not be decoded (poison queue).
        """
        ...


# A Received may also have ``async def release(self) -> None``: hand the message back
# to the broker now, for an early redelivery, without counting a failed delivery.
# The runner calls it, if present, on a message whose handler it interrupted.


@runtime_checkable
class Source(Protocol):
    """A broker subscription the consumer runner pulls deliveries from."""

    async def receive(self, max_messages: int, timeout: float) -> Sequence[Received]:  # noqa: ASYNC109 - the decided interface
        """Wait up to ``timeout`` s for at least one message; may return ``[]``.

        Args:
            max_messages: return at most this many deliveries.
            timeout: seconds to wait when nothing is available.
        """
        ...

    async def close(self) -> None:
        """Stop receiving and release the connection; unacked messages are redelivered."""
        ...

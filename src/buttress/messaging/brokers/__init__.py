"""Brokers behind one :class:`Publisher` protocol.

A publisher takes a batch of :class:`~buttress.messaging.Envelope` and returns only
once the broker has confirmed every one of them; otherwise it raises a
:class:`PublishError` naming the ids that were not confirmed. The relay marks an
event published only after that, so a publisher never loses an event silently: at
worst an event whose confirmation was lost is published again (at-least-once).

Implementations live in modules of their own, each behind its extra:
:mod:`buttress.messaging.brokers.rabbitmq` (``buttress[rabbitmq]``),
:mod:`buttress.messaging.brokers.redis_streams` (``buttress[redis]``) and
:mod:`buttress.messaging.brokers.nats` (``buttress[nats]``). The consumer side of
each (a :class:`~buttress.messaging.consumer.Source` and its dead-letter queues) is
in ``rabbitmq_consumer``, ``redis_streams_consumer`` and ``nats``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any, Protocol, runtime_checkable

from buttress.errors import ButtressError
from buttress.messaging.envelope import Envelope

__all__ = ["BrokerUnavailable", "PublishError", "PublishRefused", "Publisher"]


class PublishError(ButtressError):
    """Some events of a batch were not confirmed by the broker.

    ``unconfirmed`` holds their ids, in batch order; the other events of the batch
    were confirmed. ``causes`` maps an unconfirmed id to what happened to it, when
    that is known per message (a broker's negative acknowledgement, an unroutable
    message). ``transient`` says whether publishing them again may succeed:
    :func:`buttress.errors.is_transient` reads it, so a
    :class:`~buttress.Retry` retries a :class:`BrokerUnavailable` and not a
    :class:`PublishRefused`.
    """

    transient: bool = True

    def __init__(
        self,
        message: str,
        unconfirmed: Sequence[str],
        *,
        causes: Mapping[str, BaseException] | None = None,
    ) -> None:
        self.unconfirmed = tuple(unconfirmed)
        self.causes = dict(causes or {})
        self.reason = message
        shown = ", ".join(self.unconfirmed[:5])
        more = f" and {len(self.unconfirmed) - 5} more" if len(self.unconfirmed) > 5 else ""
        if self.unconfirmed:
            message = f"{message}: {len(self.unconfirmed)} event(s) not confirmed ({shown}{more})"
        super().__init__(message)

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.reason, self.unconfirmed), self.__dict__)


class BrokerUnavailable(PublishError):
    """The broker could not be reached, the connection was lost, the batch timed out,
    or the broker answered with a negative acknowledgement. Transient: try again."""

    transient = True


class PublishRefused(PublishError):
    """The broker cannot take these events as they are (e.g. no queue is bound for
    their routing key). Permanent: publishing them again would fail the same way."""

    transient = False


@runtime_checkable
class Publisher(Protocol):
    """Publishes batches of events to a broker, with confirmation.

    Use it as an async context manager (``async with publisher: ...``), which closes
    it on the way out, or call :meth:`close` yourself.
    """

    async def publish(self, envelopes: Sequence[Envelope]) -> None:
        """Publish ``envelopes``; return once the broker has confirmed every one.

        Raises:
            PublishError: some were not confirmed (its ``unconfirmed`` says which):
                :class:`BrokerUnavailable` (transient) or :class:`PublishRefused`.
        """
        ...

    async def close(self) -> None:
        """Release the connection. Publishing after this raises."""
        ...

    async def __aenter__(self) -> Publisher:
        """Connect (and declare the topology); return the publisher."""
        ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Close."""
        ...

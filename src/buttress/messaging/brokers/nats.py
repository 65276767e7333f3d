"""NATS JetStream (nats-py): publisher, pull-consumer source and dead-letter queues.

Install with ``pip install buttress[nats]``.

- :class:`NatsPublisher` publishes each event in the CloudEvents NATS binding's binary
  content mode (``ce-`` headers) with ``Nats-Msg-Id`` = the event id, so JetStream
  stores an event published twice (after a lost PubAck) once, within the stream's
  duplicate window. A batch is pipelined on one connection and
  :meth:`~NatsPublisher.publish` returns once every PubAck came back.
- :class:`NatsSource` is a durable pull consumer for the consumer runner: ``ack``,
  ``retry(delay)`` as a delayed ``NAK``, ``deliveries`` from the message's metadata,
  and ``dead_letter(reason, poison=...)`` copying the message (body and headers, plus
  the reason) to a dead-letter stream before terminating it.
- :class:`NatsDeadLetters` lists, shows, replays and purges that stream's dead
  letters or its poison messages.
"""

from __future__ import annotations

from buttress.messaging.brokers._nats_consumer import NatsDeadLetters, NatsReceived, NatsSource
from buttress.messaging.brokers._nats_publisher import NatsPublisher

__all__ = ["NatsDeadLetters", "NatsPublisher", "NatsReceived", "NatsSource"]

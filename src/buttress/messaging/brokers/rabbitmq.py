"""RabbitMQ publisher (aio-pika): durable topology, persistent messages, confirms.

Install with ``pip install buttress[rabbitmq]``.

:class:`RabbitMQPublisher` publishes each event as a persistent message
(``delivery_mode`` 2) in the CloudEvents AMQP binding's binary content mode: the
attributes as ``cloudEvents_*`` headers (application properties), ``datacontenttype``
as the content type, ``data`` as the body, and the event id as the AMQP
``message_id``. A batch is written to the socket at once (in chunks of
``max_in_flight``) and :meth:`~RabbitMQPublisher.publish` returns once RabbitMQ has
confirmed all of it, waiting for the confirmations together rather than one future
per message.

The connection is aio-pika's robust connection: after the broker or the network
comes back it reconnects and re-declares the topology by itself, and a publish made
meanwhile waits for it (within its ``timeout``) instead of failing at once.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from types import TracebackType
from typing import Any, Final

import aio_pika
import aio_pika.abc
import aiormq.abc
import aiormq.exceptions
import pamqp.frame
from pamqp import commands as spec
from pamqp.common import FieldValue
from pamqp.header import ContentHeader

from buttress.errors import ConfigError, is_transient
from buttress.messaging.brokers import BrokerUnavailable, PublishError, PublishRefused
from buttress.messaging.envelope import Envelope

__all__ = ["RabbitMQPublisher"]

_EXCHANGE_TYPES: Final = ("topic", "direct", "fanout", "headers")


# -- topology: shared with rabbitmq_consumer, so both sides declare it alike ------------


async def declare_exchange(
    channel: aio_pika.abc.AbstractChannel, name: str, kind: str
) -> aio_pika.abc.AbstractExchange:
    """Declare the durable exchange ``name``; one that exists otherwise is a ConfigError."""
    try:
        return await channel.declare_exchange(name, kind, durable=True)
    except aiormq.exceptions.ChannelPreconditionFailed as exc:
        raise ConfigError(
            f"exchange {name!r} exists with other settings ({exc})", path="exchange"
        ) from None


async def declare_dead_letters(
    channel: aio_pika.abc.AbstractChannel, queue: str
) -> aio_pika.abc.AbstractQueue:
    """Declare ``<queue>.dlx`` (fanout) and ``<queue>.dlq`` bound to it; return the DLQ."""
    dlx = await channel.declare_exchange(f"{queue}.dlx", aio_pika.ExchangeType.FANOUT, durable=True)
    dlq = await channel.declare_queue(f"{queue}.dlq", durable=True)
    await dlq.bind(dlx, routing_key="")
    return dlq


QUEUE_TYPES: Final = ("classic", "quorum")


def check_queue_type(queue_type: object, priority: int | None) -> str:
    """``queue_type`` checked: ``"classic"`` or ``"quorum"`` (no ``priority`` then)."""
    if queue_type not in QUEUE_TYPES:
        raise ConfigError(f"must be one of {QUEUE_TYPES}, got {queue_type!r}", path="queue_type")
    if queue_type == "quorum" and priority is not None:
        raise ConfigError(
            "a quorum queue has no x-max-priority: use a classic queue for priorities",
            path="priority",
        )
    return str(queue_type)


def queue_arguments(
    queue: str, *, dead_letter: bool, priority: int | None, queue_type: str = "classic"
) -> dict[str, Any]:
    """The arguments of the consumed queue, identical on both sides (RabbitMQ refuses a
    second declaration with other arguments)."""
    arguments: dict[str, Any] = {}
    if queue_type != "classic":
        arguments["x-queue-type"] = queue_type
    if dead_letter:
        arguments["x-dead-letter-exchange"] = f"{queue}.dlx"
    if priority is not None:
        arguments["x-max-priority"] = priority
    return arguments


async def declare_queue(
    channel: aio_pika.abc.AbstractChannel,
    name: str,
    arguments: dict[str, Any],
    exchange: aio_pika.abc.AbstractExchange,
    binding_keys: Sequence[str],
) -> aio_pika.abc.AbstractQueue:
    """Declare the durable queue ``name`` bound to ``exchange`` with ``binding_keys``."""
    try:
        queue = await channel.declare_queue(name, durable=True, arguments=arguments or None)
    except aiormq.exceptions.ChannelPreconditionFailed as exc:
        raise ConfigError(
            f"queue {name!r} exists with other arguments ({exc})", path="queue"
        ) from None
    for key in binding_keys:
        await queue.bind(exchange, routing_key=key)
    return queue


_Prepared = tuple[bytes, spec.Basic.Properties, str]
"""One message ready to send: body, AMQP properties, routing key."""


def _message(prepared: _Prepared) -> tuple[aio_pika.Message, str]:
    body, properties, key = prepared
    message = aio_pika.Message(
        body,
        headers=properties.headers,
        content_type=properties.content_type,
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        message_id=properties.message_id,
        priority=properties.priority,
    )
    return message, key


def _by_type(envelope: Envelope) -> str:
    return envelope.type


# -- one write and one wait per batch -------------------------------------------------
#
# aio-pika publishes a message at a time: a lock, a socket write and a future per
# message, and a task per message to have several in flight (150-230 µs each,
# measured). A batch instead registers its delivery tags in the aiormq channel's
# confirmation table (the table aiormq's reader settles on Basic.Ack/Nack/Return)
# with a small settling object per message, writes every frame of the batch in
# one ChannelFrame, and awaits one future that the last settlement resolves. The
# future comes from the channel's future store, so a closing channel rejects it
# like aiormq's own. These are aiormq internals: `_batchable` checks they are
# there, and `_send_each` (aio-pika's public API) takes over when they are not.

_CHANNEL_INTERNALS: Final = (
    "confirmations",
    "message_id_delivery_tag",
    "delivery_tag",
    "write_queue",
    "create_future",
    "lock",
    "number",
    "_split_body",
)


_PUBLISH_FRAMES: dict[tuple[int, str, str, bool], bytes] = {}
_PUBLISH_FRAMES_MAX: Final = 4096


def _publish_frame(channel: int, exchange: str, key: str, mandatory: bool) -> bytes:
    """The encoded ``Basic.Publish`` method frame: the same bytes for every message
    to one exchange and routing key, so encoded once (a quarter of pamqp's work per
    message). The cache is dropped when routing keys are too many to keep."""
    cache_key = (channel, exchange, key, mandatory)
    encoded = _PUBLISH_FRAMES.get(cache_key)
    if encoded is None:
        if len(_PUBLISH_FRAMES) >= _PUBLISH_FRAMES_MAX:
            _PUBLISH_FRAMES.clear()
        method = spec.Basic.Publish(exchange=exchange, routing_key=key, mandatory=mandatory)
        encoded = _PUBLISH_FRAMES[cache_key] = pamqp.frame.marshal(method, channel)
    return encoded


def _frame_fields() -> set[str]:
    frame = getattr(aiormq.abc, "ChannelFrame", None)
    if frame is None or not dataclasses.is_dataclass(frame):
        return set()
    return {f.name for f in dataclasses.fields(frame)}


# What the batch path builds a write from: aiormq 7's ChannelFrame(payload, should_close).
_FRAME_OK: Final = {"payload", "should_close"} <= _frame_fields()


def _batchable(channel: object) -> bool:
    return (
        _FRAME_OK
        and bool(getattr(channel, "publisher_confirms", False))
        and all(hasattr(channel, name) for name in _CHANNEL_INTERNALS)
    )


class _Tracker:
    """The outcome of one batch: settles ``confirmed``/``causes`` per message and
    resolves ``future`` when none is left waiting."""

    __slots__ = ("causes", "confirmed", "future", "ids", "waiting")

    def __init__(
        self,
        ids: list[str],
        confirmed: list[bool],
        causes: dict[str, BaseException],
        waiting: int,
        future: asyncio.Future[None],
    ) -> None:
        self.ids = ids
        self.confirmed = confirmed
        self.causes = causes
        self.waiting = waiting
        self.future = future

    def settle(self, index: int, error: BaseException | None) -> None:
        if error is None:
            self.confirmed[index] = True
        else:
            self.causes[self.ids[index]] = error
        self.waiting -= 1
        if self.waiting <= 0 and not self.future.done():
            self.future.set_result(None)


class _Confirmation:
    """What aiormq's reader settles for one delivery tag (duck-types the future
    aiormq would have made: ``done``, ``cancelled``, ``set_result``,
    ``set_exception``)."""

    __slots__ = ("_done", "index", "tracker")

    def __init__(self, tracker: _Tracker, index: int) -> None:
        self.tracker = tracker
        self.index = index
        self._done = False

    def done(self) -> bool:
        return self._done

    def cancelled(self) -> bool:
        return False

    def set_result(self, _frame: object) -> None:
        if not self._done:
            self._done = True
            self.tracker.settle(self.index, None)

    def set_exception(self, error: BaseException) -> None:
        if not self._done:
            self._done = True
            self.tracker.settle(self.index, error)


async def _send_batch(
    channel: Any,
    *,
    exchange: str,
    mandatory: bool,
    ids: list[str],
    prepared: list[_Prepared],
    start: int,
    stop: int,
    confirmed: list[bool],
    causes: dict[str, BaseException],
) -> None:
    """Publish ``prepared[start:stop]`` in one write; wait for every confirmation.

    Settles ``confirmed[i]`` (acked) or ``causes[ids[i]]`` (nacked, returned) per
    message; on a lost channel or a cancellation the unsettled ones stay
    unconfirmed (and, lost channel, get its error as their cause).
    """
    future: asyncio.Future[None] = channel.create_future()
    tracker = _Tracker(ids, confirmed, causes, stop - start, future)
    entries: list[tuple[int, str, _Confirmation]] = []
    async with channel.lock:
        first = channel.delivery_tag + 1
        number = channel.number
        frames: list[bytes] = []
        for offset, index in enumerate(range(start, stop)):
            body, properties, key = prepared[index]
            tag = first + offset
            confirmation = _Confirmation(tracker, index)
            channel.confirmations[tag] = confirmation
            channel.message_id_delivery_tag[ids[index]] = tag
            entries.append((tag, ids[index], confirmation))
            frames.append(_publish_frame(number, exchange, key, mandatory))
            header = ContentHeader(properties=properties, body_size=len(body))
            frames.append(pamqp.frame.marshal(header, number))
            frames.extend(pamqp.frame.marshal(part, number) for part in channel._split_body(body))
        channel.delivery_tag = first + len(entries) - 1
        payload = b"".join(frames)
        sent = False
        try:
            await channel.write_queue.put(
                aiormq.abc.ChannelFrame(payload=payload, should_close=False)
            )
            sent = True
        finally:
            if not sent:  # the broker never saw them: give the tags back
                channel.delivery_tag = first - 1
                _forget(channel, entries)
                if future.done() and not future.cancelled():
                    future.exception()  # rejected by a closing channel: seen, not logged
                future.cancel()
    try:
        await future
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # the channel closed: what is not settled is lost
        for _, _, confirmation in entries:
            if not confirmation.done():
                causes[ids[confirmation.index]] = exc
    finally:
        _forget(channel, entries)


def _forget(channel: Any, entries: list[tuple[int, str, _Confirmation]]) -> None:
    """Drop a batch's entries from the channel's tables (a late ack is then ignored)."""
    for tag, message_id, confirmation in entries:
        if channel.confirmations.get(tag) is confirmation:
            del channel.confirmations[tag]
        if channel.message_id_delivery_tag.get(message_id) == tag:
            del channel.message_id_delivery_tag[message_id]
        confirmation._done = True


class RabbitMQPublisher:
    """Publishes events to a RabbitMQ exchange with publisher confirms.

    Args:
        url: The broker, e.g. ``"amqp://guest:guest@127.0.0.1:5672/"`` (``amqps://``
            for TLS).
        exchange: The exchange to publish to, declared durable if it does not exist.
        exchange_type: ``"topic"`` (the default), ``"direct"``, ``"fanout"`` or
            ``"headers"``.
        routing_key: The routing key of each message: a function of the envelope
            (its ``type`` by default) or a fixed string.
        queue: When given, a durable queue of that name is declared and bound to the
            exchange with each of ``binding_keys``.
        binding_keys: The binding keys for ``queue``; ``("#",)`` (everything, on a
            topic exchange) by default.
        dead_letter: With ``queue``: declare a dead-letter exchange ``<queue>.dlx``
            (fanout) and queue ``<queue>.dlq``, and make ``queue`` dead-letter into
            it (``x-dead-letter-exchange``): a message a consumer rejects without
            requeueing, or that expires, lands there instead of being dropped.
        priority: With ``queue``: make it a priority queue with priorities 1 to
            ``priority`` (``x-max-priority``; RabbitMQ advises at most 10).
        queue_type: With ``queue``: ``"classic"`` (the default) or ``"quorum"``
            (``x-queue-type``: replicated, RabbitMQ's advice for durable queues; it
            counts deliveries itself, and has no priorities).
        message_priority: The priority of each message, a function of the envelope
            returning 0 to 255 (a queue caps it at its ``x-max-priority``).
        mandatory: Publish with the ``mandatory`` flag (the default): a message no
            queue is bound for is returned by RabbitMQ and reported as
            :class:`~buttress.messaging.brokers.PublishRefused` instead of being
            dropped silently.
        timeout: Seconds a whole :meth:`publish` (connecting included) may take.
        max_in_flight: At most this many messages of one :meth:`publish` sent but
            not yet confirmed: a larger batch goes out in chunks of this size.
        reconnect_interval: Seconds between reconnection attempts after the
            connection is lost.

    Raises:
        ConfigError: an option is invalid; ``path`` names it.
    """

    def __init__(
        self,
        url: str,
        *,
        exchange: str,
        exchange_type: str = "topic",
        routing_key: str | Callable[[Envelope], str] = _by_type,
        queue: str | None = None,
        binding_keys: Sequence[str] = ("#",),
        dead_letter: bool = True,
        priority: int | None = None,
        queue_type: str = "classic",
        message_priority: Callable[[Envelope], int] | None = None,
        mandatory: bool = True,
        timeout: float = 10.0,
        max_in_flight: int = 1000,
        reconnect_interval: float = 1.0,
    ) -> None:
        if not isinstance(url, str) or not url.startswith(("amqp://", "amqps://")):
            raise ConfigError(f"must be an amqp:// or amqps:// URL, got {url!r}", path="url")
        if not isinstance(exchange, str) or not exchange:
            raise ConfigError(f"must be a non-empty string, got {exchange!r}", path="exchange")
        if exchange_type not in _EXCHANGE_TYPES:
            raise ConfigError(
                f"must be one of {_EXCHANGE_TYPES}, got {exchange_type!r}", path="exchange_type"
            )
        if isinstance(routing_key, str):
            fixed = routing_key
            routing_key = lambda _envelope: fixed  # noqa: E731
        elif not callable(routing_key):
            raise ConfigError(
                f"must be a string or a function of the envelope, got {routing_key!r}",
                path="routing_key",
            )
        if queue is not None and (not isinstance(queue, str) or not queue):
            raise ConfigError(f"must be a non-empty string or None, got {queue!r}", path="queue")
        if isinstance(binding_keys, str) or not all(isinstance(k, str) for k in binding_keys):
            raise ConfigError(
                f"must be a sequence of strings, got {binding_keys!r}", path="binding_keys"
            )
        if priority is not None and (
            isinstance(priority, bool) or not isinstance(priority, int) or not 1 <= priority <= 255
        ):
            raise ConfigError(f"must be an int from 1 to 255, got {priority!r}", path="priority")
        if priority is not None and queue is None:
            raise ConfigError("needs a queue to apply to", path="priority")
        queue_type = check_queue_type(queue_type, priority)
        if message_priority is not None and not callable(message_priority):
            raise ConfigError(
                f"must be a function of the envelope, got {message_priority!r}",
                path="message_priority",
            )
        for name, value in (("timeout", timeout), ("reconnect_interval", reconnect_interval)):
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not math.isfinite(value)
                or value <= 0
            ):
                raise ConfigError(f"must be a positive number of seconds, got {value!r}", path=name)
        if (
            isinstance(max_in_flight, bool)
            or not isinstance(max_in_flight, int)
            or max_in_flight < 1
        ):
            raise ConfigError(
                f"must be a positive int, got {max_in_flight!r}", path="max_in_flight"
            )
        self.url = url
        self.exchange = exchange
        self.exchange_type = exchange_type
        self.queue = queue
        self.binding_keys = tuple(binding_keys)
        self.dead_letter = dead_letter
        self.priority = priority
        self.queue_type = queue_type
        self.mandatory = mandatory
        self.timeout = float(timeout)
        self.max_in_flight = max_in_flight
        self.reconnect_interval = float(reconnect_interval)
        self._routing_key = routing_key
        self._message_priority = message_priority
        self._connection: aio_pika.abc.AbstractRobustConnection | None = None
        self._channel: aio_pika.abc.AbstractRobustChannel | None = None
        self._exchange: aio_pika.abc.AbstractExchange | None = None
        self._lock = asyncio.Lock()
        self._closed = False

    def _message(self, envelope: Envelope) -> tuple[aio_pika.Message, str]:
        """The aio-pika message and routing key for ``envelope``."""
        return _message(self._prepare(envelope))

    def __repr__(self) -> str:
        return f"RabbitMQPublisher(exchange={self.exchange!r}, queue={self.queue!r})"

    @property
    def dead_letter_queue(self) -> str | None:
        """The name of the dead-letter queue this publisher declares, if any."""
        return f"{self.queue}.dlq" if self.queue is not None and self.dead_letter else None

    # ------------------------------------------------------------------ topology

    async def connect(self) -> None:
        """Connect and declare the topology, if not done yet (idempotent).

        Raises:
            BrokerUnavailable: RabbitMQ could not be reached within ``timeout``.
            ConfigError: the topology conflicts with what exists already (a queue of
                that name declared with other arguments); ``path`` is ``"queue"``
                or ``"exchange"``.
        """
        try:
            async with asyncio.timeout(self.timeout):
                await self._ready()
        except TimeoutError:
            raise BrokerUnavailable(
                f"RabbitMQ not reachable within {self.timeout:g}s", ()
            ) from None
        except (ConfigError, PublishError):
            raise
        except Exception as exc:
            raise self._failure(f"cannot connect to RabbitMQ ({exc!r})", (), exc) from exc

    async def _ready(self) -> aio_pika.abc.AbstractExchange:
        if self._closed:
            raise PublishRefused("the publisher is closed", ())
        if self._exchange is not None and self._channel is not None:
            if self._channel.is_closed:
                # The robust connection is restoring it: wait (within the caller's
                # timeout) rather than fail at once.
                await self._channel.ready()
            return self._exchange
        async with self._lock:
            if self._exchange is None:
                try:
                    await self._declare()
                except BaseException:
                    await self._drop()
                    raise
        assert self._exchange is not None
        return self._exchange

    async def _declare(self) -> None:
        self._connection = await aio_pika.connect_robust(
            self.url, timeout=self.timeout, reconnect_interval=self.reconnect_interval
        )
        channel = await self._connection.channel(publisher_confirms=True, on_return_raises=True)
        self._channel = channel
        exchange = await declare_exchange(channel, self.exchange, self.exchange_type)
        if self.queue is not None:
            if self.dead_letter:
                await declare_dead_letters(channel, self.queue)
            arguments = queue_arguments(
                self.queue,
                dead_letter=self.dead_letter,
                priority=self.priority,
                queue_type=self.queue_type,
            )
            await declare_queue(channel, self.queue, arguments, exchange, self.binding_keys)
        self._exchange = exchange

    async def _drop(self) -> None:
        connection, self._connection = self._connection, None
        self._channel = self._exchange = None
        if connection is not None:
            try:
                await connection.close()
            except Exception:  # closing a half-open connection: best effort
                pass

    # ------------------------------------------------------------------ publishing

    def _prepare(self, envelope: Envelope) -> _Prepared:
        properties, content_type, body = envelope.to_amqp()
        priority = None
        if self._message_priority is not None:
            priority = self._message_priority(envelope)
            if (
                isinstance(priority, bool)
                or not isinstance(priority, int)
                or not 0 <= priority <= 255
            ):
                raise ConfigError(
                    f"must return an int from 0 to 255, got {priority!r} for event {envelope.id}",
                    path="message_priority",
                )
        key = self._routing_key(envelope)
        if not isinstance(key, str) or len(key.encode()) > 255:
            raise ConfigError(
                f"must return a string of at most 255 bytes, got {key!r} for event {envelope.id}",
                path="routing_key",
            )
        amqp = spec.Basic.Properties(
            content_type=content_type,
            headers=dict[str, FieldValue](properties),
            delivery_mode=2,  # persistent
            message_id=envelope.id,
            priority=priority,
        )
        return body, amqp, key

    async def publish(self, envelopes: Sequence[Envelope]) -> None:
        """Publish ``envelopes``; return once RabbitMQ has confirmed every one.

        Raises:
            BrokerUnavailable: RabbitMQ could not be reached, the connection was
                lost, ``timeout`` ran out or RabbitMQ answered with a negative
                acknowledgement (transient); ``unconfirmed`` names the events.
            PublishRefused: RabbitMQ returned the events as unroutable (permanent),
                or the publisher is closed.
            ConfigError: ``routing_key`` or ``message_priority`` returned an
                invalid value (before anything was sent).
        """
        batch = list(envelopes)
        if not batch:
            return
        prepared = [self._prepare(envelope) for envelope in batch]
        confirmed = [False] * len(batch)
        causes: dict[str, BaseException] = {}
        try:
            async with asyncio.timeout(self.timeout):
                exchange = await self._ready()
                await self._send(exchange, batch, prepared, confirmed, causes)
        except TimeoutError:
            unconfirmed = [e.id for e, ok in zip(batch, confirmed, strict=True) if not ok]
            raise BrokerUnavailable(
                f"RabbitMQ did not confirm within {self.timeout:g}s", unconfirmed, causes=causes
            ) from None
        except (ConfigError, PublishError):
            raise
        except Exception as exc:  # connecting failed
            raise self._failure(
                f"cannot connect to RabbitMQ ({exc!r})", [e.id for e in batch], exc
            ) from exc
        if causes:
            unconfirmed = [e.id for e, ok in zip(batch, confirmed, strict=True) if not ok]
            if all(isinstance(c, aiormq.exceptions.PublishError) for c in causes.values()):
                raise PublishRefused(
                    "RabbitMQ returned them as unroutable (no queue bound for their routing key)",
                    unconfirmed,
                    causes=causes,
                )
            first = next(iter(causes.values()))
            raise self._failure(f"publishing failed ({first!r})", unconfirmed, first, causes)

    async def _send(
        self,
        exchange: aio_pika.abc.AbstractExchange,
        batch: list[Envelope],
        prepared: list[_Prepared],
        confirmed: list[bool],
        causes: dict[str, BaseException],
    ) -> None:
        assert self._channel is not None
        channel = await self._channel.get_underlay_channel()
        ids = [e.id for e in batch]
        if _batchable(channel):
            for start in range(0, len(batch), self.max_in_flight):
                stop = min(len(batch), start + self.max_in_flight)
                await _send_batch(
                    channel,
                    exchange=exchange.name,
                    mandatory=self.mandatory,
                    ids=ids,
                    prepared=prepared,
                    start=start,
                    stop=stop,
                    confirmed=confirmed,
                    causes=causes,
                )
            return
        await self._send_each(exchange, ids, prepared, confirmed, causes)

    async def _send_each(
        self,
        exchange: aio_pika.abc.AbstractExchange,
        ids: list[str],
        prepared: list[_Prepared],
        confirmed: list[bool],
        causes: dict[str, BaseException],
    ) -> None:
        """aio-pika's own path (one publish and one future per message), for an
        aiormq whose internals :func:`_send_batch` does not recognise."""
        slots = asyncio.Semaphore(self.max_in_flight)
        mandatory = self.mandatory

        async def one(index: int) -> None:
            message, key = _message(prepared[index])
            async with slots:
                try:
                    await exchange.publish(message, key, mandatory=mandatory)
                except Exception as exc:
                    causes[ids[index]] = exc
                else:
                    confirmed[index] = True

        await asyncio.gather(*(one(i) for i in range(len(ids))))

    @staticmethod
    def _failure(
        message: str,
        unconfirmed: Sequence[str],
        cause: BaseException,
        causes: Mapping[str, BaseException] | None = None,
    ) -> PublishError:
        transient = is_transient(cause) or isinstance(
            cause, aiormq.exceptions.DeliveryError | aiormq.exceptions.ChannelInvalidStateError
        )
        kind = BrokerUnavailable if transient else PublishRefused
        return kind(message, unconfirmed, causes=causes)

    # ------------------------------------------------------------------ life cycle

    async def close(self) -> None:
        """Close the connection. Publishing afterwards raises :class:`PublishRefused`."""
        self._closed = True
        async with self._lock:
            await self._drop()

    async def __aenter__(self) -> RabbitMQPublisher:
        await self.connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

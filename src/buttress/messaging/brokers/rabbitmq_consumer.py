"""RabbitMQ consumer (aio-pika): the publisher's topology, delayed retries, dead letters.

Install with ``pip install buttress[rabbitmq]``.

:class:`RabbitMQSource` consumes the durable queue that
:class:`~buttress.messaging.brokers.rabbitmq.RabbitMQPublisher` declares (same option
names, same declaration, so either may start first) for the
:class:`~buttress.messaging.consumer.Consumer` runner, with a prefetch limit.

* **Ack** is ``basic.ack``.
* **Retry later** publishes a copy of the message (publisher confirms) to a delay
  queue, ``<queue>.retry.<ms>``, whose messages expire after ``<ms>`` and are then
  dead-lettered by RabbitMQ straight back into ``<queue>``; then the original is
  acked. A delay is rounded *up* to one of a few steps (1, 1.5, 2, 3, 5, 7.5 times a
  power of ten, from 10 ms), one queue per step: RabbitMQ expires messages only at
  the head of a queue, so one queue per delay keeps a short delay from waiting
  behind a long one. A delay queue unused for an hour (plus twice its delay) is
  deleted by RabbitMQ; it is declared again before use. The copy carries
  ``x-buttress-retries``, the failed deliveries so far, from which
  :attr:`~buttress.messaging.consumer.Received.deliveries` is counted (plus
  ``x-delivery-count`` on a quorum queue, or 1 when RabbitMQ flags the message as
  redelivered after a consumer died), so a classic queue works as well as a quorum
  queue. The copy is new to RabbitMQ, so it goes to the back of the queue.
* **Dead letter / poison**: a copy goes to ``<queue>.dlq`` / ``<queue>.poison`` with
  ``x-buttress-reason``, ``x-buttress-deliveries``, ``x-buttress-dead-at`` and
  ``x-buttress-dead-id`` headers, then the original is acked.
  :class:`RabbitMQDeadLetters` lists, replays and purges them.

Publishing a copy and then acking is not atomic: a connection lost between the two
delivers the message once more (at least once; an inbox makes that harmless).
"""

from __future__ import annotations

import asyncio
import builtins
import datetime as dt
import hashlib
import math
import time
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any, Final

import aio_pika
import aio_pika.abc
import aiormq.exceptions

from buttress.errors import ConfigError
from buttress.messaging._uuid7 import uuid7
from buttress.messaging.brokers.rabbitmq import (
    check_queue_type,
    declare_dead_letters,
    declare_exchange,
    declare_queue,
    queue_arguments,
)
from buttress.messaging.consumer._source import Received, SourceUnavailable
from buttress.messaging.deadletters import DeadLetter
from buttress.messaging.envelope import Envelope, EnvelopeError, format_time, parse_time

__all__ = ["RabbitMQDeadLetters", "RabbitMQSource", "delay_step"]

_EXCHANGE_TYPES: Final = ("topic", "direct", "fanout", "headers")
_STEPS: Final = (1.0, 1.5, 2.0, 3.0, 5.0, 7.5)
_RETRIES: Final = "x-buttress-retries"
_REASON: Final = "x-buttress-reason"
_DELIVERIES: Final = "x-buttress-deliveries"
_DEAD_AT: Final = "x-buttress-dead-at"
_DEAD_ID: Final = "x-buttress-dead-id"
_IDLE_EXPIRY_MS: Final = 3_600_000
# Headers RabbitMQ sets when it dead-letters or counts: never copied, or RabbitMQ's
# dead-letter cycle detection could drop a copy that expires from a delay queue again.
_BROKER_HEADERS: Final = frozenset(
    {
        "x-death",
        "x-first-death-exchange",
        "x-first-death-queue",
        "x-first-death-reason",
        "x-last-death-exchange",
        "x-last-death-queue",
        "x-last-death-reason",
        "x-delivery-count",
    }
)
_OURS: Final = frozenset({_RETRIES, _REASON, _DELIVERIES, _DEAD_AT, _DEAD_ID})


def delay_step(delay: float) -> int:
    """The delay queue a retry after ``delay`` s goes to, in milliseconds: the
    smallest step (1, 1.5, 2, 3, 5 or 7.5 times a power of ten, from 10 ms) that is
    at least ``delay``; 0 for no delay."""
    if not math.isfinite(delay) or delay <= 0:
        return 0
    exponent = -2
    while True:
        for step in _STEPS:
            value = round(step * 10.0**exponent * 1000)
            if value >= delay * 1000:
                return max(10, value)
        exponent += 1


def _int(value: object) -> int:
    try:
        return int(value)  # type: ignore[call-overload, no-any-return]
    except (TypeError, ValueError):
        return 0


def _text(value: object) -> str:
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("utf-8", "replace")
    return str(value)


def _decode(message: aio_pika.abc.AbstractMessage) -> Envelope:
    try:
        return Envelope.from_amqp(message.headers or {}, message.content_type, message.body)
    except EnvelopeError:
        raise
    except Exception as exc:  # a header of an odd type, undecodable text...
        raise EnvelopeError(f"unreadable message ({exc!r})") from exc


def _copy(message: aio_pika.abc.AbstractMessage, headers: Mapping[str, Any]) -> aio_pika.Message:
    """A persistent copy of ``message`` with ``headers`` (the broker's own removed)."""
    return aio_pika.Message(
        message.body,
        headers={k: v for k, v in headers.items() if k not in _BROKER_HEADERS},
        content_type=message.content_type,
        content_encoding=message.content_encoding,
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        priority=message.priority,
        correlation_id=message.correlation_id,
        message_id=message.message_id,
        timestamp=message.timestamp,
        type=message.type,
        app_id=message.app_id,
    )


def _check_positive(value: object, path: str) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value <= 0
    ):
        raise ConfigError(f"must be a positive number of seconds, got {value!r}", path=path)
    return float(value)


def _check_url(url: object) -> str:
    if not isinstance(url, str) or not url.startswith(("amqp://", "amqps://")):
        raise ConfigError(f"must be an amqp:// or amqps:// URL, got {url!r}", path="url")
    return url


def _check_name(value: object, path: str) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigError(f"must be a non-empty string, got {value!r}", path=path)
    return value


class _Delivery:
    """One delivery of one AMQP message (implements :class:`Received`)."""

    __slots__ = ("_message", "_source", "deliveries")

    def __init__(
        self, source: RabbitMQSource, message: aio_pika.abc.AbstractIncomingMessage
    ) -> None:
        self._source = source
        self._message = message
        headers = message.headers or {}
        count = headers.get("x-delivery-count")
        broker = _int(count) if count is not None else (1 if message.redelivered else 0)
        self.deliveries = 1 + _int(headers.get(_RETRIES, 0)) + broker

    def __repr__(self) -> str:
        return f"<AMQP message {self.message_id} delivery {self.deliveries}>"

    @property
    def message_id(self) -> str:
        return self._message.message_id or f"tag:{self._message.delivery_tag}"

    @property
    def body(self) -> bytes:
        return self._message.body

    @property
    def headers(self) -> Mapping[str, str]:
        return {k: _text(v) for k, v in (self._message.headers or {}).items()}

    def envelope(self) -> Envelope:
        return _decode(self._message)

    async def ack(self) -> None:
        await self._source._guard("ack", self._message.ack())

    async def release(self) -> None:
        """Hand the message back unsettled (``nack`` with requeue): RabbitMQ delivers
        it again at once, flagged redelivered."""
        await self._source._guard("requeue", self._message.nack(requeue=True))

    async def retry(self, delay: float) -> None:
        source = self._source
        headers = dict(self._message.headers or {})
        headers[_RETRIES] = self.deliveries  # the failed deliveries so far
        step = delay_step(delay)
        try:
            target = source.queue if step == 0 else await source._delay_queue(step)
            await source._republish(_copy(self._message, headers), target)
        except SourceUnavailable:
            await self._requeue()
            raise
        await self.ack()

    async def dead_letter(self, reason: str, *, poison: bool = False) -> None:
        source = self._source
        headers = {k: v for k, v in (self._message.headers or {}).items() if k not in _OURS}
        headers[_REASON] = reason
        headers[_DELIVERIES] = self.deliveries
        headers[_DEAD_AT] = format_time(dt.datetime.now(dt.UTC))
        headers[_DEAD_ID] = str(uuid7())
        try:
            await source._republish(
                _copy(self._message, headers),
                source.poison_queue if poison else source.dead_queue,
            )
        except SourceUnavailable:
            await self._requeue()
            raise
        await self.ack()

    async def _requeue(self) -> None:
        # The copy could not be published: hand the message back to RabbitMQ now
        # rather than hold it unacked until the channel closes.
        try:
            await self.release()
        except SourceUnavailable:
            pass  # the channel is gone: RabbitMQ requeues it by itself


class RabbitMQSource:
    """Consumes a RabbitMQ queue bound to the publisher's exchange, for a consumer runner.

    The options that shape the topology are those of
    :class:`~buttress.messaging.brokers.rabbitmq.RabbitMQPublisher`, and must be given
    the same values on both sides (RabbitMQ refuses to declare a
    queue again with other arguments: :class:`~buttress.errors.ConfigError`).

    Args:
        url: The broker, e.g. ``"amqp://guest:guest@127.0.0.1:5672/"``.
        exchange: The exchange the publisher publishes to (declared durable).
        queue: The durable queue to consume, bound to ``exchange``.
        exchange_type: As for the publisher.
        binding_keys: As for the publisher.
        dead_letter: As for the publisher: with it, ``queue`` dead-letters into
            ``<queue>.dlx`` / ``<queue>.dlq``. ``<queue>.dlq`` is declared either way:
            the runner's dead letters go there.
        priority: As for the publisher (``x-max-priority``).
        queue_type: As for the publisher: ``"classic"`` or ``"quorum"``; either side
            may declare the queue first, with the same arguments.
        prefetch: The most messages RabbitMQ delivers before they are settled: at
            least the runner's ``concurrency``.
        timeout: Seconds connecting, declaring, or publishing a retry or dead-letter
            copy may take.
        reconnect_interval: Seconds between reconnection attempts.

    Raises:
        ConfigError: an option is invalid; ``path`` names it.
    """

    def __init__(
        self,
        url: str,
        *,
        exchange: str,
        queue: str,
        exchange_type: str = "topic",
        binding_keys: Sequence[str] = ("#",),
        dead_letter: bool = True,
        priority: int | None = None,
        queue_type: str = "classic",
        prefetch: int = 10,
        timeout: float = 10.0,
        reconnect_interval: float = 1.0,
    ) -> None:
        self.url = _check_url(url)
        self.exchange = _check_name(exchange, "exchange")
        self.queue = _check_name(queue, "queue")
        if exchange_type not in _EXCHANGE_TYPES:
            raise ConfigError(
                f"must be one of {_EXCHANGE_TYPES}, got {exchange_type!r}", path="exchange_type"
            )
        if isinstance(binding_keys, str) or not all(isinstance(k, str) for k in binding_keys):
            raise ConfigError(
                f"must be a sequence of strings, got {binding_keys!r}", path="binding_keys"
            )
        if priority is not None and (
            isinstance(priority, bool) or not isinstance(priority, int) or not 1 <= priority <= 255
        ):
            raise ConfigError(f"must be an int from 1 to 255, got {priority!r}", path="priority")
        self.queue_type = check_queue_type(queue_type, priority)
        if isinstance(prefetch, bool) or not isinstance(prefetch, int) or prefetch < 1:
            raise ConfigError(f"must be an int >= 1, got {prefetch!r}", path="prefetch")
        self.exchange_type = exchange_type
        self.binding_keys = tuple(binding_keys)
        self.dead_letter = bool(dead_letter)
        self.priority = priority
        self.prefetch = prefetch
        self.timeout = _check_positive(timeout, "timeout")
        self.reconnect_interval = _check_positive(reconnect_interval, "reconnect_interval")
        self._connection: aio_pika.abc.AbstractRobustConnection | None = None
        self._consuming: aio_pika.abc.AbstractChannel | None = None
        self._publishing: aio_pika.abc.AbstractChannel | None = None
        self._buffer: asyncio.Queue[aio_pika.abc.AbstractIncomingMessage] = asyncio.Queue()
        self._arrived = asyncio.Event()
        self._delays: dict[int, float] = {}  # step (ms) -> monotonic time declared
        self._lock = asyncio.Lock()
        self._closed = False

    def __repr__(self) -> str:
        return f"RabbitMQSource(exchange={self.exchange!r}, queue={self.queue!r})"

    @property
    def dead_queue(self) -> str:
        """``<queue>.dlq``: where dead letters go."""
        return f"{self.queue}.dlq"

    @property
    def poison_queue(self) -> str:
        """``<queue>.poison``: where undecodable messages go."""
        return f"{self.queue}.poison"

    def dead_letters(self, *, poison: bool = False) -> RabbitMQDeadLetters:
        """The :class:`RabbitMQDeadLetters` of this source's dead (or poison) queue."""
        return RabbitMQDeadLetters(self.url, queue=self.queue, poison=poison, timeout=self.timeout)

    # -- topology -------------------------------------------------------------------

    async def connect(self) -> None:
        """Connect, declare the topology and start consuming. Idempotent.

        Raises:
            SourceUnavailable: RabbitMQ could not be reached within ``timeout``.
            ConfigError: the topology conflicts with what exists (``path`` names it).
        """
        if self._closed:
            raise SourceUnavailable("the source is closed")
        async with self._lock:
            if self._consuming is not None:
                return
            try:
                async with asyncio.timeout(self.timeout):
                    await self._declare()
            except BaseException as exc:
                await self._drop()
                if isinstance(exc, ConfigError):
                    raise
                if isinstance(exc, TimeoutError):
                    raise SourceUnavailable(
                        f"RabbitMQ not reachable within {self.timeout:g}s"
                    ) from None
                if isinstance(exc, Exception):
                    raise SourceUnavailable(f"cannot connect to RabbitMQ ({exc!r})") from exc
                raise

    async def _declare(self) -> None:
        self._connection = await aio_pika.connect_robust(
            self.url, timeout=self.timeout, reconnect_interval=self.reconnect_interval
        )
        publishing = await self._connection.channel(publisher_confirms=True, on_return_raises=True)
        self._publishing = publishing
        exchange = await declare_exchange(publishing, self.exchange, self.exchange_type)
        if self.dead_letter:
            await declare_dead_letters(publishing, self.queue)
        else:  # no dead-letter exchange: still the queue the runner dead-letters into
            await publishing.declare_queue(self.dead_queue, durable=True)
        await publishing.declare_queue(self.poison_queue, durable=True)
        arguments = queue_arguments(
            self.queue,
            dead_letter=self.dead_letter,
            priority=self.priority,
            queue_type=self.queue_type,
        )
        consuming = await self._connection.channel(publisher_confirms=False)
        await consuming.set_qos(prefetch_count=self.prefetch)
        queue = await declare_queue(consuming, self.queue, arguments, exchange, self.binding_keys)
        await queue.consume(self._on_message)
        self._consuming = consuming

    async def _on_message(self, message: aio_pika.abc.AbstractIncomingMessage) -> None:
        self._buffer.put_nowait(message)
        self._arrived.set()

    async def _delay_queue(self, step: int) -> str:
        name = f"{self.queue}.retry.{step}"
        expires = 2 * step + _IDLE_EXPIRY_MS
        declared = self._delays.get(step)
        # Declared again well before it could expire: RabbitMQ deletes a queue unused
        # (not declared, consumed or read) for ``x-expires``, messages and all.
        if declared is None or time.monotonic() - declared > (expires - step) / 2000:
            channel = await self._channel()

            async def declare() -> None:
                await channel.declare_queue(
                    name,
                    durable=True,
                    arguments={
                        "x-message-ttl": step,
                        "x-dead-letter-exchange": "",
                        "x-dead-letter-routing-key": self.queue,
                        "x-expires": expires,
                    },
                )

            await self._guard(f"declare {name}", declare())
            self._delays[step] = time.monotonic()
        return name

    async def _channel(self) -> aio_pika.abc.AbstractChannel:
        if self._publishing is None:
            await self.connect()
        assert self._publishing is not None
        return self._publishing

    async def _republish(self, message: aio_pika.Message, queue: str) -> None:
        channel = await self._channel()
        await self._guard(
            f"publish to {queue}",
            channel.default_exchange.publish(message, routing_key=queue, mandatory=True),
        )

    async def _guard(self, what: str, action: Any) -> None:
        try:
            async with asyncio.timeout(self.timeout):
                await action
        except TimeoutError:
            raise SourceUnavailable(f"RabbitMQ did not {what} within {self.timeout:g}s") from None
        except Exception as exc:
            raise SourceUnavailable(f"RabbitMQ could not {what} ({exc!r})") from exc

    # -- receiving ------------------------------------------------------------------

    async def receive(self, max_messages: int, timeout: float) -> Sequence[Received]:  # noqa: ASYNC109 - the Source protocol
        """Up to ``max_messages`` of the messages RabbitMQ delivered (at most
        ``prefetch`` are), waiting up to ``timeout`` s for the first one.

        Raises:
            SourceUnavailable: RabbitMQ could not be reached (first connection).
        """
        if self._consuming is None:
            await self.connect()
        if self._buffer.empty() and timeout > 0:
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), timeout)
            except TimeoutError:
                return []
        out: list[Received] = []
        while len(out) < max_messages and not self._buffer.empty():
            message = self._buffer.get_nowait()
            if message.channel.is_closed:  # delivered on a channel since lost: RabbitMQ
                continue  # delivers it again on the new one
            out.append(_Delivery(self, message))
        return out

    # -- life cycle -----------------------------------------------------------------

    async def _drop(self) -> None:
        connection, self._connection = self._connection, None
        self._consuming = self._publishing = None
        self._delays.clear()
        if connection is not None:
            try:
                await connection.close()
            except Exception:  # closing a half-open connection: best effort
                pass

    async def close(self) -> None:
        """Close the connection: RabbitMQ delivers the unacknowledged messages again."""
        self._closed = True
        async with self._lock:
            await self._drop()
        while not self._buffer.empty():
            self._buffer.get_nowait()

    async def __aenter__(self) -> RabbitMQSource:
        await self.connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


class RabbitMQDeadLetters:
    """The dead letters (or poison messages) of a queue: ``<queue>.dlq`` (``.poison``).

    Implements :class:`~buttress.messaging.deadletters.DeadLetters`. A queue cannot be
    read without taking messages out of it, so every operation reads the dead-letter
    queue from its head with ``basic.get`` (unacknowledged), under a lock, and then
    acks the messages it removes (replayed or purged) and closes its channel, which
    puts the others back where they were, in order. Caveats: an operation reads the
    queue up to the messages it needs (all of it for :meth:`get`, :meth:`replay`
    and :meth:`purge` by id), holding them in memory, one round trip each; while it
    runs, those messages are invisible to other readers of the queue (another
    process listing it at the same time sees only the rest).

    A dead letter's id is its ``x-buttress-dead-id`` header (given when the runner
    dead-lettered it), else its ``message_id``, else a hash of its body.
    :meth:`replay` publishes a copy (without the dead-letter headers, deliveries
    counted afresh) to ``queue`` and removes the dead letter.

    Args:
        url: The broker, e.g. ``"amqp://guest:guest@127.0.0.1:5672/"``.
        queue: The consumed queue (not the dead one).
        poison: The poison queue instead of the dead-letter one.
        timeout: Seconds connecting and each operation's round trips may take.

    Raises:
        ConfigError: an option is invalid; ``path`` names it.
    """

    def __init__(
        self, url: str, *, queue: str, poison: bool = False, timeout: float = 10.0
    ) -> None:
        self.url = _check_url(url)
        self.queue = _check_name(queue, "queue")
        self.name = f"{queue}.poison" if poison else f"{queue}.dlq"
        self.timeout = _check_positive(timeout, "timeout")
        self._connection: aio_pika.abc.AbstractConnection | None = None
        self._lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"RabbitMQDeadLetters(queue={self.name!r})"

    @staticmethod
    def _id(message: aio_pika.abc.AbstractIncomingMessage) -> str:
        headers = message.headers or {}
        if _DEAD_ID in headers:
            return _text(headers[_DEAD_ID])
        if message.message_id:
            return message.message_id
        return "sha256:" + hashlib.sha256(message.body).hexdigest()[:16]

    @classmethod
    def _letter(cls, message: aio_pika.abc.AbstractIncomingMessage) -> DeadLetter:
        headers = message.headers or {}
        try:
            envelope: Envelope | None = _decode(message)
        except EnvelopeError:
            envelope = None
        reason = _text(headers.get(_REASON, ""))
        attempts = _int(headers.get(_DELIVERIES, 0))
        deaths = headers.get("x-death")
        if not reason and isinstance(deaths, list) and deaths and isinstance(deaths[0], dict):
            # Dead-lettered by RabbitMQ itself (rejected, expired, over the limit).
            reason = f"dead-lettered by RabbitMQ: {_text(deaths[0].get('reason', ''))}"
            attempts = attempts or _int(deaths[0].get("count", 0))
        dead_at: dt.datetime | None = None
        if _DEAD_AT in headers:
            try:
                dead_at = parse_time(_text(headers[_DEAD_AT]))
            except Exception:
                dead_at = None
        return DeadLetter(
            id=cls._id(message),
            envelope=envelope,
            body=message.body,
            reason=reason,
            attempts=attempts,
            dead_at=dead_at,
        )

    async def _scan(self, act: Any, enough: Any = None) -> Any:
        """Read the queue from its head (up to ``enough(read)``), call
        ``act(channel, read)``, then put back whatever it did not ack."""
        async with self._lock:
            try:
                async with asyncio.timeout(self.timeout):
                    if self._connection is None or self._connection.is_closed:
                        self._connection = await aio_pika.connect(self.url, timeout=self.timeout)
                    channel = await self._connection.channel(
                        publisher_confirms=True, on_return_raises=True
                    )
            except TimeoutError:
                raise SourceUnavailable(
                    f"RabbitMQ not reachable within {self.timeout:g}s"
                ) from None
            except Exception as exc:
                raise SourceUnavailable(f"cannot connect to RabbitMQ ({exc!r})") from exc
            try:
                try:
                    queue = await channel.declare_queue(self.name, passive=True)
                except aiormq.exceptions.ChannelNotFoundEntity:
                    return await act(None, [])
                read: builtins.list[aio_pika.abc.AbstractIncomingMessage] = []
                while enough is None or not enough(read):
                    message = await queue.get(no_ack=False, fail=False, timeout=self.timeout)
                    if message is None:
                        break
                    read.append(message)
                return await act(channel, read)
            except (ConfigError, SourceUnavailable):
                raise
            except Exception as exc:
                raise SourceUnavailable(f"RabbitMQ failed on {self.name} ({exc!r})") from exc
            finally:
                # Whatever was read and not acked goes back to where it was.
                try:
                    await channel.close()
                except Exception:
                    pass

    async def list(self, limit: int = 100, after: str | None = None) -> list[DeadLetter]:
        """Up to ``limit`` dead letters in queue order, after the one with id ``after``
        (from the head when ``after`` is ``None``; none when ``after`` is no longer in
        the queue, which has no other way to tell where it was).

        Raises:
            SourceUnavailable: RabbitMQ could not be reached.
        """
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ConfigError(f"must be an int >= 1, got {limit!r}", path="limit")

        def start(read: builtins.list[Any]) -> int:
            if after is None:
                return 0
            for index, message in enumerate(read):
                if self._id(message) == after:
                    return index + 1
            return -1  # not (yet) seen

        def enough(read: builtins.list[Any]) -> bool:
            first = start(read)
            return first >= 0 and len(read) - first >= limit

        async def act(channel: Any, read: builtins.list[Any]) -> builtins.list[DeadLetter]:
            first = start(read)
            if first < 0:
                first = 0 if after is None else len(read)
            return [self._letter(m) for m in read[first : first + limit]]

        result: builtins.list[DeadLetter] = await self._scan(act, enough)
        return result

    async def get(self, id: str) -> DeadLetter | None:
        """The dead letter with this id, or ``None``."""

        async def act(channel: Any, read: builtins.list[Any]) -> DeadLetter | None:
            for message in read:
                if self._id(message) == id:
                    return self._letter(message)
            return None

        result: DeadLetter | None = await self._scan(
            act, lambda read: bool(read) and self._id(read[-1]) == id
        )
        return result

    async def replay(self, ids: Sequence[str] | None = None) -> int:
        """Publish these dead letters (all if ``ids`` is ``None``) back to ``queue``,
        with their deliveries counted afresh, and remove them; return how many."""
        wanted = None if ids is None else set(ids)

        async def act(channel: Any, read: builtins.list[Any]) -> int:
            count = 0
            for message in read:
                if wanted is not None and self._id(message) not in wanted:
                    continue
                headers = {k: v for k, v in (message.headers or {}).items() if k not in _OURS}
                await channel.default_exchange.publish(
                    _copy(message, headers), routing_key=self.queue, mandatory=True
                )
                await message.ack()
                count += 1
            return count

        result: int = await self._scan(act)
        return result

    async def purge(self, ids: Sequence[str] | None = None) -> int:
        """Delete these dead letters (all if ``ids`` is ``None``); return how many."""
        if ids is None:

            async def everything(channel: Any, read: builtins.list[Any]) -> int:
                if channel is None:
                    return 0
                for message in read:
                    await message.ack()
                queue = await channel.declare_queue(self.name, passive=True)
                answer = await queue.purge()
                return len(read) + (answer.message_count or 0 if answer is not None else 0)

            result: int = await self._scan(everything, lambda read: True)
            return result
        wanted = set(ids)

        async def some(channel: Any, read: builtins.list[Any]) -> int:
            count = 0
            for message in read:
                if self._id(message) in wanted:
                    await message.ack()
                    count += 1
            return count

        counted: int = await self._scan(some)
        return counted

    async def close(self) -> None:
        """Close the connection."""
        async with self._lock:
            connection, self._connection = self._connection, None
            if connection is not None:
                await connection.close()

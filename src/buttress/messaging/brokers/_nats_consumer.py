"""The NATS JetStream consumer side: a durable pull consumer, and its dead letters.

Private: re-exported by :mod:`buttress.messaging.brokers.nats`.
"""

from __future__ import annotations

import asyncio
import builtins
import datetime as dt
import json
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any, Final

import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, RawStreamMsg, StorageType, StreamConfig

from buttress._validate import check_count, check_seconds
from buttress.errors import ConfigError
from buttress.messaging.brokers import BrokerUnavailable, PublishError, PublishRefused
from buttress.messaging.brokers._nats_common import (
    DEAD_AT,
    DEAD_DELIVERIES,
    DEAD_KIND,
    DEAD_MSG_ID,
    DEAD_REASON,
    DEAD_SEQ,
    DEAD_STREAM,
    DEAD_SUBJECT,
    MSG_ID,
    check_stream_name,
    check_subject,
    check_url,
    connect,
    failure_kind,
    header_text,
    text_headers,
    timeout_option,
)
from buttress.messaging.deadletters import DeadLetter
from buttress.messaging.envelope import Envelope, EnvelopeError

__all__ = ["NatsDeadLetters", "NatsReceived", "NatsSource"]

_NOT_FOUND: Final = 404
_STREAM_NOT_FOUND: Final = 10059  # JetStream's err_code for "stream not found"
_MIN_FETCH: Final = 0.01  # seconds: JetStream needs a pull request's expiry above zero


def _failure(message: str, ids: Sequence[str], exc: BaseException) -> PublishError:
    return failure_kind(exc)(f"{message} ({exc!r})", ids)


class _Connection:
    """One lazily made client, shared by a source or a dead-letter queue's calls."""

    def __init__(
        self, url: str, name: str, timeout: float, reconnect_interval: float, what: str
    ) -> None:
        self.what = what
        self.url = url
        self.name = name
        self.timeout = timeout
        self.reconnect_interval = reconnect_interval
        self.client: Client | None = None
        self.lock = asyncio.Lock()
        self.closed = False

    async def get(self) -> Client:
        if self.closed:
            raise PublishRefused(f"the {self.what} is closed", ())
        client = self.client
        if client is not None and not client.is_closed:
            return client
        async with self.lock:
            if self.client is None or self.client.is_closed:
                self.client = await connect(
                    self.url,
                    name=self.name,
                    timeout=self.timeout,
                    reconnect_interval=self.reconnect_interval,
                )
            return self.client

    async def close(self, *, for_good: bool = True) -> None:
        self.closed = self.closed or for_good
        async with self.lock:
            client, self.client = self.client, None
            if client is not None:
                try:
                    await client.close()
                except Exception:  # a broken client: best effort
                    pass


class NatsReceived:
    """One delivery of one JetStream message, as :class:`NatsSource` returns it.

    Implements :class:`~buttress.messaging.consumer.Received`.
    """

    __slots__ = ("_headers", "_msg", "_seq", "_source", "deliveries")

    def __init__(self, msg: Msg, source: NatsSource) -> None:
        self._msg = msg
        self._source = source
        metadata = msg.metadata
        self._seq = metadata.sequence.stream
        self.deliveries: int = metadata.num_delivered
        """How many times JetStream delivered this message, 1 on the first delivery."""
        self._headers: dict[str, str] | None = None

    def __repr__(self) -> str:
        return (
            f"NatsReceived(subject={self.subject!r}, seq={self._seq}, deliveries={self.deliveries})"
        )

    @property
    def message_id(self) -> str:
        """The message's sequence number in its stream."""
        return str(self._seq)

    @property
    def subject(self) -> str:
        """The subject the message was published to."""
        return self._msg.subject

    @property
    def body(self) -> bytes:
        """The message's payload."""
        return self._msg.data

    @property
    def headers(self) -> Mapping[str, str]:
        """The message's headers (``ce-*``, ``content-type``, ``Nats-Msg-Id``...)."""
        if self._headers is None:
            self._headers = text_headers(self._msg.headers)
        return self._headers

    def envelope(self) -> Envelope:
        """Decode the event (CloudEvents NATS binding, binary content mode).

        Raises:
            EnvelopeError: the message is not a valid event.
        """
        return Envelope.from_headers(self.headers, self._msg.data, binding="nats")

    async def ack(self) -> None:
        """Acknowledge: JetStream will not deliver it to this consumer again.

        Raises:
            BrokerUnavailable: the connection is closed (the message is redelivered
                after the consumer's ``ack_wait``).
        """
        try:
            await self._msg.ack()
        except nats.errors.Error as exc:
            raise _failure("cannot acknowledge", (), exc) from exc

    async def retry(self, delay: float) -> None:
        """Have JetStream deliver the message again in ``delay`` seconds (``NAK``).

        Raises:
            ConfigError: ``delay`` is negative or not a number.
            BrokerUnavailable: the connection is closed (the message is redelivered
                after the consumer's ``ack_wait`` anyway).
        """
        seconds = check_seconds(delay, "delay")
        try:
            await self._msg.nak(delay=seconds)
        except nats.errors.Error as exc:
            raise _failure("cannot NAK", (), exc) from exc

    async def release(self) -> None:
        """Hand the message back unsettled (``NAK`` without delay): JetStream delivers
        it again at once, instead of after the consumer's ``ack_wait``. The runner
        calls it for a message whose handler it interrupted.

        Raises:
            BrokerUnavailable: the connection is closed (the message is redelivered
                after ``ack_wait`` anyway).
        """
        try:
            await self._msg.nak()
        except nats.errors.Error as exc:
            raise _failure("cannot NAK", (), exc) from exc

    async def dead_letter(self, reason: str, *, poison: bool = False) -> None:
        """Copy the message to the dead-letter (or poison) subject, then terminate it.

        The copy keeps the payload and headers and adds ``Buttress-Dead-Reason`` (one
        line, at most 2,000 characters), ``-Kind``, ``-Subject`` (where it was
        published: a replay sends it back there), ``-Stream``, ``-Seq``,
        ``-Deliveries``, ``-At`` and ``-Msg-Id`` (its original ``Nats-Msg-Id``). Its
        own ``Nats-Msg-Id`` names the consumer, stream and sequence, so a copy made
        twice (the message redelivered after a lost ``TERM``) is stored once.

        Raises:
            BrokerUnavailable: the copy was not confirmed; the message is left
                unacknowledged, to be delivered again.
            PublishRefused: JetStream refused the copy, or the source is closed.
        """
        source = self._source
        kind = "poison" if poison else "dead"
        headers = {
            k: v
            for k, v in self.headers.items()
            if not k.lower().startswith(("nats-", "buttress-"))
        }
        original_id = self.headers.get(MSG_ID)
        if original_id is not None:
            headers[DEAD_MSG_ID] = original_id
        headers[DEAD_REASON] = header_text(reason) or "-"
        headers[DEAD_KIND] = kind
        headers[DEAD_SUBJECT] = self.subject
        headers[DEAD_STREAM] = source.stream
        headers[DEAD_SEQ] = str(self._seq)
        headers[DEAD_DELIVERIES] = str(self.deliveries)
        headers[DEAD_AT] = dt.datetime.now(dt.UTC).isoformat()
        headers[MSG_ID] = f"{source.durable}:{source.stream}:{self._seq}:{kind}"
        target = source.poison_subject if poison else source.dead_letter_subject
        try:
            js = await source._js()
            await js.publish(target, self._msg.data, timeout=source.timeout, headers=headers)
        except PublishError:
            raise
        except (nats.errors.Error, OSError, TimeoutError) as exc:
            raise _failure(
                f"cannot dead-letter message {self._seq}", [self.message_id], exc
            ) from exc
        try:
            await self._msg.term()
        except nats.errors.Error as exc:
            # The copy is stored; redelivered, the message is copied again under the
            # same Nats-Msg-Id (stored once) and terminated then.
            raise _failure("cannot terminate", (), exc) from exc


class NatsSource:
    """A durable JetStream pull consumer that the consumer runner receives from.

    Implements :class:`~buttress.messaging.consumer.Source`. On connect it creates the
    durable consumer if it does not exist (explicit acks, ``ack_wait``, no limit on
    deliveries: the runner decides when to give up, ``max_ack_pending``) and the
    dead-letter stream that :meth:`NatsReceived.dead_letter` copies messages to.
    A consumer that exists already is used as it is.

    Args:
        url: The server, e.g. ``"nats://127.0.0.1:4222"``; checked now, without
            connecting.
        stream: The stream to consume (it must exist, e.g. declared by a
            :class:`NatsPublisher`).
        durable: The durable consumer's name: consumers of one name share the
            work, and its position survives restarts.
        filter_subject: Only messages on this subject (wildcards allowed);
            ``None``: every message of the stream.
        dead_letter_stream: The stream dead letters and poison messages are copied
            to; ``<stream>_DLQ`` by default. Declared if missing (file storage,
            capturing both subjects below).
        dead_letter_subject: The subject of dead letters (handler failed too many
            times); ``dlq.<stream>.dead`` by default.
        poison_subject: The subject of poison messages (could not be decoded);
            ``dlq.<stream>.poison`` by default.
        ack_wait: Seconds JetStream waits for an acknowledgement before delivering
            the message again: longer than your slowest handler.
        max_ack_pending: The most messages delivered and not yet acknowledged:
            at least the runner's ``concurrency``.
        timeout: Seconds connecting, declaring and each dead-letter copy may take.
        reconnect_interval: Seconds between reconnection attempts.
        name: The connection's name, as the server's monitoring shows it.

    Raises:
        ConfigError: an option is invalid; ``path`` names it.
    """

    def __init__(
        self,
        url: str,
        *,
        stream: str,
        durable: str,
        filter_subject: str | None = None,
        dead_letter_stream: str | None = None,
        dead_letter_subject: str | None = None,
        poison_subject: str | None = None,
        ack_wait: float = 30.0,
        max_ack_pending: int = 1000,
        timeout: float = 10.0,
        reconnect_interval: float = 1.0,
        name: str = "buttress-consumer",
    ) -> None:
        self.url = check_url(url)
        self.stream = check_stream_name(stream, "stream")
        self.durable = check_stream_name(durable, "durable")
        self.filter_subject = (
            None
            if filter_subject is None
            else check_subject(filter_subject, "filter_subject", wildcards=True)
        )
        self.dead_letter_stream = check_stream_name(
            dead_letter_stream if dead_letter_stream is not None else f"{stream}_DLQ",
            "dead_letter_stream",
        )
        if self.dead_letter_stream == self.stream:
            raise ConfigError("must differ from stream", path="dead_letter_stream")
        self.dead_letter_subject = check_subject(
            dead_letter_subject if dead_letter_subject is not None else f"dlq.{stream}.dead",
            "dead_letter_subject",
        )
        self.poison_subject = check_subject(
            poison_subject if poison_subject is not None else f"dlq.{stream}.poison",
            "poison_subject",
        )
        if self.poison_subject == self.dead_letter_subject:
            raise ConfigError("must differ from dead_letter_subject", path="poison_subject")
        self.ack_wait = check_seconds(ack_wait, "ack_wait", positive=True)
        self.max_ack_pending = check_count(max_ack_pending, "max_ack_pending")
        self.timeout = timeout_option(timeout)
        reconnect_interval = check_seconds(reconnect_interval, "reconnect_interval", positive=True)
        if not isinstance(name, str) or not name:
            raise ConfigError(f"must be a non-empty string, got {name!r}", path="name")
        self._connection = _Connection(self.url, name, self.timeout, reconnect_interval, "source")
        self._sub: JetStreamContext.PullSubscription | None = None
        self._lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"NatsSource(stream={self.stream!r}, durable={self.durable!r})"

    async def _js(self) -> JetStreamContext:
        client = await self._connection.get()
        return client.jetstream(timeout=self.timeout)

    async def connect(self) -> None:
        """Connect, and create the consumer and the dead-letter stream if missing.

        Raises:
            BrokerUnavailable: NATS could not be reached within ``timeout``.
            PublishRefused: the stream does not exist, or the source is closed.
            ConfigError: the dead-letter stream exists without the dead-letter and
                poison subjects (``path`` ``"dead_letter_stream"``).
        """
        try:
            async with asyncio.timeout(self.timeout):
                await self._ready()
        except TimeoutError:
            raise BrokerUnavailable(f"NATS not reachable within {self.timeout:g}s", ()) from None

    async def _ready(self) -> JetStreamContext.PullSubscription:
        sub = self._sub
        client = self._connection.client
        if sub is not None and client is not None and not client.is_closed:
            return sub
        async with self._lock:
            if (
                self._sub is None
                or self._connection.client is None
                or (self._connection.client.is_closed)
            ):
                js = await self._js()
                try:
                    await self._declare(js)
                    self._sub = await js.pull_subscribe_bind(
                        durable=self.durable, stream=self.stream
                    )
                except BaseException as exc:
                    # Leave no connection open behind a source that is not set up.
                    await self._connection.close(for_good=False)
                    if isinstance(exc, nats.errors.Error | OSError):
                        raise _failure("cannot set up the consumer", (), exc) from exc
                    raise
            return self._sub

    async def _declare(self, js: JetStreamContext) -> None:
        # The consumed stream first: nothing is declared for a stream that is not there.
        try:
            await js.consumer_info(self.stream, self.durable)
            exists = True
        except nats.js.errors.NotFoundError as exc:
            if exc.err_code == _STREAM_NOT_FOUND:
                raise PublishRefused(f"stream {self.stream!r} does not exist", ()) from exc
            exists = False
        subjects = [self.dead_letter_subject, self.poison_subject]
        try:
            info = await js.stream_info(self.dead_letter_stream)
        except nats.js.errors.NotFoundError:
            await js.add_stream(
                StreamConfig(
                    name=self.dead_letter_stream,
                    subjects=subjects,
                    storage=StorageType.FILE,
                    duplicate_window=120.0,
                )
            )
        else:
            missing = [s for s in subjects if s not in (info.config.subjects or [])]
            if missing:
                raise ConfigError(
                    f"stream {self.dead_letter_stream!r} exists without subject(s) {missing}",
                    path="dead_letter_stream",
                )
        if not exists:
            config = ConsumerConfig(
                name=self.durable,
                durable_name=self.durable,
                ack_policy=AckPolicy.EXPLICIT,
                ack_wait=self.ack_wait,
                max_deliver=-1,  # the runner decides when to give up, not the server
                max_ack_pending=self.max_ack_pending,
                filter_subject=self.filter_subject,
            )
            await js.add_consumer(self.stream, config)

    async def receive(self, max_messages: int, timeout: float) -> Sequence[NatsReceived]:  # noqa: ASYNC109 - the Source protocol
        """Wait up to ``timeout`` s for at least one message; return at most ``max_messages``.

        Returns ``[]`` when none came in time.

        Raises:
            BrokerUnavailable: the connection is down or the pull request failed.
            ConfigError: ``max_messages`` or ``timeout`` is invalid.
        """
        count = check_count(max_messages, "max_messages")
        wait = max(check_seconds(timeout, "timeout"), _MIN_FETCH)
        client = self._connection.client
        if client is not None and client.is_reconnecting:
            raise BrokerUnavailable("the connection to NATS is being re-established", ())
        guard = asyncio.timeout(self.timeout + wait)
        try:
            async with guard:
                sub = await self._ready()
                msgs = await sub.fetch(batch=count, timeout=wait)
        except TimeoutError:  # the driver's own (no message in time), or the guard's
            if guard.expired():
                raise BrokerUnavailable(
                    f"NATS did not answer within {self.timeout + wait:g}s", ()
                ) from None
            return []
        except (ConfigError, PublishError):
            raise
        except (nats.errors.Error, OSError) as exc:
            raise _failure("cannot receive", (), exc) from exc
        return [NatsReceived(msg, self) for msg in msgs]

    def dead_letters(self, *, poison: bool = False) -> NatsDeadLetters:
        """The queue of this source's dead letters (or, with ``poison``, poison messages).

        It has its own connection: close it (or use ``async with``) when done.
        """
        return NatsDeadLetters(
            self.url,
            stream=self.dead_letter_stream,
            subject=self.poison_subject if poison else self.dead_letter_subject,
            timeout=self.timeout,
        )

    async def close(self) -> None:
        """Close the connection. Messages delivered and not acknowledged are delivered
        again after ``ack_wait``."""
        self._sub = None
        await self._connection.close()

    async def __aenter__(self) -> NatsSource:
        await self.connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


class NatsDeadLetters:
    """The dead letters (or poison messages) kept on one subject of a JetStream stream.

    Implements :class:`~buttress.messaging.deadletters.DeadLetters`. A dead letter's
    ``id`` is its sequence number in the dead-letter stream. :meth:`replay`
    publishes each message back to the subject it came from (its payload and
    headers, with a ``Nats-Msg-Id`` of its own so JetStream does not drop it as a
    duplicate of the original) and, once JetStream confirmed it, deletes it here.

    Args:
        url: The server, e.g. ``"nats://127.0.0.1:4222"``.
        stream: The dead-letter stream (``<stream>_DLQ`` for a :class:`NatsSource`'s).
        subject: The subject of the dead letters within it.
        timeout: Seconds each call to the server may take.

    Raises:
        ConfigError: an option is invalid; ``path`` names it.
    """

    def __init__(self, url: str, *, stream: str, subject: str, timeout: float = 10.0) -> None:
        self.url = check_url(url)
        self.stream = check_stream_name(stream, "stream")
        self.subject = check_subject(subject, "subject")
        self.timeout = timeout_option(timeout)
        self._connection = _Connection(
            self.url, "buttress-dead-letters", self.timeout, 1.0, "dead-letter queue"
        )

    def __repr__(self) -> str:
        return f"NatsDeadLetters(stream={self.stream!r}, subject={self.subject!r})"

    async def _js(self) -> JetStreamContext:
        client = await self._connection.get()
        return client.jetstream(timeout=self.timeout)

    async def _get(self, js: JetStreamContext, seq: int, *, next_one: bool) -> RawStreamMsg | None:
        try:
            if next_one:
                raw = await js.get_msg(self.stream, seq, subject=self.subject, next=True)
            else:
                raw = await js.get_msg(self.stream, seq)
        except nats.js.errors.NotFoundError:
            return None
        if raw.subject != self.subject:
            return None
        return raw

    def _letter(self, raw: RawStreamMsg) -> DeadLetter:
        headers = text_headers(raw.headers)
        body = raw.data or b""
        try:
            envelope: Envelope | None = Envelope.from_headers(headers, body, binding="nats")
        except EnvelopeError:
            envelope = None
        try:
            attempts = int(headers.get(DEAD_DELIVERIES, "0"))
        except ValueError:
            attempts = 0
        dead_at: dt.datetime | None = raw.time
        if DEAD_AT in headers:
            try:
                dead_at = dt.datetime.fromisoformat(headers[DEAD_AT])
            except ValueError:
                pass
        return DeadLetter(
            id=str(raw.seq),
            envelope=envelope,
            body=body,
            reason=headers.get(DEAD_REASON, ""),
            attempts=attempts,
            dead_at=dead_at,
        )

    @staticmethod
    def _seq(value: object) -> int | None:
        if isinstance(value, str) and value.isdigit() and int(value) > 0:
            return int(value)
        return None

    async def _call(self, what: str, coro: Any) -> Any:
        try:
            async with asyncio.timeout(self.timeout):
                return await coro
        except TimeoutError:
            raise BrokerUnavailable(f"NATS did not answer within {self.timeout:g}s", ()) from None
        except (ConfigError, PublishError):
            raise
        except (nats.errors.Error, OSError) as exc:
            raise _failure(f"cannot {what}", (), exc) from exc

    async def list(self, limit: int = 100, after: str | None = None) -> list[DeadLetter]:
        """Up to ``limit`` dead letters in stream order, after the one with id ``after``.

        Raises:
            ConfigError: ``limit`` is not a positive integer, or ``after`` is not an id.
            BrokerUnavailable: NATS could not be reached.
        """
        count = check_count(limit, "limit")
        start = 1
        if after is not None:
            seq = self._seq(after)
            if seq is None:
                raise ConfigError(
                    f"must be a dead letter id (a number), got {after!r}", path="after"
                )
            start = seq + 1

        async def work() -> list[DeadLetter]:
            js = await self._js()
            out: list[DeadLetter] = []
            seq = start
            while len(out) < count:
                raw = await self._get(js, seq, next_one=True)
                if raw is None or raw.seq is None:
                    break
                out.append(self._letter(raw))
                seq = raw.seq + 1
            return out

        result: list[DeadLetter] = await self._call("list dead letters", work())
        return result

    async def get(self, id: str) -> DeadLetter | None:
        """The dead letter with this id, or ``None``.

        Raises:
            BrokerUnavailable: NATS could not be reached.
        """
        seq = self._seq(id)
        if seq is None:
            return None

        async def work() -> DeadLetter | None:
            raw = await self._get(await self._js(), seq, next_one=False)
            return None if raw is None else self._letter(raw)

        result: DeadLetter | None = await self._call("get a dead letter", work())
        return result

    async def _targets(self, js: JetStreamContext, ids: Sequence[str] | None) -> builtins.list[int]:
        if ids is not None:
            if isinstance(ids, str):
                raise ConfigError(f"must be a sequence of ids, got {ids!r}", path="ids")
            return [seq for seq in (self._seq(i) for i in ids) if seq is not None]
        # Every one there now: what is dead-lettered meanwhile waits for the next call.
        info = await js.stream_info(self.stream)
        last = info.state.last_seq
        found: builtins.list[int] = []
        seq = 1
        while seq <= last:
            raw = await self._get(js, seq, next_one=True)
            if raw is None or raw.seq is None or raw.seq > last:
                break
            found.append(raw.seq)
            seq = raw.seq + 1
        return found

    async def replay(self, ids: Sequence[str] | None = None) -> int:
        """Publish these dead letters (all if ``ids`` is ``None``) back to their subject.

        Each is deleted from the dead-letter stream once JetStream confirmed its
        replay; ids that are not (or no longer) here are skipped.

        Returns:
            How many were replayed.

        Raises:
            BrokerUnavailable: NATS could not be reached; those replayed so far stay
                replayed, the others stay here.
            PublishRefused: JetStream refused a replay (no stream captures its
                subject any more); ``unconfirmed`` names it.
        """
        js = await self._call("connect", self._js())
        targets: builtins.list[int] = await self._call("list dead letters", self._targets(js, ids))
        replayed = 0
        for seq in targets:
            raw = await self._call("get a dead letter", self._get(js, seq, next_one=False))
            if raw is None:
                continue
            headers = text_headers(raw.headers)
            subject = headers.get(DEAD_SUBJECT)
            if not subject:
                raise PublishRefused(
                    f"dead letter {seq} does not say where it came from ({DEAD_SUBJECT})",
                    [str(seq)],
                )
            out = {
                k: v
                for k, v in headers.items()
                if not k.startswith("Buttress-Dead-") and k.lower() != MSG_ID.lower()
            }
            out[MSG_ID] = f"replay:{self.stream}:{seq}"
            try:
                async with asyncio.timeout(self.timeout):
                    await js.publish(subject, raw.data or b"", timeout=self.timeout, headers=out)
            except TimeoutError:
                raise BrokerUnavailable(
                    f"NATS did not confirm the replay within {self.timeout:g}s", [str(seq)]
                ) from None
            except (nats.errors.Error, OSError) as exc:
                raise _failure(f"cannot replay dead letter {seq}", [str(seq)], exc) from exc
            await self._call("delete a replayed dead letter", self._delete(js, seq))
            replayed += 1
        return replayed

    async def _delete(self, js: JetStreamContext, seq: int) -> bool:
        try:
            return bool(await js.delete_msg(self.stream, seq))
        except nats.js.errors.APIError as exc:
            if exc.code == _NOT_FOUND or exc.err_code in (10037, 10057):  # gone already
                return False
            raise

    async def purge(self, ids: Sequence[str] | None = None) -> int:
        """Delete these dead letters (all of this subject's if ``ids`` is ``None``).

        Returns:
            How many were deleted.

        Raises:
            BrokerUnavailable: NATS could not be reached.
        """
        js = await self._call("connect", self._js())
        if ids is None:
            client = await self._connection.get()
            request = json.dumps({"filter": self.subject}).encode()

            async def purge_all() -> int:
                reply = await client.request(
                    f"$JS.API.STREAM.PURGE.{self.stream}", request, timeout=self.timeout
                )
                answer = json.loads(reply.data)
                if "error" in answer:
                    error = answer["error"]
                    raise nats.js.errors.APIError(
                        code=error.get("code"),
                        description=error.get("description"),
                        err_code=error.get("err_code"),
                    )
                return int(answer.get("purged", 0))

            purged: int = await self._call("purge dead letters", purge_all())
            return purged
        deleted = 0
        for seq in await self._call("list dead letters", self._targets(js, ids)):
            raw = await self._call("get a dead letter", self._get(js, seq, next_one=False))
            if raw is not None and await self._call("delete a dead letter", self._delete(js, seq)):
                deleted += 1
        return deleted

    async def close(self) -> None:
        """Close the connection."""
        await self._connection.close()

    async def __aenter__(self) -> NatsDeadLetters:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

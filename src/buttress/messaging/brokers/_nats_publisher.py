"""The NATS JetStream publisher: ``Nats-Msg-Id`` = event id, every PubAck awaited.

Private: re-exported by :mod:`buttress.messaging.brokers.nats`.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Any, Final

import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js.api import StorageType, StreamConfig

from buttress._validate import check_count, check_seconds, optional_seconds
from buttress.errors import ConfigError
from buttress.messaging.brokers import BrokerUnavailable, PublishError, PublishRefused
from buttress.messaging.brokers._nats_common import (
    MSG_ID,
    check_stream_name,
    check_subject,
    check_url,
    connect,
    failure_kind,
    timeout_option,
)
from buttress.messaging.envelope import Envelope, EnvelopeError

__all__ = ["NatsPublisher"]

# JetStream API error codes (err_code) that mean the topology asked for conflicts
# with what the server has.
_STREAM_EXISTS_OTHERWISE: Final = 10058
_SUBJECTS_OVERLAP: Final = 10065
_SUBJECT_CACHE: Final = 4096

# -- one write per batch --------------------------------------------------------------
#
# nats-py's publish() encodes one message at a time: it checks every header name with
# a regular expression, strips and re-encodes every value, appends the command to its
# buffer and kicks its flusher (about 20 µs per message with eight ce- headers,
# measured: most of the relay's publishing time). A batch instead is encoded here in
# one pass as HPUB commands — the attributes are checked already (the envelope refuses
# line breaks in a NATS header; subjects and names are checked) — appended to the
# client's buffer as one command, and flushed once. Those are nats-py internals:
# `_batchable` checks they are there, and `_send_each` (the public publish()) takes
# over when they are not.
_CLIENT_INTERNALS: Final = (
    "_send_command",
    "_flush_pending",
    "_pending_data_size",
    "_max_pending_size",
)
_HEADER_LINE: Final = b"NATS/1.0\r\n"


def _batchable(client: object) -> bool:
    return all(hasattr(client, name) for name in _CLIENT_INTERNALS)


def _hpub(subject: str, reply: str, headers: dict[str, str], body: bytes) -> bytes:
    """One HPUB command: ``HPUB <subject> <reply> <#header bytes> <#total bytes>``."""
    head = _HEADER_LINE + "".join(f"{k}: {v}\r\n" for k, v in headers.items()).encode() + b"\r\n"
    size = len(head)
    return b"HPUB %s %s %d %d\r\n%s%s\r\n" % (
        subject.encode(),
        reply.encode(),
        size,
        size + len(body),
        head,
        body,
    )


def api_error(err: dict[str, Any]) -> nats.js.errors.APIError:
    """The driver's exception for a JetStream API error reply (it raises, not returns)."""
    try:
        nats.js.errors.APIError.from_error(err)
    except nats.js.errors.APIError as exc:
        return exc
    return nats.js.errors.APIError(**err)  # pragma: no cover - from_error always raises


def _odd_reply(data: bytes) -> nats.errors.Error:
    # Not the event's fault: the server (or something posing as it) answered oddly.
    # A driver error, so transient: publishing again may well succeed.
    return nats.errors.Error(f"not a PubAck: {data[:100]!r}")


class _Pending:
    """The PubAcks one :meth:`NatsPublisher.publish` waits for."""

    __slots__ = ("causes", "confirmed", "done", "ids", "left", "lost")

    def __init__(self, ids: list[str], left: int) -> None:
        self.ids = ids
        self.confirmed = [False] * len(ids)
        self.causes: dict[str, BaseException] = {}
        self.left = left
        self.done = asyncio.Event()
        self.lost: str | None = None
        if left == 0:
            self.done.set()

    def answer(self, index: int, cause: BaseException | None) -> None:
        if cause is None:
            self.confirmed[index] = True
        else:
            self.causes[self.ids[index]] = cause
        self.left -= 1
        if self.left <= 0:
            self.done.set()

    def unconfirmed(self) -> list[str]:
        return [i for i, ok in zip(self.ids, self.confirmed, strict=True) if not ok]


class NatsPublisher:
    """Publishes events to NATS JetStream, each confirmed by its PubAck.

    Each event is a message in the CloudEvents NATS binding's binary content mode
    (``ce-`` headers, ``content-type``, ``data`` as the payload) with the
    ``Nats-Msg-Id`` header set to the event id: JetStream drops a message whose id it
    has seen within the stream's duplicate window, so an event published again after
    a lost confirmation is stored once. A batch is sent without waiting for each
    PubAck in turn (pipelined on one connection), and :meth:`publish` returns once
    every PubAck came back.

    Args:
        url: The server, e.g. ``"nats://127.0.0.1:4222"`` (``tls://``, ``ws://``,
            ``wss://``); checked now, without connecting.
        subject: The subject of each message: a fixed subject, a function of the
            envelope returning one, or ``None`` (the default) for
            ``<subject_prefix>.<type>``.
        subject_prefix: The prefix of the default subjects (``"events"``).
        stream: When given, a stream of that name is declared on connect (if it
            does not exist): file storage, capturing ``stream_subjects``, with
            ``duplicate_window``, ``max_age`` and ``replicas``. ``None``: the
            stream is someone else's to declare.
        stream_subjects: The declared stream's subjects; ``("<subject_prefix>.>",)``
            by default.
        duplicate_window: Seconds during which the declared stream drops a message
            whose ``Nats-Msg-Id`` it has seen (120 s, the server's default).
        max_age: Seconds the declared stream keeps a message; ``None``: forever.
        replicas: The declared stream's replica count (1 to 5; clustered servers).
        timeout: Seconds a whole :meth:`publish` (connecting included) may take.
        reconnect_interval: Seconds between reconnection attempts after the
            connection is lost.
        name: The connection's name, as the server's monitoring shows it.

    Raises:
        ConfigError: an option is invalid; ``path`` names it.
    """

    def __init__(
        self,
        url: str,
        *,
        subject: str | Callable[[Envelope], str] | None = None,
        subject_prefix: str = "events",
        stream: str | None = None,
        stream_subjects: Sequence[str] | None = None,
        duplicate_window: float = 120.0,
        max_age: float | None = None,
        replicas: int = 1,
        timeout: float = 10.0,
        reconnect_interval: float = 1.0,
        name: str = "buttress-publisher",
    ) -> None:
        self.url = check_url(url)
        self.subject_prefix = check_subject(subject_prefix, "subject_prefix")
        if isinstance(subject, str):
            fixed = check_subject(subject, "subject")
            self._subject: Callable[[Envelope], str] | None = lambda _envelope: fixed
        elif subject is None or callable(subject):
            self._subject = subject
        else:
            raise ConfigError(
                f"must be a subject, a function of the envelope or None, got {subject!r}",
                path="subject",
            )
        self.stream = None if stream is None else check_stream_name(stream, "stream")
        if stream_subjects is None:
            stream_subjects = (f"{self.subject_prefix}.>",)
        if isinstance(stream_subjects, str) or not stream_subjects:
            raise ConfigError(
                f"must be a non-empty sequence of subjects, got {stream_subjects!r}",
                path="stream_subjects",
            )
        self.stream_subjects = tuple(
            check_subject(s, "stream_subjects", wildcards=True) for s in stream_subjects
        )
        self.duplicate_window = check_seconds(duplicate_window, "duplicate_window", positive=True)
        self.max_age = optional_seconds(max_age, "max_age", positive=True)
        self.replicas = check_count(replicas, "replicas", maximum=5)
        self.timeout = timeout_option(timeout)
        self.reconnect_interval = check_seconds(
            reconnect_interval, "reconnect_interval", positive=True
        )
        if not isinstance(name, str) or not name:
            raise ConfigError(f"must be a non-empty string, got {name!r}", path="name")
        self.name = name
        self._client: Client | None = None
        self._replies: Subscription | None = None
        self._inbox = ""
        self._next = 0
        self._waiting: dict[str, tuple[_Pending, int]] = {}
        self._subjects: dict[str, str] = {}
        self._lock = asyncio.Lock()
        self._closed = False

    def __repr__(self) -> str:
        return f"NatsPublisher(stream={self.stream!r}, timeout={self.timeout:g})"

    # ------------------------------------------------------------------ connecting

    async def connect(self) -> None:
        """Connect and declare the stream, if not done yet (idempotent).

        Raises:
            BrokerUnavailable: NATS could not be reached within ``timeout``.
            PublishRefused: the publisher is closed.
            ConfigError: the stream exists with another configuration (``path``
                ``"stream"``), or its subjects overlap another stream's
                (``"stream_subjects"``).
        """
        try:
            async with asyncio.timeout(self.timeout):
                await self._ready()
        except TimeoutError:
            raise BrokerUnavailable(f"NATS not reachable within {self.timeout:g}s", ()) from None

    async def _ready(self) -> Client:
        if self._closed:
            raise PublishRefused("the publisher is closed", ())
        client = self._client
        if client is not None and not client.is_closed:
            return client
        async with self._lock:
            if self._client is None or self._client.is_closed:
                await self._drop()
                client = await connect(
                    self.url,
                    name=self.name,
                    timeout=self.timeout,
                    reconnect_interval=self.reconnect_interval,
                    disconnected=self._disconnected,
                )
                try:
                    await self._setup(client)
                except BaseException:
                    await client.close()
                    raise
                self._client = client
        assert self._client is not None
        return self._client

    async def _setup(self, client: Client) -> None:
        # One reply subject per publisher: each message's PubAck comes back to
        # <inbox>.<n>, and one callback matches it to the batch waiting for it.
        self._inbox = client.new_inbox()
        self._replies = await client.subscribe(f"{self._inbox}.*", cb=self._on_reply)
        if self.stream is None:
            return
        config = StreamConfig(
            name=self.stream,
            subjects=list(self.stream_subjects),
            storage=StorageType.FILE,
            duplicate_window=self.duplicate_window,
            max_age=self.max_age,
            num_replicas=self.replicas,
        )
        try:
            await client.jetstream(timeout=self.timeout).add_stream(config)
        except nats.js.errors.APIError as exc:
            if exc.err_code == _STREAM_EXISTS_OTHERWISE:
                raise ConfigError(
                    f"stream {self.stream!r} exists with another configuration ({exc})",
                    path="stream",
                ) from None
            if exc.err_code == _SUBJECTS_OVERLAP:
                raise ConfigError(
                    f"{self.stream_subjects} overlap the subjects of another stream ({exc})",
                    path="stream_subjects",
                ) from None
            raise failure_kind(exc)(f"cannot declare stream {self.stream!r} ({exc})", ()) from exc
        except (nats.errors.Error, OSError, TimeoutError) as exc:
            raise BrokerUnavailable(f"cannot declare stream {self.stream!r} ({exc!r})", ()) from exc

    async def _disconnected(self) -> None:
        # The PubAcks of what was sent on the lost connection will never come: fail
        # the batches now rather than at their timeout. What was still buffered is
        # sent after the reconnection, and deduplicated by Nats-Msg-Id if retried.
        for pending, _index in list(self._waiting.values()):
            pending.lost = "the connection to NATS was lost"
            pending.done.set()

    async def _drop(self) -> None:
        client, self._client = self._client, None
        self._replies = None
        if client is not None:
            try:
                await client.close()
            except Exception:  # a broken client: best effort
                pass

    # ------------------------------------------------------------------ publishing

    def _subject_of(self, envelope: Envelope) -> str:
        if self._subject is None:
            subject = self._subjects.get(envelope.type)
            if subject is None:
                subject = check_subject(f"{self.subject_prefix}.{envelope.type}", "subject")
                if len(self._subjects) >= _SUBJECT_CACHE:
                    self._subjects.clear()
                self._subjects[envelope.type] = subject
            return subject
        subject = self._subject(envelope)
        if not isinstance(subject, str) or subject not in self._subjects:
            check_subject(subject, "subject")
            if len(self._subjects) >= _SUBJECT_CACHE:
                self._subjects.clear()
            self._subjects[subject] = subject
        return subject

    async def _on_reply(self, msg: Msg) -> None:
        entry = self._waiting.pop(msg.subject[len(self._inbox) + 1 :], None)
        if entry is None:  # an answer that came after its batch gave up
            return
        pending, index = entry
        data = msg.data
        if not data and msg.headers and msg.headers.get("Status") == "503":
            pending.answer(index, nats.js.errors.NoStreamResponseError())
        elif b'"error"' in data:
            try:
                reply = json.loads(data)
                cause: BaseException | None = api_error(reply["error"])
            except (ValueError, KeyError, TypeError):
                cause = _odd_reply(data)
            pending.answer(index, cause)
        elif data.startswith(b"{"):
            pending.answer(index, None)
        else:
            pending.answer(index, _odd_reply(data))

    async def publish(self, envelopes: Sequence[Envelope]) -> None:
        """Publish ``envelopes``; return once JetStream has acknowledged every one.

        A message JetStream drops as a duplicate (its ``Nats-Msg-Id`` seen within the
        duplicate window) is acknowledged too: it is stored already.

        Raises:
            BrokerUnavailable: NATS could not be reached, the connection was lost,
                ``timeout`` ran out, or JetStream answered with a server-side error
                (5xx: storage full, not ready...); ``unconfirmed`` names the events.
            PublishRefused: no stream captures an event's subject, JetStream
                refused it (4xx: too big for the stream, a stream other than the one
                expected), the event cannot travel in NATS headers (a line break in
                an attribute) or its subject is invalid; ``unconfirmed`` names those
                events only, the others were stored. Also when the publisher is
                closed.
        """
        batch = list(envelopes)
        if not batch:
            return
        ids = [e.id for e in batch]
        if self._closed:
            raise PublishRefused("the publisher is closed", ids)
        prepared: list[tuple[int, str, dict[str, str], bytes]] = []
        refused: dict[str, BaseException] = {}
        for index, envelope in enumerate(batch):
            try:
                subject = self._subject_of(envelope)
                headers, body = envelope.to_headers(binding="nats")
            except (ConfigError, EnvelopeError) as exc:
                refused[envelope.id] = exc
                continue
            headers[MSG_ID] = envelope.id
            prepared.append((index, subject, headers, body))
        pending = _Pending(ids, len(prepared))
        for event_id, cause in refused.items():
            pending.causes[event_id] = cause
        tokens: list[str] = []
        try:
            async with asyncio.timeout(self.timeout):
                client = await self._ready()
                await self._send(client, pending, prepared, tokens)
                await pending.done.wait()
        except TimeoutError:
            raise BrokerUnavailable(
                f"NATS did not acknowledge within {self.timeout:g}s",
                pending.unconfirmed(),
                causes=pending.causes,
            ) from None
        except PublishError as exc:  # connecting failed: the whole batch is unconfirmed
            raise type(exc)(exc.reason, ids, causes=pending.causes) from exc.__cause__
        finally:
            for token in tokens:
                self._waiting.pop(token, None)
        if pending.lost is not None:
            raise BrokerUnavailable(pending.lost, pending.unconfirmed(), causes=pending.causes)
        self._raise_for(pending)

    async def _send(
        self,
        client: Client,
        pending: _Pending,
        prepared: list[tuple[int, str, dict[str, str], bytes]],
        tokens: list[str],
    ) -> None:
        if _batchable(client):
            await self._send_batch(client, pending, prepared, tokens)
        else:
            await self._send_each(client, pending, prepared, tokens)

    async def _send_batch(
        self,
        client: Client,
        pending: _Pending,
        prepared: list[tuple[int, str, dict[str, str], bytes]],
        tokens: list[str],
    ) -> None:
        inbox = self._inbox
        waiting = self._waiting
        limit = client.max_payload
        commands: list[bytes] = []
        for index, subject, headers, body in prepared:
            self._next += 1
            token = str(self._next)
            command = _hpub(subject, f"{inbox}.{token}", headers, body)
            if len(body) > limit or len(command) > limit + 512:
                pending.answer(index, nats.errors.MaxPayloadError())
                continue
            tokens.append(token)
            waiting[token] = (pending, index)
            commands.append(command)
        if not commands:
            return
        blob = b"".join(commands)
        internals: Any = client
        try:
            if client.is_closed:
                raise nats.errors.ConnectionClosedError
            if not client.is_connected and (
                internals._pending_data_size + len(blob) > internals._max_pending_size
            ):
                raise nats.errors.OutboundBufferLimitError
            await internals._send_command(blob)
            await internals._flush_pending()
        except Exception as exc:  # closed, or the reconnection buffer is full
            for token in tokens:
                entry = waiting.pop(token, None)
                if entry is not None:
                    pending.causes.setdefault(pending.ids[entry[1]], exc)
            pending.lost = f"cannot publish to NATS ({exc!r})"
            pending.done.set()

    async def _send_each(
        self,
        client: Client,
        pending: _Pending,
        prepared: list[tuple[int, str, dict[str, str], bytes]],
        tokens: list[str],
    ) -> None:
        inbox = self._inbox
        waiting = self._waiting
        publish = client.publish
        for position, (index, subject, headers, body) in enumerate(prepared):
            self._next += 1
            token = str(self._next)
            tokens.append(token)
            waiting[token] = (pending, index)
            try:
                await publish(subject, body, reply=f"{inbox}.{token}", headers=headers)
            except (nats.errors.MaxPayloadError, nats.errors.BadSubjectError) as exc:
                waiting.pop(token, None)
                pending.answer(index, exc)
            except Exception as exc:  # closed, or the reconnection buffer is full
                for _index, _subject, _headers, _body in prepared[position:]:
                    pending.causes.setdefault(pending.ids[_index], exc)
                pending.lost = f"cannot publish to NATS ({exc!r})"
                pending.done.set()
                return

    @staticmethod
    def _raise_for(pending: _Pending) -> None:
        if not pending.causes:
            return
        unconfirmed = pending.unconfirmed()
        first = next(iter(pending.causes.values()))
        kinds = {
            PublishRefused if isinstance(c, ConfigError | EnvelopeError) else failure_kind(c)
            for c in pending.causes.values()
        }
        kind: type[PublishError] = (
            BrokerUnavailable if BrokerUnavailable in kinds else PublishRefused
        )
        if isinstance(first, nats.js.errors.NoStreamResponseError):
            message = "no JetStream stream captures their subject"
        else:
            message = f"JetStream refused them ({first!r})"
            if kind is BrokerUnavailable:
                message = f"JetStream failed to store them ({first!r})"
        raise kind(message, unconfirmed, causes=pending.causes)

    # ------------------------------------------------------------------ life cycle

    async def close(self) -> None:
        """Close the connection. Publishing afterwards raises :class:`PublishRefused`."""
        self._closed = True
        async with self._lock:
            await self._drop()

    async def __aenter__(self) -> NatsPublisher:
        await self.connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

"""Redis Streams publisher (redis-py's asyncio client): ``XADD`` with approximate trimming.

Install with ``pip install buttress[redis]``.

:class:`RedisStreamsPublisher` appends each event to a stream with ``XADD``, its
fields in CloudEvents-style binary mode (:meth:`~buttress.messaging.Envelope.to_redis_fields`:
each attribute as a ``ce_`` field — the event id as ``ce_id`` — and the body as
``data``). The stream entry's own id is Redis's (``*``), time-ordered. A batch goes in
one pipeline round trip, and :meth:`~RedisStreamsPublisher.publish` returns once
Redis has answered every ``XADD``: Redis's reply is the confirmation.

Redis Streams has no publisher confirms beyond that reply: an event Redis answered
is in its memory, and as durable as the server's persistence settings (AOF with
``appendfsync everysec`` loses at most a second on a crash of the server).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Any, Final

from redis.exceptions import (
    BusyLoadingError,
    ClusterDownError,
    MasterDownError,
    OutOfMemoryError,
    ReadOnlyError,
    ResponseError,
    TryAgainError,
)

from buttress.errors import ConfigError
from buttress.messaging.brokers import BrokerUnavailable, PublishError, PublishRefused
from buttress.messaging.envelope import Envelope
from buttress.stores.redis._clients import UNAVAILABLE, Clients, check_url

__all__ = ["RedisStreamsPublisher"]

# Per-command errors that mean "not now" rather than "never": the server is a
# replica, out of memory, loading its data set, or its cluster is reconfiguring.
_TRANSIENT_REPLIES: Final = (
    BusyLoadingError,
    ClusterDownError,
    MasterDownError,
    OutOfMemoryError,
    ReadOnlyError,
    TryAgainError,
)
_TRANSIENT_PREFIXES: Final = ("LOADING", "BUSY", "TRYAGAIN", "CLUSTERDOWN", "MASTERDOWN", "OOM")


_TAIL: Final = b"$1\r\n*\r\n"


def _bulk(value: bytes) -> bytes:
    return b"$%d\r\n%s\r\n" % (len(value), value)


# The standard field names, encoded once.
_NAMES: Final = {
    name: _bulk(name.encode())
    for name in (
        *(f"ce_{attribute}" for attribute in (
            "specversion", "id", "source", "type", "subject", "time", "datacontenttype",
            "dataschema", "schemaversion", "traceparent", "tracestate",
        )),
        "data",
    )
}  # fmt: skip


async def _round_trip(client: Any, payload: bytes, count: int) -> list[Any]:
    """Send ``payload`` (``count`` commands) on one pooled connection and read the
    ``count`` replies; an error reply is returned as its exception.

    The connection is dropped, never reused, when anything goes wrong mid-way
    (including a cancellation): a half-read reply stream would answer the next
    caller with this batch's replies.
    """
    pool = client.connection_pool
    conn = await pool.get_connection()
    try:
        await conn.send_packed_command(payload, check_health=False)
        replies: list[Any] = []
        for _ in range(count):
            try:
                # No timeout per reply: the caller's asyncio.timeout bounds the batch.
                replies.append(await conn.read_response(disable_decoding=True, timeout=math.inf))
            except ResponseError as exc:
                replies.append(exc)
        return replies
    except BaseException:
        await conn.disconnect(nowait=True)
        raise
    finally:
        await pool.release(conn)


def _transient_reply(exc: BaseException) -> bool:
    if isinstance(exc, _TRANSIENT_REPLIES):
        return True
    return str(exc).upper().startswith(_TRANSIENT_PREFIXES)


class RedisStreamsPublisher:
    """Publishes events to Redis Streams with ``XADD``, one pipeline per batch.

    Args:
        url: The server, e.g. ``"redis://127.0.0.1:6379/0"`` (``rediss://`` for TLS,
            ``unix:///path/redis.sock``, ``valkey://``); checked now, without
            connecting. One asyncio client is built per event loop that publishes.
        stream: The stream key each event is appended to: a fixed name, or a
            function of the envelope returning one (e.g. per event type).
        maxlen: Trim each stream to about this many entries (``MAXLEN ~``, which
            Redis applies in whole macro-nodes, so a stream may hold somewhat more);
            ``None`` never trims. Entries trimmed away are gone for consumers that
            had not read them yet: size it well above the consumers' worst backlog.
        timeout: Seconds a whole :meth:`publish` (connecting included) may take;
            also the client's socket and connect timeout.

    Raises:
        ConfigError: an option is invalid; ``path`` names it.
    """

    def __init__(
        self,
        url: str,
        *,
        stream: str | Callable[[Envelope], str],
        maxlen: int | None = 100_000,
        timeout: float = 5.0,
    ) -> None:
        checked = check_url(url)
        if isinstance(stream, str):
            if not stream:
                raise ConfigError("must be a non-empty string, got ''", path="stream")
            fixed = stream
            stream = lambda _envelope: fixed  # noqa: E731
        elif not callable(stream):
            raise ConfigError(
                f"must be a stream name or a function of the envelope, got {stream!r}",
                path="stream",
            )
        if maxlen is not None and (
            isinstance(maxlen, bool) or not isinstance(maxlen, int) or maxlen < 1
        ):
            raise ConfigError(f"must be a positive int or None, got {maxlen!r}", path="maxlen")
        if (
            isinstance(timeout, bool)
            or not isinstance(timeout, int | float)
            or not math.isfinite(timeout)
            or timeout <= 0
        ):
            raise ConfigError(
                f"must be a positive number of seconds, got {timeout!r}", path="timeout"
            )
        self.url = checked
        self.maxlen = maxlen
        self.timeout = float(timeout)
        self._stream = stream
        self._clients = Clients(url=checked, timeout=self.timeout)
        self._closed = False

    def __repr__(self) -> str:
        return f"RedisStreamsPublisher(maxlen={self.maxlen!r}, timeout={self.timeout:g})"

    def _key(self, envelope: Envelope) -> str:
        key = self._stream(envelope)
        if not isinstance(key, str) or not key:
            raise ConfigError(
                f"must return a non-empty string, got {key!r} for event {envelope.id}",
                path="stream",
            )
        return key

    async def connect(self) -> None:
        """Check that Redis answers (``PING``); publishing connects by itself anyway.

        Raises:
            BrokerUnavailable: Redis could not be reached within ``timeout``.
            PublishRefused: the publisher is closed.
        """
        if self._closed:
            raise PublishRefused("the publisher is closed", ())
        client = self._clients.for_loop("redis-streams")
        try:
            async with asyncio.timeout(self.timeout):
                await client.ping()
        except TimeoutError:
            raise BrokerUnavailable(f"Redis not reachable within {self.timeout:g}s", ()) from None
        except UNAVAILABLE as exc:
            raise BrokerUnavailable(f"cannot connect to Redis ({exc!r})", ()) from exc

    async def publish(self, envelopes: Sequence[Envelope]) -> None:
        """Append ``envelopes`` to their streams; return once Redis answered every one.

        The batch goes in one pipeline (not a ``MULTI`` transaction): events to one
        stream are appended in batch order.

        Raises:
            BrokerUnavailable: Redis could not be reached, the connection was lost,
                ``timeout`` ran out (every event of the batch is then unconfirmed:
                Redis may have appended some, which a retry appends again), or Redis
                answered some ``XADD`` with a transient error (``OOM``, ``READONLY``,
                ``LOADING``...).
            PublishRefused: Redis refused some ``XADD`` (e.g. ``WRONGTYPE``: the key
                holds something other than a stream), or the publisher is closed;
                ``unconfirmed`` names those events, the others were appended.
            ConfigError: ``stream`` returned an invalid name (before anything was
                sent).
        """
        if self._closed:
            raise PublishRefused("the publisher is closed", [e.id for e in envelopes])
        batch = list(envelopes)
        if not batch:
            return
        keys = [self._key(e) for e in batch]
        ids = [e.id for e in batch]
        payload = self._pack(keys, batch)
        try:
            async with asyncio.timeout(self.timeout):
                client = self._clients.for_loop("redis-streams")
                replies = await _round_trip(client, payload, len(batch))
        except TimeoutError:
            raise BrokerUnavailable(f"Redis did not answer within {self.timeout:g}s", ids) from None
        except UNAVAILABLE as exc:
            raise BrokerUnavailable(f"Redis is unavailable ({exc!r})", ids) from exc
        causes: dict[str, BaseException] = {
            event_id: reply
            for event_id, reply in zip(ids, replies, strict=True)
            if isinstance(reply, BaseException)
        }
        if not causes:
            return
        unconfirmed = [i for i in ids if i in causes]
        first = next(iter(causes.values()))
        if any(_transient_reply(c) for c in causes.values()):
            raise BrokerUnavailable(f"Redis failed XADD ({first})", unconfirmed, causes=causes)
        if all(isinstance(c, ResponseError) for c in causes.values()):
            raise PublishRefused(f"Redis refused XADD ({first})", unconfirmed, causes=causes)
        raise PublishError(f"XADD failed ({first!r})", unconfirmed, causes=causes)

    def _pack(self, keys: list[str], batch: list[Envelope]) -> bytes:
        """Every ``XADD`` of the batch as one RESP request (what a redis-py pipeline
        sends, without its per-argument encoding: a third of the publish's time)."""
        tail = _TAIL
        if self.maxlen is not None:
            tail = b"$6\r\nMAXLEN\r\n$1\r\n~\r\n" + _bulk(str(self.maxlen).encode()) + _TAIL
        extra = 3 if self.maxlen is None else 6  # XADD key [MAXLEN ~ n] *
        names = _NAMES
        parts: list[bytes] = []
        append = parts.append
        for key, envelope in zip(keys, batch, strict=True):
            fields = envelope.to_redis_fields()
            encoded = key.encode()
            append(
                b"*%d\r\n$4\r\nXADD\r\n$%d\r\n%s\r\n"
                % (extra + 2 * len(fields), len(encoded), encoded)
            )
            append(tail)
            for name, value in fields.items():
                head = names.get(name)
                if head is None:  # an extension attribute: not cached (unbounded names)
                    head = _bulk(name.encode())
                raw = value.encode() if isinstance(value, str) else value
                append(b"%s$%d\r\n%s\r\n" % (head, len(raw), raw))
        return b"".join(parts)

    # ------------------------------------------------------------------ life cycle

    async def close(self) -> None:
        """Close the clients. Publishing afterwards raises :class:`PublishRefused`."""
        self._closed = True
        await self._clients.aclose()

    async def __aenter__(self) -> RedisStreamsPublisher:
        await self.connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

"""Redis Streams consumer (redis-py's asyncio client): consumer groups, reclaiming, dead letters.

Install with ``pip install buttress[redis]``.

:class:`RedisStreamsSource` reads a stream as one member of a consumer group
(``XGROUP CREATE ... MKSTREAM``, then ``XREADGROUP``) for the
:class:`~buttress.messaging.consumer.Consumer` runner. Each entry is a message in the
field layout :class:`~buttress.messaging.brokers.redis_streams.RedisStreamsPublisher`
writes (:meth:`~buttress.messaging.Envelope.to_redis_fields`).

* **Ack** is ``XACK`` (and ``XDEL`` with ``delete_on_ack``).
* **Retry later** leaves the entry pending in the group and records when it is due
  in a sorted set, ``<stream>:<group>:delayed``. The entry is claimed again
  (``XCLAIM``) by whichever member of the group asks first once it is due. Nothing is
  re-added to the stream, so other consumer groups of the stream never see a retry,
  and Redis counts the deliveries itself.
* **Reclaiming**: an entry delivered to a member that died (pending for longer than
  ``claim_idle`` without an ack, and not waiting for a retry) is claimed by another
  member. This and the retries are one Lua script, so two members never claim the
  same entry at once.
* **Recovering**: entries delivered on a connection that broke before the reply
  arrived are pending for this member, which never saw them: after a failed command
  (and on the first ``receive``) the script also takes back this member's own
  pending entries that it does not hold.
* **Dead letter / poison**: ``XADD`` to ``<stream>:dead`` / ``<stream>:poison`` of the
  original fields plus ``buttress_reason``, ``buttress_deliveries``,
  ``buttress_dead_at``, ``buttress_entry`` (the original entry id) and
  ``buttress_group``, then ``XACK``, in one ``MULTI`` transaction.
  :class:`RedisStreamsDeadLetters` lists, replays and purges them.

With Redis Cluster, name the stream with a hash tag (``"{orders}"``) so that the
derived keys live in the same slot.
"""

from __future__ import annotations

import asyncio
import builtins
import datetime as dt
import math
import os
import socket
import uuid
import weakref
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any, Final

from redis.exceptions import ResponseError

from buttress.clock import MONOTONIC, Clock
from buttress.errors import ConfigError
from buttress.messaging.consumer._source import Received, SourceUnavailable
from buttress.messaging.deadletters import DeadLetter
from buttress.messaging.envelope import Envelope, EnvelopeError, format_time, parse_time
from buttress.stores.redis._clients import UNAVAILABLE, Clients, check_url

__all__ = ["RedisStreamsDeadLetters", "RedisStreamsSource"]

_META: Final = "buttress_"
_SCAN_PAGE: Final = 100
_SCAN_LIMIT: Final = 1000

# Claim what is due: retries whose time has come, then (when asked) entries pending
# for longer than the idle time that are not waiting for a retry -- their consumer
# died. Atomic, so two members of a group never claim one entry at once.
# KEYS: stream, delayed set. ARGV: group, consumer, now (ms), idle (ms, 0: no scan),
# count, page size, scan limit, recover ('1': also this member's own pending entries
# but the held ones, listed after it). Returns {{id, fields, deliveries}...}, and the
# earliest retry still waiting.
_CLAIM: Final = """
local stream, delayed = KEYS[1], KEYS[2]
local group, consumer = ARGV[1], ARGV[2]
local now, idle, count = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local ids, taken = {}, {}
for _, id in ipairs(redis.call('ZRANGEBYSCORE', delayed, '-inf', now, 'LIMIT', 0, count)) do
  redis.call('ZREM', delayed, id)
  ids[#ids + 1] = id
  taken[id] = true
end
if ARGV[8] == '1' then
  -- Recovering: this member's own pending entries that it does not hold (their
  -- delivery was lost with a connection, or it restarted under the same name).
  local held = {}
  for i = 9, #ARGV do held[ARGV[i]] = true end
  local start, scanned = '-', 0
  while #ids < count and scanned < tonumber(ARGV[7]) do
    local page = redis.call('XPENDING', stream, group, start, '+', ARGV[6], consumer)
    if #page == 0 then break end
    for _, p in ipairs(page) do
      local id = p[1]
      if #ids < count and not taken[id] and not held[id]
          and not redis.call('ZSCORE', delayed, id) then
        ids[#ids + 1] = id
        taken[id] = true
      end
    end
    scanned = scanned + #page
    start = '(' .. page[#page][1]
  end
end
if idle > 0 then
  local start, scanned = '-', 0
  while #ids < count and scanned < tonumber(ARGV[7]) do
    local page = redis.call('XPENDING', stream, group, 'IDLE', idle, start, '+', ARGV[6])
    if #page == 0 then break end
    for _, p in ipairs(page) do
      local id = p[1]
      if #ids < count and not taken[id] and not redis.call('ZSCORE', delayed, id) then
        ids[#ids + 1] = id
        taken[id] = true
      end
    end
    scanned = scanned + #page
    start = '(' .. page[#page][1]
  end
end
local out = {}
if #ids > 0 then
  for _, entry in ipairs(redis.call('XCLAIM', stream, group, consumer, 0, unpack(ids))) do
    if entry and entry[2] then
      local info = redis.call('XPENDING', stream, group, entry[1], entry[1], 1)
      local n = 1
      if info[1] then n = info[1][4] end
      out[#out + 1] = {entry[1], entry[2], n}
    end
  end
end
local first = redis.call('ZRANGE', delayed, 0, 0, 'WITHSCORES')
return {out, first[2] or false}
"""

# Delete the consumer from the group only if nothing is pending for it (deleting a
# consumer drops its pending entries, which would then never be redelivered).
_FORGET: Final = """
local pending = redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', 1, ARGV[2])
if #pending == 0 then
  return redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2])
end
return -1
"""


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _positive(value: object, path: str) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value <= 0
    ):
        raise ConfigError(f"must be a positive number of seconds, got {value!r}", path=path)
    return float(value)


def _name(value: object, path: str) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigError(f"must be a non-empty string, got {value!r}", path=path)
    return value


def _fields(raw: Any) -> dict[bytes, bytes]:
    """An entry's fields as bytes -> bytes, from a dict or a flat [k, v, ...] list."""
    if isinstance(raw, Mapping):
        items = list(raw.items())
    else:
        items = list(zip(raw[::2], raw[1::2], strict=True))
    return {
        (k if isinstance(k, bytes) else str(k).encode()): (
            v if isinstance(v, bytes) else str(v).encode()
        )
        for k, v in items
    }


def _decode(fields: Mapping[bytes, bytes]) -> Envelope:
    try:
        return Envelope.from_redis_fields(
            {k: v for k, v in fields.items() if not k.startswith(_META.encode())}
        )
    except EnvelopeError:
        raise
    except Exception as exc:  # undecodable text, say: still a malformed message
        raise EnvelopeError(f"unreadable entry ({exc!r})") from exc


class _Entry:
    """One delivery of one stream entry (implements :class:`Received`)."""

    __slots__ = ("__weakref__", "_fields", "_source", "deliveries", "message_id")

    def __init__(
        self, source: RedisStreamsSource, entry_id: str, fields: dict[bytes, bytes], deliveries: int
    ) -> None:
        self._source = source
        self.message_id = entry_id
        self._fields = fields
        self.deliveries = deliveries
        source._held.add(entry_id)
        # Dropped without being settled (its handler was cancelled, say): take the
        # entry back at the next receive rather than after claim_idle.
        weakref.finalize(self, source._dropped, entry_id)

    def __repr__(self) -> str:
        return f"<stream entry {self.message_id} delivery {self.deliveries}>"

    @property
    def body(self) -> bytes:
        return self._fields.get(b"data", b"")

    @property
    def headers(self) -> Mapping[str, str]:
        return {_text(k): _text(v) for k, v in self._fields.items() if k != b"data"}

    def envelope(self) -> Envelope:
        return _decode(self._fields)

    async def ack(self) -> None:
        source = self._source
        if not source.delete_on_ack:  # one command: no transaction needed
            await source._settle(self.message_id, None, "XACK")
            return

        def commands(pipe: Any) -> None:
            pipe.xack(source.stream, source.group, self.message_id)
            if source.delete_on_ack:
                pipe.xdel(source.stream, self.message_id)

        await source._settle(self.message_id, commands, "XACK")

    async def release(self) -> None:
        """Hand the entry back unsettled: the next ``receive`` takes it again."""
        self._source._dropped(self.message_id)

    async def retry(self, delay: float) -> None:
        source = self._source
        due = (source.clock.time() + max(0.0, delay)) * 1000
        try:
            await source._call(
                "ZADD", lambda c: c.zadd(source.delayed_key, {self.message_id: math.ceil(due)})
            )
        except SourceUnavailable:
            source._recover = True
            raise
        finally:
            source._held.discard(self.message_id)

    async def dead_letter(self, reason: str, *, poison: bool = False) -> None:
        source = self._source
        key = source.poison_key if poison else source.dead_key
        fields: dict[bytes, bytes] = {
            k: v for k, v in self._fields.items() if not k.startswith(_META.encode())
        }
        fields[b"buttress_reason"] = reason.encode()
        fields[b"buttress_deliveries"] = str(self.deliveries).encode()
        fields[b"buttress_dead_at"] = format_time(
            dt.datetime.fromtimestamp(source.clock.time(), dt.UTC)
        ).encode()
        fields[b"buttress_entry"] = self.message_id.encode()
        fields[b"buttress_group"] = source.group.encode()

        def commands(pipe: Any) -> None:
            pipe.xadd(key, fields)
            pipe.xack(source.stream, source.group, self.message_id)
            if source.delete_on_ack:
                pipe.xdel(source.stream, self.message_id)
            pipe.zrem(source.delayed_key, self.message_id)

        await source._settle(self.message_id, commands, "dead-letter")


class RedisStreamsSource:
    """Reads a Redis stream as one member of a consumer group, for a consumer runner.

    Args:
        url: The server, e.g. ``"redis://127.0.0.1:6379/0"``; checked now, without
            connecting.
        stream: The stream key (as given to the publisher).
        group: The consumer group: every group gets every entry; the members of a
            group share its entries. Created (with the stream) if missing.
        consumer: This member's name in the group; unique per process by default
            (host, pid, random). A member that leaves with nothing pending is
            removed from the group by :meth:`close`.
        start_id: Where a new group starts: ``"0"`` (the default: every entry the
            stream still holds, so events published before the first consumer
            started are not skipped) or ``"$"`` (only new entries).
        claim_idle: Seconds an entry may stay delivered and unacknowledged before
            another member claims it (its consumer is presumed dead). Keep it well
            above the handler's longest run.
        delete_on_ack: Also ``XDEL`` an entry once acknowledged (only when this
            group is the stream's only reader; otherwise trim with the publisher's
            ``maxlen``).
        timeout: Seconds each command may take (also the socket timeout); a
            ``receive`` blocks at most a little less than this.
        clock: Wall-clock time source for retry due times and ``buttress_dead_at``.

    Raises:
        ConfigError: an option is invalid; ``path`` names it.
    """

    def __init__(
        self,
        url: str,
        *,
        stream: str,
        group: str,
        consumer: str | None = None,
        start_id: str = "0",
        claim_idle: float = 60.0,
        delete_on_ack: bool = False,
        timeout: float = 5.0,
        clock: Clock = MONOTONIC,
    ) -> None:
        checked = check_url(url)
        self.stream = _name(stream, "stream")
        self.group = _name(group, "group")
        self.consumer = (
            _name(consumer, "consumer")
            if consumer is not None
            else f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        )
        self.start_id = _name(start_id, "start_id")
        self.claim_idle = _positive(claim_idle, "claim_idle")
        self.timeout = _positive(timeout, "timeout")
        self.delete_on_ack = bool(delete_on_ack)
        self.clock = clock
        self.url = checked
        self._clients = Clients(url=checked, timeout=self.timeout)
        self._scripts: tuple[Any, Any, Any] | None = None  # (client, claim, forget)
        self._next_scan = 0.0
        self._held: set[str] = set()  # delivered to the runner and not settled yet
        self._recover = True  # look for own pending entries nobody holds
        self._ready = False
        self._closed = False

    def __repr__(self) -> str:
        return (
            f"RedisStreamsSource(stream={self.stream!r}, group={self.group!r}, "
            f"consumer={self.consumer!r})"
        )

    @property
    def dead_key(self) -> str:
        """The stream dead letters are added to: ``<stream>:dead``."""
        return f"{self.stream}:dead"

    @property
    def poison_key(self) -> str:
        """The stream undecodable messages are added to: ``<stream>:poison``."""
        return f"{self.stream}:poison"

    @property
    def delayed_key(self) -> str:
        """The sorted set of this group's entries waiting for a retry."""
        return f"{self.stream}:{self.group}:delayed"

    def dead_letters(self, *, poison: bool = False) -> RedisStreamsDeadLetters:
        """The :class:`RedisStreamsDeadLetters` of this source's dead (or poison) stream."""
        return RedisStreamsDeadLetters(
            self.url, stream=self.stream, poison=poison, timeout=self.timeout
        )

    # -- plumbing -----------------------------------------------------------------

    def _client(self) -> Any:
        if self._closed:
            raise SourceUnavailable("the source is closed")
        return self._clients.for_loop("redis-streams-consumer")

    def _script(self, client: Any) -> tuple[Any, Any]:
        if self._scripts is None or self._scripts[0] is not client:
            self._scripts = (
                client,
                client.register_script(_CLAIM),
                client.register_script(_FORGET),
            )
        return self._scripts[1], self._scripts[2]

    async def _call(self, what: str, fn: Any, *, budget: float | None = None) -> Any:
        try:
            async with asyncio.timeout(budget if budget is not None else self.timeout):
                answer = await fn(self._client())
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                # redis-py's asyncio client can swallow a cancellation that lands in
                # a command at the wrong moment: raise it again.
                raise asyncio.CancelledError
            return answer
        except TimeoutError:
            raise SourceUnavailable(
                f"Redis did not answer {what} within {self.timeout:g}s"
            ) from None
        except UNAVAILABLE as exc:
            raise SourceUnavailable(f"Redis is unavailable for {what} ({exc!r})") from exc

    def _dropped(self, entry_id: str) -> None:
        if entry_id in self._held:
            self._held.discard(entry_id)
            self._recover = True

    async def _settle(self, entry_id: str, commands: Any, what: str) -> None:
        """Run ``commands`` in a transaction (``None``: just ``XACK`` the entry)."""
        try:
            if commands is None:
                await self._call(what, lambda c: c.xack(self.stream, self.group, entry_id))
            else:
                await self._transaction(commands, what)
        except SourceUnavailable:
            self._recover = True  # not settled: deliver it again, without waiting
            raise
        finally:
            self._held.discard(entry_id)

    async def _transaction(self, commands: Any, what: str) -> None:
        async def run(client: Any) -> None:
            pipe = client.pipeline(transaction=True)
            commands(pipe)
            await pipe.execute()

        await self._call(what, run)

    async def connect(self) -> None:
        """Create the group (and the stream) if missing. Idempotent.

        Raises:
            SourceUnavailable: Redis could not be reached within ``timeout``.
            ConfigError: the key holds something other than a stream.
        """

        async def create(client: Any) -> None:
            try:
                await client.xgroup_create(self.stream, self.group, id=self.start_id, mkstream=True)
            except ResponseError as exc:
                if "BUSYGROUP" in str(exc):
                    return
                raise ConfigError(
                    f"cannot create group {self.group!r} on {self.stream!r} ({exc})",
                    path="stream",
                ) from None

        await self._call("XGROUP CREATE", create)
        self._ready = True

    # -- receiving ----------------------------------------------------------------

    async def receive(self, max_messages: int, timeout: float) -> Sequence[Received]:  # noqa: ASYNC109 - the Source protocol
        """Claim due retries and entries of dead members, then read new entries.

        Waits up to ``timeout`` s (and at most until the next retry falls due) when
        nothing is there; ``0`` does not wait.

        Raises:
            SourceUnavailable: Redis could not be reached or did not answer in time.
        """
        if max_messages < 1:
            return []
        if not self._ready:
            await self.connect()
        now = self.clock.time()
        scan = now >= self._next_scan
        if scan:
            self._next_scan = now + max(0.05, self.claim_idle / 4)
        try:
            return await self._receive(max_messages, timeout, now, scan)
        except (SourceUnavailable, asyncio.CancelledError):
            # A reply may have been lost with the connection (or the cancellation):
            # the entries it carried are pending for this member, never seen. Take
            # them back at the next receive.
            self._recover = True
            raise
        except ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise SourceUnavailable(f"Redis refused to deliver ({exc})") from exc
            await self.connect()  # the stream or the group was deleted: make them again
            return await self._receive(max_messages, timeout, now, scan)

    async def _claim(self, max_messages: int, scan: bool) -> tuple[list[Received], float | None]:
        """Claim due retries (and, with ``scan``, entries of dead members); return them
        and when the next retry falls due (Unix time), if any."""
        claim, _ = self._script(self._client())
        recover = self._recover
        args = (
            self.group,
            self.consumer,
            math.floor(self.clock.time() * 1000),
            math.ceil(self.claim_idle * 1000) if scan else 0,
            max_messages,
            _SCAN_PAGE,
            _SCAN_LIMIT,
            "1" if recover else "0",
            *(self._held if recover else ()),
        )
        claimed, first_due = await self._call(
            "the claim script",
            lambda c: claim(keys=[self.stream, self.delayed_key], args=args, client=c),
        )
        if recover and len(claimed) < max_messages:
            self._recover = False  # all of them taken back
        out: list[Received] = [
            _Entry(self, _text(entry_id), _fields(fields), int(n))
            for entry_id, fields, n in claimed
        ]
        return out, (float(first_due) / 1000 if first_due is not None else None)

    async def _read(self, count: int, block: float) -> list[Received]:
        """``XREADGROUP ... >``: new entries, waiting up to ``block`` s (0: not at all)."""
        block_ms = math.floor(block * 1000)
        reply = await self._call(
            "XREADGROUP",
            lambda c: c.xreadgroup(
                self.group,
                self.consumer,
                {self.stream: ">"},
                count=count,
                block=block_ms if block_ms >= 1 else None,
            ),
            budget=self.timeout + block,
        )
        entries: Any = []
        if isinstance(reply, Mapping):  # RESP3: {stream: [entries]}
            for value in reply.values():
                entries = value[0] if value and isinstance(value[0], list) else value
        elif reply:  # RESP2: [[stream, entries]]
            entries = reply[0][1]
        return [
            _Entry(self, _text(entry_id), _fields(fields), 1)
            for entry_id, fields in entries
            if fields is not None  # deleted while pending: nothing to deliver
        ]

    async def _receive(
        self, max_messages: int, wait: float, now: float, scan: bool
    ) -> list[Received]:
        deadline = now + max(0.0, wait)
        while True:
            out, first_due = await self._claim(max_messages, scan)
            scan = False
            if out:  # and whatever new entries are there, without waiting
                if len(out) < max_messages:
                    out.extend(await self._read(max_messages - len(out), 0.0))
                return out
            now = self.clock.time()
            block = min(max(0.0, deadline - now), self.timeout * 0.8)
            if first_due is not None:
                block = min(block, max(0.0, first_due - now))
            out = await self._read(max_messages, block)
            if out or self.clock.time() >= deadline or (block <= 0 and first_due is None):
                return out

    # -- life cycle ---------------------------------------------------------------

    async def close(self) -> None:
        """Leave the group if nothing is pending for this member, and close the
        client. Entries still pending are claimed by other members after
        ``claim_idle`` (or by this consumer name when it comes back)."""
        if self._closed:
            return
        try:
            client = self._client()
            _, forget = self._script(client)
            async with asyncio.timeout(self.timeout):
                await forget(keys=[self.stream], args=[self.group, self.consumer], client=client)
        except Exception:  # best effort: an empty member left behind costs nothing
            pass
        self._closed = True
        self._scripts = None
        await self._clients.aclose()

    async def __aenter__(self) -> RedisStreamsSource:
        await self.connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


class RedisStreamsDeadLetters:
    """The dead letters (or poison messages) of a stream: ``<stream>:dead`` (``:poison``).

    Implements :class:`~buttress.messaging.deadletters.DeadLetters`. A dead letter's
    id is its entry id in the dead stream. :meth:`replay` adds the original fields
    back to the stream (a new entry, delivered afresh, deliveries counted from 1)
    and deletes the dead entry, in one transaction: every consumer group of the
    stream sees the replayed entry, so a stream read by several groups should have
    idempotent consumers (an inbox).

    Args:
        url: The server, e.g. ``"redis://127.0.0.1:6379/0"``.
        stream: The consumed stream (not the dead one).
        poison: The poison stream instead of the dead-letter one.
        timeout: Seconds each command may take.

    Raises:
        ConfigError: an option is invalid; ``path`` names it.
    """

    def __init__(
        self, url: str, *, stream: str, poison: bool = False, timeout: float = 5.0
    ) -> None:
        self.url = check_url(url)
        self.stream = _name(stream, "stream")
        self.key = f"{self.stream}:{'poison' if poison else 'dead'}"
        self.timeout = _positive(timeout, "timeout")
        self._clients = Clients(url=self.url, timeout=self.timeout)

    def __repr__(self) -> str:
        return f"RedisStreamsDeadLetters(key={self.key!r})"

    async def _call(self, what: str, fn: Any) -> Any:
        try:
            async with asyncio.timeout(self.timeout):
                return await fn(self._clients.for_loop("redis-streams-dead-letters"))
        except TimeoutError:
            raise SourceUnavailable(
                f"Redis did not answer {what} within {self.timeout:g}s"
            ) from None
        except UNAVAILABLE as exc:
            raise SourceUnavailable(f"Redis is unavailable for {what} ({exc!r})") from exc

    @staticmethod
    def _letter(entry_id: Any, raw: Any) -> DeadLetter:
        fields = _fields(raw)
        ident = _text(entry_id)
        try:
            envelope: Envelope | None = _decode(fields)
        except EnvelopeError:
            envelope = None
        dead_at: dt.datetime | None
        try:
            dead_at = parse_time(_text(fields[b"buttress_dead_at"]))
        except Exception:
            dead_at = dt.datetime.fromtimestamp(int(ident.split("-")[0]) / 1000, dt.UTC)
        try:
            attempts = int(fields.get(b"buttress_deliveries", b"0"))
        except ValueError:
            attempts = 0
        return DeadLetter(
            id=ident,
            envelope=envelope,
            body=fields.get(b"data", b""),
            reason=_text(fields.get(b"buttress_reason", b"")),
            attempts=attempts,
            dead_at=dead_at,
        )

    async def list(self, limit: int = 100, after: str | None = None) -> list[DeadLetter]:
        """Up to ``limit`` dead letters, oldest first, after the entry id ``after``.

        Raises:
            SourceUnavailable: Redis could not be reached.
        """
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ConfigError(f"must be an int >= 1, got {limit!r}", path="limit")
        start = "-" if after is None else f"({after}"
        rows = await self._call("XRANGE", lambda c: c.xrange(self.key, start, "+", count=limit))
        return [self._letter(entry_id, fields) for entry_id, fields in rows]

    async def get(self, id: str) -> DeadLetter | None:
        """The dead letter with entry id ``id``, or ``None``."""
        try:
            rows = await self._call("XRANGE", lambda c: c.xrange(self.key, id, id, count=1))
        except ResponseError:  # not an entry id at all
            return None
        return self._letter(*rows[0]) if rows else None

    async def _all_ids(self) -> builtins.list[str]:
        ids: builtins.list[str] = []
        after: str | None = None
        while True:
            page = await self.list(1000, after)
            if not page:
                return ids
            ids.extend(letter.id for letter in page)
            after = page[-1].id

    async def replay(self, ids: Sequence[str] | None = None) -> int:
        """Add these dead letters (all if ``ids`` is ``None``) back to the stream, as
        new entries without the ``buttress_`` fields, and delete them from the dead
        stream; return how many were replayed."""
        wanted = await self._all_ids() if ids is None else list(dict.fromkeys(ids))
        count = 0
        for ident in wanted:
            try:
                rows = await self._call(
                    "XRANGE", lambda c, i=ident: c.xrange(self.key, i, i, count=1)
                )
            except ResponseError:
                continue
            if not rows:
                continue
            fields = {
                k: v for k, v in _fields(rows[0][1]).items() if not k.startswith(_META.encode())
            }

            async def move(client: Any, fields: dict[bytes, bytes] = fields, i: str = ident) -> Any:
                pipe = client.pipeline(transaction=True)
                pipe.xadd(self.stream, fields)
                pipe.xdel(self.key, i)
                return await pipe.execute()

            _, deleted = await self._call("replay", move)
            count += int(deleted)
        return count

    async def purge(self, ids: Sequence[str] | None = None) -> int:
        """Delete these dead letters (all if ``ids`` is ``None``); return how many."""
        if ids is None:

            async def everything(client: Any) -> Any:
                pipe = client.pipeline(transaction=True)
                pipe.xlen(self.key)
                pipe.delete(self.key)
                return await pipe.execute()

            length, _ = await self._call("purge", everything)
            return int(length)
        wanted = list(dict.fromkeys(ids))
        if not wanted:
            return 0
        try:
            return int(await self._call("XDEL", lambda c: c.xdel(self.key, *wanted)))
        except ResponseError as exc:
            raise ConfigError(f"not stream entry ids: {wanted!r} ({exc})", path="ids") from None

    async def close(self) -> None:
        """Close the client."""
        await self._clients.aclose()

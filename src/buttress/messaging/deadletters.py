"""Dead letters: messages that were given up on, kept to inspect, replay or purge.

A message is dead-lettered when its handler (or its publish, for the outbox) failed the
maximum number of times, and sent to a *poison* queue when it could not even be decoded.
Every place that keeps such messages -- the outbox's ``dead`` rows, each broker's
dead-letter and poison queues -- implements the one :class:`DeadLetters` protocol, so
the same code (and the ``buttress dlq`` command) lists, shows, replays and purges them
wherever they are.

:class:`OutboxDeadLetters` is the outbox's: the rows the relay gave up on
(``status = 'dead'``, with their last error), on SQLite or PostgreSQL. Replaying one
puts it back to ``pending`` with its attempts reset, due at once; on PostgreSQL the
replay's transaction also sends the outbox's ``NOTIFY``, so a listening relay picks it
up without waiting for its poll.

:func:`dead_letters_from_url` opens any of them from a URL (what ``buttress dlq`` does):
``sqlite:///app.db`` or ``postgresql://...`` for the outbox, ``redis://``, ``amqp://`` or
``nats://`` for a broker's queues, the queue named in the query string.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, Protocol, TypeVar, runtime_checkable

from buttress._validate import check_count
from buttress.clock import MONOTONIC, Clock
from buttress.errors import ConfigError, StoreError
from buttress.messaging._from_url import build
from buttress.messaging._schema import DEFAULT_TABLE, TableName
from buttress.messaging._sqlite import SQLiteWorker
from buttress.messaging.envelope import Envelope, EnvelopeError

__all__ = [
    "QUEUES",
    "DeadLetter",
    "DeadLetters",
    "OutboxDeadLetters",
    "dead_letters_from_url",
]

T = TypeVar("T")
_STORE: Final = "outbox dead letters"


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One dead-lettered message, as its queue keeps it.

    Attributes:
        id: Its id within its queue (the outbox's event id, a stream entry id, ...):
            what :meth:`DeadLetters.get`, :meth:`~DeadLetters.replay` and
            :meth:`~DeadLetters.purge` take.
        envelope: The decoded event, or ``None`` when the message could not be
            decoded (a poison message).
        body: The raw message as stored.
        reason: The last error, or why it was dead-lettered.
        attempts: How many times it was tried (published or handled).
        dead_at: When it was dead-lettered, if the queue records it.
    """

    id: str
    envelope: Envelope | None
    body: bytes
    reason: str
    attempts: int
    dead_at: datetime | None


@runtime_checkable
class DeadLetters(Protocol):
    """A queue of dead letters that can be listed, inspected, replayed and purged."""

    async def list(self, limit: int = 100, after: str | None = None) -> list[DeadLetter]:
        """Return up to ``limit`` dead letters in queue order, starting after id ``after``."""
        ...

    async def get(self, id: str) -> DeadLetter | None:
        """Return the dead letter with this id, or ``None`` if there is none."""
        ...

    async def replay(self, ids: Sequence[str] | None = None) -> int:
        """Send these dead letters (all of them if ``ids`` is ``None``) back to be
        processed again; return how many were replayed."""
        ...

    async def purge(self, ids: Sequence[str] | None = None) -> int:
        """Delete these dead letters (all of them if ``ids`` is ``None``) for good;
        return how many were deleted."""
        ...


# -- the outbox's dead letters -------------------------------------------------------------


class _Runner(Protocol):
    """Runs the dead-letter SQL on one database (SQLite or PostgreSQL)."""

    mark: str
    now: str
    in_list: str

    async def fetch(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        """Rows of one query, in a transaction of its own."""
        ...

    async def step(
        self,
        select: str,
        select_params: Sequence[Any],
        action: str,
        action_params: Sequence[Any],
        notify: str | None,
    ) -> list[int]:
        """In one transaction: select seqs, run ``action`` on them (its last parameter
        is the seq list), ``NOTIFY`` on ``notify`` if any; return the seqs."""
        ...

    async def close(self) -> None:
        """Close the connection."""
        ...


class _SQLiteRunner:
    """The dead-letter SQL on a SQLite file, in a worker thread."""

    mark = "?"
    now = "?"
    in_list = "IN (SELECT value FROM json_each(?))"

    def __init__(self, path: str, busy_timeout: float) -> None:
        self.path = path
        self.busy_timeout = busy_timeout
        self._worker = SQLiteWorker(path, busy_timeout=busy_timeout, must_exist=True)

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        try:
            return await self._worker.transaction(fn)
        except sqlite3.Error as exc:
            raise StoreError(_STORE, f"{self.path}: {exc}") from exc

    async def fetch(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        return await self._run(lambda conn: conn.execute(sql, params).fetchall())

    async def step(
        self,
        select: str,
        select_params: Sequence[Any],
        action: str,
        action_params: Sequence[Any],
        notify: str | None,
    ) -> list[int]:
        def work(conn: sqlite3.Connection) -> list[int]:
            seqs = [row[0] for row in conn.execute(select, [_param(p) for p in select_params])]
            if seqs:
                conn.execute(action, [*action_params, json.dumps(seqs)])
            return seqs

        return await self._run(work)

    async def close(self) -> None:
        self._worker.close()


def _param(value: Any) -> Any:
    # SQLite takes a list of ids as one JSON parameter (read back with json_each).
    return json.dumps(value) if isinstance(value, list) else value


def _sqlite_path(url: str) -> str | None:
    """The file of a ``sqlite:///path`` URL (``sqlite:////abs/path``), or ``None``."""
    if not url.startswith("sqlite:"):
        return None
    path = url.removeprefix("sqlite:///")
    if not path or path in (url, ":memory:"):
        raise ConfigError(
            "expected sqlite:///PATH (sqlite:////abs/path for an absolute one) of a "
            f"database file, got {url!r}",
            path="outbox",
        )
    return path


class OutboxDeadLetters:
    """The outbox's dead letters: the events the relay gave up on.

    Implements :class:`DeadLetters` over the outbox table's ``status = 'dead'`` rows.
    Ids are event ids; the order is the outbox's (``seq``).

    Args:
        outbox: The database: ``"sqlite:///app.db"`` (``sqlite:////abs/app.db``) or
            the path of a SQLite file, or a ``postgresql://`` URL (needs
            ``buttress[postgres]``; a direct connection or session pooling, as the
            relay's).
        table: The outbox table.
        schema: Its PostgreSQL schema (or attached SQLite database).
        batch_size: Rows replayed or purged per transaction, so that no lock is held
            for long.
        clock: Its :meth:`~buttress.clock.Clock.time` is "now" for a replayed row's
            ``next_attempt_at``: the relay's clock.
        busy_timeout: SQLite: seconds to wait for another writer's lock.

    Raises:
        ConfigError: a bad option, named.

    Errors of the database are raised as :class:`~buttress.errors.StoreError`
    (:class:`~buttress.errors.StoreUnavailable` when PostgreSQL cannot be reached).
    Use it as an async context manager, or :meth:`close` it.

    The outbox does not record when a row died: :attr:`DeadLetter.dead_at` is
    ``None``. A replayed event is published after the events of its key written
    after it, which were published meanwhile: a consumer that cares about order
    must check it.
    """

    def __init__(
        self,
        outbox: str | os.PathLike[str],
        table: str = DEFAULT_TABLE,
        *,
        schema: str | None = None,
        batch_size: int = 500,
        clock: Clock = MONOTONIC,
        busy_timeout: float = 5.0,
    ) -> None:
        self.table = TableName(table, schema)
        self.batch_size = check_count(batch_size, "batch_size")
        self.clock = clock
        self._notify: str | None = None
        runner: _Runner
        if isinstance(outbox, os.PathLike) or (isinstance(outbox, str) and "://" not in outbox):
            path = os.fspath(outbox)
            if not path:
                raise ConfigError("must be a database URL or a SQLite file, got ''", path="outbox")
            runner = _SQLiteRunner(path, busy_timeout)
            self.url = path
        elif isinstance(outbox, str) and (sqlite_path := _sqlite_path(outbox)) is not None:
            runner = _SQLiteRunner(sqlite_path, busy_timeout)
            self.url = outbox
        elif isinstance(outbox, str) and outbox.split("://", 1)[0] in ("postgresql", "postgres"):
            from buttress.messaging._deadletters_postgres import (  # noqa: PLC0415 - the extra
                PostgresRunner,
            )

            runner = PostgresRunner(outbox)
            self._notify = self.table.channel
            self.url = outbox
        else:
            raise ConfigError(
                f"expected a sqlite:/// or postgresql:// URL or a SQLite file, got {outbox!r}",
                path="outbox",
            )
        self._runner = runner
        t, m = self.table.qualified(), runner.mark
        self._columns = f"SELECT event_id, envelope, last_error, attempts FROM {t} "
        self._seq_of = f"SELECT seq FROM {t} WHERE event_id = {m}"
        self._page = self._columns + f"WHERE status = 'dead' AND seq > {m} ORDER BY seq LIMIT {m}"
        self._get = self._columns + f"WHERE status = 'dead' AND event_id = {m}"
        self._next = (
            f"SELECT seq FROM {t} WHERE status = 'dead' AND seq > {m} ORDER BY seq LIMIT {m}"
        )
        self._chosen = (
            f"SELECT seq FROM {t} WHERE status = 'dead' AND event_id {runner.in_list} ORDER BY seq"
        )
        if self._notify is not None:  # lock the rows: a concurrent replay or purge skips them
            self._next += " FOR UPDATE SKIP LOCKED"
            self._chosen += " FOR UPDATE SKIP LOCKED"
        self._replay = (
            f"UPDATE {t} SET status = 'pending', attempts = 0, next_attempt_at = {runner.now}, "
            "claimed_by = NULL, claimed_until = NULL "
            f"WHERE status = 'dead' AND seq {runner.in_list}"
        )
        self._purge = f"DELETE FROM {t} WHERE status = 'dead' AND seq {runner.in_list}"
        # Two counts over the partial indexes of pending and dead rows: never a scan
        # of the published ones, which can be hundreds of millions.
        self._counts = (
            f"SELECT (SELECT count(*) FROM {t} WHERE status = 'pending'), "
            f"(SELECT count(*) FROM {t} WHERE status = 'dead')"
        )

    def __repr__(self) -> str:
        return f"OutboxDeadLetters({self.table.channel!r})"

    async def __aenter__(self) -> OutboxDeadLetters:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the database connection (opened again on next use)."""
        await self._runner.close()

    @staticmethod
    def _letter(row: tuple[Any, ...]) -> DeadLetter:
        event_id, text, error, attempts = row
        try:
            envelope: Envelope | None = Envelope.from_json(text)
        except EnvelopeError:
            envelope = None
        return DeadLetter(
            id=event_id,
            envelope=envelope,
            body=text.encode("utf-8"),
            reason=error or "",
            attempts=int(attempts),
            dead_at=None,
        )

    async def list(self, limit: int = 100, after: str | None = None) -> list[DeadLetter]:
        """Up to ``limit`` dead events, oldest first, starting after event ``after``.

        Raises:
            ConfigError: ``limit`` below 1.
            StoreError: ``after`` is no event of the outbox (purged, or a typo).
        """
        limit = check_count(limit, "limit")
        start = 0
        if after is not None:
            found = await self._runner.fetch(self._seq_of, (after,))
            if not found:
                raise StoreError(_STORE, f"no event {after!r} in {self.table.channel}")
            start = found[0][0]
        rows = await self._runner.fetch(self._page, (start, limit))
        return [self._letter(row) for row in rows]

    async def get(self, id: str) -> DeadLetter | None:
        """The dead event ``id``, or ``None`` (no such event, or it is not dead)."""
        rows = await self._runner.fetch(self._get, (id,))
        return self._letter(rows[0]) if rows else None

    async def _each(self, ids: Sequence[str] | None, action: str, *params: Any) -> int:
        total = 0
        if ids is None:
            start = 0
            while True:
                done = await self._runner.step(
                    self._next, (start, self.batch_size), action, params, self._notify
                )
                if not done:
                    return total
                total += len(done)
                start = max(done)
        if isinstance(ids, str):
            raise ConfigError("must be a sequence of ids, not one string", path="ids")
        wanted = list(dict.fromkeys(ids))
        for begin in range(0, len(wanted), self.batch_size):
            chunk = wanted[begin : begin + self.batch_size]
            done = await self._runner.step(self._chosen, (chunk,), action, params, self._notify)
            total += len(done)
        return total

    async def replay(self, ids: Sequence[str] | None = None) -> int:
        """Put these dead events (all if ``ids`` is ``None``) back to ``pending``,
        attempts reset, due now; return how many. Ids that are not dead are ignored.

        On PostgreSQL each batch's transaction sends the outbox's ``NOTIFY``, waking
        the relays.
        """
        return await self._each(ids, self._replay, self.clock.time())

    async def purge(self, ids: Sequence[str] | None = None) -> int:
        """Delete these dead events (all if ``ids`` is ``None``); return how many."""
        return await self._each(ids, self._purge)

    async def counts(self) -> Mapping[str, int]:
        """How many rows of the outbox are ``pending`` and ``dead`` (published rows
        are not counted: there can be very many, and they need a full scan)."""
        [(pending, dead)] = await self._runner.fetch(self._counts, ())
        return {"pending": int(pending), "dead": int(dead)}


# -- by URL ------------------------------------------------------------------------------

_OUTBOX: Final = "buttress.messaging.deadletters:OutboxDeadLetters"
_REDIS: Final = "buttress.messaging.brokers.redis_streams_consumer:RedisStreamsDeadLetters"
_RABBITMQ: Final = "buttress.messaging.brokers.rabbitmq_consumer:RabbitMQDeadLetters"
_NATS: Final = "buttress.messaging.brokers.nats:NatsDeadLetters"

QUEUES: dict[str, str] = {
    "sqlite": _OUTBOX,
    "postgresql": _OUTBOX,
    "postgres": _OUTBOX,
    "redis": _REDIS,
    "rediss": _REDIS,
    "amqp": _RABBITMQ,
    "amqps": _RABBITMQ,
    "nats": _NATS,
    "tls": _NATS,
}
"""URL scheme -> ``"module:Class"`` of the :class:`DeadLetters` it opens.

Imported on first use, so each broker's driver is needed only for its own URLs. Add
an entry to plug in another queue: the class is called with the URL (without the
query parameters it takes) and those parameters as keyword arguments.
"""


def dead_letters_from_url(url: str, **options: Any) -> DeadLetters:
    """Open the dead-letter queue at ``url``.

    Query parameters named like the class's parameters (but the first) become those
    arguments (converted to ``int``, ``float``, ``bool`` as the parameter is typed);
    the others stay in the URL for the driver. ``options`` win over the query.

    Examples: ``sqlite:///app.db?table=outbox``,
    ``postgresql://app@db/app?schema=events&sslmode=require``,
    ``nats://127.0.0.1:4222?stream=ORDERS_DLQ&subject=orders.dead``.

    Raises:
        ConfigError: an unknown scheme, or a bad option.
        ImportError: the broker's module is not installed (its extra is missing).
    """
    letters: DeadLetters = build(QUEUES, url, "url", "dead-letter queue", **options)
    return letters

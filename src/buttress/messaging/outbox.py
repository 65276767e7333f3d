"""The transactional outbox, write side: events stored in the caller's transaction.

:meth:`Outbox.add` inserts an :class:`~buttress.messaging.envelope.Envelope` into
the outbox table through the connection that holds the caller's transaction, so the
event commits or rolls back with the business change it describes. It never commits
or rolls back itself. A relay (next release) reads the table and publishes.

Supported connections: :class:`sqlite3.Connection`, and psycopg 3 ``Connection``
(:meth:`Outbox.add`, :meth:`Outbox.add_many`) and ``AsyncConnection``
(:meth:`Outbox.aadd`, :meth:`Outbox.aadd_many`). The table comes from
:func:`migrate` (or ``buttress outbox init``).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, Final

from buttress.errors import ConfigError
from buttress.messaging._schema import DEFAULT_TABLE, OutboxError, TableName, dialect_of, migrate
from buttress.messaging.envelope import Envelope

if TYPE_CHECKING:
    import psycopg

__all__ = ["DEFAULT_MAX_BYTES", "Outbox", "OutboxError", "migrate"]

DEFAULT_MAX_BYTES: Final = 256 * 1024
"""The default size limit of one event in the CloudEvents JSON format, in bytes."""

_COLUMNS: Final = "(event_id, source, event_type, subject, envelope)"
# Bound parameters per statement: SQLite before 3.32 allows 999, PostgreSQL 65535.
_MAX_PARAMS: Final = {"sqlite": 999, "postgresql": 65535}
_Row = tuple[str, str, str, str | None, str]


class Outbox:
    """Writes events into the outbox table inside the caller's transaction.

    Args:
        table: The outbox table, as created by :func:`migrate`.
        schema: Its PostgreSQL schema (or attached SQLite database); default: the
            connection's search path.
        max_bytes: The largest event accepted, measured as its CloudEvents JSON in
            UTF-8. Brokers cap message sizes (RabbitMQ and NATS default to a few
            MiB, often configured far lower) and large rows slow every claim; put
            big payloads in object storage and send a reference.

    Raises:
        ConfigError: ``table``/``schema`` is not a safe identifier, or ``max_bytes``
            is not a positive integer.

    Every ``add`` refuses bad input with :class:`OutboxError` *before* touching the
    database, so the caller's transaction stays usable; it also refuses a
    connection that is not inside a transaction (autocommit with no transaction
    open), where the event would commit on its own.
    """

    __slots__ = ("_insert", "max_bytes", "table")

    def __init__(
        self,
        table: str = DEFAULT_TABLE,
        *,
        schema: str | None = None,
        max_bytes: int = DEFAULT_MAX_BYTES,
    ) -> None:
        self.table = TableName(table, schema)
        if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes <= 0:
            raise ConfigError(f"must be a positive integer, got {max_bytes!r}", path="max_bytes")
        self.max_bytes = max_bytes
        self._insert = f"INSERT INTO {self.table.qualified()} {_COLUMNS} VALUES "

    def __repr__(self) -> str:
        return f"Outbox({self.table.channel!r}, max_bytes={self.max_bytes})"

    # -- checks -------------------------------------------------------------------

    def _row(self, event: object) -> _Row:
        if not isinstance(event, Envelope):
            raise OutboxError(f"expected an Envelope, got {type(event).__name__}")
        if not event.type.strip():
            raise OutboxError(
                "the event's type is blank",
            )
        try:
            text = event.to_json()
        except (TypeError, ValueError) as exc:  # data mutated after the envelope was built
            raise OutboxError(f"event {event.id}: data is not JSON-serialisable ({exc})") from None
        size = len(text.encode("utf-8"))
        if size > self.max_bytes:
            raise OutboxError(
                f"event {event.id} ({event.type}) is {size} bytes as JSON, over "
                f"max_bytes={self.max_bytes}"
            )
        return event.id, event.source, event.type, event.subject, text

    def _rows(self, events: Iterable[Envelope]) -> list[_Row]:
        if isinstance(events, Envelope):
            raise OutboxError("add_many() takes an iterable of events; use add() for one")
        rows = [self._row(event) for event in events]
        seen: set[str] = set()
        for row in rows:
            if row[0] in seen:
                raise OutboxError(f"event id {row[0]} appears twice in one add_many()")
            seen.add(row[0])
        return rows

    def _statements(self, dialect: str, rows: Sequence[_Row]) -> list[tuple[str, list[Any]]]:
        mark = "?" if dialect == "sqlite" else "%s"
        per_row = len(rows[0]) if rows else 5
        chunk = _MAX_PARAMS[dialect] // per_row
        out = []
        for start in range(0, len(rows), chunk):
            part = rows[start : start + chunk]
            values = ", ".join(["(" + ", ".join([mark] * per_row) + ")"] * len(part))
            out.append((self._insert + values, [value for row in part for value in row]))
        return out

    @staticmethod
    def _check_sync(tx: object) -> str:
        dialect, is_async = dialect_of(tx)
        if is_async:
            raise OutboxError(
                "an AsyncConnection: use 'await outbox.aadd(tx, event)' (or aadd_many)"
            )
        if dialect == "sqlite":
            assert isinstance(tx, sqlite3.Connection)
            autocommit = getattr(tx, "autocommit", None) is True or tx.isolation_level is None
            if autocommit and not tx.in_transaction:
                raise OutboxError(
                    "the sqlite3 connection is in autocommit mode with no transaction "
                    "open: the event would commit on its own; BEGIN first"
                )
        else:
            _check_psycopg(tx)
        return dialect

    # -- sync ---------------------------------------------------------------------

    def add(self, tx: sqlite3.Connection | psycopg.Connection[Any], event: Envelope) -> None:
        """Insert ``event`` through ``tx``, inside its open transaction; never commits.

        Raises:
            OutboxError: bad input (not an :class:`Envelope`, a blank ``type``, data
                that is not JSON-serialisable, over ``max_bytes``) or a connection
                not in a transaction; nothing was written.
        """
        self.add_many(tx, [event])

    def add_many(
        self, tx: sqlite3.Connection | psycopg.Connection[Any], events: Iterable[Envelope]
    ) -> None:
        """Insert every event in one statement (a few for very large batches).

        Every event is checked first: one bad event and none is written.
        """
        rows = self._rows(events)
        dialect = self._check_sync(tx)
        for sql, params in self._statements(dialect, rows):
            tx.execute(sql, params)

    # -- async --------------------------------------------------------------------

    async def aadd(self, tx: psycopg.AsyncConnection[Any], event: Envelope) -> None:
        """:meth:`add` for a psycopg 3 ``AsyncConnection``."""
        await self.aadd_many(tx, [event])

    async def aadd_many(self, tx: psycopg.AsyncConnection[Any], events: Iterable[Envelope]) -> None:
        """:meth:`add_many` for a psycopg 3 ``AsyncConnection``."""
        rows = self._rows(events)
        dialect, is_async = dialect_of(tx)
        if not is_async:
            raise OutboxError(
                f"a synchronous {dialect} connection: use outbox.add(tx, event) (or add_many)"
            )
        _check_psycopg(tx)
        for sql, params in self._statements(dialect, rows):
            await tx.execute(sql, params)


def _check_psycopg(tx: Any) -> None:
    # psycopg.pq.TransactionStatus.IDLE == 0: no transaction open.
    if tx.autocommit and int(tx.info.transaction_status) == 0:
        raise OutboxError(
            "the psycopg connection is in autocommit mode with no transaction open: "
            "the event would commit on its own; use 'with conn.transaction():'"
        )

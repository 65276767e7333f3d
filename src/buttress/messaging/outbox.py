"""The transactional outbox, write side: events stored in the caller's transaction.

:meth:`Outbox.add` inserts an :class:`~buttress.messaging.envelope.Envelope` into
the outbox table through the connection that holds the caller's transaction, so the
event commits or rolls back with the business change it describes. It never commits
or rolls back itself. A relay (:mod:`buttress.messaging.relay`) reads the table and
publishes.

Supported connections: :class:`sqlite3.Connection`, psycopg 3 ``Connection`` and
SQLAlchemy 2 ``Session``/``Connection`` (:meth:`Outbox.add`,
:meth:`Outbox.add_many`); psycopg 3 ``AsyncConnection``, ``aiosqlite.Connection`` and
SQLAlchemy ``AsyncSession``/``AsyncConnection`` (:meth:`Outbox.aadd`,
:meth:`Outbox.aadd_many`). No driver is imported here: each is recognised through
``sys.modules``. The table comes from :func:`migrate` (or ``buttress outbox init``).
"""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, Final, TypeAlias

from buttress.errors import ConfigError
from buttress.messaging import _outbox_aiosqlite as _aiosqlite
from buttress.messaging import _outbox_sqlalchemy as _sa
from buttress.messaging._schema import (
    DEFAULT_TABLE,
    Dialect,
    OutboxError,
    TableName,
    dialect_of,
    migrate,
)
from buttress.messaging.envelope import Envelope

if TYPE_CHECKING:
    import aiosqlite
    import psycopg
    from sqlalchemy.engine import Connection as SAConnection
    from sqlalchemy.ext.asyncio import AsyncConnection as SAAsyncConnection
    from sqlalchemy.ext.asyncio import AsyncSession, async_scoped_session
    from sqlalchemy.orm import Session, scoped_session

SyncConnection: TypeAlias = (
    "sqlite3.Connection | psycopg.Connection[Any] | Session | scoped_session[Any] | SAConnection"
)
"""What :meth:`Outbox.add` writes through."""
AsyncConnection: TypeAlias = (
    "psycopg.AsyncConnection[Any] | aiosqlite.Connection | AsyncSession"
    " | async_scoped_session[Any] | SAAsyncConnection"
)
"""What :meth:`Outbox.aadd` writes through."""

__all__ = [
    "DEFAULT_MAX_BYTES",
    "AsyncConnection",
    "Outbox",
    "OutboxError",
    "SyncConnection",
    "migrate",
]

DEFAULT_MAX_BYTES: Final = 256 * 1024
"""The default size limit of one event in the CloudEvents JSON format, in bytes."""

_COLUMNS: Final = "(event_id, source, event_type, subject, envelope)"
# An id already in the table is the same event added again (CloudEvents: source and
# id identify an event): nothing is added, and — unlike a failed INSERT, which
# aborts a PostgreSQL transaction — the caller's transaction goes on.
_ONCE: Final = " ON CONFLICT (event_id) DO NOTHING"
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
            out.append((self._insert + values + _ONCE, [value for row in part for value in row]))
        return out

    # -- sync ---------------------------------------------------------------------

    def add(self, tx: SyncConnection, event: Envelope) -> None:
        """Insert ``event`` through ``tx``, inside its open transaction; never commits.

        ``tx`` is a :class:`sqlite3.Connection`, a psycopg 3 ``Connection``, or a
        SQLAlchemy 2 ``Session``, ``scoped_session`` or ``Connection`` (over
        ``sqlite3`` or psycopg 3): the event is written on the connection that holds
        the session's transaction (a session begins one if it has none yet).

        Raises:
            OutboxError: bad input (not an :class:`Envelope`, a blank ``type``, data
                that is not JSON-serialisable, over ``max_bytes``), a connection not in
                a transaction, an asynchronous one (use :meth:`aadd`) or one the outbox
                does not support; nothing was written.
        """
        self.add_many(tx, [event])

    def add_many(self, tx: SyncConnection, events: Iterable[Envelope]) -> None:
        """Insert every event in one statement (a few for very large batches).

        Every event is checked first: one bad event and none is written.
        """
        rows = self._rows(events)
        dialect, run = _sync_target(tx)
        for sql, params in self._statements(dialect, rows):
            run(sql, params)

    # -- async --------------------------------------------------------------------

    async def aadd(self, tx: AsyncConnection, event: Envelope) -> None:
        """:meth:`add` for an asynchronous connection.

        ``tx`` is a psycopg 3 ``AsyncConnection``, an ``aiosqlite.Connection``, or a
        SQLAlchemy 2 ``AsyncSession``, ``async_scoped_session`` or ``AsyncConnection``
        (over psycopg 3 or aiosqlite).
        """
        await self.aadd_many(tx, [event])

    async def aadd_many(self, tx: AsyncConnection, events: Iterable[Envelope]) -> None:
        """:meth:`add_many` for an asynchronous connection (see :meth:`aadd`)."""
        rows = self._rows(events)
        dialect, run = await _async_target(tx)
        for sql, params in self._statements(dialect, rows):
            await run(sql, params)


_SUPPORTED: Final = (
    "a sqlite3.Connection, a psycopg 3 Connection/AsyncConnection, an aiosqlite.Connection "
    "or a SQLAlchemy 2 Session/AsyncSession/Connection/AsyncConnection"
)
_USE_ASYNC: Final = "use 'await outbox.aadd(tx, event)' (or aadd_many)"
_USE_SYNC: Final = "use outbox.add(tx, event) (or add_many)"
_SA_DRIVERS: Final = "sqlite (pysqlite, aiosqlite) and postgresql+psycopg"


def _name(tx: object) -> str:
    kind = type(tx)
    return f"{kind.__module__}.{kind.__qualname__}"


def _dialect(tx: object) -> tuple[Dialect, bool]:
    try:
        return dialect_of(tx)
    except OutboxError:
        raise OutboxError(f"expected {_SUPPORTED}, got {_name(tx)}") from None


def _check_sqlite(tx: sqlite3.Connection) -> None:
    autocommit = getattr(tx, "autocommit", None) is True or tx.isolation_level is None
    if autocommit and not tx.in_transaction:
        raise OutboxError(
            "the sqlite3 connection is in autocommit mode with no transaction "
            "open: the event would commit on its own; BEGIN first"
        )


def _sync_target(tx: object) -> tuple[Dialect, Callable[[str, list[Any]], object]]:
    """The dialect of ``tx`` and how to run a statement on it, once it passed the checks."""
    if _sa.sync_kind(tx) is not None:
        connection = _sa.sync_connection(tx)  # type: ignore[arg-type]
        driver = _sa.driver(connection)
        dialect, _ = _driver_dialect(driver, connection)
        _check_driver(driver, dialect)

        def run(sql: str, params: list[Any]) -> object:
            return connection.exec_driver_sql(sql, tuple(params))

        return dialect, run
    if _sa.async_kind(tx) is not None or _aiosqlite.is_aiosqlite(tx):
        raise OutboxError(f"{_name(tx)} is asynchronous: {_USE_ASYNC}")
    dialect, is_async = _dialect(tx)
    if is_async:
        raise OutboxError(f"an AsyncConnection: {_USE_ASYNC}")
    _check_driver(tx, dialect)
    return dialect, tx.execute  # type: ignore[attr-defined]


async def _async_target(
    tx: object,
) -> tuple[Dialect, Callable[[str, list[Any]], Awaitable[object]]]:
    """:func:`_sync_target` for asynchronous connections."""
    if _sa.async_kind(tx) is not None:
        connection = await _sa.async_connection(tx)  # type: ignore[arg-type]
        driver = (await connection.get_raw_connection()).driver_connection
        dialect, _ = _driver_dialect(driver, connection.sync_connection)
        _check_driver(driver, dialect)

        async def run(sql: str, params: list[Any]) -> object:
            return await connection.exec_driver_sql(sql, tuple(params))

        return dialect, run
    if _aiosqlite.is_aiosqlite(tx):
        _aiosqlite.check(tx)  # type: ignore[arg-type]
        return "sqlite", functools.partial(_aiosqlite.execute, tx)  # type: ignore[arg-type]
    if _sa.sync_kind(tx) is not None:
        raise OutboxError(f"{_name(tx)} is synchronous: {_USE_SYNC}")
    dialect, is_async = _dialect(tx)
    if not is_async:
        raise OutboxError(f"a synchronous {dialect} connection: {_USE_SYNC}")
    _check_psycopg(tx)
    return dialect, tx.execute  # type: ignore[attr-defined]


def _driver_dialect(driver: object, connection: Any) -> tuple[Dialect, bool]:
    """The dialect of the driver connection under a SQLAlchemy connection."""
    if _aiosqlite.is_aiosqlite(driver):
        return "sqlite", True
    try:
        return dialect_of(driver)
    except OutboxError:
        raise OutboxError(
            f"SQLAlchemy with {_sa.describe(connection)}: the outbox supports {_SA_DRIVERS}"
        ) from None


def _check_driver(driver: Any, dialect: Dialect) -> None:
    """Refuse a driver connection whose statements would commit on their own."""
    if _aiosqlite.is_aiosqlite(driver):
        _aiosqlite.check(driver)
    elif dialect == "sqlite":
        _check_sqlite(driver)
    else:
        _check_psycopg(driver)


def _check_psycopg(tx: Any) -> None:
    # psycopg.pq.TransactionStatus.IDLE == 0: no transaction open.
    if tx.autocommit and int(tx.info.transaction_status) == 0:
        raise OutboxError(
            "the psycopg connection is in autocommit mode with no transaction open: "
            "the event would commit on its own; use 'with conn.transaction():'"
        )

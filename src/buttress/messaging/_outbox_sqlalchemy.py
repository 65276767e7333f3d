"""The outbox through SQLAlchemy 2: sessions and connections, sync and async.

SQLAlchemy is never imported here: its objects are recognised through
``sys.modules`` (whoever passes a ``Session`` has imported SQLAlchemy already), and
the outbox's statements go to the database with ``exec_driver_sql`` on the
connection that holds the session's transaction, so they commit or roll back with
it. Only the drivers the outbox knows underneath are accepted (``sqlite3``,
``aiosqlite``, psycopg 3): their placeholders and transaction state are what
:mod:`buttress.messaging.outbox` checks.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import TYPE_CHECKING, Any, Final, TypeAlias

from buttress.messaging._schema import OutboxError, _module_type

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection
    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession, async_scoped_session
    from sqlalchemy.orm import Session, scoped_session

    SyncTx: TypeAlias = Session | Connection | scoped_session[Any]
    AsyncTx: TypeAlias = AsyncSession | AsyncConnection | async_scoped_session[Any]

__all__ = [
    "AsyncTx",
    "SyncTx",
    "async_connection",
    "async_kind",
    "driver",
    "owned",
    "owned_async",
    "sync_connection",
    "sync_kind",
]

_SYNC: Final = (
    ("sqlalchemy.orm", "Session", "session"),
    ("sqlalchemy.orm", "scoped_session", "scoped"),
    ("sqlalchemy.engine", "Connection", "connection"),
)
_ASYNC: Final = (
    ("sqlalchemy.ext.asyncio", "AsyncSession", "session"),
    ("sqlalchemy.ext.asyncio", "async_scoped_session", "scoped"),
    ("sqlalchemy.ext.asyncio", "AsyncConnection", "connection"),
)


def _kind(tx: object, kinds: tuple[tuple[str, str, str], ...]) -> str | None:
    for module, name, kind in kinds:
        if _module_type(tx, module, name):
            return kind
    return None


def sync_kind(tx: object) -> str | None:
    """``"session"``, ``"scoped"`` or ``"connection"`` for a sync SQLAlchemy object."""
    return _kind(tx, _SYNC)


def async_kind(tx: object) -> str | None:
    """The same for ``AsyncSession``, ``async_scoped_session`` and ``AsyncConnection``."""
    return _kind(tx, _ASYNC)


def sync_connection(tx: SyncTx) -> Connection:
    """The Core connection holding ``tx``'s transaction (a session begins one if needed)."""
    kind = sync_kind(tx)
    target: Any = tx
    if kind == "connection":
        return target  # type: ignore[no-any-return]
    session: Session = target() if kind == "scoped" else target
    return session.connection()


async def async_connection(tx: AsyncTx) -> AsyncConnection:
    """:func:`sync_connection` for the asyncio extension."""
    kind = async_kind(tx)
    target: Any = tx
    if kind == "connection":
        connection: AsyncConnection = target
        if connection.sync_connection is None:  # `engine.connect()` not entered yet
            await connection.start()
        return connection
    session: AsyncSession = target() if kind == "scoped" else target
    return await session.connection()


def driver(connection: Connection) -> Any:
    """The driver's own connection under a Core connection (``sqlite3``, psycopg, ...)."""
    return connection.connection.driver_connection


def describe(connection: Connection) -> str:
    """``dialect+driver`` of a Core connection, for error messages."""
    dialect = connection.dialect
    return f"{dialect.name}+{dialect.driver}"


@contextmanager
def owned(tx: SyncTx) -> Iterator[SyncTx]:
    """A transaction of its own on a fresh session or connection, closed afterwards."""
    kind = sync_kind(tx)
    if kind == "scoped":
        raise OutboxError("a scoped_session is shared: give a sessionmaker instead")
    with tx, tx.begin():  # type: ignore[union-attr]
        yield tx


@asynccontextmanager
async def owned_async(tx: AsyncTx) -> AsyncIterator[AsyncTx]:
    """:func:`owned` for the asyncio extension."""
    kind = async_kind(tx)
    if kind == "scoped":
        raise OutboxError("an async_scoped_session is shared: give an async_sessionmaker instead")
    target: Any = tx
    if kind == "connection":
        # engine.connect() may have been awaited (started) already: no `async with`.
        connection: AsyncConnection = await async_connection(target)
        try:
            async with connection.begin():
                yield connection
        finally:
            await connection.close()
        return
    async with target, target.begin():
        yield target

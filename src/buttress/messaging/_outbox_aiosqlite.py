"""The outbox through ``aiosqlite``: SQLite from asyncio.

aiosqlite is never imported here: its ``Connection`` is recognised through
``sys.modules``. Statements run on aiosqlite's worker thread, in the connection's
open transaction; the transaction state is read from the connection's properties.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from buttress.messaging._schema import OutboxError, _module_type

if TYPE_CHECKING:
    import aiosqlite

__all__ = ["autocommit", "check", "execute", "is_aiosqlite", "owned"]


def is_aiosqlite(tx: object) -> bool:
    """Whether ``tx`` is an ``aiosqlite.Connection``."""
    return _module_type(tx, "aiosqlite", "Connection")


def autocommit(tx: aiosqlite.Connection) -> bool:
    """Whether each statement commits on its own (``isolation_level=None``)."""
    return tx.isolation_level is None


def check(tx: aiosqlite.Connection) -> None:
    """Refuse a connection in autocommit mode with no transaction open."""
    if autocommit(tx) and not tx.in_transaction:
        raise OutboxError(
            "the aiosqlite connection is in autocommit mode with no transaction open: "
            "the event would commit on its own; BEGIN first"
        )


async def execute(tx: aiosqlite.Connection, sql: str, params: Sequence[Any]) -> None:
    """Run one statement and close its cursor."""
    cursor = await tx.execute(sql, params)
    await cursor.close()


@asynccontextmanager
async def owned(tx: aiosqlite.Connection) -> AsyncIterator[aiosqlite.Connection]:
    """A transaction of its own on a fresh connection, closed afterwards."""
    try:
        if autocommit(tx):
            await tx.execute("BEGIN")
        try:
            yield tx
        except BaseException:
            if tx.in_transaction:
                await tx.rollback()
            raise
        await tx.commit()
    finally:
        await tx.close()

"""Delivery state on SQLite: one file, claims in ``BEGIN IMMEDIATE`` transactions."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable, Sequence
from typing import TypeVar

from buttress.messaging._sqlite import SQLiteWorker
from buttress.webhooks.dispatcher._engine import Claimed
from buttress.webhooks.dispatcher._store import DEFAULT_PREFIX, Result, SQLStore, Step

__all__ = ["SQLiteDeliveryStore"]

T = TypeVar("T")


class SQLiteDeliveryStore(SQLStore):
    """The dispatcher's deliveries in a SQLite database file.

    SQLite has one writer at a time: every write is a short ``BEGIN IMMEDIATE``
    transaction, run in a worker thread on this store's own connection (WAL mode,
    ``synchronous=NORMAL``: a committed delivery survives a process crash; an OS
    crash may lose the last transactions). Several dispatchers, even in several
    processes, may share the file. Create the tables first with
    :func:`~buttress.webhooks.dispatcher.migrate`.

    Args:
        database: The database file.
        prefix: The tables' name prefix.
        schema: Their attached database, if not ``main``.
        busy_timeout: Seconds to wait for another writer's lock before failing.
    """

    def __init__(
        self,
        database: str | os.PathLike[str],
        prefix: str = DEFAULT_PREFIX,
        *,
        schema: str | None = None,
        busy_timeout: float = 5.0,
    ) -> None:
        super().__init__(prefix, schema)
        self.database = os.fspath(database)
        self.busy_timeout = busy_timeout
        # The dispatcher's own file: write-ahead logging, for concurrent readers.
        self._worker = SQLiteWorker(self.database, busy_timeout=busy_timeout, wal=True)
        self._lease = self._q(
            f"UPDATE {self._t['deliveries']} SET claimed_by = ?, claimed_until = ? WHERE seq = ?"
        )

    def __repr__(self) -> str:
        return f"SQLiteDeliveryStore({self.database!r}, {self.table.channel!r})"

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return await self._worker.transaction(fn)

    async def _transact(self, steps: Sequence[Step]) -> list[Result]:
        def work(conn: sqlite3.Connection) -> list[Result]:
            out: list[Result] = []
            for sql, params, kind in steps:
                if kind == "many":
                    out.append((conn.executemany(sql, params).rowcount, []))
                elif kind == "query":
                    out.append((0, conn.execute(sql, params).fetchall()))
                else:
                    out.append((conn.execute(sql, params).rowcount, []))
            return out

        return await self._run(work)

    async def claim(self, owner: str, limit: int, now: float, lease: float) -> list[Claimed]:
        """Claim up to ``limit`` deliveries for ``owner`` until ``now + lease``."""

        def work(conn: sqlite3.Connection) -> list[Claimed]:
            rows = [Claimed(*row) for row in conn.execute(self._claim_sql, (now, now, limit))]
            conn.executemany(self._lease, [(owner, now + lease, row.seq) for row in rows])
            return rows

        return await self._run(work)

    async def close(self) -> None:
        """Close the connection."""
        self._worker.close()

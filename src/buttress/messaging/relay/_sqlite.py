"""Relay storage on SQLite: claims in a ``BEGIN IMMEDIATE`` write transaction."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import AsyncIterator, Callable
from typing import TypeVar

from buttress.messaging._schema import DEFAULT_TABLE, TableName
from buttress.messaging._sqlite import SQLiteWorker
from buttress.messaging.relay._engine import ClaimedRow, Decision
from buttress.messaging.relay._store import claim_sql, retention_sql

__all__ = ["SQLiteRelayStore"]

T = TypeVar("T")


class SQLiteRelayStore:
    """The relay's claims on a SQLite database file.

    SQLite has one writer at a time, so a claim is a ``BEGIN IMMEDIATE``
    transaction: select the claimable rows, lease them, commit. Several relays (even
    in several processes) may share the file. The work runs in a worker thread, on a
    connection of this store's own.

    Args:
        database: The database file (the one the application's outbox writes to).
        table: The outbox table.
        schema: Its attached database, if not ``main``.
        busy_timeout: Seconds to wait for another writer's lock before failing.
    """

    channel: str | None = None

    def __init__(
        self,
        database: str | os.PathLike[str],
        table: str = DEFAULT_TABLE,
        *,
        schema: str | None = None,
        busy_timeout: float = 5.0,
    ) -> None:
        self.table = TableName(table, schema)
        self.database = os.fspath(database)
        self.busy_timeout = busy_timeout
        self._worker = SQLiteWorker(self.database, busy_timeout=busy_timeout)
        t = self.table.qualified()
        self._claim = claim_sql(self.table, "?", skip_locked=False)
        # The attempt is counted at the claim (see PostgresRelayStore).
        self._lease = (
            f"UPDATE {t} SET claimed_by = ?, claimed_until = ?, attempts = attempts + 1 "
            "WHERE seq = ?"
        )
        self._published = (
            f"UPDATE {t} SET status = 'published', published_at = ?, claimed_by = NULL, "
            "claimed_until = NULL, last_error = NULL, attempts = max(attempts - 1, 0) "
            "WHERE seq = ? AND status = 'pending'"
        )
        self._retry = (
            f"UPDATE {t} SET next_attempt_at = ?, last_error = ?, "
            "claimed_by = NULL, claimed_until = NULL "
            "WHERE seq = ? AND claimed_by = ? AND status = 'pending'"
        )
        self._release = (
            f"UPDATE {t} SET next_attempt_at = ?, claimed_by = NULL, claimed_until = NULL, "
            "attempts = max(attempts - 1, 0) "
            "WHERE seq = ? AND claimed_by = ? AND status = 'pending'"
        )
        self._dead = (
            f"UPDATE {t} SET status = 'dead', last_error = ?, "
            "claimed_by = NULL, claimed_until = NULL "
            "WHERE seq = ? AND claimed_by = ? AND status = 'pending'"
        )
        self._retention = retention_sql(self.table, "?", skip_locked=False)

    def __repr__(self) -> str:
        return f"SQLiteRelayStore({self.database!r}, {self.table.channel!r})"

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return await self._worker.transaction(fn)

    async def claim(self, owner: str, limit: int, now: float, lease: float) -> list[ClaimedRow]:
        """Claim up to ``limit`` rows for ``owner`` until ``now + lease``."""

        def work(conn: sqlite3.Connection) -> list[ClaimedRow]:
            rows = [ClaimedRow(*row) for row in conn.execute(self._claim, (now, now, limit))]
            conn.executemany(self._lease, [(owner, now + lease, row.seq) for row in rows])
            return rows

        return await self._run(work)

    async def apply(self, owner: str, decision: Decision, now: float) -> None:
        """Write ``decision`` back in one transaction."""

        def work(conn: sqlite3.Connection) -> None:
            conn.executemany(self._published, [(now, seq) for seq in decision.published])
            conn.executemany(
                self._retry, [(at, error, seq, owner) for seq, at, error in decision.retry]
            )
            conn.executemany(self._release, [(at, seq, owner) for seq, at in decision.released])
            conn.executemany(self._dead, [(error, seq, owner) for seq, error in decision.dead])

        await self._run(work)

    async def delete_published(self, before: float, batch: int) -> int:
        """Delete published rows older than ``before``, ``batch`` per transaction."""
        total = 0
        while True:
            deleted = await self._run(
                lambda conn: conn.execute(self._retention, (before, batch)).rowcount
            )
            total += deleted
            if deleted < batch:
                return total

    async def oldest_pending(self) -> float | None:
        """``created_at`` of the oldest pending row, or ``None``."""
        query = f"SELECT min(created_at) FROM {self.table.qualified()} WHERE status = 'pending'"

        def work(conn: sqlite3.Connection) -> float | None:
            value = conn.execute(query).fetchone()[0]
            return None if value is None else float(value)

        return await self._run(work)

    async def listen(self) -> AsyncIterator[None]:
        """SQLite has no notifications: not supported (the relay polls)."""
        if self.channel is None:
            raise NotImplementedError("SQLite has no LISTEN/NOTIFY; the relay polls")
        yield  # pragma: no cover

    async def close(self) -> None:
        """Close the connection."""
        self._worker.close()

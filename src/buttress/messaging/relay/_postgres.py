"""Relay storage on PostgreSQL (psycopg 3, async): ``FOR UPDATE SKIP LOCKED`` claims
with a lease, and ``LISTEN`` on the outbox's channel.

Requires ``buttress[postgres]``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import psycopg
from psycopg import sql

from buttress.messaging._schema import DEFAULT_TABLE, TableName
from buttress.messaging.relay._engine import ClaimedRow, Decision
from buttress.messaging.relay._store import claim_sql, retention_sql

__all__ = ["PostgresRelayStore"]

T = TypeVar("T")


class PostgresRelayStore:
    """The relay's claims on PostgreSQL.

    A claim selects claimable rows ``FOR UPDATE SKIP LOCKED`` and leases them
    (``claimed_by``, ``claimed_until``) in one short transaction, so any number of
    relays share the table without waiting on each other; the rows of a relay that
    died come back when its lease runs out. One connection serves the claims (it is
    re-opened after a failure); :meth:`listen` uses a second one in autocommit mode.

    Args:
        conninfo: A libpq connection string or URL. Use a direct connection (or a
            session-pooling proxy): ``LISTEN`` does not work through a
            transaction-pooling proxy.
        table: The outbox table.
        schema: Its schema; default: the connection's search path.
        connect_timeout: Seconds allowed to open a connection.
        keepalive: Seconds of silence after which the listening connection is
            checked with a ``SELECT 1`` (a dead one is then re-established).
        application_name: Shown in ``pg_stat_activity`` for the relay's connections.

    A lost database connection fails the operation in progress (the relay logs it
    and tries again at its next wake-up) and is replaced by a new one on next use.
    """

    def __init__(
        self,
        conninfo: str,
        table: str = DEFAULT_TABLE,
        *,
        schema: str | None = None,
        connect_timeout: float = 10.0,
        keepalive: float = 30.0,
        application_name: str = "buttress relay",
    ) -> None:
        self.table = TableName(table, schema)
        self.conninfo = conninfo
        self.connect_timeout = connect_timeout
        self.keepalive = keepalive
        self.application_name = application_name
        self._conn: psycopg.AsyncConnection[Any] | None = None
        self._lock = asyncio.Lock()
        t = self.table.qualified()
        self._claim = claim_sql(self.table, "%s", skip_locked=True)
        self._lease = (
            f"UPDATE {t} SET claimed_by = %s, claimed_until = to_timestamp(%s) WHERE seq = ANY(%s)"
        )
        self._published = (
            f"UPDATE {t} SET status = 'published', published_at = to_timestamp(%s), "
            "claimed_by = NULL, claimed_until = NULL, last_error = NULL "
            "WHERE seq = ANY(%s) AND status = 'pending'"
        )
        self._retry = (
            f"UPDATE {t} SET attempts = attempts + 1, next_attempt_at = to_timestamp(%s), "
            "last_error = %s, claimed_by = NULL, claimed_until = NULL "
            "WHERE seq = %s AND claimed_by = %s AND status = 'pending'"
        )
        self._release = (
            f"UPDATE {t} SET next_attempt_at = to_timestamp(%s), claimed_by = NULL, "
            "claimed_until = NULL WHERE seq = %s AND claimed_by = %s AND status = 'pending'"
        )
        self._dead = (
            f"UPDATE {t} SET status = 'dead', attempts = attempts + 1, last_error = %s, "
            "claimed_by = NULL, claimed_until = NULL "
            "WHERE seq = %s AND claimed_by = %s AND status = 'pending'"
        )
        self._retention = retention_sql(self.table, "%s", skip_locked=True)

    def __repr__(self) -> str:
        return f"PostgresRelayStore({self.table.channel!r})"

    @property
    def channel(self) -> str:
        """The outbox's ``NOTIFY`` channel."""
        return self.table.channel

    async def _connect(self, *, autocommit: bool) -> psycopg.AsyncConnection[Any]:
        return await psycopg.AsyncConnection.connect(
            self.conninfo,
            autocommit=autocommit,
            connect_timeout=max(1, round(self.connect_timeout)),
            application_name=self.application_name,
        )

    async def _run(self, fn: Callable[[psycopg.AsyncConnection[Any]], Awaitable[T]]) -> T:
        async with self._lock:
            if self._conn is None or self._conn.closed or self._conn.broken:
                self._conn = await self._connect(autocommit=False)
            conn = self._conn
            try:
                async with conn.transaction():
                    return await fn(conn)
            except psycopg.OperationalError:
                # The connection may be gone: open a fresh one next time.
                await conn.close()
                self._conn = None
                raise

    async def claim(self, owner: str, limit: int, now: float, lease: float) -> list[ClaimedRow]:
        """Claim up to ``limit`` rows for ``owner`` until ``now + lease``."""

        async def work(conn: psycopg.AsyncConnection[Any]) -> list[ClaimedRow]:
            cursor = await conn.execute(self._claim, (now, now, limit))
            rows = [ClaimedRow(*row) for row in await cursor.fetchall()]
            if rows:
                await conn.execute(self._lease, (owner, now + lease, [r.seq for r in rows]))
            return rows

        return await self._run(work)

    async def apply(self, owner: str, decision: Decision, now: float) -> None:
        """Write ``decision`` back in one transaction."""

        async def work(conn: psycopg.AsyncConnection[Any]) -> None:
            if decision.published:
                await conn.execute(self._published, (now, decision.published))
            async with conn.cursor() as cursor:
                if decision.released:
                    await cursor.executemany(
                        self._release, [(at, seq, owner) for seq, at in decision.released]
                    )
                if decision.retry:
                    await cursor.executemany(
                        self._retry, [(at, error, seq, owner) for seq, at, error in decision.retry]
                    )
                if decision.dead:
                    await cursor.executemany(
                        self._dead, [(error, seq, owner) for seq, error in decision.dead]
                    )

        await self._run(work)

    async def delete_published(self, before: float, batch: int) -> int:
        """Delete published rows older than ``before``, ``batch`` per transaction."""
        total = 0
        while True:

            async def work(conn: psycopg.AsyncConnection[Any]) -> int:
                cursor = await conn.execute(self._retention, (before, batch))
                return cursor.rowcount

            deleted = await self._run(work)
            total += deleted
            if deleted < batch:
                return total

    async def oldest_pending(self) -> float | None:
        """``created_at`` of the oldest pending row (Unix time), or ``None``."""
        query = (
            f"SELECT extract(epoch FROM min(created_at))::float8 FROM {self.table.qualified()} "
            "WHERE status = 'pending'"
        )

        async def work(conn: psycopg.AsyncConnection[Any]) -> float | None:
            row = await (await conn.execute(query)).fetchone()
            return None if row is None or row[0] is None else float(row[0])

        return await self._run(work)

    async def listen(self) -> AsyncIterator[None]:
        """``LISTEN`` on a connection of its own: yield once listening, then per
        notification; raises :class:`psycopg.OperationalError` when it is lost."""
        conn = await self._connect(autocommit=True)
        try:
            await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self.channel)))
            yield
            while True:
                async for _ in conn.notifies(timeout=self.keepalive):
                    yield
                # Quiet for a while: make sure the connection is still alive (a
                # half-open TCP connection would otherwise wait forever).
                await conn.execute("SELECT 1")
        finally:
            await conn.close()

    async def close(self) -> None:
        """Close the claim connection."""
        async with self._lock:
            if self._conn is not None:
                await self._conn.close()
                self._conn = None

"""Relay storage on PostgreSQL (psycopg 3, async): ``FOR UPDATE SKIP LOCKED`` claims
with a lease, and ``LISTEN`` on the outbox's channel.

Requires ``buttress[postgres]`` (psycopg with psycopg_pool).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import psycopg
from psycopg import sql
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from buttress.errors import ConfigError
from buttress.messaging._schema import DEFAULT_TABLE, TableName
from buttress.messaging.relay._engine import ClaimedRow, Decision
from buttress.messaging.relay._store import claim_sql, retention_sql

__all__ = ["PostgresRelayStore"]

T = TypeVar("T")


class PostgresRelayStore:
    """The relay's claims on PostgreSQL.

    A claim is one statement: select claimable rows ``FOR UPDATE SKIP LOCKED``,
    lease them (``claimed_by``, ``claimed_until``) and count the attempt, so any
    number of relays share the table without waiting on each other; the rows of a
    relay that died come back when its lease runs out. Claims and marks go through a
    bounded pool of connections (psycopg_pool, ``pool_min_size`` to
    ``pool_max_size``: the relay's bulkhead on the database); :meth:`listen` uses a
    dedicated connection of its own in autocommit mode, outside the pool.

    Args:
        conninfo: A libpq connection string or URL. Use a direct connection (or a
            session-pooling proxy): ``LISTEN`` does not work through a
            transaction-pooling proxy.
        table: The outbox table.
        schema: Its schema; default: the connection's search path.
        connect_timeout: Seconds allowed to open a connection, and to wait for a
            free one from the pool.
        keepalive: Seconds of silence after which the listening connection is
            checked with a ``SELECT 1`` (a dead one is then re-established).
        application_name: Shown in ``pg_stat_activity`` for the relay's connections.
        pool_min_size: Connections the pool keeps open (>= 1).
        pool_max_size: The most connections the pool opens (>= ``pool_min_size``);
            a relay with ``concurrency`` batches in flight uses up to that many at
            once, plus one for :meth:`oldest_pending` and retention.

    Raises:
        ConfigError: a pool size out of range, named.

    A lost database connection fails the operation in progress (the relay logs it
    and tries again at its next wake-up); the pool checks a connection before
    lending it and replaces broken ones.
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
        pool_min_size: int = 1,
        pool_max_size: int = 4,
    ) -> None:
        for name, value in (("pool_min_size", pool_min_size), ("pool_max_size", pool_max_size)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"must be an integer >= 1, got {value!r}", path=name)
        if pool_max_size < pool_min_size:
            raise ConfigError(
                f"must be >= pool_min_size ({pool_min_size}), got {pool_max_size}",
                path="pool_max_size",
            )
        self.table = TableName(table, schema)
        self.conninfo = conninfo
        self.connect_timeout = connect_timeout
        self.keepalive = keepalive
        self.application_name = application_name
        self.pool_min_size = pool_min_size
        self.pool_max_size = pool_max_size
        self._pool: AsyncConnectionPool[Any] | None = None
        self._opening = asyncio.Lock()
        t = self.table.qualified()
        # Lease and count the attempt in the claim itself: an event that kills the
        # relay while it is published (every time) still uses up its attempts and is
        # dead-lettered in the end, instead of blocking its key for ever.
        self._claim = (
            f"WITH c AS ({claim_sql(self.table, '%s', skip_locked=True)}) "
            f"UPDATE {t} AS u SET claimed_by = %s, claimed_until = to_timestamp(%s), "
            # ANY(ARRAY(...)): an index lookup per claimed row; a join would
            # hash the whole table, a cost that grows with the backlog.
            "attempts = u.attempts + 1 WHERE u.seq = ANY(ARRAY(SELECT seq FROM c)) "
            "RETURNING u.seq, u.event_id, u.subject, u.envelope, u.attempts - 1"
        )
        self._published = (
            f"UPDATE {t} SET status = 'published', published_at = to_timestamp(%s), "
            "claimed_by = NULL, claimed_until = NULL, last_error = NULL, "
            "attempts = greatest(attempts - 1, 0) "
            "WHERE seq = ANY(%s) AND status = 'pending'"
        )
        self._retry = (
            f"UPDATE {t} SET next_attempt_at = to_timestamp(%s), "
            "last_error = %s, claimed_by = NULL, claimed_until = NULL "
            "WHERE seq = %s AND claimed_by = %s AND status = 'pending'"
        )
        self._release = (
            f"UPDATE {t} SET next_attempt_at = to_timestamp(%s), claimed_by = NULL, "
            "claimed_until = NULL, attempts = greatest(attempts - 1, 0) "
            "WHERE seq = %s AND claimed_by = %s AND status = 'pending'"
        )
        self._dead = (
            f"UPDATE {t} SET status = 'dead', last_error = %s, "
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

    def _options(self) -> dict[str, Any]:
        return {
            "connect_timeout": max(1, round(self.connect_timeout)),
            "application_name": self.application_name,
        }

    async def _connect(self, *, autocommit: bool) -> psycopg.AsyncConnection[Any]:
        return await psycopg.AsyncConnection.connect(
            self.conninfo, autocommit=autocommit, **self._options()
        )

    async def _open(self) -> AsyncConnectionPool[Any]:
        if self._pool is None:
            async with self._opening:
                if self._pool is None:
                    pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
                        self.conninfo,
                        min_size=self.pool_min_size,
                        max_size=self.pool_max_size,
                        kwargs={"autocommit": True, **self._options()},
                        timeout=self.connect_timeout,
                        check=AsyncConnectionPool.check_connection,
                        name=self.application_name,
                        open=False,
                    )
                    await pool.open(wait=False)
                    self._pool = pool
        return self._pool

    @property
    def pool_stats(self) -> dict[str, int]:
        """psycopg_pool's counters (``pool_size``, ``pool_available``,
        ``requests_waiting``...), empty before the pool is opened."""
        return {} if self._pool is None else self._pool.get_stats()

    async def _run(
        self,
        fn: Callable[[psycopg.AsyncConnection[Any]], Awaitable[T]],
        *,
        transaction: bool = True,
    ) -> T:
        pool = await self._open()
        try:
            async with pool.connection() as conn:
                if not transaction:
                    return await fn(conn)
                async with conn.transaction():
                    return await fn(conn)
        except PoolTimeout as exc:
            raise psycopg.OperationalError(
                f"no database connection within {self.connect_timeout:g}s ({exc})"
            ) from exc

    async def claim(self, owner: str, limit: int, now: float, lease: float) -> list[ClaimedRow]:
        """Claim up to ``limit`` rows for ``owner`` until ``now + lease`` (one
        statement, in autocommit), counting an attempt for each."""

        async def work(conn: psycopg.AsyncConnection[Any]) -> list[ClaimedRow]:
            cursor = await conn.execute(self._claim, (now, now, limit, owner, now + lease))
            rows = [ClaimedRow(*row) for row in await cursor.fetchall()]
            rows.sort(key=lambda row: row.seq)  # RETURNING has no order
            return rows

        return await self._run(work, transaction=False)

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

        if not (decision.released or decision.retry or decision.dead):
            # The common case, every row published: one statement, in autocommit
            # (no BEGIN and COMMIT round trips).
            if decision.published:
                await self._run(work, transaction=False)
            return
        await self._run(work)

    async def delete_published(self, before: float, batch: int) -> int:
        """Delete published rows older than ``before``, ``batch`` per transaction."""
        total = 0
        while True:

            async def work(conn: psycopg.AsyncConnection[Any]) -> int:
                cursor = await conn.execute(self._retention, (before, batch))
                return cursor.rowcount

            deleted = await self._run(work, transaction=False)
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

        return await self._run(work, transaction=False)

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
        """Close the pool's connections."""
        async with self._opening:
            pool, self._pool = self._pool, None
            if pool is not None:
                await pool.close()

"""Delivery state on PostgreSQL (psycopg 3, async): ``FOR UPDATE SKIP LOCKED`` claims
with a lease, so any number of dispatchers share the tables.

Requires ``buttress[postgres]``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import psycopg

from buttress.webhooks.dispatcher._engine import Claimed
from buttress.webhooks.dispatcher._store import DEFAULT_PREFIX, Result, SQLStore, Step

__all__ = ["PostgresDeliveryStore"]

T = TypeVar("T")


class PostgresDeliveryStore(SQLStore):
    """The dispatcher's deliveries on PostgreSQL.

    A claim selects due deliveries ``FOR UPDATE OF d SKIP LOCKED`` and leases them in
    one short transaction: dispatchers never wait on each other, and the deliveries
    of one that died come back when its lease runs out. One connection serves this
    store; it is replaced after a failure. Create the tables first with
    :func:`~buttress.webhooks.dispatcher.migrate`.

    Args:
        conninfo: A libpq connection string or URL.
        prefix: The tables' name prefix.
        schema: Their schema; default: the connection's search path.
        connect_timeout: Seconds allowed to open a connection.
        application_name: Shown in ``pg_stat_activity``.
    """

    _mark = "%s"

    def __init__(
        self,
        conninfo: str,
        prefix: str = DEFAULT_PREFIX,
        *,
        schema: str | None = None,
        connect_timeout: float = 10.0,
        application_name: str = "buttress webhooks",
    ) -> None:
        super().__init__(prefix, schema)
        self.conninfo = conninfo
        self.connect_timeout = connect_timeout
        self.application_name = application_name
        self._conn: psycopg.AsyncConnection[Any] | None = None
        self._lock = asyncio.Lock()
        self._claim_locked = self._claim_sql + " FOR UPDATE OF d SKIP LOCKED"
        self._lease = (
            f"UPDATE {self._t['deliveries']} SET claimed_by = %s, claimed_until = %s "
            "WHERE seq = ANY(%s)"
        )

    def __repr__(self) -> str:
        return f"PostgresDeliveryStore({self.table.channel!r})"

    async def _run(self, fn: Callable[[psycopg.AsyncConnection[Any]], Awaitable[T]]) -> T:
        async with self._lock:
            if self._conn is None or self._conn.closed or self._conn.broken:
                self._conn = await psycopg.AsyncConnection.connect(
                    self.conninfo,
                    connect_timeout=max(1, round(self.connect_timeout)),
                    application_name=self.application_name,
                )
            conn = self._conn
            try:
                async with conn.transaction():
                    return await fn(conn)
            except psycopg.OperationalError:
                await conn.close()  # gone, perhaps: a fresh one next time
                self._conn = None
                raise

    async def _transact(self, steps: Sequence[Step]) -> list[Result]:
        async def work(conn: psycopg.AsyncConnection[Any]) -> list[Result]:
            out: list[Result] = []
            async with conn.cursor() as cursor:
                for sql, params, kind in steps:
                    if kind == "many":
                        await cursor.executemany(sql, params)
                        out.append((cursor.rowcount, []))
                    elif kind == "query":
                        await cursor.execute(sql, params)
                        out.append((0, list(await cursor.fetchall())))
                    else:
                        await cursor.execute(sql, params)
                        out.append((cursor.rowcount, []))
            return out

        return await self._run(work)

    async def claim(self, owner: str, limit: int, now: float, lease: float) -> list[Claimed]:
        """Claim up to ``limit`` deliveries for ``owner`` until ``now + lease``."""

        async def work(conn: psycopg.AsyncConnection[Any]) -> list[Claimed]:
            cursor = await conn.execute(self._claim_locked, (now, now, limit))
            rows = [Claimed(*row) for row in await cursor.fetchall()]
            if rows:
                await conn.execute(self._lease, (owner, now + lease, [r.seq for r in rows]))
            return rows

        return await self._run(work)

    async def close(self) -> None:
        """Close the connection."""
        async with self._lock:
            if self._conn is not None:
                await self._conn.close()
                self._conn = None

"""The outbox's dead letters on PostgreSQL (psycopg 3, async).

Private to :mod:`buttress.messaging.deadletters`, which imports it for a
``postgresql://`` URL; requires ``buttress[postgres]``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, Final

import psycopg

from buttress.errors import StoreError, StoreUnavailable

__all__ = ["PostgresRunner"]

_STORE: Final = "outbox dead letters"


class PostgresRunner:
    """The dead-letter SQL on one PostgreSQL connection, replaced when it breaks."""

    mark = "%s"
    now = "to_timestamp(%s)"
    in_list = "= ANY(%s)"

    def __init__(self, conninfo: str, *, connect_timeout: float = 10.0) -> None:
        self.conninfo = conninfo
        self.connect_timeout = connect_timeout
        self._conn: psycopg.AsyncConnection[Any] | None = None
        self._lock = asyncio.Lock()

    async def _connection(self) -> psycopg.AsyncConnection[Any]:
        if self._conn is None or self._conn.closed or self._conn.broken:
            self._conn = await psycopg.AsyncConnection.connect(
                self.conninfo,
                connect_timeout=max(1, round(self.connect_timeout)),
                application_name="buttress dead letters",
            )
        return self._conn

    async def _fail(self, exc: psycopg.Error) -> StoreError:
        if isinstance(exc, psycopg.OperationalError):
            if self._conn is not None:
                await self._conn.close()
                self._conn = None
            return StoreUnavailable(_STORE, f"PostgreSQL is unavailable: {exc}")
        return StoreError(_STORE, f"PostgreSQL failed: {exc}")

    async def fetch(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        async with self._lock:
            try:
                conn = await self._connection()
                async with conn.transaction():
                    cursor = await conn.execute(sql, params)
                    return await cursor.fetchall()
            except psycopg.Error as exc:
                raise await self._fail(exc) from exc

    async def step(
        self,
        select: str,
        select_params: Sequence[Any],
        action: str,
        action_params: Sequence[Any],
        notify: str | None,
    ) -> list[int]:
        async with self._lock:
            try:
                conn = await self._connection()
                async with conn.transaction():
                    cursor = await conn.execute(select, select_params)
                    seqs = [row[0] for row in await cursor.fetchall()]
                    if seqs:
                        await conn.execute(action, [*action_params, seqs])
                        if notify is not None:
                            await conn.execute("SELECT pg_notify(%s, '')", (notify,))
                    return seqs
            except psycopg.Error as exc:
                raise await self._fail(exc) from exc

    async def close(self) -> None:
        async with self._lock:
            if self._conn is not None:
                await self._conn.close()
                self._conn = None

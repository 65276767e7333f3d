"""The inbox: idempotent consumers, so a redelivered message has no second effect.

Brokers deliver at least once: after a crash, a lost ack or a relay's crash window the
same message arrives again. An inbox remembers which message ids a consumer has
handled.

:class:`SQLInbox` records the id **in the handler's own transaction**, next to the
handler's effect: both commit or neither does. ``inbox.seen(tx, message_id)`` inserts
the id (``INSERT ... ON CONFLICT DO NOTHING``, which never aborts the caller's
PostgreSQL transaction) and returns ``True`` when it was already there, so the handler
skips its effect. A handler that fails rolls back, the id goes with it, and the
redelivery runs the handler again. Connections: :class:`sqlite3.Connection`, psycopg
3 ``Connection`` and SQLAlchemy 2 ``Session``/``Connection`` (:meth:`SQLInbox.seen`);
psycopg 3 ``AsyncConnection``, aiosqlite and SQLAlchemy ``AsyncSession``/
``AsyncConnection`` (:meth:`SQLInbox.aseen`). The table comes from ``migrate(conn, what="inbox")``.

:class:`RedisInbox` is for effects that are not in a SQL database: ``await
inbox.claim(message_id)`` sets the key with ``SET NX`` and a TTL and returns ``True``
for the first claim only; ``await inbox.release(message_id)`` forgets a claim whose
handler failed, so the redelivery can run it again.
"""

from __future__ import annotations

import sqlite3
import sys
from collections.abc import Awaitable
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Final, Protocol

from buttress._validate import check_count, check_seconds
from buttress.errors import ButtressError, ConfigError, StoreError, StoreUnavailable
from buttress.messaging import _outbox_sqlalchemy as _sa
from buttress.messaging._schema import DEFAULT_INBOX_TABLE, Dialect, TableName, dialect_of
from buttress.messaging.outbox import AsyncConnection as AsyncTx
from buttress.messaging.outbox import SyncConnection as SyncTx

if TYPE_CHECKING:
    import aiosqlite
    import psycopg

__all__ = ["DEFAULT_INBOX_TABLE", "InboxError", "RedisInbox", "SQLInbox"]

MAX_ID_LENGTH: Final = 1024
"""The longest message id an inbox accepts, in characters."""

_UNIX_NOW: Final = {
    "sqlite": "((julianday('now') - 2440587.5) * 86400.0)",
    "postgresql": "now()",
}


class InboxError(ButtressError, ValueError):
    """A message id or a connection the inbox refuses, before touching the database.

    The caller's transaction is left as it was: usable, nothing written.
    """


def _check_id(message_id: object) -> str:
    if not isinstance(message_id, str) or not message_id:
        raise InboxError(f"the message id must be a non-empty string, got {message_id!r}")
    if len(message_id) > MAX_ID_LENGTH:
        raise InboxError(
            f"the message id is {len(message_id)} characters long, over {MAX_ID_LENGTH}"
        )
    return message_id


def _check_consumer(consumer: object) -> str:
    if (
        not isinstance(consumer, str)
        or not consumer
        or consumer != consumer.strip()
        or len(consumer) > 200
    ):
        raise ConfigError(
            "must be a non-empty string of at most 200 characters without surrounding "
            f"spaces, got {consumer!r}",
            path="consumer",
        )
    return consumer


def _name(tx: object) -> str:
    kind = type(tx)
    return f"{kind.__module__}.{kind.__qualname__}"


def _is_aiosqlite(connection: object) -> bool:
    module = sys.modules.get("aiosqlite")
    kind = getattr(module, "Connection", None) if module is not None else None
    return isinstance(kind, type) and isinstance(connection, kind)


def _dialect(connection: object) -> tuple[Dialect, bool]:
    """``(dialect, is_async)``; aiosqlite counts as asynchronous SQLite."""
    if _is_aiosqlite(connection):
        return "sqlite", True
    try:
        return dialect_of(connection)
    except ValueError as exc:
        raise InboxError(str(exc).replace("expected a", "expected an aiosqlite or a")) from None


def _in_transaction(connection: Any, dialect: Dialect, *, is_async: bool) -> bool:
    """Whether the id would be written inside a transaction the caller controls."""
    if dialect == "postgresql":
        # psycopg.pq.TransactionStatus.IDLE == 0: no transaction open. Without
        # autocommit, psycopg opens one implicitly on the first statement.
        return not connection.autocommit or int(connection.info.transaction_status) != 0
    if is_async:  # aiosqlite: the sqlite3 connection's attributes, proxied
        return connection.isolation_level is not None or bool(connection.in_transaction)
    autocommit = getattr(connection, "autocommit", None)
    if autocommit is True:
        return bool(connection.in_transaction)
    if autocommit is False:  # Python 3.12+: a transaction is always open
        return True
    return connection.isolation_level is not None or bool(connection.in_transaction)


class SQLInbox:
    """The message ids a consumer has handled, in a SQL table, written in the handler's
    transaction.

    Args:
        consumer: This consumer's name. One table serves every consumer of a
            database; each consumer handles a message once, whatever the others did.
        table: The inbox table, as created by ``migrate(conn, what="inbox")``.
        schema: Its PostgreSQL schema (or attached SQLite database); default: the
            connection's search path.

    Raises:
        ConfigError: a name that is not valid.

    Use it inside the handler's transaction, before the effect::

        with conn.transaction():
            if inbox.seen(conn, message.message_id):
                return  # handled before: no second effect
            apply_effect(conn, message)

    Two deliveries of one message handled at the same time on PostgreSQL: the second
    ``seen`` waits for the first transaction, then returns ``True`` if it committed or
    ``False`` (and records the id) if it rolled back.
    """

    __slots__ = ("_insert", "_prune", "consumer", "table")

    def __init__(
        self,
        consumer: str,
        table: str = DEFAULT_INBOX_TABLE,
        *,
        schema: str | None = None,
    ) -> None:
        self.consumer = _check_consumer(consumer)
        self.table = TableName(table, schema)
        t = self.table.qualified()
        self._insert: dict[Dialect, str] = {}
        self._prune: dict[Dialect, str] = {}
        marks: tuple[tuple[Dialect, str], ...] = (("sqlite", "?"), ("postgresql", "%s"))
        for dialect, mark in marks:
            lock = " FOR UPDATE SKIP LOCKED" if dialect == "postgresql" else ""
            cutoff = (
                f"{_UNIX_NOW[dialect]} - make_interval(secs => {mark})"
                if dialect == "postgresql"
                else f"{_UNIX_NOW[dialect]} - {mark}"
            )
            self._insert[dialect] = (
                f"INSERT INTO {t} (consumer, message_id) VALUES ({mark}, {mark}) "
                "ON CONFLICT (consumer, message_id) DO NOTHING"
            )
            self._prune[dialect] = (
                f"DELETE FROM {t} WHERE consumer = {mark} AND message_id IN ("
                f"SELECT message_id FROM {t} WHERE consumer = {mark} AND seen_at < {cutoff} "
                f"ORDER BY seen_at LIMIT {mark}{lock})"
            )

    def __repr__(self) -> str:
        return f"SQLInbox({self.consumer!r}, {self.table.channel!r})"

    def _prepare(
        self, tx: object, driver: object, message_id: object, *, want_async: bool
    ) -> tuple[str, tuple[str, str]]:
        """The statement for ``driver`` (the DB-API connection under ``tx``), checked."""
        message_id = _check_id(message_id)
        dialect, is_async = _dialect(driver)
        if is_async != want_async:
            raise InboxError(
                f"{_name(tx)} is asynchronous: use 'await inbox.aseen(tx, message_id)'"
                if is_async
                else f"{_name(tx)} is synchronous: use inbox.seen(tx, message_id)"
            )
        if not _in_transaction(driver, dialect, is_async=is_async):
            raise InboxError(
                f"the {dialect} connection is in autocommit mode with no transaction open: "
                "the id would be recorded on its own, apart from the handler's effect; "
                "open a transaction first"
            )
        return self._insert[dialect], (self.consumer, message_id)

    def seen(self, tx: SyncTx, message_id: str) -> bool:
        """Record ``message_id`` in ``tx``'s open transaction; ``True`` if it was
        recorded before (the message was handled: skip its effect).

        ``tx`` is a :class:`sqlite3.Connection`, a psycopg 3 ``Connection``, or a
        SQLAlchemy 2 ``Session``/``Connection`` over one of them. Never commits or
        rolls back: the record commits with the handler's effect.

        Raises:
            InboxError: an empty or over-long id, an asynchronous connection, or a
                connection with no transaction open; nothing was written.
        """
        if _sa.sync_kind(tx) is not None:
            connection = _sa.sync_connection(tx)  # type: ignore[arg-type]
            sql, params = self._prepare(tx, _sa.driver(connection), message_id, want_async=False)
            return bool(connection.exec_driver_sql(sql, params).rowcount == 0)
        if _sa.async_kind(tx) is not None:
            raise InboxError(f"{_name(tx)} is asynchronous: use 'await inbox.aseen(tx, ...)'")
        driver: Any = tx  # a DB-API connection: sqlite3 or psycopg
        sql, params = self._prepare(tx, driver, message_id, want_async=False)
        cursor = driver.execute(sql, params)
        found = cursor.rowcount
        cursor.close()
        return bool(found == 0)

    async def aseen(self, tx: AsyncTx, message_id: str) -> bool:
        """:meth:`seen` for a psycopg 3 ``AsyncConnection``, an aiosqlite connection,
        or a SQLAlchemy 2 ``AsyncSession``/``AsyncConnection`` over one of them."""
        if _sa.async_kind(tx) is not None:
            connection = await _sa.async_connection(tx)  # type: ignore[arg-type]
            driver = (await connection.get_raw_connection()).driver_connection
            sql, params = self._prepare(tx, driver, message_id, want_async=True)
            return bool((await connection.exec_driver_sql(sql, params)).rowcount == 0)
        if _sa.sync_kind(tx) is not None:
            raise InboxError(f"{_name(tx)} is synchronous: use inbox.seen(tx, message_id)")
        raw: Any = tx  # psycopg or aiosqlite
        sql, params = self._prepare(tx, raw, message_id, want_async=True)
        cursor = await raw.execute(sql, params)
        found = cursor.rowcount
        await cursor.close()
        return bool(found == 0)

    def _prune_args(
        self, connection: object, older_than: float | timedelta, batch_size: int, *, is_async: bool
    ) -> tuple[Dialect, str, tuple[str, str, float, int]]:
        seconds = check_seconds(older_than, "older_than")
        batch = check_count(batch_size, "batch_size")
        dialect, found_async = _dialect(connection)
        if found_async != is_async:
            raise InboxError(
                "an asynchronous connection: use 'await inbox.aprune(...)'"
                if found_async
                else f"a synchronous {dialect} connection: use inbox.prune(...)"
            )
        return dialect, self._prune[dialect], (self.consumer, self.consumer, seconds, batch)

    def prune(
        self,
        connection: sqlite3.Connection | psycopg.Connection[Any],
        older_than: float | timedelta,
        *,
        batch_size: int = 500,
    ) -> int:
        """Forget the ids this consumer recorded more than ``older_than`` ago.

        Keep ids longer than any message can be redelivered (the brokers' retention
        and retry horizons). Deletes ``batch_size`` rows per transaction, committing
        each, so no lock is held for long; the connection must have no transaction
        open (a psycopg connection in a ``with conn.transaction():`` block would
        commit nothing until the block ends).

        Returns:
            How many ids were forgotten.

        Raises:
            ConfigError: ``older_than`` negative or ``batch_size`` below 1.
            InboxError: an asynchronous connection, or a transaction is open.
        """
        dialect, sql, params = self._prune_args(connection, older_than, batch_size, is_async=False)
        total = 0
        if dialect == "sqlite":
            assert isinstance(connection, sqlite3.Connection)
            if connection.in_transaction and getattr(connection, "autocommit", None) is not False:
                raise InboxError("prune() commits its batches: commit the open transaction first")
            while True:
                deleted = connection.execute(sql, params).rowcount
                connection.commit()
                total += deleted
                if deleted < params[3]:
                    return total
        conn: psycopg.Connection[Any] = connection  # type: ignore[assignment]
        if int(conn.info.transaction_status) != 0:
            raise InboxError("prune() commits its batches: commit the open transaction first")
        while True:
            with conn.transaction():
                deleted = conn.execute(sql, params).rowcount
            total += deleted
            if deleted < params[3]:
                return total

    async def aprune(
        self,
        connection: psycopg.AsyncConnection[Any] | aiosqlite.Connection,
        older_than: float | timedelta,
        *,
        batch_size: int = 500,
    ) -> int:
        """:meth:`prune` for a psycopg 3 ``AsyncConnection`` or an aiosqlite connection."""
        dialect, sql, params = self._prune_args(connection, older_than, batch_size, is_async=True)
        total = 0
        if dialect == "sqlite":
            lite: aiosqlite.Connection = connection  # type: ignore[assignment]
            if lite.in_transaction:
                raise InboxError("aprune() commits its batches: commit the open transaction first")
            while True:
                deleted = (await lite.execute(sql, params)).rowcount
                await lite.commit()
                total += deleted
                if deleted < params[3]:
                    return total
        conn: psycopg.AsyncConnection[Any] = connection  # type: ignore[assignment]
        if int(conn.info.transaction_status) != 0:
            raise InboxError("aprune() commits its batches: commit the open transaction first")
        while True:
            async with conn.transaction():
                deleted = (await conn.execute(sql, params)).rowcount
            total += deleted
            if deleted < params[3]:
                return total


class _AsyncRedis(Protocol):
    """What :class:`RedisInbox` uses of an asyncio Redis client (``redis.asyncio.Redis``)."""

    def set(self, name: str, value: str, *, nx: bool, px: int) -> Awaitable[Any]: ...

    def delete(self, *names: str) -> Awaitable[Any]: ...


class RedisInbox:
    """The message ids a consumer has claimed, as Redis keys with a TTL (``SET NX``).

    For handlers whose effect is not in a SQL database the inbox could share a
    transaction with. :meth:`claim` before the effect; on failure :meth:`release`, so
    the redelivery runs the handler again. A process that dies between the claim and
    the effect leaves the message claimed until the TTL runs out: for an effect that
    must happen exactly once, record the id in the effect's own store
    (:class:`SQLInbox`).

    Args:
        client: An asyncio Redis client (``redis.asyncio.Redis``), used in its own
            event loop.
        ttl: How long a claim is remembered (seconds or a ``timedelta``); longer than
            any message can be redelivered.
        prefix: The key prefix, naming this consumer (e.g. ``"billing:inbox:"``):
            two consumers of one message need two prefixes.

    Raises:
        ConfigError: a bad ``ttl`` or ``prefix``.
    """

    __slots__ = ("_client", "_ttl_ms", "prefix", "ttl")

    def __init__(self, client: _AsyncRedis, ttl: float | timedelta, prefix: str) -> None:
        for method in ("set", "delete"):
            if not callable(getattr(client, method, None)):
                raise ConfigError(
                    f"must be an asyncio Redis client, got {client!r}: it has no {method}()",
                    path="client",
                )
        self._client = client
        self.ttl = check_seconds(ttl, "ttl", positive=True)
        self._ttl_ms = max(1, round(self.ttl * 1000))
        if not isinstance(prefix, str) or not prefix or prefix != prefix.strip():
            raise ConfigError(
                "must be a non-empty string without surrounding spaces that names the "
                f"consumer, got {prefix!r}",
                path="prefix",
            )
        self.prefix = prefix

    def __repr__(self) -> str:
        return f"RedisInbox(prefix={self.prefix!r}, ttl={self.ttl:g})"

    async def claim(self, message_id: str) -> bool:
        """Claim ``message_id``: ``True`` for the first claim, ``False`` if it was
        claimed before (and not released, nor expired): skip its effect.

        Raises:
            InboxError: an empty or over-long id.
            StoreUnavailable: Redis could not be reached (the message was not
                claimed; let the broker redeliver it).
        """
        key = self.prefix + _check_id(message_id)
        try:
            answer = await self._client.set(key, "1", nx=True, px=self._ttl_ms)
        except Exception as exc:
            raise _map_error(exc) from exc
        return answer is not None and answer is not False

    async def release(self, message_id: str) -> bool:
        """Forget a claim (its handler failed), so a redelivery runs it again.

        Returns:
            ``True`` if the claim existed.
        """
        key = self.prefix + _check_id(message_id)
        try:
            removed = await self._client.delete(key)
        except Exception as exc:
            raise _map_error(exc) from exc
        return bool(removed)


def _map_error(exc: Exception) -> StoreError:
    unavailable: tuple[type[BaseException], ...] = (ConnectionError, TimeoutError, OSError)
    redis_errors = sys.modules.get("redis.exceptions")
    if redis_errors is not None:
        unavailable += (redis_errors.ConnectionError, redis_errors.TimeoutError)
    if isinstance(exc, unavailable):
        return StoreUnavailable("inbox", f"Redis is unavailable: {type(exc).__name__}: {exc}")
    return StoreError("inbox", f"Redis failed: {type(exc).__name__}: {exc}")

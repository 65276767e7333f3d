"""Durable delivery state: the schema, its migrations, and the SQL both stores share.

Four tables, named from one prefix (default ``buttress_webhook``):
``<prefix>_messages`` (one row per message: type, key, payload),
``<prefix>_deliveries`` (one row per message and endpoint: status, attempts, when it
is due, the lease), ``<prefix>_attempts`` (the attempt log) and
``<prefix>_endpoints`` (each endpoint's health: failing since, disabled). Times are
Unix seconds on both backends, so the SQL below serves both (``?`` placeholders,
turned into ``%s`` for psycopg).

The claim rule (as the outbox relay's): a delivery is claimable when it is pending,
due, not leased to a live dispatcher, and — when it has an order key — no delivery
with the same key and a smaller ``seq`` is still pending.

Each store implements :meth:`SQLStore._transact` (run steps in one transaction) and
:meth:`SQLStore.claim`; everything else is here, written once.
"""

from __future__ import annotations

import sqlite3
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from typing import TYPE_CHECKING, Any, Final, Literal, Protocol, TypeAlias, runtime_checkable

from buttress.errors import ConfigError
from buttress.messaging._schema import Dialect, TableName, apply_migrations, dialect_of
from buttress.webhooks.dispatcher._engine import (
    HOOK_DONE,
    HOOK_PENDING,
    Claimed,
    Decision,
    Exhausted,
)

if TYPE_CHECKING:
    import psycopg

__all__ = [
    "DEFAULT_PREFIX",
    "AttemptRecord",
    "DeadRow",
    "DeliveryInfo",
    "DeliveryStore",
    "SQLStore",
    "migrate",
    "store_from_url",
]

DEFAULT_PREFIX: Final = "buttress_webhook"
_SUFFIXES: Final = ("messages", "deliveries", "attempts", "endpoints")

Kind: TypeAlias = Literal["one", "many", "query"]
Step: TypeAlias = tuple[str, Any, Kind]
"""``(sql, params, kind)``: one statement, ``executemany``, or a query to fetch."""
Result: TypeAlias = tuple[int, list[tuple[Any, ...]]]
"""``(rowcount, rows)`` of one step (rows only for a query)."""


def _prefix(prefix: str, schema: str | None) -> TableName:
    # The longest derived name, "<prefix>_attempts_delivery_idx", must fit 63 bytes.
    name = TableName(prefix, schema)
    if len(prefix) > 38:
        raise ConfigError(f"must be at most 38 characters, got {prefix!r}", path="prefix")
    return name


def _sql_migrations(dialect: Dialect, table: TableName) -> list[tuple[int, str, str]]:
    folder = resources.files("buttress.webhooks").joinpath("migrations", dialect)
    values = {s: table.qualified(f"_{s}") for s in _SUFFIXES}
    values |= {f"bare_{s}": f'"{table.name}_{s}"' for s in _SUFFIXES}
    values["index_prefix"] = (
        f'"{table.schema}".{table.name}' if table.schema and dialect == "sqlite" else table.name
    )
    found = []
    for item in folder.iterdir():
        if not item.name.endswith(".sql"):
            continue
        number, _, rest = item.name.partition("_")
        sql = item.read_text(encoding="utf-8")
        for key, value in values.items():
            sql = sql.replace("{{" + key + "}}", value)
        found.append((int(number), rest.removesuffix(".sql"), sql))
    return sorted(found)


def migrate(
    connection: sqlite3.Connection | psycopg.Connection[Any],
    prefix: str = DEFAULT_PREFIX,
    *,
    schema: str | None = None,
) -> list[str]:
    """Create or upgrade the dispatcher's tables: apply the migrations not applied yet.

    As :func:`buttress.messaging.migrate` does for the outbox: one transaction,
    committed here, versions recorded in ``<prefix>_migrations`` (a second run
    applies nothing), concurrent runs kept apart (``BEGIN IMMEDIATE`` on SQLite, an
    advisory lock on PostgreSQL).

    Args:
        connection: A :class:`sqlite3.Connection` with no open transaction, or a
            psycopg 3 (synchronous) ``Connection``.
        prefix: The tables' name prefix (1 to 38 lowercase letters, digits or ``_``).
        schema: The PostgreSQL schema (or attached SQLite database).

    Returns:
        The names of the migrations applied now, e.g. ``["0001_dispatcher"]``.

    Raises:
        ConfigError: ``prefix`` or ``schema`` is not a safe identifier.
        OutboxError: the connection is not supported, or a SQLite transaction is open.
    """
    table = _prefix(prefix, schema)
    dialect, _ = dialect_of(connection)
    return apply_migrations(
        connection,
        table,
        _sql_migrations(dialect, table),
        lock=f"buttress.webhooks:{table.channel}",
    )


@dataclass(frozen=True, slots=True)
class AttemptRecord:
    """One recorded attempt of a delivery.

    Attributes:
        attempt: 1 for the first attempt (counted again from 1 after a replay).
        at: When it started (Unix time).
        status: The HTTP status, or ``None`` when there was no answer.
        latency: Seconds it took.
        headers: The response headers (JSON object text, capped), if any.
        body: The start of the response body, if any.
        error: What went wrong, when there was no answer.
    """

    attempt: int
    at: float
    status: int | None
    latency: float
    headers: str | None
    body: str | None
    error: str | None


@dataclass(frozen=True, slots=True)
class DeliveryInfo:
    """The state of one message's delivery to one endpoint.

    ``status`` is ``"pending"``, ``"delivered"`` or ``"dead"``; ``attempts`` the
    attempts made; ``next_attempt_at`` when a pending one is due (Unix time).
    """

    id: str
    message_id: str
    endpoint_id: str
    status: str
    attempts: int
    next_attempt_at: float
    last_status: int | None
    last_error: str | None
    done_at: float | None


@dataclass(frozen=True, slots=True)
class DeadRow:
    """A dead-lettered delivery as stored."""

    seq: int
    message_id: str
    endpoint_id: str
    event_type: str
    body: bytes
    reason: str
    attempts: int
    dead_at: float | None
    created_at: float


@runtime_checkable
class DeliveryStore(Protocol):
    """Where a :class:`~buttress.webhooks.dispatcher.Dispatcher` keeps its state.

    Implementations: :class:`~buttress.webhooks.dispatcher.SQLiteDeliveryStore` and
    :class:`~buttress.webhooks.dispatcher.PostgresDeliveryStore` (their SQL is shared);
    another database implements this protocol. Times are Unix seconds.
    """

    async def enqueue(
        self,
        messages: Sequence[tuple[str, str, str | None, bytes, float]],
        deliveries: Sequence[tuple[str, str, str | None, float, float]],
    ) -> int:
        """Store messages ``(id, event_type, key, body, created_at)`` and deliveries
        ``(message_id, endpoint_id, order_key, next_attempt_at, created_at)`` in one
        transaction; existing ones are kept as they are. Returns the new deliveries."""

    async def claim(self, owner: str, limit: int, now: float, lease: float) -> list[Claimed]:
        """Claim up to ``limit`` claimable deliveries for ``owner`` until ``now + lease``."""

    async def apply(self, owner: str, decision: Decision, now: float) -> None:
        """Write a :class:`~buttress.webhooks.dispatcher.Decision` back, in one transaction."""

    async def health(self) -> tuple[dict[str, float], dict[str, str]]:
        """``(failing_since, disabled_reason)`` of the endpoints, by id."""

    async def set_disabled(self, endpoint_id: str, reason: str | None, now: float) -> None:
        """Disable an endpoint (with ``reason``) or enable it (``None``)."""

    async def dead(
        self, limit: int, after: int | None, endpoint_id: str | None = None
    ) -> list[DeadRow]:
        """Dead-lettered deliveries in ``seq`` order, after ``after``."""

    async def dead_one(self, seq: int) -> DeadRow | None:
        """One dead-lettered delivery."""

    async def replay(
        self, seqs: Sequence[int] | None, now: float, endpoint_id: str | None = None
    ) -> int:
        """Make dead deliveries pending again, due now, with a fresh schedule."""

    async def purge(self, seqs: Sequence[int] | None, endpoint_id: str | None = None) -> int:
        """Delete dead deliveries (and their attempt logs)."""

    async def pending_hooks(self, limit: int) -> list[Exhausted]:
        """Dead deliveries whose ``on_exhausted`` hook has not run yet."""

    async def delivery(self, message_id: str, endpoint_id: str) -> DeliveryInfo | None:
        """The state of one delivery."""

    async def attempts(self, message_id: str, endpoint_id: str) -> list[AttemptRecord]:
        """The attempt log of one delivery, oldest first."""

    async def counts(self) -> dict[str, int]:
        """Deliveries by status."""

    async def oldest_due(self, now: float) -> float | None:
        """``next_attempt_at`` of the most overdue pending delivery not leased, or
        ``None`` when none is due at ``now``."""

    async def prune(self, before: float, batch: int) -> int:
        """Delete, ``batch`` rows per transaction, delivered deliveries done before
        ``before``, attempts made before it and messages with no delivery left;
        return how many rows were deleted."""

    async def close(self) -> None:
        """Close the connections."""


class SQLStore(ABC):
    """The SQL shared by the SQLite and PostgreSQL stores (a :class:`DeliveryStore`).

    Subclasses set ``_mark`` (the placeholder), implement :meth:`_transact` and
    :meth:`claim`.
    """

    _mark: str = "?"

    def __init__(self, prefix: str, schema: str | None) -> None:
        self.table = _prefix(prefix, schema)
        t = {s: self.table.qualified(f"_{s}") for s in _SUFFIXES}
        self._t = t
        d, m, a, e = t["deliveries"], t["messages"], t["attempts"], t["endpoints"]
        q = self._q
        self._claim_sql = q(
            f"SELECT d.seq, d.message_id, d.endpoint_id, m.event_type, m.body, d.attempts "
            f"FROM {d} AS d JOIN {m} AS m ON m.id = d.message_id "
            "WHERE d.status = 'pending' AND d.next_attempt_at <= ? "
            "AND (d.claimed_until IS NULL OR d.claimed_until <= ?) "
            "AND (d.order_key IS NULL OR NOT EXISTS ("
            f"SELECT 1 FROM {d} AS e WHERE e.order_key = d.order_key "
            "AND e.status = 'pending' AND e.seq < d.seq)) "
            "ORDER BY d.next_attempt_at, d.seq LIMIT ?"
        )
        self._insert_message = q(
            f"INSERT INTO {m} (id, event_type, key, body, created_at) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT (id) DO NOTHING"
        )
        self._insert_delivery = q(
            f"INSERT INTO {d} (message_id, endpoint_id, order_key, next_attempt_at, created_at) "
            "VALUES (?, ?, ?, ?, ?) ON CONFLICT (message_id, endpoint_id) DO NOTHING"
        )
        release = "claimed_by = NULL, claimed_until = NULL"
        mine = "WHERE seq = ? AND claimed_by = ? AND status = 'pending'"
        self._delivered = q(
            f"UPDATE {d} SET status = 'delivered', attempts = attempts + 1, done_at = ?, "
            f"last_status = ?, last_error = NULL, {release} WHERE seq = ? AND status = 'pending'"
        )
        self._retry = q(
            f"UPDATE {d} SET attempts = attempts + 1, next_attempt_at = ?, last_error = ?, "
            f"last_status = ?, {release} {mine}"
        )
        self._release = q(f"UPDATE {d} SET next_attempt_at = ?, {release} {mine}")
        self._dead = q(
            f"UPDATE {d} SET status = 'dead', attempts = attempts + ?, done_at = ?, "
            f"last_error = ?, last_status = ?, hook_state = ?, {release} {mine}"
        )
        self._attempt = q(
            f"INSERT INTO {a} (delivery_seq, attempt, at, status, latency, response_headers, "
            "response_body, error) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
        )
        self._failing = q(
            f"INSERT INTO {e} (endpoint_id, failing_since) VALUES (?, ?) "
            "ON CONFLICT (endpoint_id) DO UPDATE SET failing_since = "
            f"COALESCE({e}.failing_since, excluded.failing_since)"
        )
        self._recovered = q(f"UPDATE {e} SET failing_since = NULL WHERE endpoint_id = ?")
        self._disable = q(
            f"INSERT INTO {e} (endpoint_id, disabled_at, disabled_reason) VALUES (?, ?, ?) "
            "ON CONFLICT (endpoint_id) DO UPDATE SET disabled_at = excluded.disabled_at, "
            "disabled_reason = excluded.disabled_reason, failing_since = NULL"
        )
        self._enable = q(
            f"UPDATE {e} SET disabled_at = NULL, disabled_reason = NULL, failing_since = NULL "
            "WHERE endpoint_id = ?"
        )
        self._hook_done = q(f"UPDATE {d} SET hook_state = {HOOK_DONE} WHERE seq = ?")
        self._dead_cols = (
            "d.seq, d.message_id, d.endpoint_id, m.event_type, m.body, "
            f"COALESCE(d.last_error, ''), d.attempts, d.done_at, m.created_at FROM {d} AS d "
            f"JOIN {m} AS m ON m.id = d.message_id WHERE d.status = 'dead'"
        )

    def _q(self, sql: str) -> str:
        return sql if self._mark == "?" else sql.replace("?", self._mark)

    @abstractmethod
    async def _transact(self, steps: Sequence[Step]) -> list[Result]:
        """Run ``steps`` in one transaction; return each one's ``(rowcount, rows)``."""

    async def enqueue(
        self,
        messages: Sequence[tuple[str, str, str | None, bytes, float]],
        deliveries: Sequence[tuple[str, str, str | None, float, float]],
    ) -> int:
        """See :meth:`DeliveryStore.enqueue`."""
        steps: list[Step] = [(self._insert_message, messages, "many")]
        if deliveries:
            steps.append((self._insert_delivery, deliveries, "many"))
        results = await self._transact(steps)
        return results[-1][0] if deliveries else 0

    async def apply(self, owner: str, decision: Decision, now: float) -> None:
        """See :meth:`DeliveryStore.apply`."""
        steps: list[Step] = []

        def many(sql: str, rows: Sequence[Sequence[Any]]) -> None:
            if rows:
                steps.append((sql, rows, "many"))

        many(self._delivered, [(now, status, seq) for seq, status in decision.delivered])
        many(self._retry, [(at, err, st, seq, owner) for seq, at, err, st in decision.retry])
        many(self._release, [(at, seq, owner) for seq, at in decision.released])
        many(
            self._dead,
            [(n, now, err, st, hook, seq, owner) for seq, n, err, st, hook in decision.dead],
        )
        many(self._attempt, decision.attempts)
        many(self._failing, decision.failing)
        many(self._recovered, [(e,) for e in decision.recovered])
        many(self._disable, [(x.endpoint_id, x.at, x.reason) for x in decision.disabled])
        many(self._hook_done, [(seq,) for seq in decision.hooks_done])
        if steps:
            await self._transact(steps)

    async def health(self) -> tuple[dict[str, float], dict[str, str]]:
        """See :meth:`DeliveryStore.health`."""
        ((_, rows),) = await self._transact(
            [
                (
                    "SELECT endpoint_id, failing_since, disabled_reason FROM "
                    f"{self._t['endpoints']}",
                    (),
                    "query",
                )
            ]
        )
        failing = {r[0]: float(r[1]) for r in rows if r[1] is not None and r[2] is None}
        disabled = {r[0]: str(r[2]) for r in rows if r[2] is not None}
        return failing, disabled

    async def set_disabled(self, endpoint_id: str, reason: str | None, now: float) -> None:
        """See :meth:`DeliveryStore.set_disabled`."""
        if reason is None:
            await self._transact([(self._enable, (endpoint_id,), "one")])
        else:
            await self._transact([(self._disable, (endpoint_id, now, reason), "one")])

    @staticmethod
    def _dead_row(row: Sequence[Any]) -> DeadRow:
        return DeadRow(
            int(row[0]), row[1], row[2], row[3], bytes(row[4]), row[5], int(row[6]),
            None if row[7] is None else float(row[7]), float(row[8]),
        )  # fmt: skip

    def _where(self, seqs: Sequence[int] | None, endpoint_id: str | None) -> tuple[str, list[Any]]:
        sql, params = "", list[Any]()
        if endpoint_id is not None:
            sql, params = " AND endpoint_id = ?", [endpoint_id]
        if seqs is not None:
            sql += f" AND seq IN ({', '.join('?' * len(seqs))})"
            params += [int(s) for s in seqs]
        return self._q(sql), params

    async def dead(
        self, limit: int, after: int | None, endpoint_id: str | None = None
    ) -> list[DeadRow]:
        """See :meth:`DeliveryStore.dead`."""
        sql, params = f"SELECT {self._dead_cols} AND d.seq > ?", list[Any]([after or 0])
        if endpoint_id is not None:
            sql, params = sql + " AND d.endpoint_id = ?", [*params, endpoint_id]
        ((_, rows),) = await self._transact(
            [(self._q(sql + " ORDER BY d.seq LIMIT ?"), (*params, limit), "query")]
        )
        return [self._dead_row(r) for r in rows]

    async def dead_one(self, seq: int) -> DeadRow | None:
        """See :meth:`DeliveryStore.dead_one`."""
        ((_, rows),) = await self._transact(
            [(self._q(f"SELECT {self._dead_cols} AND d.seq = ?"), (seq,), "query")]
        )
        return self._dead_row(rows[0]) if rows else None

    async def replay(
        self, seqs: Sequence[int] | None, now: float, endpoint_id: str | None = None
    ) -> int:
        """See :meth:`DeliveryStore.replay`."""
        if seqs is not None and not seqs:
            return 0
        where, params = self._where(seqs, endpoint_id)
        sql = (
            f"UPDATE {self._t['deliveries']} SET status = 'pending', attempts = 0, "
            "next_attempt_at = ?, done_at = NULL, hook_state = 0, claimed_by = NULL, "
            f"claimed_until = NULL WHERE status = 'dead'{where}"
        )
        ((count, _),) = await self._transact([(self._q(sql), (now, *params), "one")])
        return count

    async def purge(self, seqs: Sequence[int] | None, endpoint_id: str | None = None) -> int:
        """See :meth:`DeliveryStore.purge`."""
        if seqs is not None and not seqs:
            return 0
        where, params = self._where(seqs, endpoint_id)
        d, a = self._t["deliveries"], self._t["attempts"]
        chosen = f"SELECT seq FROM {d} WHERE status = 'dead'{where}"
        results = await self._transact(
            [
                (f"DELETE FROM {a} WHERE delivery_seq IN ({chosen})", params, "one"),
                (f"DELETE FROM {d} WHERE status = 'dead'{where}", params, "one"),
            ]
        )
        return results[1][0]

    async def pending_hooks(self, limit: int) -> list[Exhausted]:
        """See :meth:`DeliveryStore.pending_hooks`."""
        sql = self._q(
            f"SELECT {self._dead_cols} AND d.hook_state = {HOOK_PENDING} ORDER BY d.seq LIMIT ?"
        )
        ((_, rows),) = await self._transact([(sql, (limit,), "query")])
        return [
            Exhausted(str(r.seq), r.endpoint_id, r.message_id, r.event_type, r.body,
                      r.attempts, r.reason)
            for r in map(self._dead_row, rows)
        ]  # fmt: skip

    async def delivery(self, message_id: str, endpoint_id: str) -> DeliveryInfo | None:
        """See :meth:`DeliveryStore.delivery`."""
        sql = self._q(
            "SELECT seq, message_id, endpoint_id, status, attempts, next_attempt_at, "
            f"last_status, last_error, done_at FROM {self._t['deliveries']} "
            "WHERE message_id = ? AND endpoint_id = ?"
        )
        ((_, rows),) = await self._transact([(sql, (message_id, endpoint_id), "query")])
        if not rows:
            return None
        r = rows[0]
        return DeliveryInfo(str(r[0]), r[1], r[2], r[3], int(r[4]), float(r[5]), r[6], r[7],
                            None if r[8] is None else float(r[8]))  # fmt: skip

    async def attempts(self, message_id: str, endpoint_id: str) -> list[AttemptRecord]:
        """See :meth:`DeliveryStore.attempts`."""
        d, a = self._t["deliveries"], self._t["attempts"]
        sql = self._q(
            "SELECT a.attempt, a.at, a.status, a.latency, a.response_headers, "
            f"a.response_body, a.error FROM {a} AS a JOIN {d} AS d ON d.seq = a.delivery_seq "
            "WHERE d.message_id = ? AND d.endpoint_id = ? ORDER BY a.id"
        )
        ((_, rows),) = await self._transact([(sql, (message_id, endpoint_id), "query")])
        return [AttemptRecord(int(r[0]), float(r[1]), r[2], float(r[3]), r[4], r[5], r[6])
                for r in rows]  # fmt: skip

    async def counts(self) -> dict[str, int]:
        """See :meth:`DeliveryStore.counts`."""
        sql = f"SELECT status, count(*) FROM {self._t['deliveries']} GROUP BY status"
        ((_, rows),) = await self._transact([(sql, (), "query")])
        found = {"pending": 0, "delivered": 0, "dead": 0}
        found.update({str(r[0]): int(r[1]) for r in rows})
        return found

    async def oldest_due(self, now: float) -> float | None:
        """See :meth:`DeliveryStore.oldest_due`."""
        sql = self._q(
            f"SELECT min(next_attempt_at) FROM {self._t['deliveries']} WHERE status = 'pending' "
            "AND next_attempt_at <= ? AND (claimed_until IS NULL OR claimed_until <= ?)"
        )
        ((_, rows),) = await self._transact([(sql, (now, now), "query")])
        return None if not rows or rows[0][0] is None else float(rows[0][0])

    async def prune(self, before: float, batch: int) -> int:
        """See :meth:`DeliveryStore.prune`."""
        d, m, a = self._t["deliveries"], self._t["messages"], self._t["attempts"]
        lock = " FOR UPDATE SKIP LOCKED" if self._mark == "%s" else ""
        statements = (
            f"DELETE FROM {a} WHERE id IN (SELECT id FROM {a} WHERE at < ? "
            f"ORDER BY id LIMIT ?{lock})",
            f"DELETE FROM {d} WHERE seq IN (SELECT seq FROM {d} WHERE status = 'delivered' "
            f"AND done_at < ? ORDER BY done_at LIMIT ?{lock})",
            f"DELETE FROM {m} WHERE id IN (SELECT id FROM {m} AS x WHERE x.created_at < ? "
            f"AND NOT EXISTS (SELECT 1 FROM {d} AS y WHERE y.message_id = x.id) "
            f"LIMIT ?{lock})",
        )
        total = 0
        for statement in statements:
            while True:
                ((deleted, _),) = await self._transact(
                    [(self._q(statement), (before, batch), "one")]
                )
                total += deleted
                if deleted < batch:
                    break
        return total


def store_from_url(
    url: str, prefix: str = DEFAULT_PREFIX, *, schema: str | None = None
) -> SQLStore:
    """The delivery store a URL names: ``sqlite:///PATH`` (``sqlite:////abs/path``) or
    ``postgresql://...`` (needs ``buttress[postgres]``).

    Raises:
        ConfigError: another scheme, or a SQLite URL without a file.
    """
    if not isinstance(url, str):
        raise ConfigError(f"expected a URL string, got {url!r}", path="url")
    if url.startswith("sqlite:"):
        path = url.removeprefix("sqlite:///")
        if not path or path in (url, ":memory:"):
            raise ConfigError(
                f"expected sqlite:///PATH (sqlite:////abs/path) of a database file, got {url!r}",
                path="url",
            )
        from buttress.webhooks.dispatcher._store_sqlite import (  # noqa: PLC0415 - a cycle
            SQLiteDeliveryStore,
        )

        return SQLiteDeliveryStore(path, prefix, schema=schema)
    if url.startswith(("postgresql://", "postgres://")):
        from buttress.webhooks.dispatcher._store_postgres import (  # noqa: PLC0415 - psycopg
            PostgresDeliveryStore,
        )

        return PostgresDeliveryStore(url, prefix, schema=schema)
    scheme = url.partition(":")[0]
    raise ConfigError(f"expected sqlite:/// or postgresql://, got {scheme!r}", path="url")

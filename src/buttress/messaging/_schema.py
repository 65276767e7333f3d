"""The messaging schema: table names, the SQL migrations and :func:`migrate`.

The migrations are SQL files shipped in the package (``migrations/<dialect>/NNNN_*.sql``)
with ``{{placeholder}}`` names for the table. Each belongs to one *target*: the
inbox's files are named ``NNNN_inbox*.sql``, every other file is the outbox's. The
targets' tables are independent (an inbox needs no outbox), so :func:`migrate` takes
the target (``what``) and the table, and applies the target's migrations not yet
recorded in that table's version table (``<table>_migrations``), in one transaction,
so running it twice, or from two processes at once, applies each migration once.

psycopg is never imported here: a psycopg connection is recognised through
``sys.modules`` (whoever passes one has imported psycopg already).
"""

from __future__ import annotations

import re
import sqlite3
import sys
from dataclasses import dataclass
from importlib import resources
from typing import TYPE_CHECKING, Any, Final, Literal

from buttress.errors import ButtressError, ConfigError

if TYPE_CHECKING:
    import psycopg

__all__ = [
    "DEFAULT_INBOX_TABLE",
    "Dialect",
    "OutboxError",
    "TableName",
    "Target",
    "dialect_of",
    "migrate",
    "migrations",
]

Dialect = Literal["postgresql", "sqlite"]
Target = Literal["outbox", "inbox"]

_IDENTIFIER: Final = re.compile(r"[a-z_][a-z0-9_]{0,47}")
DEFAULT_TABLE: Final = "buttress_outbox"
DEFAULT_INBOX_TABLE: Final = "buttress_inbox"
_DEFAULT_TABLES: Final = {"outbox": DEFAULT_TABLE, "inbox": DEFAULT_INBOX_TABLE}


def _target_of(label: str) -> Target:
    return "inbox" if label == "inbox" or label.startswith("inbox_") else "outbox"


class OutboxError(ButtressError, ValueError):
    """An event or a connection the outbox refuses, before touching the database.

    The caller's transaction is left as it was: usable, nothing written.
    """


@dataclass(frozen=True, slots=True)
class TableName:
    """A checked outbox table name, optionally in a schema (an attached database on SQLite).

    Names are 1 to 48 lowercase letters, digits or underscores, not starting with a
    digit, so the derived names (``<table>_migrations``, ``<table>_pending_idx``, the
    trigger function) stay within PostgreSQL's 63-byte limit and need no escaping.
    """

    name: str = DEFAULT_TABLE
    schema: str | None = None

    def __post_init__(self) -> None:
        for option, value in (("table", self.name), ("schema", self.schema)):
            if value is None and option == "schema":
                continue
            if not isinstance(value, str) or not _IDENTIFIER.fullmatch(value):
                raise ConfigError(
                    f"must be 1 to 48 lowercase letters, digits or underscores, not "
                    f"starting with a digit; got {value!r}",
                    path=option,
                )

    def qualified(self, suffix: str = "") -> str:
        """The quoted, schema-qualified name of the table (or of ``<table><suffix>``)."""
        bare = f'"{self.name}{suffix}"'
        return f'"{self.schema}".{bare}' if self.schema else bare

    @property
    def channel(self) -> str:
        """The PostgreSQL ``NOTIFY`` channel: ``<schema>.<table>`` or ``<table>``."""
        return f"{self.schema}.{self.name}" if self.schema else self.name


def _module_type(connection: object, module: str, name: str) -> bool:
    found = sys.modules.get(module)
    kind = getattr(found, name, None) if found is not None else None
    return isinstance(kind, type) and isinstance(connection, kind)


def dialect_of(connection: object) -> tuple[Dialect, bool]:
    """``(dialect, is_async)`` of a DB-API connection the outbox supports.

    Raises:
        OutboxError: not a :class:`sqlite3.Connection` or a psycopg 3
            ``Connection``/``AsyncConnection``.
    """
    if isinstance(connection, sqlite3.Connection):
        return "sqlite", False
    if _module_type(connection, "psycopg", "Connection"):
        return "postgresql", False
    if _module_type(connection, "psycopg", "AsyncConnection"):
        return "postgresql", True
    raise OutboxError(
        "expected a sqlite3.Connection or a psycopg 3 Connection/AsyncConnection, got "
        f"{type(connection).__module__}.{type(connection).__qualname__}"
    )


def migrations(
    dialect: Dialect, table: TableName, what: Target = "outbox"
) -> list[tuple[int, str, str]]:
    """``(version, name, sql)`` of every migration of target ``what`` for ``dialect``,
    in order."""
    folder = resources.files("buttress.messaging").joinpath("migrations", dialect)
    found = []
    for item in folder.iterdir():
        if not item.name.endswith(".sql"):
            continue
        number, _, rest = item.name.partition("_")
        if _target_of(rest.removesuffix(".sql")) != what:
            continue
        sql = item.read_text(encoding="utf-8")
        values = {
            "table": table.qualified(),
            "name": table.name,
            "bare": f'"{table.name}"',
            "index_prefix": f'"{table.schema}".{table.name}' if table.schema else table.name,
            "function": table.qualified("_notify"),
            "channel": "'" + table.channel + "'",
        }
        for key, value in values.items():
            sql = sql.replace("{{" + key + "}}", value)
        found.append((int(number), rest.removesuffix(".sql"), sql))
    return sorted(found)


def _statements(script: str) -> list[str]:
    """Split a SQLite script into complete statements (comments dropped)."""
    out: list[str] = []
    current: list[str] = []
    for line in script.splitlines():
        if not current and (not line.strip() or line.lstrip().startswith("--")):
            continue
        current.append(line)
        text = "\n".join(current)
        if sqlite3.complete_statement(text):
            out.append(text)
            current = []
    if current and "\n".join(current).strip():
        raise ButtressError(f"incomplete SQL statement in a migration: {current!r}")
    return out


def migrate(
    connection: sqlite3.Connection | psycopg.Connection[Any],
    table: str | None = None,
    *,
    schema: str | None = None,
    what: Target = "outbox",
) -> list[str]:
    """Create or upgrade the outbox (or inbox) table: apply the migrations not applied yet.

    Everything happens in one transaction, committed here; the applied versions are
    recorded in ``<table>_migrations``, so a second run applies nothing. On
    PostgreSQL a transaction-level advisory lock keeps concurrent runs apart; on
    SQLite ``BEGIN IMMEDIATE`` does.

    Args:
        connection: A :class:`sqlite3.Connection` with no open transaction (with
            Python 3.12's ``autocommit=False``, the migrations commit in the
            connection's ever-open transaction), or a
            psycopg 3 (synchronous) ``Connection``. psycopg: with a transaction open
            the migrations run in a savepoint of it and commit with it.
        table: The table's name; default: ``buttress_outbox``, or ``buttress_inbox``
            for ``what="inbox"``.
        schema: Its PostgreSQL schema (or the attached SQLite database); default:
            the connection's search path (``main`` on SQLite).
        what: ``"outbox"`` (the outbox table of :class:`~buttress.messaging.Outbox`
            and the relay) or ``"inbox"`` (the table of
            :class:`~buttress.messaging.inbox.SQLInbox`).

    Returns:
        The names of the migrations applied now, e.g. ``["0001_outbox"]`` (empty
        when the table was up to date).

    Raises:
        ConfigError: ``table``, ``schema`` or ``what`` is not valid.
        OutboxError: the connection is not supported, or a SQLite transaction is open.
    """
    if what not in _DEFAULT_TABLES:
        raise ConfigError(f"must be 'outbox' or 'inbox', got {what!r}", path="what")
    name = TableName(_DEFAULT_TABLES[what] if table is None else table, schema)
    dialect, is_async = dialect_of(connection)
    if is_async:
        raise OutboxError("migrate() needs a synchronous connection (psycopg.Connection)")
    return apply_migrations(
        connection, name, migrations(dialect, name, what), lock=f"buttress.{what}:{name.channel}"
    )


def apply_migrations(
    connection: sqlite3.Connection | psycopg.Connection[Any],
    table: TableName,
    scripts: list[tuple[int, str, str]],
    *,
    lock: str,
) -> list[str]:
    """Apply the ``(version, name, sql)`` ``scripts`` not yet recorded in
    ``<table>_migrations``, in one transaction; return the names applied.

    The runner every buttress schema shares (the outbox, the inbox, the webhook
    dispatcher's tables): ``BEGIN IMMEDIATE`` on SQLite, the advisory lock ``lock``
    on PostgreSQL keep concurrent runs apart.

    Raises:
        OutboxError: not a supported synchronous connection, or a SQLite
            transaction is open.
    """
    dialect, is_async = dialect_of(connection)
    if is_async:
        raise OutboxError("migrate() needs a synchronous connection (psycopg.Connection)")
    if dialect == "sqlite":
        assert isinstance(connection, sqlite3.Connection)
        return _migrate_sqlite(connection, table, scripts)
    return _migrate_postgresql(connection, table, scripts, lock)  # type: ignore[arg-type]


_VERSIONS_SQL: Final = (
    "CREATE TABLE IF NOT EXISTS {versions} (version integer PRIMARY KEY, "
    "name text NOT NULL, applied_at {time} NOT NULL DEFAULT {now})"
)


def _migrate_sqlite(
    connection: sqlite3.Connection, table: TableName, scripts: list[tuple[int, str, str]]
) -> list[str]:
    # Python 3.12's autocommit=False keeps a transaction open at all times: use it.
    always_in_transaction = getattr(connection, "autocommit", None) is False
    if connection.in_transaction and not always_in_transaction:
        raise OutboxError(
            "migrate() runs its own transaction: commit or roll back the open one first"
        )
    versions = table.qualified("_migrations")
    applied: list[str] = []
    if not always_in_transaction:
        connection.execute("BEGIN IMMEDIATE")
    try:
        connection.execute(
            _VERSIONS_SQL.format(
                versions=versions,
                time="REAL",
                now="((julianday('now') - 2440587.5) * 86400.0)",
            )
        )
        done = {row[0] for row in connection.execute(f"SELECT version FROM {versions}")}
        for version, label, sql in scripts:
            if version in done:
                continue
            for statement in _statements(sql):
                connection.execute(statement)
            connection.execute(
                f"INSERT INTO {versions} (version, name) VALUES (?, ?)", (version, label)
            )
            applied.append(f"{version:04d}_{label}")
    except BaseException:
        connection.rollback()
        raise
    connection.commit()
    return applied


def _migrate_postgresql(
    connection: psycopg.Connection[Any],
    table: TableName,
    scripts: list[tuple[int, str, str]],
    lock: str,
) -> list[str]:
    versions = table.qualified("_migrations")
    applied: list[str] = []
    with connection.transaction():
        # hashtext() is stable within a server version, which is all a lock needs.
        connection.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (lock,))
        connection.execute(_VERSIONS_SQL.format(versions=versions, time="timestamptz", now="now()"))
        cursor = connection.execute(f"SELECT version FROM {versions}")
        done = {row[0] for row in cursor.fetchall()}
        for version, label, sql in scripts:
            if version in done:
                continue
            connection.execute(sql)
            connection.execute(
                f"INSERT INTO {versions} (version, name) VALUES (%s, %s)",
                (version, label),
            )
            applied.append(f"{version:04d}_{label}")
    return applied

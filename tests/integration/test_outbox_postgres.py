"""The outbox's write side against the real PostgreSQL (database ``test``).

Every test works on a table of its own (a unique name), dropped afterwards.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner

from buttress.cli import EXIT_CONFIG
from buttress.cli._app import app
from buttress.messaging import Envelope, Outbox, OutboxError, migrate

from tests.conftest import require_service

URL = "postgresql://postgres@127.0.0.1:5432/test"

COLUMNS = [
    "seq",
    "event_id",
    "source",
    "event_type",
    "subject",
    "envelope",
    "status",
    "attempts",
    "next_attempt_at",
    "claimed_by",
    "claimed_until",
    "last_error",
    "created_at",
    "published_at",
]


def _drop(table: str, schema: str | None = None) -> None:
    with psycopg.connect(URL, autocommit=True) as admin:
        if schema:
            admin.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
            return
        admin.execute(f'DROP TABLE IF EXISTS "{table}", "{table}_migrations"')
        admin.execute(f'DROP FUNCTION IF EXISTS "{table}_notify"()')


@pytest.fixture
def table() -> Iterator[str]:
    require_service("postgres")
    name = f"outbox_{uuid.uuid4().hex[:12]}"
    yield name
    _drop(name)


@pytest.fixture
def conn(table: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(URL) as connection:
        migrate(connection, table)
        yield connection


@pytest.fixture
async def aconn(table: str) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
    with psycopg.connect(URL) as connection:
        migrate(connection, table)
    async with await psycopg.AsyncConnection.connect(URL) as connection:
        yield connection


def event(subject: str = "order-1", **kwargs: Any) -> Envelope:
    return Envelope(source="/orders", type="order.placed", subject=subject, **kwargs)


def stored(table: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(URL) as reader:
        return reader.execute(
            f'SELECT event_id, envelope, status, attempts FROM "{table}" ORDER BY seq'
        ).fetchall()


# -- migrations -------------------------------------------------------------------------


def test_migrate_is_idempotent(table: str) -> None:
    with psycopg.connect(URL) as connection:
        assert migrate(connection, table) == ["0001_outbox", "0003_outbox_fillfactor"]
        assert migrate(connection, table) == []
        columns = connection.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = %s "
            "ORDER BY ordinal_position",
            (table,),
        ).fetchall()
        assert [c for (c,) in columns] == COLUMNS
        indexes = connection.execute(
            "SELECT indexname FROM pg_indexes WHERE tablename = %s", (table,)
        ).fetchall()
        suffixes = {name.removeprefix(table) for (name,) in indexes}
        assert {"_pending_idx", "_key_idx", "_published_idx", "_dead_idx"} <= suffixes
        trigger = connection.execute(
            "SELECT action_orientation, event_manipulation FROM information_schema.triggers "
            "WHERE event_object_table = %s",
            (table,),
        ).fetchall()
        assert trigger == [("STATEMENT", "INSERT")]


def test_concurrent_migrations_apply_once(table: str) -> None:
    results: list[list[str]] = []
    barrier = threading.Barrier(3)

    def run() -> None:
        with psycopg.connect(URL) as connection:
            barrier.wait()
            results.append(migrate(connection, table))

    threads = [threading.Thread(target=run) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == [[], [], ["0001_outbox", "0003_outbox_fillfactor"]]


def test_migrate_in_a_schema() -> None:
    require_service("postgres")
    schema = f"s_{uuid.uuid4().hex[:12]}"
    try:
        with psycopg.connect(URL) as connection:
            connection.execute(f'CREATE SCHEMA "{schema}"')
            connection.commit()
            assert migrate(connection, schema=schema) == ["0001_outbox", "0003_outbox_fillfactor"]
            assert migrate(connection, schema=schema) == []
            with connection.transaction():
                Outbox(schema=schema).add(connection, event())
            count = connection.execute(f'SELECT count(*) FROM "{schema}".buttress_outbox')
            assert count.fetchone() == (1,)
    finally:
        _drop("", schema)


def test_migrate_failure_applies_nothing(table: str) -> None:
    with psycopg.connect(URL) as connection:
        connection.execute(f'CREATE TABLE "{table}" (x int)')  # in the way
        connection.commit()
        with pytest.raises(psycopg.errors.DuplicateTable):
            migrate(connection, table)
        connection.rollback()
        found = connection.execute("SELECT to_regclass(%s)", (f"{table}_migrations",))
        assert found.fetchone() == (None,)


# -- atomicity ------------------------------------------------------------------------


def test_committed_and_rolled_back(conn: psycopg.Connection[Any], table: str) -> None:
    outbox = Outbox(table)
    kept, lost = event(data={"total": 12.5, "nul": "a\u0000b"}), event()
    with conn.transaction():
        outbox.add(conn, kept)
    with pytest.raises(RuntimeError), conn.transaction():  # noqa: PT012
        outbox.add(conn, lost)
        raise RuntimeError("the business change failed")
    conn.commit()
    [(event_id, envelope, status, attempts)] = stored(table)
    assert (event_id, status, attempts) == (kept.id, "pending", 0)
    assert Envelope.from_json(envelope) == kept


def test_add_never_commits(conn: psycopg.Connection[Any], table: str) -> None:
    Outbox(table).add_many(conn, [event(), event()])
    assert stored(table) == []  # another session sees nothing yet
    conn.rollback()
    assert stored(table) == []


def test_add_many_is_one_statement(conn: psycopg.Connection[Any], table: str) -> None:
    # Count the INSERT statements with a statement-level trigger of the test's own.
    conn.execute(f'CREATE TABLE "{table}_stmts" (n int)')
    conn.execute(
        f'CREATE FUNCTION "{table}_count"() RETURNS trigger LANGUAGE plpgsql AS '
        f'$$ BEGIN INSERT INTO "{table}_stmts" VALUES (1); RETURN NULL; END $$'
    )
    conn.execute(
        f'CREATE TRIGGER count AFTER INSERT ON "{table}" '
        f'FOR EACH STATEMENT EXECUTE FUNCTION "{table}_count"()'
    )
    conn.commit()
    try:
        small = [event(subject=f"k{i % 7}", data={"i": i}) for i in range(500)]
        large = [event(subject=f"k{i % 7}") for i in range(14_000)]  # over 65535 parameters
        with conn.transaction():
            Outbox(table).add_many(conn, small)
            first = conn.execute(f'SELECT count(*) FROM "{table}_stmts"').fetchone()
            Outbox(table).add_many(conn, large)
            both = conn.execute(f'SELECT count(*) FROM "{table}_stmts"').fetchone()
        assert (first, both) == ((1,), (3,))
        assert [row[0] for row in stored(table)] == [e.id for e in small + large]
    finally:
        conn.rollback()
        conn.execute(f'DROP TABLE IF EXISTS "{table}_stmts"')
        conn.execute(f'DROP TRIGGER IF EXISTS count ON "{table}"')
        conn.execute(f'DROP FUNCTION IF EXISTS "{table}_count"()')
        conn.commit()


def test_autocommit_needs_a_transaction(table: str) -> None:
    with psycopg.connect(URL, autocommit=True) as connection:
        migrate(connection, table)
        with pytest.raises(OutboxError, match="autocommit"):
            Outbox(table).add(connection, event())
        with connection.transaction():
            Outbox(table).add(connection, event())
    assert len(stored(table)) == 1


async def test_add_refuses_an_async_connection(
    aconn: psycopg.AsyncConnection[Any], table: str
) -> None:
    with pytest.raises(OutboxError, match=r"await outbox\.aadd"):
        Outbox(table).add(aconn, event())  # type: ignore[arg-type]


async def test_aadd_commit_and_rollback(aconn: psycopg.AsyncConnection[Any], table: str) -> None:
    outbox = Outbox(table)
    kept, lost = event(), event()
    async with aconn.transaction():
        await outbox.aadd(aconn, kept)
        await outbox.aadd_many(aconn, [event(subject="order-2")])
    async with aconn.transaction():  # the business change failed: rolled back
        await outbox.aadd(aconn, lost)
        raise psycopg.Rollback
    await aconn.commit()
    ids = [row[0] for row in stored(table)]
    assert len(ids) == 2
    assert ids[0] == kept.id
    assert lost.id not in ids
    with pytest.raises(OutboxError, match=r"use outbox\.add"), psycopg.connect(URL) as sync:
        await outbox.aadd(sync, event())  # type: ignore[arg-type]


# -- refused input, transaction still usable -----------------------------------------------


def _unserialisable() -> Envelope:
    bad = event(data={"ok": 1})
    bad.data["when"] = object()
    return bad


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (_unserialisable, "not JSON-serialisable"),
        (lambda: event(data="x" * 2000), "over max_bytes=1024"),
        (lambda: Envelope(source="/orders", type=" "), "type is blank"),
    ],
    ids=["not-json", "oversized", "blank-type"],
)
def test_bad_input_leaves_the_transaction_usable(
    conn: psycopg.Connection[Any], table: str, make: Any, message: str
) -> None:
    outbox = Outbox(table, max_bytes=1024)
    good = event()
    with conn.transaction():
        outbox.add(conn, event(subject="first"))
        with pytest.raises(OutboxError, match=message):
            outbox.add(conn, make())
        with pytest.raises(OutboxError, match=message):
            outbox.add_many(conn, [event(), make()])
        outbox.add(conn, good)  # an aborted transaction would raise InFailedSqlTransaction
    assert [row[0] for row in stored(table)][1:] == [good.id]


async def test_bad_input_leaves_the_async_transaction_usable(
    aconn: psycopg.AsyncConnection[Any], table: str
) -> None:
    outbox = Outbox(table, max_bytes=512)
    good = event()
    async with aconn.transaction():
        with pytest.raises(OutboxError, match="over max_bytes"):
            await outbox.aadd(aconn, event(data="y" * 600))
        await outbox.aadd(aconn, good)
    assert [row[0] for row in stored(table)] == [good.id]


# -- NOTIFY ---------------------------------------------------------------------------


def _notifications(listener: psycopg.Connection[Any], table: str) -> list[str]:
    """Payloads on the table's channel up to the sentinel the test sends last."""
    got = []
    for notify in listener.notifies(timeout=30):
        if notify.payload == "sentinel":
            return got
        got.append(notify.payload)
    raise AssertionError(f"no sentinel on {table}; got {got}")


def test_notify_fires_once_per_transaction(conn: psycopg.Connection[Any], table: str) -> None:
    outbox = Outbox(table)
    with psycopg.connect(URL, autocommit=True) as listener:
        listener.execute(f'LISTEN "{table}"')
        with conn.transaction():  # three statements, 12 rows
            outbox.add_many(conn, [event(subject=f"k{i}") for i in range(10)])
            outbox.add(conn, event())
            outbox.add(conn, event())
        with conn.transaction():  # rolled back: no notification
            outbox.add(conn, event())
            raise psycopg.Rollback
        with conn.transaction():
            conn.execute("SELECT pg_notify(%s, 'sentinel')", (table,))
        assert _notifications(listener, table) == [""]
    assert len(stored(table)) == 12


# -- the CLI --------------------------------------------------------------------------


def test_cli_init_postgresql(table: str) -> None:
    runner = CliRunner()
    first = runner.invoke(app, ["outbox", "init", "--url", URL, "--table", table])
    assert first.exit_code == 0, first.output
    assert f"applied 0001_outbox to {table}" in first.output
    again = runner.invoke(app, ["outbox", "init", "--url", URL, "--table", table])
    assert again.exit_code == 0, again.output
    assert f"{table} is up to date" in again.output
    with psycopg.connect(URL) as connection, connection.transaction():
        Outbox(table).add(connection, event())
    assert len(stored(table)) == 1


def test_cli_init_database_errors(table: str) -> None:
    runner = CliRunner()
    refused = runner.invoke(
        app, ["outbox", "init", "--url", "postgresql://postgres:secret@127.0.0.1:1/test"]
    )
    assert refused.exit_code == EXIT_CONFIG
    assert "error: postgresql://postgres:***@127.0.0.1:1/test: connection failed" in refused.output
    assert "secret" not in refused.output
    missing = runner.invoke(
        app, ["outbox", "init", "--url", URL, "--table", table, "--schema", "no_such_schema"]
    )
    assert missing.exit_code == EXIT_CONFIG
    assert 'schema "no_such_schema" does not exist' in missing.output


def test_an_id_already_in_the_outbox_keeps_the_transaction_usable(
    conn: psycopg.Connection[Any], table: str
) -> None:
    first = event()
    outbox = Outbox(table)
    with conn.transaction():
        outbox.add(conn, first)
        outbox.add(conn, Envelope(source="/orders", type="order.placed", id=first.id))
        outbox.add(conn, event("order-2"))  # the transaction was not aborted
    rows = stored(table)
    assert len(rows) == 2
    assert rows[0][0] == first.id


def test_the_outbox_leaves_room_for_hot_updates(table: str) -> None:
    with psycopg.connect(URL) as connection:
        migrate(connection, table)
        options = connection.execute(
            "SELECT reloptions FROM pg_class WHERE relname = %s", (table,)
        ).fetchone()
    assert options is not None
    assert "fillfactor=70" in options[0]

"""The outbox's write side on SQLite: migrations, atomic adds, refused input, the CLI."""

from __future__ import annotations

import sqlite3
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from buttress.cli import EXIT_CONFIG, EXIT_USAGE
from buttress.cli._app import app
from buttress.errors import ConfigError
from buttress.messaging import Envelope, Outbox, OutboxError, SQLInbox, migrate
from buttress.messaging._schema import TableName, migrations

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


@pytest.fixture
def db(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    connection = sqlite3.connect(tmp_path / "app.db")
    migrate(connection)
    connection.execute("CREATE TABLE orders (id TEXT PRIMARY KEY)")
    connection.commit()
    yield connection
    connection.close()


def event(subject: str = "order-1", **kwargs: object) -> Envelope:
    return Envelope(source="/orders", type="order.placed", subject=subject, **kwargs)  # type: ignore[arg-type]


def rows(db: sqlite3.Connection, table: str = "buttress_outbox") -> list[tuple[object, ...]]:
    return db.execute(
        f"SELECT event_id, subject, envelope, status FROM {table} ORDER BY seq"
    ).fetchall()


# -- migrations -----------------------------------------------------------------------


def test_migrate_applies_once(tmp_path: Path) -> None:
    connection = sqlite3.connect(tmp_path / "m.db")
    assert migrate(connection) == ["0001_outbox"]
    assert migrate(connection) == []
    assert migrate(sqlite3.connect(tmp_path / "m.db")) == []
    columns = [row[1] for row in connection.execute("PRAGMA table_info(buttress_outbox)")]
    assert columns == COLUMNS
    indexes = {row[1] for row in connection.execute("PRAGMA index_list(buttress_outbox)")}
    assert {
        "buttress_outbox_pending_idx",
        "buttress_outbox_key_idx",
        "buttress_outbox_published_idx",
        "buttress_outbox_dead_idx",
    } <= indexes
    versions = connection.execute("SELECT version, name FROM buttress_outbox_migrations").fetchall()
    assert versions == [(1, "outbox")]
    assert not connection.in_transaction


def test_migrate_other_table_and_attached_schema(tmp_path: Path) -> None:
    connection = sqlite3.connect(tmp_path / "main.db")
    connection.execute("ATTACH DATABASE ? AS events", (str(tmp_path / "events.db"),))
    assert migrate(connection, "my_outbox", schema="events") == ["0001_outbox"]
    assert migrate(connection, "my_outbox", schema="events") == []
    outbox = Outbox("my_outbox", schema="events")
    with connection:
        outbox.add(connection, event())
    assert connection.execute("SELECT count(*) FROM events.my_outbox").fetchone() == (1,)
    names = {row[0] for row in connection.execute("SELECT name FROM events.sqlite_master")}
    assert "my_outbox_pending_idx" in names


def test_migrate_refuses_an_open_transaction(db: sqlite3.Connection) -> None:
    db.execute("INSERT INTO orders VALUES ('a')")
    with pytest.raises(OutboxError, match="commit or roll back"):
        migrate(db, "other")
    db.rollback()


def test_migrate_rolls_back_on_failure(tmp_path: Path) -> None:
    connection = sqlite3.connect(tmp_path / "m.db")
    connection.execute("CREATE TABLE buttress_outbox (x)")  # in the way
    connection.commit()
    with pytest.raises(sqlite3.OperationalError, match="already exists"):
        migrate(connection)
    assert not connection.in_transaction
    tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master")}
    assert "buttress_outbox_migrations" not in tables


@pytest.mark.parametrize("name", ["Outbox", "1outbox", "out-box", "a" * 49, "", 'x"; DROP'])
def test_unsafe_identifiers_are_refused(name: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^table: "):
        Outbox(name)
    with pytest.raises(ConfigError, match=r"^schema: "):
        Outbox(schema=name)
    with pytest.raises(ConfigError, match=r"^table: "):
        migrate(sqlite3.connect(tmp_path / "m.db"), name)


@pytest.mark.parametrize("dialect", ["sqlite", "postgresql"])
def test_every_placeholder_is_filled(dialect: str) -> None:
    found = migrations(dialect, TableName("t", "s"))  # type: ignore[arg-type]
    expected = [(1, "outbox")]
    if dialect == "postgresql":
        expected.append((3, "outbox_fillfactor"))
    assert [(v, n) for v, n, _ in found] == expected
    assert all("{{" not in sql for _, _, sql in found)


def test_unsupported_connections_are_refused() -> None:
    with pytest.raises(OutboxError, match=r"sqlite3\.Connection, a psycopg 3 .* SQLAlchemy 2"):
        Outbox().add(object(), event())  # type: ignore[arg-type]
    with pytest.raises(OutboxError, match="psycopg 3"):
        migrate(object())  # type: ignore[arg-type]


# -- adding -----------------------------------------------------------------------------


def test_committed_add_leaves_exactly_the_event(db: sqlite3.Connection) -> None:
    placed = event(data={"total": 12.5, "items": ["a", "b"]}, traceparent=None)
    with db:  # one transaction: the order and its event
        db.execute("INSERT INTO orders VALUES ('order-1')")
        Outbox().add(db, placed)
    [(event_id, subject, envelope, status)] = rows(db)
    assert (event_id, subject, status) == (placed.id, "order-1", "pending")
    assert Envelope.from_json(str(envelope)) == placed
    row = db.execute(
        "SELECT source, event_type, attempts, claimed_by, published_at FROM buttress_outbox"
    ).fetchone()
    assert row == ("/orders", "order.placed", 0, None, None)


def test_rolled_back_add_leaves_nothing(db: sqlite3.Connection) -> None:
    def place_order() -> None:
        with db:
            db.execute("INSERT INTO orders VALUES ('order-1')")
            Outbox().add(db, event())
            raise RuntimeError("the business change failed")

    with pytest.raises(RuntimeError):
        place_order()
    assert rows(db) == []
    assert db.execute("SELECT count(*) FROM orders").fetchone() == (0,)


def test_add_never_commits(db: sqlite3.Connection) -> None:
    Outbox().add(db, event())
    assert db.in_transaction
    db.rollback()
    assert rows(db) == []


def test_add_many_keeps_the_given_order(db: sqlite3.Connection) -> None:
    events = [event(subject=f"k{i % 3}", data={"i": i}) for i in range(450)]  # > 1 statement
    with db:
        Outbox().add_many(db, events)
        Outbox().add_many(db, [])
    assert [row[0] for row in rows(db)] == [e.id for e in events]


def test_binary_data_round_trips(db: sqlite3.Connection) -> None:
    raw = event(datacontenttype="application/octet-stream", data=b"\x00\xff")
    with db:
        Outbox().add(db, raw)
    assert Envelope.from_json(str(rows(db)[0][2])) == raw


def test_autocommit_connection_needs_a_transaction(tmp_path: Path) -> None:
    connection = sqlite3.connect(tmp_path / "app.db", isolation_level=None)
    migrate(connection)
    with pytest.raises(OutboxError, match="autocommit"):
        Outbox().add(connection, event())
    connection.execute("BEGIN")
    Outbox().add(connection, event())
    connection.execute("COMMIT")
    assert len(rows(connection)) == 1


async def test_aadd_refuses_a_sync_connection(db: sqlite3.Connection) -> None:
    with pytest.raises(OutboxError, match=r"use outbox\.add"):
        await Outbox().aadd(db, event())  # type: ignore[arg-type]


# -- refused input, transaction still usable ----------------------------------------------


def _unserialisable() -> Envelope:
    bad = event(data={"ok": 1})
    bad.data["when"] = object()  # mutated after the envelope checked it
    return bad


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (_unserialisable, "not JSON-serialisable"),
        (lambda: event(data={"blob": "x" * 2000}), "over max_bytes=1024"),
        (lambda: Envelope(source="/orders", type="   "), "type is blank"),
        (lambda: {"type": "order.placed"}, "expected an Envelope, got dict"),
    ],
    ids=["not-json", "oversized", "blank-type", "not-an-envelope"],
)
def test_bad_input_is_refused_and_the_transaction_stays_usable(
    db: sqlite3.Connection, make: object, message: str
) -> None:
    outbox = Outbox(max_bytes=1024)
    good = event()
    db.execute("INSERT INTO orders VALUES ('order-1')")
    with pytest.raises(OutboxError, match=message):
        outbox.add(db, make())  # type: ignore[operator]
    with pytest.raises(OutboxError, match=message):
        outbox.add_many(db, [event(), make()])  # type: ignore[operator]
    outbox.add(db, good)
    db.commit()
    assert [row[0] for row in rows(db)] == [good.id]
    assert db.execute("SELECT id FROM orders").fetchall() == [("order-1",)]


def test_an_empty_type_is_refused_by_the_envelope() -> None:
    with pytest.raises(ValueError, match="type"):
        Envelope(source="/orders", type="")


def test_add_many_refuses_duplicates_and_a_lone_event(db: sqlite3.Connection) -> None:
    one = event()
    with pytest.raises(OutboxError, match="appears twice"):
        Outbox().add_many(db, [one, one])
    with pytest.raises(OutboxError, match="use add"):
        Outbox().add_many(db, one)  # type: ignore[arg-type]
    assert rows(db) == []


def test_max_bytes_counts_utf8_bytes(db: sqlite3.Connection) -> None:
    small = event(data="é" * 10)
    size = len(small.to_json().encode())
    Outbox(max_bytes=size).add(db, small)
    with pytest.raises(OutboxError, match=f"is {size} bytes"):
        Outbox(max_bytes=size - 1).add(db, small)


@pytest.mark.parametrize("value", [0, -1, True, 1.5, "1"])
def test_bad_max_bytes(value: object) -> None:
    with pytest.raises(ConfigError, match=r"^max_bytes: "):
        Outbox(max_bytes=value)  # type: ignore[arg-type]


# -- the CLI ----------------------------------------------------------------------------


def test_cli_init_sqlite(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    first = runner.invoke(app, ["outbox", "init", "--url", "sqlite:///app.db"])
    assert first.exit_code == 0, first.output
    assert "applied 0001_outbox to buttress_outbox" in first.output
    again = runner.invoke(app, ["outbox", "init", "--url", "sqlite:///app.db"])
    assert again.exit_code == 0
    assert "buttress_outbox is up to date" in again.output
    absolute = runner.invoke(
        app, ["outbox", "init", "--url", f"sqlite:///{tmp_path / 'abs.db'}", "--table", "evt"]
    )
    assert absolute.exit_code == 0, absolute.output
    assert "applied 0001_outbox to evt" in absolute.output
    connection = sqlite3.connect(tmp_path / "abs.db")
    assert connection.execute("SELECT count(*) FROM evt").fetchone() == (0,)


def test_cli_init_inbox(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    made = runner.invoke(app, ["outbox", "init", "--url", "sqlite:///app.db", "--inbox"])
    assert made.exit_code == 0, made.output
    assert "to buttress_inbox" in made.output
    named = runner.invoke(
        app, ["outbox", "init", "--url", "sqlite:///app.db", "--inbox", "--table", "billing_seen"]
    )
    assert named.exit_code == 0, named.output
    connection = sqlite3.connect(tmp_path / "app.db")
    with connection:
        assert not SQLInbox("billing", "billing_seen").seen(connection, "m-1")
        assert SQLInbox("billing", "billing_seen").seen(connection, "m-1")
    tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master")}
    assert "buttress_outbox" not in tables


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--url", "mysql://x/y"], "expected a postgresql:// or sqlite:/// URL"),
        (["--url", "sqlite://app.db"], "expected sqlite:///PATH"),
        (["--url", "sqlite:///:memory:"], "in-memory"),
        (["--url", "sqlite:///a.db", "--table", "Bad"], "table: must be"),
        ([], "Missing option '--url'"),
    ],
)
def test_cli_init_usage_errors(
    args: list[str], message: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["outbox", "init", *args])
    assert result.exit_code == EXIT_USAGE
    assert message in result.output
    assert list(tmp_path.iterdir()) == []


def test_cli_init_database_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "junk.db").write_bytes(b"this is not a database" * 100)
    result = CliRunner().invoke(app, ["outbox", "init", "--url", "sqlite:///junk.db"])
    assert result.exit_code == EXIT_CONFIG
    assert "error: sqlite:///junk.db: file is not a database" in result.output
    missing = CliRunner().invoke(app, ["outbox", "init", "--url", "sqlite:///no/such/a.db"])
    assert missing.exit_code == EXIT_CONFIG
    assert "no directory 'no/such'" in missing.output


def test_cli_init_postgresql_without_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    # As if psycopg were not installed: importing the helper module fails.
    monkeypatch.setitem(sys.modules, "buttress.messaging._outbox_postgres", None)
    result = CliRunner().invoke(app, ["outbox", "init", "--url", "postgresql://h/db"])
    assert result.exit_code == EXIT_CONFIG
    assert "pip install 'buttress[postgres]'" in result.output


def test_an_id_already_in_the_outbox_adds_nothing(db: sqlite3.Connection) -> None:
    first = event(data={"n": 1})
    Outbox().add(db, first)
    again = Envelope(source=first.source, type=first.type, id=first.id, data={"n": 2})
    Outbox().add(db, again)  # no error, nothing added: the same event
    Outbox().add_many(db, [again, event()])  # the new one is added
    assert len(rows(db)) == 2

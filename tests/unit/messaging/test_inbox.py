"""The inbox on SQLite (sqlite3 and aiosqlite): one effect per message id, the
migration target, pruning, refused input; RedisInbox's checks with a fake client."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiosqlite
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine
from sqlalchemy.orm import Session

from buttress.errors import ConfigError, StoreError, StoreUnavailable
from buttress.messaging import migrate
from buttress.messaging._schema import TableName, migrations
from buttress.messaging.inbox import InboxError, RedisInbox, SQLInbox


@pytest.fixture
def db(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    connection = sqlite3.connect(tmp_path / "app.db")
    migrate(connection, what="inbox")
    connection.execute("CREATE TABLE payments (message_id TEXT, amount INTEGER)")
    connection.commit()
    yield connection
    connection.close()


def handle(db: sqlite3.Connection, inbox: SQLInbox, message_id: str, *, fail: bool = False) -> None:
    """A handler: its effect and the inbox record in one transaction."""
    with db:  # commits, or rolls back on an exception
        if inbox.seen(db, message_id):
            return
        db.execute("INSERT INTO payments VALUES (?, 10)", (message_id,))
        if fail:
            raise RuntimeError("the handler failed after its effect")


def effects(db: sqlite3.Connection) -> list[str]:
    return [row[0] for row in db.execute("SELECT message_id FROM payments ORDER BY rowid")]


# -- the migration target ----------------------------------------------------------------


def test_inbox_migration_is_its_own_target(tmp_path: Path) -> None:
    connection = sqlite3.connect(tmp_path / "m.db")
    assert migrate(connection, what="inbox") == ["0002_inbox"]
    assert migrate(connection, what="inbox") == []
    tables = {r[0] for r in connection.execute("SELECT name FROM sqlite_master")}
    assert {"buttress_inbox", "buttress_inbox_migrations"} <= tables
    assert "buttress_outbox" not in tables  # the outbox is not created with it
    # ... and the outbox's migration does not create an inbox.
    assert migrate(connection) == ["0001_outbox"]
    assert migrate(connection, "evt_inbox", what="inbox") == ["0002_inbox"]
    versions = connection.execute("SELECT version FROM buttress_outbox_migrations").fetchall()
    assert versions == [(1,)]


@pytest.mark.parametrize("dialect", ["sqlite", "postgresql"])
def test_inbox_migrations_fill_every_placeholder(dialect: str) -> None:
    found = migrations(dialect, TableName("t", "s"), "inbox")  # type: ignore[arg-type]
    assert [(v, n) for v, n, _ in found] == [(2, "inbox")]
    assert all("{{" not in sql for _, _, sql in found)


def test_migrate_refuses_an_unknown_target(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^what: must be 'outbox' or 'inbox'"):
        migrate(sqlite3.connect(tmp_path / "m.db"), what="outbx")  # type: ignore[arg-type]


# -- one effect per message --------------------------------------------------------------


def test_a_redelivered_message_has_no_second_effect(db: sqlite3.Connection) -> None:
    inbox = SQLInbox("billing")
    handle(db, inbox, "m-1")
    handle(db, inbox, "m-1")
    handle(db, inbox, "m-2")
    assert effects(db) == ["m-1", "m-2"]


def test_a_rolled_back_handler_leaves_no_record_so_the_redelivery_runs(
    db: sqlite3.Connection,
) -> None:
    inbox = SQLInbox("billing")
    with pytest.raises(RuntimeError):
        handle(db, inbox, "m-1", fail=True)
    assert effects(db) == []
    assert db.execute("SELECT count(*) FROM buttress_inbox").fetchone() == (0,)
    handle(db, inbox, "m-1")
    assert effects(db) == ["m-1"]


def test_consumers_are_independent(db: sqlite3.Connection) -> None:
    handle(db, SQLInbox("billing"), "m-1")
    handle(db, SQLInbox("shipping"), "m-1")
    assert effects(db) == ["m-1", "m-1"]
    assert SQLInbox("billing").seen(db, "m-1") is True
    db.rollback()


def test_seen_never_commits(db: sqlite3.Connection) -> None:
    inbox = SQLInbox("billing")
    assert inbox.seen(db, "m-1") is False
    assert db.in_transaction
    db.rollback()
    assert inbox.seen(db, "m-1") is False


def test_custom_table_and_attached_schema(tmp_path: Path) -> None:
    connection = sqlite3.connect(tmp_path / "main.db")
    connection.execute("ATTACH DATABASE ? AS msg", (str(tmp_path / "msg.db"),))
    migrate(connection, "my_inbox", schema="msg", what="inbox")
    inbox = SQLInbox("c", "my_inbox", schema="msg")
    with connection:
        assert inbox.seen(connection, "x") is False
    with connection:
        assert inbox.seen(connection, "x") is True
    assert connection.execute("SELECT consumer, message_id FROM msg.my_inbox").fetchall() == [
        ("c", "x")
    ]


# -- refused input -----------------------------------------------------------------------


@pytest.mark.parametrize("bad", ["", None, 7, "x" * 1025])
def test_bad_message_ids_are_refused_before_writing(db: sqlite3.Connection, bad: Any) -> None:
    with pytest.raises(InboxError, match="message id"):
        SQLInbox("c").seen(db, bad)
    assert not db.in_transaction


def test_an_autocommit_connection_without_a_transaction_is_refused(tmp_path: Path) -> None:
    connection = sqlite3.connect(tmp_path / "a.db", isolation_level=None)
    migrate(connection, what="inbox")
    inbox = SQLInbox("c")
    with pytest.raises(InboxError, match="autocommit mode with no transaction open"):
        inbox.seen(connection, "m")
    connection.execute("BEGIN")
    assert inbox.seen(connection, "m") is False
    connection.execute("ROLLBACK")


@pytest.mark.parametrize("consumer", ["", " x", None, "x" * 201])
def test_bad_consumer_names_are_refused(consumer: Any) -> None:
    with pytest.raises(ConfigError, match=r"^consumer: "):
        SQLInbox(consumer)


def test_bad_table_names_are_refused() -> None:
    with pytest.raises(ConfigError, match=r"^table: "):
        SQLInbox("c", "In-box")


def test_unsupported_and_wrong_kind_of_connections_are_refused(db: sqlite3.Connection) -> None:
    with pytest.raises(InboxError, match=r"aiosqlite or a sqlite3\.Connection"):
        SQLInbox("c").seen(object(), "m")  # type: ignore[arg-type]
    with pytest.raises(InboxError, match=r"use inbox\.seen"):
        SQLInbox("c").aseen(db, "m").send(None)  # type: ignore[arg-type]


# -- pruning -----------------------------------------------------------------------------


def test_prune_forgets_old_ids_of_its_consumer_only_in_batches(db: sqlite3.Connection) -> None:
    billing, shipping = SQLInbox("billing"), SQLInbox("shipping")
    with db:
        for i in range(7):
            billing.seen(db, f"old-{i}")
            shipping.seen(db, f"old-{i}")
        billing.seen(db, "new")
        db.execute("UPDATE buttress_inbox SET seen_at = seen_at - 7200 WHERE message_id != 'new'")
    assert billing.prune(db, timedelta(hours=1), batch_size=3) == 7
    assert not db.in_transaction  # every batch was committed
    left = db.execute("SELECT consumer, count(*) FROM buttress_inbox GROUP BY consumer").fetchall()
    assert sorted(left) == [("billing", 1), ("shipping", 7)]
    assert billing.prune(db, 3600) == 0
    with db:
        assert billing.seen(db, "old-0") is False  # forgotten: would run again


def test_prune_refuses_an_open_transaction_and_bad_options(db: sqlite3.Connection) -> None:
    inbox = SQLInbox("c")
    inbox.seen(db, "m")
    with pytest.raises(InboxError, match="commit the open transaction first"):
        inbox.prune(db, 60)
    db.rollback()
    with pytest.raises(ConfigError, match=r"^older_than: "):
        inbox.prune(db, -1)
    with pytest.raises(ConfigError, match=r"^batch_size: "):
        inbox.prune(db, 60, batch_size=0)


# -- aiosqlite ---------------------------------------------------------------------------


@pytest.fixture
async def adb(tmp_path: Path) -> AsyncIterator[aiosqlite.Connection]:
    path = tmp_path / "app.db"
    with sqlite3.connect(path) as setup:
        migrate(setup, what="inbox")
    setup.close()
    async with aiosqlite.connect(path) as connection:
        await connection.execute("CREATE TABLE payments (message_id TEXT)")
        await connection.commit()
        yield connection


async def test_aiosqlite_records_in_the_callers_transaction(adb: aiosqlite.Connection) -> None:
    inbox = SQLInbox("billing")
    assert await inbox.aseen(adb, "m-1") is False
    await adb.execute("INSERT INTO payments VALUES ('m-1')")
    await adb.rollback()  # the handler failed: neither the effect nor the id stays
    for _ in range(2):
        if not await inbox.aseen(adb, "m-1"):
            await adb.execute("INSERT INTO payments VALUES ('m-1')")
        await adb.commit()
    rows = await (await adb.execute("SELECT message_id FROM payments")).fetchall()
    assert [tuple(r) for r in rows] == [("m-1",)]
    with pytest.raises(InboxError, match=r"aseen"):
        inbox.seen(adb, "m-2")  # type: ignore[arg-type]


async def test_aiosqlite_prune(adb: aiosqlite.Connection) -> None:
    inbox = SQLInbox("billing")
    for i in range(5):
        await inbox.aseen(adb, f"m-{i}")
    await adb.execute("UPDATE buttress_inbox SET seen_at = seen_at - 100")
    await adb.commit()
    assert await inbox.aprune(adb, 50, batch_size=2) == 5
    await inbox.aseen(adb, "x")
    with pytest.raises(InboxError, match="commit the open transaction first"):
        await inbox.aprune(adb, 50)
    await adb.rollback()


# -- RedisInbox (a fake client: the real one is in tests/integration) ----------------------


class FakeRedis:
    def __init__(self, error: Exception | None = None) -> None:
        self.keys: dict[str, tuple[str, int]] = {}
        self.error = error

    async def set(self, name: str, value: str, *, nx: bool, px: int) -> bool | None:
        if self.error:
            raise self.error
        assert nx
        if name in self.keys:
            return None
        self.keys[name] = (value, px)
        return True

    async def delete(self, *names: str) -> int:
        if self.error:
            raise self.error
        return sum(self.keys.pop(n, None) is not None for n in names)


async def test_redis_inbox_claims_once_with_the_ttl_until_released() -> None:
    client = FakeRedis()
    inbox = RedisInbox(client, timedelta(minutes=2), "billing:inbox:")
    assert await inbox.claim("m-1") is True
    assert await inbox.claim("m-1") is False
    assert client.keys == {"billing:inbox:m-1": ("1", 120_000)}
    assert await inbox.release("m-1") is True
    assert await inbox.release("m-1") is False
    assert await inbox.claim("m-1") is True


async def test_redis_inbox_maps_driver_errors() -> None:
    inbox = RedisInbox(FakeRedis(ConnectionRefusedError("down")), 60, "p:")
    with pytest.raises(StoreUnavailable, match="Redis is unavailable"):
        await inbox.claim("m")
    inbox = RedisInbox(FakeRedis(RuntimeError("odd")), 60, "p:")
    with pytest.raises(StoreError, match="Redis failed: RuntimeError"):
        await inbox.release("m")


@pytest.mark.parametrize(
    ("kwargs", "path"),
    [
        ({"ttl": 0}, "ttl"),
        ({"ttl": -1}, "ttl"),
        ({"prefix": ""}, "prefix"),
        ({"prefix": None}, "prefix"),
        ({"client": object()}, "client"),
    ],
)
def test_redis_inbox_refuses_bad_options(kwargs: dict[str, Any], path: str) -> None:
    options: dict[str, Any] = {"client": FakeRedis(), "ttl": 60, "prefix": "p:"} | kwargs
    with pytest.raises(ConfigError, match=rf"^{path}: "):
        RedisInbox(**options)


async def test_redis_inbox_refuses_bad_ids() -> None:
    inbox = RedisInbox(FakeRedis(), 60, "p:")
    with pytest.raises(InboxError):
        await inbox.claim("")


# -- SQLAlchemy 2 ------------------------------------------------------------------------


def test_sqlalchemy_session_records_in_its_transaction(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'sa.db'}")
    with engine.connect() as setup:
        migrate(setup.connection.driver_connection, what="inbox")  # type: ignore[arg-type]
    inbox = SQLInbox("billing")
    with Session(engine) as session:
        session.execute(text("CREATE TABLE payments (message_id TEXT)"))
        session.commit()
    for attempt in range(3):
        with Session(engine) as session, session.begin():
            if inbox.seen(session, "m-1"):
                continue
            session.execute(text("INSERT INTO payments VALUES ('m-1')"))
            if attempt == 0:
                session.rollback()  # the handler failed: neither stays
    with Session(engine) as session:
        assert session.execute(text("SELECT count(*) FROM payments")).scalar() == 1
        with pytest.raises(InboxError, match=r"synchronous: use inbox\.seen"):
            SQLInbox("c").aseen(session, "m").send(None)  # type: ignore[arg-type]
    engine.dispose()


async def test_sqlalchemy_async_session(tmp_path: Path) -> None:
    path = tmp_path / "sa.db"
    with sqlite3.connect(path) as setup:
        migrate(setup, what="inbox")
    setup.close()
    engine = create_async_engine(f"sqlite+aiosqlite:///{path}")
    inbox = SQLInbox("billing")
    async with AsyncSession(engine) as session:
        assert await inbox.aseen(session, "m-1") is False
        assert await inbox.aseen(session, "m-1") is True
        await session.commit()
        with pytest.raises(InboxError, match=r"asynchronous: use 'await inbox\.aseen"):
            inbox.seen(session, "m-2")  # type: ignore[arg-type]
    async with AsyncSession(engine) as session:
        assert await inbox.aseen(session, "m-1") is True
        await session.rollback()
    await engine.dispose()

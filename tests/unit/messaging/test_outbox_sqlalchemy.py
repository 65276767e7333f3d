"""The outbox through SQLAlchemy 2 (sync and async) and aiosqlite, on real SQLite files.

Atomicity each way (a rolled-back transaction leaves no event, a committed one leaves
exactly one, and the relay publishes it), the wrong kind of connection for the
method, refused input before touching the transaction, and autocommit refused.
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiosqlite
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_scoped_session,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import Session, scoped_session, sessionmaker

from buttress.messaging import Envelope, Outbox, OutboxError, migrate
from buttress.messaging import _outbox_sqlalchemy as sa_module
from buttress.messaging.relay import Relay, SQLiteRelayStore

from .relay_fakes import MemoryPublisher


@pytest.fixture
def path(tmp_path: Path) -> Path:
    file = tmp_path / "app.db"
    with sqlite3.connect(file) as db:
        migrate(db)
        db.execute("CREATE TABLE orders (id TEXT PRIMARY KEY)")
    db.close()
    return file


@pytest.fixture
def engine(path: Path) -> Iterator[Engine]:
    engine = create_engine(f"sqlite:///{path}")
    yield engine
    engine.dispose()


@pytest.fixture
async def aengine(path: Path) -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine(f"sqlite+aiosqlite:///{path}")
    yield engine
    await engine.dispose()


def event(subject: str = "order-1", **kwargs: Any) -> Envelope:
    return Envelope(source="/orders", type="order.placed", subject=subject, **kwargs)


def stored(path: Path) -> list[tuple[Any, ...]]:
    with sqlite3.connect(path) as db:
        found = db.execute("SELECT event_id, status FROM buttress_outbox ORDER BY seq").fetchall()
        orders = db.execute("SELECT id FROM orders").fetchall()
    db.close()
    return [*found, *orders]


async def relayed(path: Path) -> list[str]:
    store = SQLiteRelayStore(path)
    publisher = MemoryPublisher()
    try:
        await Relay(store, publisher).drain()
    finally:
        await store.close()
    return publisher.ids


# -- sync Session and Connection --------------------------------------------------------


async def test_session_commit_and_rollback(engine: Engine, path: Path) -> None:
    outbox = Outbox()
    kept, dropped = event(), event("order-2")
    with Session(engine) as session, session.begin():
        session.execute(text("INSERT INTO orders VALUES ('order-1')"))
        outbox.add(session, kept)

    def declined() -> None:
        with Session(engine) as session, session.begin():
            session.execute(text("INSERT INTO orders VALUES ('order-2')"))
            outbox.add(session, dropped)
            raise RuntimeError("payment declined")

    with pytest.raises(RuntimeError):
        declined()
    assert stored(path) == [(kept.id, "pending"), ("order-1",)]
    assert await relayed(path) == [kept.id]


async def test_session_autobegins_and_never_commits(engine: Engine, path: Path) -> None:
    session = Session(engine)
    Outbox().add_many(session, [event(), event()])
    assert session.in_transaction()
    session.rollback()
    session.close()
    assert stored(path) == []
    assert await relayed(path) == []


def test_core_connection_and_scoped_session(engine: Engine, path: Path) -> None:
    outbox = Outbox()
    first, second = event(), event()
    with engine.begin() as connection:
        outbox.add(connection, first)
    scoped = scoped_session(sessionmaker(engine))
    with scoped.begin():
        outbox.add(scoped, second)
    scoped.remove()
    assert [row[0] for row in stored(path)] == [first.id, second.id]


def test_many_events_in_chunks(engine: Engine, path: Path) -> None:
    events = [event(f"k{i % 3}") for i in range(450)]  # over SQLite's 999 parameters
    with Session(engine) as session, session.begin():
        Outbox().add_many(session, events)
    assert [row[0] for row in stored(path)] == [e.id for e in events]


def test_bad_input_leaves_the_session_usable(engine: Engine, path: Path) -> None:
    good = event()
    with Session(engine) as session, session.begin():
        session.execute(text("INSERT INTO orders VALUES ('order-1')"))
        with pytest.raises(OutboxError, match="over max_bytes"):
            Outbox(max_bytes=100).add(session, event(data="x" * 500))
        with pytest.raises(OutboxError, match="type is blank"):
            Outbox().add(session, Envelope(source="/o", type="  "))
        Outbox().add(session, good)
    assert stored(path) == [(good.id, "pending"), ("order-1",)]


def test_bad_input_is_refused_before_the_session_begins(engine: Engine, path: Path) -> None:
    with Session(engine) as session:
        with pytest.raises(OutboxError, match="expected an Envelope"):
            Outbox().add(session, {"type": "order.placed"})  # type: ignore[arg-type]
        assert not session.in_transaction()
        Outbox().add(session, event())
        assert session.in_transaction()  # add() began it: the session's usual autobegin
        session.commit()
    assert len(stored(path)) == 1


def test_autocommit_engine_is_refused(path: Path) -> None:
    engine = create_engine(f"sqlite:///{path}", isolation_level="AUTOCOMMIT")
    with Session(engine) as session, pytest.raises(OutboxError, match="autocommit"):
        Outbox().add(session, event())
    engine.dispose()
    assert stored(path) == []


async def test_sync_session_in_aadd_is_refused(engine: Engine) -> None:
    with Session(engine) as session:
        with pytest.raises(OutboxError, match=r"Session is synchronous: use outbox\.add"):
            await Outbox().aadd(session, event())  # type: ignore[arg-type]
        assert not session.in_transaction()  # refused before touching it


def test_unsupported_driver_is_named(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sa_module, "driver", lambda connection: object())
    with (
        Session(engine) as session,
        pytest.raises(OutboxError, match=r"sqlite\+pysqlite: the outbox supports sqlite"),
    ):
        Outbox().add(session, event())


# -- AsyncSession over aiosqlite --------------------------------------------------------


async def test_async_session_commit_and_rollback(aengine: AsyncEngine, path: Path) -> None:
    outbox = Outbox()
    kept, dropped = event(), event("order-2")
    async with AsyncSession(aengine) as session, session.begin():
        await session.execute(text("INSERT INTO orders VALUES ('order-1')"))
        await outbox.aadd(session, kept)

    async def declined() -> None:
        async with AsyncSession(aengine) as session, session.begin():
            await session.execute(text("INSERT INTO orders VALUES ('order-2')"))
            await outbox.aadd_many(session, [dropped, event("order-2")])
            raise RuntimeError("payment declined")

    with pytest.raises(RuntimeError):
        await declined()
    assert stored(path) == [(kept.id, "pending"), ("order-1",)]
    assert await relayed(path) == [kept.id]


async def test_async_connection_and_scoped_session(aengine: AsyncEngine, path: Path) -> None:
    first, second, third = event(), event(), event()
    async with aengine.begin() as connection:
        await Outbox().aadd(connection, first)
    connection = aengine.connect()  # not entered: the outbox starts it
    await Outbox().aadd(connection, second)
    await connection.commit()
    await connection.close()
    scoped = async_scoped_session(async_sessionmaker(aengine), scopefunc=lambda: "one")
    async with scoped.begin():
        await Outbox().aadd(scoped, third)
    await scoped.remove()
    assert [row[0] for row in stored(path)] == [first.id, second.id, third.id]


async def test_async_session_in_add_is_refused(aengine: AsyncEngine) -> None:
    async with AsyncSession(aengine) as session:
        with pytest.raises(OutboxError, match=r"AsyncSession is asynchronous: use 'await"):
            Outbox().add(session, event())  # type: ignore[arg-type]


async def test_autocommit_async_engine_is_refused(path: Path) -> None:
    engine = create_async_engine(f"sqlite+aiosqlite:///{path}", isolation_level="AUTOCOMMIT")
    async with AsyncSession(engine) as session:
        with pytest.raises(OutboxError, match="aiosqlite connection is in autocommit"):
            await Outbox().aadd(session, event())
    await engine.dispose()
    assert stored(path) == []


# -- a raw aiosqlite connection ---------------------------------------------------------


async def test_aiosqlite_commit_and_rollback(path: Path) -> None:
    kept, dropped = event(), event("order-2")
    async with aiosqlite.connect(path) as db:
        await db.execute("INSERT INTO orders VALUES ('order-1')")
        await Outbox().aadd(db, kept)
        await db.commit()
        await db.execute("INSERT INTO orders VALUES ('order-2')")
        await Outbox().aadd_many(db, [dropped])
        await db.rollback()
    assert stored(path) == [(kept.id, "pending"), ("order-1",)]
    assert await relayed(path) == [kept.id]


async def test_aiosqlite_refusals(path: Path) -> None:
    async with aiosqlite.connect(path, isolation_level=None) as db:
        with pytest.raises(OutboxError, match="autocommit mode with no transaction"):
            await Outbox().aadd(db, event())
        with pytest.raises(OutboxError, match=r"Connection is asynchronous: use 'await"):
            Outbox().add(db, event())  # type: ignore[arg-type]
        await db.execute("BEGIN")
        bad = event(data={"ok": 1})
        bad.data["when"] = object()
        with pytest.raises(OutboxError, match="not JSON-serialisable"):
            await Outbox().aadd(db, bad)
        await Outbox().aadd(db, event())
        await db.execute("COMMIT")
    assert len(stored(path)) == 1

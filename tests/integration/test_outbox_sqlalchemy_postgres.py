"""The outbox through SQLAlchemy 2 on the real PostgreSQL (postgresql+psycopg, sync and async).

Every test works on an outbox table of its own (a unique name), dropped afterwards.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine
from sqlalchemy.orm import Session

from buttress.messaging import Envelope, Outbox, OutboxError, migrate
from buttress.messaging.relay import PostgresRelayStore, Relay

from tests.conftest import require_service
from tests.unit.messaging.relay_fakes import MemoryPublisher

URL = "postgresql://postgres@127.0.0.1:5432/test"
SA_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


@pytest.fixture
def table() -> Iterator[str]:
    require_service("postgres")
    name = f"outbox_sa_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(URL) as connection:
        migrate(connection, name)
        connection.execute(f'CREATE TABLE "{name}_orders" (id text PRIMARY KEY)')
    yield name
    with psycopg.connect(URL, autocommit=True) as admin:
        admin.execute(f'DROP TABLE IF EXISTS "{name}", "{name}_migrations", "{name}_orders"')
        admin.execute(f'DROP FUNCTION IF EXISTS "{name}_notify"()')


def event(subject: str = "order-1") -> Envelope:
    return Envelope(source="/orders", type="order.placed", subject=subject, data={"n": 1})


def stored(table: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(URL) as reader:
        events = reader.execute(f'SELECT event_id, status FROM "{table}" ORDER BY seq').fetchall()
        orders = reader.execute(f'SELECT id FROM "{table}_orders"').fetchall()
    return [*events, *orders]


async def relayed(table: str) -> list[str]:
    store = PostgresRelayStore(URL, table)
    publisher = MemoryPublisher()
    try:
        await Relay(store, publisher).drain()
    finally:
        await store.close()
    return publisher.ids


async def test_session_commit_and_rollback(table: str) -> None:
    engine = create_engine(SA_URL)
    outbox = Outbox(table)
    kept, dropped = event(), event("order-2")
    with Session(engine) as session, session.begin():
        session.execute(text(f"INSERT INTO \"{table}_orders\" VALUES ('order-1')"))
        outbox.add(session, kept)

    def declined() -> None:
        with Session(engine) as session, session.begin():
            session.execute(text(f"INSERT INTO \"{table}_orders\" VALUES ('order-2')"))
            outbox.add_many(session, [dropped, event("order-2")])
            raise RuntimeError("payment declined")

    with pytest.raises(RuntimeError):
        declined()
    engine.dispose()
    assert stored(table) == [(kept.id, "pending"), ("order-1",)]
    assert await relayed(table) == [kept.id]


async def test_bad_input_leaves_the_postgres_transaction_usable(table: str) -> None:
    engine = create_engine(SA_URL)
    good = event()
    with Session(engine) as session, session.begin():
        with pytest.raises(OutboxError, match="over max_bytes"):
            Outbox(table, max_bytes=50).add(session, event())
        Outbox(table).add(session, good)  # not aborted: the refusal touched nothing
    engine.dispose()
    assert stored(table) == [(good.id, "pending")]


def test_autocommit_engine_is_refused(table: str) -> None:
    engine = create_engine(SA_URL, isolation_level="AUTOCOMMIT")
    with Session(engine) as session, pytest.raises(OutboxError, match="psycopg connection"):
        Outbox(table).add(session, event())
    engine.dispose()
    assert stored(table) == []


async def test_async_session_commit_and_rollback(table: str) -> None:
    engine = create_async_engine(SA_URL)
    outbox = Outbox(table)
    kept, dropped = event(), event("order-2")
    async with AsyncSession(engine) as session, session.begin():
        await session.execute(text(f"INSERT INTO \"{table}_orders\" VALUES ('order-1')"))
        await outbox.aadd(session, kept)

    async def declined() -> None:
        async with AsyncSession(engine) as session, session.begin():
            await session.execute(text(f"INSERT INTO \"{table}_orders\" VALUES ('order-2')"))
            await outbox.aadd(session, dropped)
            raise RuntimeError("payment declined")

    with pytest.raises(RuntimeError):
        await declined()
    async with engine.begin() as connection:
        await outbox.aadd(connection, event("order-3"))
    await engine.dispose()
    [first, third, order] = stored(table)
    assert (first, order) == ((kept.id, "pending"), ("order-1",))
    assert await relayed(table) == [kept.id, third[0]]


async def test_async_autocommit_and_wrong_method(table: str) -> None:
    engine = create_async_engine(SA_URL, isolation_level="AUTOCOMMIT")
    async with AsyncSession(engine) as session:
        with pytest.raises(OutboxError, match="psycopg connection is in autocommit"):
            await Outbox(table).aadd(session, event())
        with pytest.raises(OutboxError, match=r"is asynchronous: use 'await outbox\.aadd"):
            Outbox(table).add(session, event())  # type: ignore[arg-type]
    await engine.dispose()
    assert stored(table) == []

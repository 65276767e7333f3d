"""Deferring work through the outbox on the real PostgreSQL (psycopg 3, SQLAlchemy 2).

Each test uses an outbox table of its own (a unique name), dropped afterwards.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Iterator

import psycopg
import pytest
from sqlalchemy import create_engine
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine
from sqlalchemy.orm import sessionmaker

from buttress.messaging import Envelope, Outbox, migrate
from buttress.messaging.deferred import Deferral, DeferredResult, Operations
from buttress.messaging.relay import PostgresRelayStore, Relay

from tests.conftest import require_service
from tests.unit.messaging.relay_fakes import MemoryPublisher

URL = "postgresql://postgres@127.0.0.1:5432/test"
SA_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
OP = "com.example.charge"


@pytest.fixture
def table() -> Iterator[str]:
    require_service("postgres")
    name = f"deferred_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(URL) as connection:
        migrate(connection, name)
    yield name
    with psycopg.connect(URL, autocommit=True) as admin:
        admin.execute(f'DROP TABLE IF EXISTS "{name}", "{name}_migrations"')
        admin.execute(f'DROP FUNCTION IF EXISTS "{name}_notify"()')


def stored(table: str) -> list[Envelope]:
    with psycopg.connect(URL) as reader:
        rows = reader.execute(f'SELECT envelope FROM "{table}" ORDER BY seq').fetchall()
    return [Envelope.from_json(text) for (text,) in rows]


async def relayed(table: str) -> list[Envelope]:
    store = PostgresRelayStore(URL, table)
    publisher = MemoryPublisher()
    try:
        await Relay(store, publisher).drain()
    finally:
        await store.close()
    return publisher.published


class Payments:
    """A payment provider that is up or down; ``charged`` records the charges made."""

    def __init__(self) -> None:
        self.down = True
        self.charged: list[tuple[str, int]] = []

    def charge(self, account: str, cents: int) -> str:
        if self.down:
            raise ConnectionRefusedError("payments are down")
        self.charged.append((account, cents))
        return f"charged {account}"

    async def acharge(self, account: str, cents: int) -> str:
        return self.charge(account, cents)


async def test_psycopg_sync_and_async(table: str) -> None:
    payments = Payments()
    deferral = Deferral(
        Outbox(table),
        source="/billing",
        connect=functools.partial(psycopg.connect, URL),
        aconnect=functools.partial(psycopg.AsyncConnection.connect, URL),
    )
    charge = deferral.deferrable(OP)(payments.charge)
    acharge = deferral.deferrable(OP + ".async")(payments.acharge)

    first = charge("acct-1", 500)
    second = await acharge("acct-2", 700)
    assert isinstance(first, DeferredResult)
    assert isinstance(second, DeferredResult)
    assert [(e.id, e.type, e.data["args"]) for e in stored(table)] == [
        (first.id, OP, ["acct-1", 500]),
        (second.id, OP + ".async", ["acct-2", 700]),
    ]

    payments.down = False
    assert charge("acct-3", 100) == "charged acct-3"
    assert await acharge("acct-4", 100) == "charged acct-4"
    assert len(stored(table)) == 2  # the provider was up: nothing deferred

    operations = Operations()
    operations.register(OP, charge)
    operations.register(OP + ".async", acharge)
    for event in await relayed(table):
        await operations(event)
    assert payments.charged[2:] == [("acct-1", 500), ("acct-2", 700)]


async def test_sqlalchemy_sessions(table: str) -> None:
    payments = Payments()
    engine = create_engine(SA_URL)
    aengine = create_async_engine(SA_URL)
    deferral = Deferral(
        Outbox(table),
        source="/billing",
        connect=sessionmaker(engine),
        aconnect=async_sessionmaker(aengine),
    )
    result = deferral.deferrable(OP)(payments.charge)("acct-1", 1)
    aresult = await deferral.deferrable(OP)(payments.acharge)("acct-2", 2)
    engine.dispose()
    await aengine.dispose()
    assert isinstance(result, DeferredResult)
    assert isinstance(aresult, DeferredResult)
    assert [e.id for e in await relayed(table)] == [result.id, aresult.id]

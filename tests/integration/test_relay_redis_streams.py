"""End to end: PostgreSQL and SQLite outboxes → relay (batches in flight) → the real Redis.

A table and a stream of their own per test, removed after.
"""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import psycopg
import pytest
import redis.asyncio

from buttress.messaging import Envelope, Outbox, migrate
from buttress.messaging.brokers.redis_streams import RedisStreamsPublisher
from buttress.messaging.relay import PostgresRelayStore, Relay, SQLiteRelayStore

from tests.conftest import require_service
from tests.unit.messaging.relay_fakes import assert_key_order, event

PG = "postgresql://postgres@127.0.0.1:5432/test"
REDIS = "redis://127.0.0.1:6379/0"


@pytest.fixture
def table() -> Iterator[str]:
    require_service("postgres")
    name = f"relay_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG) as conn:
        migrate(conn, name)
    yield name
    with psycopg.connect(PG, autocommit=True) as admin:
        admin.execute(f'DROP TABLE IF EXISTS "{name}", "{name}_migrations"')
        admin.execute(f'DROP FUNCTION IF EXISTS "{name}_notify"()')


@pytest.fixture
async def stream() -> AsyncIterator[str]:
    require_service("redis")
    name = f"test:relay:{uuid.uuid4().hex[:12]}"
    yield name
    client = redis.asyncio.Redis.from_url(REDIS)
    async with client:
        await client.delete(name)


async def read(name: str) -> list[Envelope]:
    client = redis.asyncio.Redis.from_url(REDIS)
    async with client:
        return [Envelope.from_redis_fields(fields) for _, fields in await client.xrange(name)]


async def test_postgresql_to_redis_streams_with_batches_in_flight(table: str, stream: str) -> None:
    written = [event(f"order-{i % 11}", i) for i in range(400)]
    with psycopg.connect(PG) as conn:
        Outbox(table).add_many(conn, written)
    store = PostgresRelayStore(PG, table, pool_max_size=3)
    async with RedisStreamsPublisher(REDIS, stream=stream) as publisher:
        relay = Relay(store, publisher, batch_size=16, concurrency=3)
        assert await relay.drain() == 400
    await store.close()
    got = await read(stream)
    assert [e.id for e in got] == [e.id for e in got if e in set(written)]  # nothing else
    assert sorted(e.id for e in got) == sorted(e.id for e in written)  # each once
    assert_key_order(got, written)
    assert got[0] == next(e for e in written if e.id == got[0].id)  # fields round trip


async def test_sqlite_to_redis_streams(tmp_path: Path, stream: str) -> None:
    path = tmp_path / "app.db"
    conn = sqlite3.connect(path)
    migrate(conn)
    written = [event(f"k{i % 3}", i) for i in range(50)]
    Outbox().add_many(conn, written)
    conn.commit()
    conn.close()
    store = SQLiteRelayStore(path)
    async with RedisStreamsPublisher(REDIS, stream=stream) as publisher:
        assert await Relay(store, publisher, batch_size=8).drain() == 50
    await store.close()
    got = await read(stream)
    assert sorted(e.id for e in got) == sorted(e.id for e in written)
    assert_key_order(got, written)

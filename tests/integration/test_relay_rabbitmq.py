"""End to end: PostgreSQL outbox → relay → the real RabbitMQ, through the default pipeline.

A table of its own per test, an exchange and queue of their own, all removed after.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator

import aio_pika
import aio_pika.abc
import psycopg
import pytest

from buttress.messaging import Envelope, Outbox, migrate
from buttress.messaging.brokers.rabbitmq import RabbitMQPublisher
from buttress.messaging.relay import PostgresRelayStore, Relay

from tests.conftest import SERVICES, require_service
from tests.unit.messaging.relay_fakes import assert_key_order, event

PG = "postgresql://postgres@127.0.0.1:5432/test"
AMQP = f"amqp://guest:guest@127.0.0.1:{SERVICES['rabbitmq']}/"


@pytest.fixture
def table() -> Iterator[str]:
    require_service("postgres")
    require_service("rabbitmq")
    name = f"relay_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG) as conn:
        migrate(conn, name)
    yield name
    with psycopg.connect(PG, autocommit=True) as admin:
        admin.execute(f'DROP TABLE IF EXISTS "{name}", "{name}_migrations"')
        admin.execute(f'DROP FUNCTION IF EXISTS "{name}_notify"()')


@pytest.fixture
async def admin() -> AsyncIterator[aio_pika.abc.AbstractChannel]:
    connection = await aio_pika.connect(AMQP)
    async with connection:
        yield await connection.channel()


async def test_committed_events_reach_rabbitmq_once_each_in_key_order(
    table: str, admin: aio_pika.abc.AbstractChannel
) -> None:
    tag = uuid.uuid4().hex[:12]
    exchange, queue = f"test.relay.{tag}", f"test.relay.{tag}.q"
    written = [event(f"order-{i % 3}", i) for i in range(25)]
    try:
        async with RabbitMQPublisher(AMQP, exchange=exchange, queue=queue) as publisher:
            with psycopg.connect(PG) as conn:
                Outbox(table).add_many(conn, written)
                conn.commit()
                Outbox(table).add(conn, event("order-0", -1))
                conn.rollback()
            store = PostgresRelayStore(PG, table)
            relay = Relay(store, publisher, batch_size=10)
            try:
                assert await relay.drain() == 25
            finally:
                await store.close()
        q = await admin.declare_queue(queue, passive=True)
        got: list[Envelope] = []
        while (message := await q.get(fail=False)) is not None:
            await message.ack()
            got.append(Envelope.from_amqp(message.headers, message.content_type, message.body))
            assert message.message_id == got[-1].id
        assert sorted(e.id for e in got) == sorted(e.id for e in written)
        assert_key_order(got, written)
    finally:
        await asyncio.gather(
            admin.queue_delete(queue),
            admin.queue_delete(f"{queue}.dlq"),
            return_exceptions=True,
        )
        for name in (exchange, f"{queue}.dlx"):
            await admin.exchange_delete(name)

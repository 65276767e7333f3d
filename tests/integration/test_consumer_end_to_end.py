"""End to end: SQLite outbox -> relay -> real RabbitMQ or Redis Streams -> consumer
runner -> a sync handler with a ``SQLInbox`` in its own transaction.

Some deliveries "crash" after the handler's transaction committed and before the ack
(the handler raises after committing), so the runner redelivers them; the inbox
makes the second run a no-op. Every event is applied exactly once, in the end.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from buttress.messaging import Envelope, Outbox, migrate
from buttress.messaging.brokers import Publisher
from buttress.messaging.brokers.rabbitmq import RabbitMQPublisher
from buttress.messaging.brokers.rabbitmq_consumer import RabbitMQSource
from buttress.messaging.brokers.redis_streams import RedisStreamsPublisher
from buttress.messaging.brokers.redis_streams_consumer import RedisStreamsSource
from buttress.messaging.consumer import Consumer
from buttress.messaging.inbox import SQLInbox
from buttress.messaging.relay import Relay, SQLiteRelayStore
from buttress.policies.backoff import Constant

from tests.conftest import SERVICES, require_service

AMQP = f"amqp://guest:guest@127.0.0.1:{SERVICES['rabbitmq']}/"
REDIS = f"redis://127.0.0.1:{SERVICES['redis']}/0"
EVENTS = 30


@pytest.fixture(params=["rabbitmq", "redis"])
async def broker(request: pytest.FixtureRequest) -> AsyncIterator[tuple[str, str]]:
    kind: str = request.param
    require_service(kind)
    name = f"test.buttress.e2e.{uuid.uuid4().hex[:12]}"
    yield kind, name
    if kind == "rabbitmq":
        import aio_pika

        connection = await aio_pika.connect(AMQP)
        async with connection:
            channel = await connection.channel()
            queues = [f"{name}.q{s}" for s in ("", ".dlq", ".poison")]
            queues += [f"{name}.q.retry.{ms}" for ms in (10, 15, 20, 30, 50)]
            for queue in queues:
                await channel.queue_delete(queue)
            for exchange in (name, f"{name}.q.dlx"):
                await channel.exchange_delete(exchange)
    else:
        import redis.asyncio

        client = redis.asyncio.Redis.from_url(REDIS)
        async with client:
            keys = [k async for k in client.scan_iter(match=f"{name}*")]
            if keys:
                await client.delete(*keys)


async def test_every_committed_event_is_applied_exactly_once(
    broker: tuple[str, str], tmp_path: Path
) -> None:
    kind, name = broker
    shop, ledger = tmp_path / "shop.db", tmp_path / "ledger.db"
    with sqlite3.connect(shop) as db:
        migrate(db)
        outbox = Outbox()
        for i in range(EVENTS):
            outbox.add(db, Envelope(source="/shop", type="order.paid", subject=f"o-{i % 7}"))
    db.close()
    with sqlite3.connect(ledger) as db:
        migrate(db, what="inbox")
        db.execute("CREATE TABLE applied (event_id TEXT)")
    db.close()

    inbox = SQLInbox("ledger")
    crashed: set[str] = set()
    lock = threading.Lock()

    def apply(event: Envelope) -> None:  # sync: runs in a worker thread
        db = sqlite3.connect(ledger, timeout=30)
        try:
            with db:  # the id and the effect commit together
                if inbox.seen(db, event.id):
                    return
                db.execute("INSERT INTO applied VALUES (?)", (event.id,))
        finally:
            db.close()
        with lock:  # handlers run in several threads
            crash = len(crashed) < 5 and event.id not in crashed
            if crash:
                crashed.add(event.id)
        if crash:  # committed, then "crashed" before the ack
            raise ConnectionError("lost before the ack")

    publisher: Publisher
    if kind == "rabbitmq":
        source: RabbitMQSource | RedisStreamsSource = RabbitMQSource(
            AMQP, exchange=name, queue=f"{name}.q", prefetch=8
        )
        publisher = RabbitMQPublisher(AMQP, exchange=name, queue=f"{name}.q")
    else:
        source = RedisStreamsSource(REDIS, stream=name, group="ledger")
        publisher = RedisStreamsPublisher(REDIS, stream=name, maxlen=None)

    store = SQLiteRelayStore(shop)
    async with source, publisher:
        assert await Relay(store, publisher).drain() == EVENTS
        runner = Consumer(source, apply, concurrency=8, backoff=Constant(0.01), receive_timeout=0.3)
        async with asyncio.timeout(60):
            await runner.drain()
    await store.close()

    assert len(crashed) == 5
    assert runner.retried == 5  # each crashed one came back once...
    assert runner.handled == EVENTS  # ...and was acked the second time
    with sqlite3.connect(ledger) as db:
        rows = db.execute("SELECT event_id, count(*) FROM applied GROUP BY event_id").fetchall()
    db.close()
    assert len(rows) == EVENTS
    assert all(count == 1 for _, count in rows)

"""The inbox end to end: PostgreSQL outbox -> relay -> real NATS JetStream -> consumer
runner -> handler, where deliveries come more than once and each effect happens once.

- ``SQLInbox`` in the handler's PostgreSQL transaction: some handlers "crash" after
  their transaction committed and before the ack, so the runner redelivers those
  messages; the inbox makes the second run a no-op.
- ``RedisInbox`` as the runner's ``inbox=`` hook: a handler that fails releases its
  claim (the retry runs it), and copies of events published again under other
  ``Nats-Msg-Id`` s (as a relay that lost its confirms would) are acked unhandled.

Unique tables, streams and keys per test, removed afterwards.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import nats
import psycopg
import pytest
import redis.asyncio

from buttress import Pipeline, Timeout
from buttress.messaging import Envelope, Outbox, migrate
from buttress.messaging.brokers.nats import NatsPublisher, NatsSource
from buttress.messaging.consumer import Consumer
from buttress.messaging.inbox import RedisInbox, SQLInbox
from buttress.messaging.relay import PostgresRelayStore, Relay
from buttress.policies.backoff import Constant

from tests.conftest import SERVICES, require_service

PG = "postgresql://postgres@127.0.0.1:5432/test"
NATS = f"nats://127.0.0.1:{SERVICES['nats']}"
REDIS = f"redis://127.0.0.1:{SERVICES['redis']}/0"
BOUND = 30.0


@pytest.fixture
def tables() -> Iterator[tuple[str, str, str]]:
    """``(outbox, inbox, effects)`` tables."""
    require_service("postgres")
    require_service("nats")
    tag = uuid.uuid4().hex[:10]
    outbox, inbox, effects = f"e2e_out_{tag}", f"e2e_in_{tag}", f"e2e_fx_{tag}"
    with psycopg.connect(PG) as conn:
        migrate(conn, outbox)
        migrate(conn, inbox, what="inbox")
        conn.execute(f'CREATE TABLE "{effects}" (event_id text, n int)')
    yield outbox, inbox, effects
    with psycopg.connect(PG, autocommit=True) as admin:
        for table in (outbox, inbox):
            admin.execute(f'DROP TABLE IF EXISTS "{table}", "{table}_migrations"')
        admin.execute(f'DROP TABLE IF EXISTS "{effects}"')
        admin.execute(f'DROP FUNCTION IF EXISTS "{outbox}_notify"()')


@pytest.fixture
async def stream() -> AsyncIterator[str]:
    require_service("nats")
    name = f"test_inbox_e2e_{uuid.uuid4().hex[:10]}"
    yield name
    client = await nats.connect(NATS)
    js = client.jetstream()
    for info in await js.streams_info():
        found = info.config.name or ""
        if found.startswith(name):
            await js.delete_stream(found)
    await client.close()


async def relay_all(outbox: str, stream: str, events: list[Envelope]) -> None:
    """Write ``events`` to the outbox and let a relay publish them to NATS."""
    with psycopg.connect(PG) as conn:
        Outbox(outbox).add_many(conn, events)
    store = PostgresRelayStore(PG, outbox)
    try:
        async with NatsPublisher(NATS, stream=stream, subject_prefix=stream) as publisher:
            relay = Relay(store, publisher, pipeline=Pipeline(Timeout(10.0)))
            assert await relay.drain() == len(events)
    finally:
        await store.close()


async def until(check: Callable[[], bool], what: str) -> None:
    async with asyncio.timeout(BOUND):
        # The runner's counters have no event to wait on; redeliveries take real time.
        while not check():  # noqa: ASYNC110
            await asyncio.sleep(0.02)
    assert check(), what


async def test_sql_inbox_applies_each_event_once_despite_redeliveries(
    tables: tuple[str, str, str], stream: str
) -> None:
    outbox, inbox_table, effects = tables
    events = [Envelope(source="/o", type="order.placed", subject=f"o-{i}") for i in range(12)]
    await relay_all(outbox, stream, events)
    flaky = {e.id for e in events[::3]}
    crashed: set[str] = set()
    runs: list[str] = []
    inbox = SQLInbox("billing", inbox_table)

    async def handler(envelope: Envelope) -> None:
        runs.append(envelope.id)
        async with await psycopg.AsyncConnection.connect(PG) as conn, conn.transaction():
            if await inbox.aseen(conn, envelope.id):
                return
            await conn.execute(f'INSERT INTO "{effects}" VALUES (%s, %s)', (envelope.id, len(runs)))
        if envelope.id in flaky and envelope.id not in crashed:
            crashed.add(envelope.id)
            raise RuntimeError("crashed after the commit, before the ack")

    async with NatsSource(NATS, stream=stream, durable="billing", ack_wait=5.0) as source:
        consumer = Consumer(source, handler, backoff=Constant(0.05), receive_timeout=0.2)
        task = asyncio.create_task(consumer.run())
        await until(lambda: consumer.handled == len(events), "every event handled")
        consumer.stop()
        await asyncio.wait_for(task, BOUND)
    assert sorted(runs) == sorted([e.id for e in events] + list(flaky))  # redelivered
    with psycopg.connect(PG) as conn:
        applied = [r[0] for r in conn.execute(f'SELECT event_id FROM "{effects}"').fetchall()]
    assert sorted(applied) == sorted(e.id for e in events)  # each exactly once
    assert consumer.retried == len(flaky)


@pytest.fixture
async def redis_client() -> AsyncIterator[redis.asyncio.Redis]:
    require_service("redis")
    client = redis.asyncio.Redis.from_url(REDIS)
    async with client:
        yield client


async def test_redis_inbox_hook_skips_copies_and_reruns_failures(
    tables: tuple[str, str, str], stream: str, redis_client: redis.asyncio.Redis
) -> None:
    outbox, _, _ = tables
    events = [Envelope(source="/o", type="mail.requested", subject=f"u-{i}") for i in range(6)]
    await relay_all(outbox, stream, events)
    # Copies of two events under other message ids: JetStream keeps them, as it
    # would for a relay that published again after its confirms were lost.
    client = await nats.connect(NATS)
    try:
        js = client.jetstream()
        for event in events[:2]:
            headers, body = event.to_headers(binding="nats")
            headers["Nats-Msg-Id"] = f"copy-{event.id}"
            await js.publish(f"{stream}.{event.type}", body, headers=headers)
    finally:
        await client.close()
    prefix = f"test:buttress:e2e:{uuid.uuid4().hex[:10]}:"
    inbox = RedisInbox(redis_client, 3600, prefix)
    sent: list[str] = []
    failed: set[str] = set()

    async def handler(envelope: Envelope) -> None:
        if envelope.id == events[3].id and not failed:
            failed.add(envelope.id)
            raise RuntimeError("the mail server said no")  # released: the retry runs
        sent.append(envelope.id)

    try:
        async with NatsSource(NATS, stream=stream, durable="mailer") as source:
            options: dict[str, Any] = {"backoff": Constant(0.05), "receive_timeout": 0.2}
            consumer = Consumer(source, handler, inbox=inbox, **options)
            task = asyncio.create_task(consumer.run())
            await until(
                lambda: consumer.handled == len(events) and consumer.duplicates == 2,
                "every event handled and both copies skipped",
            )
            consumer.stop()
            await asyncio.wait_for(task, BOUND)
        assert sorted(sent) == sorted(e.id for e in events)
    finally:
        found = [k async for k in redis_client.scan_iter(match=f"{prefix}*")]
        if found:
            await redis_client.delete(*found)

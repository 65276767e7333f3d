"""The outbox's dead letters against the real PostgreSQL (database ``test``): a poison
event is dead-lettered after N attempts, listed, replayed (the NOTIFY wakes a running
relay, which publishes it) and purged.

Every test works on a table of its own (a unique name), dropped afterwards.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

import psycopg
import pytest

from buttress import Pipeline, Timeout
from buttress.clock import FakeClock
from buttress.errors import StoreError, StoreUnavailable
from buttress.messaging import Envelope, Outbox, migrate
from buttress.messaging.brokers import PublishRefused
from buttress.messaging.deadletters import OutboxDeadLetters
from buttress.messaging.relay import PostgresRelayStore, Relay
from buttress.policies.backoff import Constant

from tests.conftest import require_service
from tests.unit.messaging.relay_fakes import MemoryPublisher, event

URL = "postgresql://postgres@127.0.0.1:5432/test"
BOUND = 20.0  # seconds: a bound on waits for something that should happen at once


@pytest.fixture
def table() -> Iterator[str]:
    require_service("postgres")
    name = f"dlq_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(URL) as conn:
        migrate(conn, name)
    yield name
    with psycopg.connect(URL, autocommit=True) as admin:
        admin.execute(f'DROP TABLE IF EXISTS "{name}", "{name}_migrations"')
        admin.execute(f'DROP FUNCTION IF EXISTS "{name}_notify"()')


@pytest.fixture
async def dlq(table: str) -> AsyncIterator[OutboxDeadLetters]:
    async with OutboxDeadLetters(URL, table, batch_size=3) as letters:
        yield letters


def write(table: str, events: Sequence[Envelope]) -> None:
    with psycopg.connect(URL) as conn:
        Outbox(table).add_many(conn, events)


def statuses(table: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(URL) as conn:
        query = f'SELECT event_id, status, attempts FROM "{table}" ORDER BY seq'
        return conn.execute(query).fetchall()


async def test_poison_dead_after_n_attempts_then_replayed_and_published(
    table: str, dlq: OutboxDeadLetters
) -> None:
    poison, fine = event("a", 1), event("b", 1)
    write(table, [poison, fine])
    refusing = True

    def fail(batch: Sequence[Envelope]) -> BaseException | None:
        if refusing and any(e.id == poison.id for e in batch):
            return PublishRefused("bad routing key", [poison.id])
        return None

    publisher = MemoryPublisher(fail=fail)
    clock = FakeClock(wall=time.time() + 60.0)
    store = PostgresRelayStore(URL, table)
    relay = Relay(
        store,
        publisher,
        max_attempts=3,
        backoff=Constant(1.0),
        pipeline=Pipeline(Timeout(10.0)),
        poll_interval=3600.0,
        clock=clock,
        random=lambda: 1.0,
    )
    try:
        for _ in range(3):
            await relay.drain()
            clock.advance(1.0)
        [letter] = await dlq.list()
        assert (letter.id, letter.envelope, letter.attempts) == (poison.id, poison, 3)
        assert letter.reason.startswith("PublishRefused: bad routing key")
        assert await dlq.get(poison.id) == letter
        assert await dlq.get(fine.id) is None  # published, not dead
        assert await dlq.counts() == {"pending": 0, "dead": 1}

        # The relay runs and waits on LISTEN (its poll is an hour away): the replay's
        # NOTIFY wakes it, and the fixed event is published.
        refusing = False
        dlq.clock = clock
        task = asyncio.create_task(relay.run())
        await asyncio.wait_for(relay.listening.wait(), BOUND)
        await asyncio.wait_for(publisher.wait_for(1), BOUND)  # the catch-up: nothing new
        assert await dlq.replay([poison.id]) == 1
        await asyncio.wait_for(publisher.wait_for(2), BOUND)
        assert publisher.ids == [fine.id, poison.id]
        relay.stop()
        await asyncio.wait_for(task, BOUND)
        assert [row[1] for row in statuses(table)] == ["published", "published"]
    finally:
        await store.close()


async def test_replay_and_purge_all_in_batches(table: str, dlq: OutboxDeadLetters) -> None:
    events = [event(None, i) for i in range(8)]
    write(table, events)
    with psycopg.connect(URL) as conn:
        conn.execute(f"UPDATE \"{table}\" SET status = 'dead', attempts = 5, last_error = 'x'")
    page = await dlq.list(limit=5)
    assert [letter.id for letter in page] == [e.id for e in events[:5]]
    assert [letter.id for letter in await dlq.list(after=page[-1].id)] == [e.id for e in events[5:]]
    assert await dlq.replay(ids=[events[0].id, events[1].id]) == 2
    rows = statuses(table)
    assert rows[0][1:] == ("pending", 0)
    assert rows[2][1:] == ("dead", 5)
    assert await dlq.purge() == 6
    assert await dlq.replay() == 0
    assert [row[0] for row in statuses(table)] == [events[0].id, events[1].id]


async def test_replay_sends_one_notify_per_batch_transaction(
    table: str, dlq: OutboxDeadLetters
) -> None:
    write(table, [event(None, i) for i in range(4)])
    with psycopg.connect(URL) as conn:
        conn.execute(f"UPDATE \"{table}\" SET status = 'dead'")
    async with await psycopg.AsyncConnection.connect(URL, autocommit=True) as listener:
        await listener.execute(f'LISTEN "{table}"')
        assert await dlq.replay() == 4  # batches of 3: two transactions
        got = [n.channel async for n in listener.notifies(timeout=1.0)]
    assert got == [table, table]


async def test_errors_are_store_errors(table: str) -> None:
    async with OutboxDeadLetters(URL, "no_such_table") as letters:
        with pytest.raises(StoreError, match="PostgreSQL failed"):
            await letters.list()
    async with OutboxDeadLetters("postgresql://postgres@127.0.0.1:1/test", table) as letters:
        with pytest.raises(StoreUnavailable, match="PostgreSQL is unavailable"):
            await letters.counts()

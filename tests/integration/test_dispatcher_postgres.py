"""The dispatcher on real PostgreSQL: the same rules, SKIP LOCKED claims shared by
several dispatchers, ordered delivery across them, retention."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Iterator

import psycopg
import pytest

from buttress.clock import FakeClock
from buttress.webhooks.dispatcher import (
    Dispatcher,
    Endpoint,
    Message,
    PostgresDeliveryStore,
    RetrySchedule,
    migrate,
)

from tests.unit.webhooks.test_dispatcher import LOOPBACK, SECRET, Receiver, serve

URL = "postgresql://postgres@127.0.0.1:5432/test"
TABLES = ("messages", "deliveries", "attempts", "endpoints", "migrations")


@pytest.fixture
def prefix() -> Iterator[str]:
    from tests.conftest import require_service

    require_service("postgres")
    name = f"wh_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(URL) as conn:
        assert migrate(conn, name) == ["0001_dispatcher"]
        assert migrate(conn, name) == []
    yield name
    with psycopg.connect(URL, autocommit=True) as admin:
        admin.execute("DROP TABLE IF EXISTS " + ", ".join(f'"{name}_{t}"' for t in TABLES))


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    async with serve() as r:
        yield r


@pytest.fixture
async def store(prefix: str) -> AsyncIterator[PostgresDeliveryStore]:
    s = PostgresDeliveryStore(URL, prefix)
    yield s
    await s.close()


async def run_until_delivered(
    dispatchers: list[Dispatcher], stores: list[PostgresDeliveryStore], expected: int
) -> None:
    """Run the dispatchers until ``expected`` deliveries are delivered, then stop
    them and close everything."""
    tasks = [asyncio.create_task(d.run()) for d in dispatchers]
    try:
        for _ in range(1000):
            if (await stores[0].counts())["delivered"] == expected:
                break
            await asyncio.sleep(0.02)
    finally:
        for d in dispatchers:
            d.stop()
        await asyncio.gather(*tasks)
        for d in dispatchers:
            await d.close()
        for s in stores:
            await s.close()


async def test_retry_dead_letter_and_replay(
    receiver: Receiver, store: PostgresDeliveryStore
) -> None:
    clock = FakeClock(wall=time.time())
    receiver.answer("/hook", 500, 404)
    e = Endpoint("a", receiver.url(), SECRET, event_types=["order.*"])
    d = Dispatcher(
        store, [e], schedule=RetrySchedule([0, 5], jitter=0), policy=LOOPBACK, clock=clock
    )
    async with d:
        first, targets = await d.send("order.placed", {"n": 1})
        assert targets == ["a"]
        assert (await d.send("user.created", {}))[1] == []
        clock.advance(0.5)
        assert await d.lag() == pytest.approx(0.5)  # due since it was sent
        assert await d.drain() == 0
        assert await d.lag() == 0.0
        state = await d.delivery(first, "a")
        assert state is not None
        assert (state.status, state.attempts, state.last_status) == ("pending", 1, 500)
        clock.advance(5)
        assert await d.drain() == 0  # 404: dead at once
        letters = d.dead_letters()
        (letter,) = await letters.list()
        assert letter.reason == "HTTP 404 (not retried)"
        assert letter.envelope is not None
        assert letter.envelope.id == first
        assert [a.status for a in await d.attempts(first, "a")] == [500, 404]
        assert await letters.replay() == 1
        assert await d.drain() == 1
        assert await store.counts() == {"pending": 0, "delivered": 1, "dead": 0}
    assert [r.headers["webhook-id"] for r in receiver.received] == [first] * 3


async def test_two_dispatchers_share_the_work_without_double_delivery(
    receiver: Receiver, prefix: str
) -> None:
    stores = [PostgresDeliveryStore(URL, prefix) for _ in range(2)]
    e = Endpoint("a", receiver.url(), SECRET, max_concurrency=32)
    dispatchers = [
        Dispatcher(s, [e], policy=LOOPBACK, poll_interval=0.05, batch_size=20, name=f"d{i}")
        for i, s in enumerate(stores)
    ]
    await dispatchers[0].send_many([Message("t", {"n": n}) for n in range(300)])
    await run_until_delivered(dispatchers, stores, 300)
    ids = [r.headers["webhook-id"] for r in receiver.received]
    assert len(ids) == len(set(ids)) == 300
    assert all(d.delivered > 0 for d in dispatchers)  # both took part


async def test_ordered_delivery_holds_across_dispatchers(receiver: Receiver, prefix: str) -> None:
    stores = [PostgresDeliveryStore(URL, prefix) for _ in range(2)]
    receiver.answer("/hook", 503, 503)  # early failures must not let later ones pass
    e = Endpoint("a", receiver.url(), SECRET, ordering="key")
    schedule = RetrySchedule([0, 0.05, 0.05, 0.05], jitter=0)
    dispatchers = [
        Dispatcher(s, [e], policy=LOOPBACK, poll_interval=0.02, schedule=schedule, name=f"o{i}")
        for i, s in enumerate(stores)
    ]
    sent = await dispatchers[0].send_many(
        [Message("t", {"n": n}, key=f"k{n % 3}") for n in range(30)]
    )
    await run_until_delivered(dispatchers, stores, 30)
    order = {msg_id: n for n, (msg_id, _) in enumerate(sent)}
    firsts: list[int] = []
    for got in receiver.received:
        n = order[got.headers["webhook-id"]]
        if n not in firsts:
            firsts.append(n)
    assert sorted(firsts) == list(range(30))
    for key in range(3):
        mine = [n for n in firsts if n % 3 == key]
        assert mine == sorted(mine), f"k{key} out of order: {mine}"


async def test_retention_and_health_on_postgres(
    receiver: Receiver, store: PostgresDeliveryStore
) -> None:
    clock = FakeClock(wall=time.time())
    receiver.answer("/gone", 410)
    gone = Endpoint("gone", receiver.url("/gone"), SECRET)
    ok = Endpoint("ok", receiver.url("/ok"), SECRET)
    d = Dispatcher(store, [gone, ok], policy=LOOPBACK, clock=clock, retention=60)
    async with d:
        await d.send("t", {})
        assert await d.drain() == 1
        _, disabled = await store.health()
        assert disabled == {"gone": "410 Gone"}
        clock.advance(61)
        assert await d.prune() == 1 + 2 + 0  # the delivered row, both attempts
        assert await store.counts() == {"pending": 0, "delivered": 0, "dead": 1}
        await d.enable("gone")
        assert await store.health() == ({}, {})

"""The relay against the real PostgreSQL (database ``test``), with an in-memory publisher.

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
from buttress.errors import ConfigError
from buttress.messaging import Envelope, Outbox, migrate
from buttress.messaging.brokers import BrokerUnavailable, PublishRefused
from buttress.messaging.relay import PostgresRelayStore, Relay, RelayDeadLettered
from buttress.policies.backoff import Constant

from tests.conftest import require_service
from tests.unit.messaging.relay_fakes import MemoryPublisher, assert_key_order, event

URL = "postgresql://postgres@127.0.0.1:5432/test"
BOUND = 20.0  # seconds: a bound on waits for something that should happen at once


@pytest.fixture
def table() -> Iterator[str]:
    require_service("postgres")
    name = f"relay_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(URL) as conn:
        migrate(conn, name)
    yield name
    with psycopg.connect(URL, autocommit=True) as admin:
        admin.execute(f'DROP TABLE IF EXISTS "{name}", "{name}_migrations"')
        admin.execute(f'DROP FUNCTION IF EXISTS "{name}_notify"()')


@pytest.fixture
async def stores(table: str) -> AsyncIterator[list[PostgresRelayStore]]:
    made: list[PostgresRelayStore] = []
    yield made
    for store in made:
        await store.close()


def write(table: str, events: Sequence[Envelope], *, commit: bool = True) -> None:
    with psycopg.connect(URL) as conn:
        Outbox(table).add_many(conn, events)
        if not commit:
            conn.rollback()


def statuses(table: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(URL) as conn:
        query = f'SELECT event_id, status, attempts, last_error FROM "{table}" ORDER BY seq'
        return conn.execute(query).fetchall()


def make(
    table: str, stores: list[PostgresRelayStore], publisher: MemoryPublisher, **options: Any
) -> Relay:
    store = PostgresRelayStore(URL, table)
    stores.append(store)
    options.setdefault("pipeline", Pipeline(Timeout(10.0)))
    return Relay(store, publisher, random=lambda: 1.0, **options)


def ahead(seconds: float = 60.0) -> FakeClock:
    return FakeClock(wall=time.time() + seconds)


async def test_committed_events_are_published_in_key_order_rolled_back_never(
    table: str, stores: list[PostgresRelayStore]
) -> None:
    written = [event(f"k{i % 4}", i) for i in range(30)]
    write(table, written)
    write(table, [event("k0", -1)], commit=False)
    publisher = MemoryPublisher()
    relay = make(table, stores, publisher, batch_size=7)
    assert await relay.drain() == 30
    assert sorted(publisher.ids) == sorted(e.id for e in written)
    assert_key_order(publisher.published, written)
    assert {row[1] for row in statuses(table)} == {"published"}


async def test_transient_failure_retried_later_permanent_dead_after_max_attempts(
    table: str, stores: list[PostgresRelayStore]
) -> None:
    flaky, poison, after = event("a", 1), event("b", 1), event("b", 2)
    write(table, [flaky, poison, after])
    flaky_failures = iter([True])

    def fail(batch: Sequence[Envelope]) -> BaseException | None:
        ids = {e.id for e in batch}
        unconfirmed = [poison.id] if poison.id in ids else []
        if flaky.id in ids and next(flaky_failures, False):
            unconfirmed.append(flaky.id)
            return BrokerUnavailable("down", unconfirmed)
        return PublishRefused("no route", unconfirmed) if unconfirmed else None

    publisher = MemoryPublisher(fail=fail)
    clock = ahead()
    relay = make(table, stores, publisher, clock=clock, max_attempts=2, backoff=Constant(5.0))
    await relay.drain()
    assert [row[1:3] for row in statuses(table)] == [("pending", 1)] * 2 + [("pending", 0)]
    clock.advance(5.0)
    await relay.drain()
    [first, dead, last] = statuses(table)
    assert first[1:3] == ("published", 1)
    assert dead[1:3] == ("dead", 2)
    assert dead[3].startswith("PublishRefused: no route")  # its last error
    assert last[1] == "published"
    assert publisher.ids == [flaky.id, after.id]


async def test_three_relays_publish_every_event_once_in_key_order(
    table: str, stores: list[PostgresRelayStore]
) -> None:
    written = [event(f"k{i % 5}", i) for i in range(200)]
    publisher = MemoryPublisher()
    relays = [make(table, stores, publisher, batch_size=10, poll_interval=0.5) for _ in range(3)]
    tasks = [asyncio.create_task(r.run()) for r in relays]
    for start in range(0, 200, 20):  # written while the relays run
        write(table, written[start : start + 20])
    await asyncio.wait_for(publisher.wait_for(200), BOUND)
    for r in relays:
        r.stop()
    await asyncio.wait_for(asyncio.gather(*tasks), BOUND)
    assert sorted(publisher.ids) == sorted(e.id for e in written)  # no duplicate
    assert_key_order(publisher.published, written)
    assert sum(r.published for r in relays) == 200


async def test_a_notify_wakes_the_relay_without_waiting_for_the_poll(
    table: str, stores: list[PostgresRelayStore]
) -> None:
    publisher = MemoryPublisher()
    relay = make(table, stores, publisher, poll_interval=3600.0)
    task = asyncio.create_task(relay.run())
    await asyncio.wait_for(relay.listening.wait(), BOUND)
    e = event("a")
    write(table, [e])
    await asyncio.wait_for(publisher.wait_for(1), BOUND)
    assert publisher.ids == [e.id]
    relay.stop()
    await asyncio.wait_for(task, BOUND)


async def test_the_listen_connection_is_re_established(
    table: str, stores: list[PostgresRelayStore]
) -> None:
    publisher = MemoryPublisher()
    relay = make(table, stores, publisher, poll_interval=3600.0)
    task = asyncio.create_task(relay.run())
    await asyncio.wait_for(relay.listening.wait(), BOUND)
    channel = relay.storage.channel  # type: ignore[attr-defined]
    with psycopg.connect(URL, autocommit=True) as admin:
        killed = admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query = %s",
            (f'LISTEN "{channel}"',),
        ).fetchall()
    assert killed == [(True,)]
    e = event("a")
    write(table, [e])
    # Published with an hour-long poll: by the NOTIFY, or by the catch-up once the
    # LISTEN connection is back.
    await asyncio.wait_for(publisher.wait_for(1), BOUND)
    await asyncio.wait_for(relay.listening.wait(), BOUND)
    assert relay.listen_losses == 1
    relay.stop()
    await asyncio.wait_for(task, BOUND)


async def test_a_relay_killed_mid_batch_leaves_rows_to_another_after_the_lease(
    table: str, stores: list[PostgresRelayStore]
) -> None:
    written = [event("a", 1), event("a", 2), event("b", 1)]
    write(table, written)
    entered = asyncio.Event()

    class Stuck(MemoryPublisher):
        async def publish(self, envelopes: Sequence[Envelope]) -> None:
            entered.set()
            await asyncio.Event().wait()  # never confirms

    crashed = make(table, stores, Stuck(), lease=30.0, poll_interval=3600.0)
    task = asyncio.create_task(crashed.run())
    await asyncio.wait_for(entered.wait(), BOUND)
    task.cancel()  # killed mid-batch: nothing marked
    with pytest.raises(asyncio.CancelledError):
        await task
    assert {row[1] for row in statuses(table)} == {"pending"}
    publisher = MemoryPublisher()
    clock = FakeClock(wall=time.time())
    second = make(table, stores, publisher, clock=clock)
    assert await second.drain() == 0  # still leased to the dead relay
    clock.advance(60.0)
    assert await second.drain() == 3
    assert_key_order(publisher.published, written)


async def test_retention_deletes_old_published_rows(
    table: str, stores: list[PostgresRelayStore]
) -> None:
    write(table, [event(None, i) for i in range(5)])
    relay = make(table, stores, MemoryPublisher())
    await relay.drain()
    store = stores[0]
    assert await store.delete_published(time.time() - 3600.0, 2) == 0
    assert await store.delete_published(time.time() + 1.0, 2) == 5
    assert statuses(table) == []


async def test_the_relay_reconnects_after_losing_the_database(
    table: str, stores: list[PostgresRelayStore]
) -> None:
    publisher = MemoryPublisher()
    relay = make(table, stores, publisher)
    write(table, [event("a", 1)])
    assert await relay.drain() == 1
    name = f"relay test {uuid.uuid4().hex[:8]}"
    store = PostgresRelayStore(URL, table, application_name=name)
    stores.append(store)
    relay = Relay(store, publisher, pipeline=Pipeline(Timeout(10.0)))
    assert await relay.drain() == 0
    with psycopg.connect(URL, autocommit=True) as admin:
        killed = admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
            (name,),
        ).fetchall()
    assert killed  # every connection of the pool
    assert all(ok for (ok,) in killed)
    write(table, [event("a", 2)])
    # The pool checks a connection before lending it: a dead one is replaced, and
    # the relay does not even see the loss.
    assert await relay.drain() == 1
    assert len(publisher.published) == 2


async def test_a_relay_wakes_for_the_retry_it_scheduled(
    table: str, stores: list[PostgresRelayStore]
) -> None:
    e = event("a")
    failures = iter([BrokerUnavailable("blip", [e.id])])
    publisher = MemoryPublisher(fail=lambda batch: next(failures, None))
    relay = make(table, stores, publisher, poll_interval=3600.0, backoff=Constant(0.01))
    task = asyncio.create_task(relay.run())
    await asyncio.wait_for(relay.listening.wait(), BOUND)
    write(table, [e])
    await asyncio.wait_for(publisher.wait_for(1), BOUND)  # not an hour later
    assert publisher.batches == 2
    relay.stop()
    await asyncio.wait_for(task, BOUND)


async def test_lag_is_the_age_of_the_oldest_pending_event(
    table: str, stores: list[PostgresRelayStore]
) -> None:
    clock = ahead(100.0)
    relay = make(table, stores, MemoryPublisher(), clock=clock)
    assert await relay.lag() == 0.0
    write(table, [event("a"), event("b")])
    lag = await relay.lag()
    assert 90.0 < lag <= 100.0 + BOUND  # written just now, read with a clock 100 s ahead
    await relay.drain()
    assert await relay.lag() == 0.0


# -- the pool, the claim-time attempts, the figures -----------------------------------


def connections(name: str) -> int:
    with psycopg.connect(URL) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", (name,)
        ).fetchone()
    assert row is not None
    return int(row[0])


@pytest.mark.parametrize(
    ("options", "path"),
    [
        ({"pool_min_size": 0}, "pool_min_size"),
        ({"pool_max_size": 1.5}, "pool_max_size"),
        ({"pool_min_size": 3, "pool_max_size": 2}, "pool_max_size"),
    ],
)
def test_bad_pool_sizes_are_named(options: dict[str, Any], path: str) -> None:
    with pytest.raises(ConfigError) as info:
        PostgresRelayStore(URL, "outbox", **options)
    assert info.value.path == path


async def test_batches_in_flight_share_a_bounded_pool(
    table: str, stores: list[PostgresRelayStore]
) -> None:
    written = [event(f"k{i % 9}", i) for i in range(300)]
    write(table, written)
    name = f"relay pool {uuid.uuid4().hex[:8]}"
    store = PostgresRelayStore(URL, table, application_name=name, pool_max_size=2)
    stores.append(store)
    peak = 0

    class Watching(MemoryPublisher):
        async def publish(self, envelopes: Sequence[Envelope]) -> None:
            nonlocal peak
            peak = max(peak, await asyncio.to_thread(connections, name))
            await super().publish(envelopes)

    publisher = Watching()
    relay = Relay(store, publisher, batch_size=7, concurrency=5, pipeline=Pipeline(Timeout(10.0)))
    assert await relay.drain() == 300
    assert_key_order(publisher.published, written)
    assert 1 <= peak <= 2
    assert store.pool_stats["pool_max"] == 2
    await store.close()
    assert store.pool_stats == {}
    assert await asyncio.to_thread(connections, name) == 0


async def test_an_event_claimed_max_attempts_times_without_an_outcome_is_dead(
    table: str, stores: list[PostgresRelayStore]
) -> None:
    poison, after = event("k", 1), event("k", 2)
    write(table, [poison, after])
    clock = FakeClock(wall=time.time() + 1.0)
    crashing = PostgresRelayStore(URL, table)
    stores.append(crashing)
    for crash in range(2):
        [claimed] = await crashing.claim(f"crashed-{crash}", 10, clock.time(), 30.0)
        assert (claimed.event_id, claimed.attempts) == (poison.id, crash)
        clock.advance(31.0)
    publisher = MemoryPublisher()
    relay = make(table, stores, publisher, clock=clock, max_attempts=2)
    dead: list[RelayDeadLettered] = []
    relay.subscribe(dead.append)
    assert await relay.drain() == 1
    assert publisher.ids == [after.id]
    [(_, status, _, error), (_, after_status, after_attempts, _)] = statuses(table)
    assert (status, after_status, after_attempts) == ("dead", "published", 0)
    assert str(error).startswith("abandoned: claimed 2 time(s)")
    assert [d.event_id for d in dead] == [poison.id]


async def test_a_running_relay_reports_its_lag_and_listen_state(
    table: str, stores: list[PostgresRelayStore]
) -> None:
    publisher = MemoryPublisher()
    relay = make(table, stores, publisher, poll_interval=3600.0)
    task = asyncio.create_task(relay.run())
    try:
        await asyncio.wait_for(relay.listening.wait(), BOUND)
        write(table, [event("a")])
        await asyncio.wait_for(publisher.wait_for(1), BOUND)
        assert relay.stats.listening
    finally:
        relay.stop()
        await asyncio.wait_for(task, BOUND)
    assert relay.stats.lag is not None
    assert not relay.stats.listening

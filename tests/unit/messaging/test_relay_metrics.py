"""The relay's figures (scraped through prometheus_client), its dead-letter event, the
dead-lettering of events that never reach an outcome, and concurrent batches."""

from __future__ import annotations

import asyncio
import gc
import sqlite3
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from buttress import Pipeline, Timeout
from buttress.clock import FakeClock
from buttress.errors import ConfigError
from buttress.events import Event, subscribe
from buttress.messaging import Envelope, Outbox, migrate
from buttress.messaging.brokers import PublishRefused
from buttress.messaging.relay import Relay, RelayDeadLettered, SQLiteRelayStore
from buttress.messaging.relay._metrics import BATCH_BUCKETS, Histogram, families
from buttress.observe import prometheus

from tests.unit.messaging.relay_fakes import MemoryPublisher, assert_key_order, event


@pytest.fixture
def table() -> str:
    # Unique per test: the metrics are labelled by outbox, and relays of other tests
    # may still be alive in this process.
    return f"outbox_{time.monotonic_ns()}"


@pytest.fixture
def db(tmp_path: Path, table: str) -> Path:
    path = tmp_path / "app.db"
    with sqlite3.connect(path) as conn:
        migrate(conn, table)
    conn.close()
    return path


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(wall=time.time() + 60.0)  # rows written now are due at once


@pytest.fixture
def registry() -> Iterator[CollectorRegistry]:
    made = CollectorRegistry()
    prometheus.register(made)
    yield made
    prometheus.unregister(made)


def write(db: Path, table: str, events: Sequence[Envelope]) -> None:
    conn = sqlite3.connect(db)
    Outbox(table).add_many(conn, events)
    conn.commit()
    conn.close()


def rows(db: Path, table: str) -> list[tuple[str, str, int, str | None]]:
    conn = sqlite3.connect(db)
    query = f"SELECT event_id, status, attempts, last_error FROM {table} ORDER BY seq"
    found = list(conn.execute(query))
    conn.close()
    return found


def relay(
    db: Path, table: str, publisher: MemoryPublisher, clock: FakeClock, **options: object
) -> Relay:
    options.setdefault("pipeline", Pipeline(Timeout(5.0)))
    return Relay(
        SQLiteRelayStore(db, table),
        publisher,
        clock=clock,
        random=lambda: 1.0,
        **options,  # type: ignore[arg-type]
    )


def refuse(ids: set[str]) -> MemoryPublisher:
    def fail(batch: Sequence[Envelope]) -> BaseException | None:
        bad = [e.id for e in batch if e.id in ids]
        return PublishRefused("no route", bad) if bad else None

    return MemoryPublisher(fail)


# -- metrics --------------------------------------------------------------------------


async def test_published_dead_lettered_batches_and_publish_time_are_scraped(
    db: Path, table: str, clock: FakeClock, registry: CollectorRegistry
) -> None:
    written = [event(f"k{i}", i) for i in range(7)]
    write(db, table, written)
    r = relay(db, table, refuse({written[3].id}), clock, batch_size=5, max_attempts=1)
    assert await r.drain() == 6

    def value(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, {"outbox": table, **labels})

    assert value("buttress_relay_published_total") == 6.0
    assert value("buttress_relay_dead_lettered_total") == 1.0
    assert value("buttress_relay_retried_total") == 0.0
    # Two loops (concurrency 2) share the 7 rows: every non-empty batch is counted.
    batches = value("buttress_relay_batch_size_count")
    assert batches is not None
    assert batches >= 2
    assert value("buttress_relay_batch_size_sum") == 7.0
    assert value("buttress_relay_batch_size_bucket", le="5.0") == batches
    assert value("buttress_relay_publish_duration_seconds_count") == batches
    assert value("buttress_relay_lag_seconds") is None  # measured by run(), not drain()
    assert value("buttress_relay_listening") is None  # SQLite: nothing to listen to


async def test_a_failed_publish_is_counted_as_retried(
    db: Path, table: str, clock: FakeClock, registry: CollectorRegistry
) -> None:
    e = event("a")
    write(db, table, [e])
    r = relay(db, table, MemoryPublisher(lambda batch: ConnectionError("down")), clock)
    assert await r.drain() == 0
    assert registry.get_sample_value("buttress_relay_retried_total", {"outbox": table}) == 1.0
    assert r.stats.retried == 1


async def test_run_measures_the_lag_for_the_gauge(
    db: Path, table: str, clock: FakeClock, registry: CollectorRegistry
) -> None:
    stuck, other = event("a", 1), event("b", 2)
    write(db, table, [stuck, other])
    store = SQLiteRelayStore(db, table)
    created = await store.oldest_pending()
    assert created is not None
    await store.claim("gone", 1, clock.time(), 3600.0)  # held by a relay that is gone
    await store.close()
    publisher = MemoryPublisher()
    r = relay(db, table, publisher, clock, poll_interval=3600.0)
    task = asyncio.create_task(r.run())
    await asyncio.wait_for(publisher.wait_for(1), 10.0)
    r.stop()  # the cycle in flight finishes: the lag is measured at its end
    await asyncio.wait_for(task, 10.0)
    assert publisher.ids == [other.id]
    expected = clock.time() - created
    assert registry.get_sample_value("buttress_relay_lag_seconds", {"outbox": table}) == expected


async def test_relays_of_one_outbox_add_up_and_dead_ones_are_forgotten(
    db: Path, table: str, clock: FakeClock
) -> None:
    write(db, table, [event(None, i) for i in range(4)])
    one = relay(db, table, MemoryPublisher(), clock, batch_size=1, concurrency=1)
    two = relay(db, table, MemoryPublisher(), clock, batch_size=1, concurrency=1)
    await one._batch()
    await two._batch()
    await two._batch()

    def published() -> float | None:
        for family in families():
            if family.name == "buttress_relay_published_total":
                for sample in family.samples:
                    if sample.labels == {"outbox": table}:
                        return sample.value
        return None

    assert published() == 3.0
    del two
    gc.collect()
    assert published() == 1.0


def test_the_histogram_counts_a_value_on_a_bound_in_that_bucket() -> None:
    histogram = Histogram(BATCH_BUCKETS)
    for value in (1.0, 5.0, 6.0, 5000.0):
        histogram.observe(value)
    sample = histogram.sample({})
    assert sample.value == 4.0
    assert sample.sum == 5012.0
    assert sample.buckets[:3] == ((1.0, 1.0), (5.0, 2.0), (10.0, 3.0))
    assert sample.buckets[-1] == (float("inf"), 4.0)


# -- the dead-letter event ------------------------------------------------------------


async def test_each_dead_letter_is_an_event_for_the_relays_and_the_global_listeners(
    db: Path, table: str, clock: FakeClock
) -> None:
    bad, good = event("k", 1), event("other", 2)
    write(db, table, [bad, good])
    r = relay(db, table, refuse({bad.id}), clock, max_attempts=1)
    mine: list[RelayDeadLettered] = []
    everyone: list[Event] = []
    r.subscribe(mine.append)
    unsubscribe = subscribe(everyone.append, RelayDeadLettered)
    try:
        assert await r.drain() == 1
    finally:
        unsubscribe()
    [seen] = mine
    assert seen == RelayDeadLettered(
        r.name,
        outbox=table,
        event_id=bad.id,
        subject="k",
        attempts=1,
        reason=seen.reason,
    )
    assert seen.reason.startswith("PublishRefused: no route")
    assert everyone == [seen]


# -- an event that never reaches an outcome ------------------------------------------


async def test_an_event_that_kills_the_relay_every_time_is_dead_lettered_in_the_end(
    db: Path, table: str, clock: FakeClock
) -> None:
    poison, after = event("k", 1), event("k", 2)
    write(db, table, [poison, after])
    store = SQLiteRelayStore(db, table)
    for crash in range(3):  # claimed, then the relay dies before any outcome
        [claimed] = await store.claim(f"crashed-{crash}", 10, clock.time(), 30.0)
        assert (claimed.event_id, claimed.attempts) == (poison.id, crash)
        clock.advance(30.0)
    await store.close()
    publisher = MemoryPublisher()
    r = relay(db, table, publisher, clock, max_attempts=3)
    assert await r.drain() == 1
    assert publisher.ids == [after.id]  # the poison one is never published again
    [(_, status, attempts, error), (_, after_status, after_attempts, _)] = rows(db, table)
    # Three claims that crashed, and the one that dead-lettered it.
    assert (status, attempts, after_status, after_attempts) == ("dead", 4, "published", 0)
    assert error is not None
    assert error.startswith("abandoned: claimed 3 time(s) without an outcome")
    assert r.dead_lettered == 1


async def test_a_crashed_attempt_counts_toward_max_attempts_with_the_failures(
    db: Path, table: str, clock: FakeClock
) -> None:
    e = event("k")
    write(db, table, [e])
    store = SQLiteRelayStore(db, table)
    await store.claim("crashed", 10, clock.time(), 30.0)
    clock.advance(30.0)
    await store.close()
    r = relay(db, table, refuse({e.id}), clock, max_attempts=2)
    assert await r.drain() == 0
    [(_, status, attempts, error)] = rows(db, table)
    assert (status, attempts) == ("dead", 2)  # one crash + one refusal
    assert error is not None
    assert error.startswith("PublishRefused")


# -- concurrency ----------------------------------------------------------------------


@pytest.mark.parametrize("concurrency", [1, 2, 5])
async def test_batches_in_flight_keep_per_key_order(
    db: Path, table: str, clock: FakeClock, concurrency: int
) -> None:
    written = [event(f"k{i % 7}", i) for i in range(120)]
    write(db, table, written)
    publisher = MemoryPublisher()
    r = relay(db, table, publisher, clock, batch_size=4, concurrency=concurrency)
    assert await r.drain() == 120
    assert sorted(publisher.ids) == sorted(e.id for e in written)
    assert_key_order(publisher.published, written)


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "2"])
def test_bad_concurrency_is_named(db: Path, table: str, bad: object) -> None:
    with pytest.raises(ConfigError) as info:
        Relay(SQLiteRelayStore(db, table), MemoryPublisher(), concurrency=bad)  # type: ignore[arg-type]
    assert info.value.path == "concurrency"


async def test_instrument_exports_the_relays(db: Path, table: str, clock: FakeClock) -> None:
    from buttress.observe import instrument, uninstrument

    registry = CollectorRegistry()
    instrument(logs=False, prometheus=True, otel=False, registry=registry)
    try:
        write(db, table, [event("a"), event("b")])
        alive = relay(db, table, MemoryPublisher(), clock)  # a live relay is reported
        await alive.drain()
        labels = {"outbox": table}
        assert registry.get_sample_value("buttress_relay_published_total", labels) == 2.0
    finally:
        uninstrument()

"""The relay on SQLite: claims, per-key order, retries, dead letters, retention."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from buttress import CircuitBreaker, Pipeline, Timeout
from buttress.clock import FakeClock
from buttress.errors import ConfigError
from buttress.messaging import Envelope, Outbox, migrate
from buttress.messaging.brokers import BrokerUnavailable, PublishRefused
from buttress.messaging.relay import Relay, SQLiteRelayStore, default_pipeline
from buttress.policies.backoff import Constant

from tests.helpers import tick
from tests.unit.messaging.relay_fakes import MemoryPublisher, assert_key_order, event

TABLE = "outbox"


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "app.db"
    with sqlite3.connect(path) as conn:
        migrate(conn, TABLE)
    conn.close()
    return path


def write(db: Path, events: Sequence[Envelope], *, commit: bool = True) -> None:
    conn = sqlite3.connect(db)
    try:
        Outbox(TABLE).add_many(conn, events)
        if commit:
            conn.commit()
        else:
            conn.rollback()
    finally:
        conn.close()


def rows(db: Path) -> list[tuple[str, str, int, str | None]]:
    conn = sqlite3.connect(db)
    try:
        query = f"SELECT event_id, status, attempts, last_error FROM {TABLE} ORDER BY seq"
        return list(conn.execute(query))
    finally:
        conn.close()


def relay(db: Path, publisher: MemoryPublisher, clock: FakeClock, **options: object) -> Relay:
    options.setdefault("pipeline", Pipeline(Timeout(5.0)))
    return Relay(
        SQLiteRelayStore(db, TABLE),
        publisher,
        clock=clock,
        random=lambda: 1.0,
        **options,  # type: ignore[arg-type]
    )


@pytest.fixture
def clock() -> FakeClock:
    # A minute ahead of the database's own now(), which stamps the rows written
    # after this fixture ran (their next_attempt_at must be due at the fake now).
    return FakeClock(wall=time.time() + 60.0)


async def test_committed_events_are_published_in_per_key_order(db: Path, clock: FakeClock) -> None:
    written = [event(f"k{i % 3}", i) for i in range(20)] + [event(None, 99)]
    write(db, written)
    publisher = MemoryPublisher()
    r = relay(db, publisher, clock, batch_size=4)
    assert await r.drain() == 21
    assert sorted(publisher.ids) == sorted(e.id for e in written)
    assert_key_order(publisher.published, written)
    assert {status for _, status, _, _ in rows(db)} == {"published"}


async def test_a_claim_takes_at_most_one_row_per_key(db: Path, clock: FakeClock) -> None:
    write(db, [event("a", 1), event("a", 2), event("b", 1), event(None), event(None)])
    store = SQLiteRelayStore(db, TABLE)
    claimed = await store.claim("r1", 10, clock.time(), 30.0)
    assert [(row.seq, row.subject) for row in claimed] == [
        (1, "a"),
        (3, "b"),
        (4, None),
        (5, None),
    ]
    # Leased rows are not claimed again, and still hold back their key's later rows.
    assert await store.claim("r2", 10, clock.time(), 30.0) == []
    await store.close()


async def test_a_rolled_back_event_is_never_published(db: Path, clock: FakeClock) -> None:
    kept, dropped = event("a"), event("a")
    write(db, [dropped], commit=False)
    write(db, [kept])
    publisher = MemoryPublisher()
    assert await relay(db, publisher, clock).drain() == 1
    assert publisher.ids == [kept.id]


async def test_a_transient_failure_is_retried_later_not_lost(db: Path, clock: FakeClock) -> None:
    first, second = event("a", 1), event("a", 2)
    write(db, [first, second])
    failures = iter([BrokerUnavailable("down", [first.id])])
    publisher = MemoryPublisher(fail=lambda batch: next(failures, None))
    r = relay(db, publisher, clock, backoff=Constant(10.0))
    assert await r.drain() == 0
    assert rows(db)[0][1:] == (
        "pending",
        1,
        f"BrokerUnavailable: down: 1 event(s) not confirmed ({first.id})",
    )
    clock.advance(5.0)
    assert await r.drain() == 0  # not due yet, and the key's next event waits for it
    clock.advance(5.0)
    assert await r.drain() == 2
    assert publisher.ids == [first.id, second.id]
    assert [row[1:3] for row in rows(db)] == [("published", 1), ("published", 0)]


async def test_a_permanent_failure_is_dead_after_max_attempts(db: Path, clock: FakeClock) -> None:
    bad, after = event("a", 1), event("a", 2)
    write(db, [bad, after])
    publisher = MemoryPublisher(
        fail=lambda batch: (
            PublishRefused("no route", [e.id for e in batch if e.id == bad.id])
            if any(e.id == bad.id for e in batch)
            else None
        )
    )
    r = relay(db, publisher, clock, max_attempts=3, backoff=Constant(1.0))
    for _ in range(3):
        await r.drain()
        clock.advance(1.0)
    await r.drain()
    status = rows(db)
    assert status[0][:3] == (bad.id, "dead", 3)
    assert status[0][3] is not None
    assert status[0][3].startswith("PublishRefused: no route")
    assert publisher.ids == [after.id]  # the key moves on past its dead letter
    assert r.dead_lettered == 1


async def test_an_unreadable_row_is_dead_lettered_at_once(db: Path, clock: FakeClock) -> None:
    good = event("a")
    write(db, [good])
    conn = sqlite3.connect(db)
    conn.execute(
        f"INSERT INTO {TABLE} (event_id, source, event_type, subject, envelope) "
        "VALUES ('x', '/s', 't', NULL, 'not json')"
    )
    conn.commit()
    conn.close()
    publisher = MemoryPublisher()
    assert await relay(db, publisher, clock).drain() == 1
    [_, (event_id, status, attempts, error)] = rows(db)
    assert (event_id, status, attempts) == ("x", "dead", 1)
    assert error is not None
    assert error.startswith("EnvelopeError")


async def test_a_lease_of_a_dead_relay_runs_out(db: Path, clock: FakeClock) -> None:
    e = event("a")
    write(db, [e])
    store = SQLiteRelayStore(db, TABLE)
    assert len(await store.claim("crashed", 10, clock.time(), 30.0)) == 1
    publisher = MemoryPublisher()
    r = relay(db, publisher, clock, lease=30.0)
    assert await r.drain() == 0
    clock.advance(30.0)
    assert await r.drain() == 1
    assert publisher.ids == [e.id]
    await store.close()


async def test_retention_deletes_old_published_rows_in_batches(db: Path, clock: FakeClock) -> None:
    write(db, [event(None, i) for i in range(7)])
    r = relay(db, MemoryPublisher(), clock)
    await r.drain()
    write(db, [event(None, 100)])
    store = SQLiteRelayStore(db, TABLE)
    clock.advance(100.0)
    await r.drain()  # the newest one is published 100 s later
    assert await store.delete_published(clock.time() - 50.0, 3) == 7
    assert [status for _, status, _, _ in rows(db)] == ["published"]
    await store.close()


async def test_run_catches_up_on_start_and_stops_gracefully(db: Path, clock: FakeClock) -> None:
    written = [event(f"k{i % 2}", i) for i in range(6)]
    write(db, written)
    publisher = MemoryPublisher()
    r = relay(db, publisher, clock, poll_interval=3600.0, batch_size=2)
    task = asyncio.create_task(r.run())
    await asyncio.wait_for(publisher.wait_for(6), 10.0)
    r.stop()
    await asyncio.wait_for(task, 10.0)
    assert_key_order(publisher.published, written)


def test_bad_options_are_named(db: Path) -> None:
    store = SQLiteRelayStore(db, TABLE)
    for option, value in [
        ("batch_size", 0),
        ("poll_interval", -1),
        ("lease", float("nan")),
        ("retention", "a week"),
        ("max_attempts", 0),
        ("pipeline", Timeout(1.0)),
    ]:
        with pytest.raises(ConfigError) as info:
            Relay(store, MemoryPublisher(), **{option: value})  # type: ignore[arg-type]
        assert option in str(info.value)
    with pytest.raises(ConfigError, match="publisher"):
        Relay(store, object())  # type: ignore[arg-type]


async def test_the_default_pipeline_retries_transient_errors_in_place(
    db: Path, clock: FakeClock
) -> None:
    e = event("a")
    write(db, [e])
    failures = iter([BrokerUnavailable("blip", [e.id])])
    publisher = MemoryPublisher(fail=lambda batch: next(failures, None))
    r = relay(db, publisher, clock, pipeline=default_pipeline(clock=clock))
    assert await r.drain() == 1
    assert publisher.batches == 2
    assert rows(db)[0][1:3] == ("published", 0)  # no attempt used up


async def test_an_open_breaker_holds_rows_back_without_using_attempts(
    db: Path, clock: FakeClock
) -> None:
    e = event("a")
    write(db, [e])
    breaker = CircuitBreaker(consecutive_failures=1, open_duration=30.0, clock=clock)
    down = MemoryPublisher(fail=lambda batch: BrokerUnavailable("down", [x.id for x in batch]))
    r = relay(db, down, clock, pipeline=Pipeline(breaker), max_attempts=5, backoff=Constant(1.0))
    await r.drain()  # fails and opens the breaker
    clock.advance(1.0)
    await r.drain()  # rejected by the open breaker: released until it may close
    assert down.batches == 1
    assert rows(db)[0][1:3] == ("pending", 1)
    clock.advance(30.0)
    down.fail = None
    assert await r.drain() == 1


async def test_run_twice_at_once_is_refused_and_stop_before_start_returns(
    db: Path, clock: FakeClock
) -> None:
    r = relay(db, MemoryPublisher(), clock, poll_interval=3600.0)
    r.stop()
    await asyncio.wait_for(r.run(), 10.0)  # stopped before it started
    task = asyncio.create_task(r.run())
    await tick()
    with pytest.raises(RuntimeError, match="already running"):
        await r.run()
    r.stop()
    await asyncio.wait_for(task, 10.0)


async def test_run_deletes_published_rows_after_the_retention(db: Path, clock: FakeClock) -> None:
    write(db, [event(None, i) for i in range(3)])
    publisher = MemoryPublisher()
    r = relay(db, publisher, clock, retention=60.0, poll_interval=3600.0)
    assert await r.drain() == 3
    clock.advance(61.0)
    fresh = event(None, 9)
    write(db, [fresh])
    task = asyncio.create_task(r.run())
    await asyncio.wait_for(publisher.wait_for(4), 10.0)
    r.stop()  # the cycle in flight finishes, retention included
    await asyncio.wait_for(task, 10.0)
    assert rows(db) == [(fresh.id, "published", 0, None)]


async def test_lag_is_the_age_of_the_oldest_pending_event(db: Path, clock: FakeClock) -> None:
    r = relay(db, MemoryPublisher(), clock)
    assert await r.lag() == 0.0
    write(db, [event("a")])
    store = SQLiteRelayStore(db, TABLE)
    oldest = await store.oldest_pending()
    assert oldest is not None
    assert await r.lag() == clock.time() - oldest
    clock.advance(10.0)
    assert await r.lag() == clock.time() - oldest
    await r.drain()
    assert await r.lag() == 0.0
    await store.close()

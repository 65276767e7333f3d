"""The outbox's dead letters on SQLite: list, get, replay (the relay publishes again),
purge, in batches; the protocol; refused input."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest

from buttress import Pipeline, Timeout
from buttress.clock import FakeClock
from buttress.errors import ConfigError, StoreError
from buttress.messaging import Envelope, Outbox, migrate
from buttress.messaging.brokers import PublishRefused
from buttress.messaging.deadletters import DeadLetter, DeadLetters, OutboxDeadLetters
from buttress.messaging.relay import Relay, SQLiteRelayStore

from tests.unit.messaging.relay_fakes import MemoryPublisher, event

TABLE = "outbox"


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "app.db"
    with sqlite3.connect(path) as conn:
        migrate(conn, TABLE)
    conn.close()
    return path


@pytest.fixture
def clock() -> FakeClock:
    # Ahead of the database's own now(), which stamps the rows' next_attempt_at.
    return FakeClock(wall=time.time() + 60.0)


@pytest.fixture
async def dlq(db: Path, clock: FakeClock) -> AsyncIterator[OutboxDeadLetters]:
    async with OutboxDeadLetters(f"sqlite:///{db}", TABLE, clock=clock, batch_size=2) as letters:
        yield letters


def write(db: Path, events: Sequence[Envelope]) -> None:
    conn = sqlite3.connect(db)
    Outbox(TABLE).add_many(conn, events)
    conn.commit()
    conn.close()


def statuses(db: Path) -> list[tuple[str, str, int]]:
    conn = sqlite3.connect(db)
    found = list(conn.execute(f"SELECT event_id, status, attempts FROM {TABLE} ORDER BY seq"))
    conn.close()
    return found


async def kill(db: Path, clock: FakeClock, events: Sequence[Envelope]) -> None:
    """Write ``events`` and let a relay dead-letter them (the broker refuses them)."""
    write(db, events)
    refuse = MemoryPublisher(fail=lambda batch: PublishRefused("no route", [e.id for e in batch]))
    store = SQLiteRelayStore(db, TABLE)
    relay = Relay(store, refuse, max_attempts=1, pipeline=Pipeline(Timeout(5.0)), clock=clock)
    await relay.drain()
    await store.close()


def test_outbox_dead_letters_is_a_dead_letters(db: Path) -> None:
    assert isinstance(OutboxDeadLetters(db), DeadLetters)


async def test_list_and_get_what_the_relay_gave_up_on(
    db: Path, clock: FakeClock, dlq: OutboxDeadLetters
) -> None:
    dead = [event(f"k{i}", i) for i in range(5)]
    await kill(db, clock, dead)
    write(db, [event("fine")])  # pending: not a dead letter
    first = await dlq.list(limit=3)
    assert [letter.id for letter in first] == [e.id for e in dead[:3]]
    rest = await dlq.list(after=first[-1].id)
    assert [letter.id for letter in rest] == [e.id for e in dead[3:]]
    letter = await dlq.get(dead[0].id)
    assert letter == DeadLetter(
        id=dead[0].id,
        envelope=dead[0],
        body=dead[0].to_json().encode(),
        reason=letter.reason if letter else "",
        attempts=1,
        dead_at=None,
    )
    assert letter is not None
    assert letter.reason.startswith("PublishRefused: no route")
    assert await dlq.get("no-such-id") is None
    assert await dlq.counts() == {"pending": 1, "dead": 5}


async def test_replay_puts_them_back_and_the_relay_publishes_them(
    db: Path, clock: FakeClock, dlq: OutboxDeadLetters
) -> None:
    dead = [event("a", 1), event("b", 2), event("c", 3)]
    await kill(db, clock, dead)
    assert await dlq.replay([dead[1].id, "not-dead", dead[1].id]) == 1
    assert statuses(db)[1] == (dead[1].id, "pending", 0)
    assert await dlq.replay() == 2  # all the others, in batches of 2
    assert await dlq.replay() == 0
    assert await dlq.list() == []
    publisher = MemoryPublisher()
    store = SQLiteRelayStore(db, TABLE)
    relay = Relay(store, publisher, pipeline=Pipeline(Timeout(5.0)), clock=clock)
    assert await relay.drain() == 3
    await store.close()
    assert sorted(publisher.ids) == sorted(e.id for e in dead)


async def test_purge_deletes_only_dead_rows(
    db: Path, clock: FakeClock, dlq: OutboxDeadLetters
) -> None:
    dead = [event(None, i) for i in range(5)]
    await kill(db, clock, dead)
    write(db, [pending := event("p")])
    assert await dlq.purge([dead[0].id, pending.id]) == 1
    assert await dlq.purge() == 4
    assert [row[0] for row in statuses(db)] == [pending.id]


async def test_an_unreadable_dead_row_has_no_envelope(
    db: Path, clock: FakeClock, dlq: OutboxDeadLetters
) -> None:
    conn = sqlite3.connect(db)
    conn.execute(
        f"INSERT INTO {TABLE} (event_id, source, event_type, envelope, status, last_error) "
        "VALUES ('x', '/s', 't', 'not json', 'dead', 'EnvelopeError: bad')"
    )
    conn.commit()
    conn.close()
    [letter] = await dlq.list()
    assert (letter.id, letter.envelope, letter.body) == ("x", None, b"not json")


async def test_paths_and_urls(db: Path, tmp_path: Path) -> None:
    for where in (db, str(db), f"sqlite:///{db}"):
        async with OutboxDeadLetters(where, TABLE) as letters:
            assert await letters.list() == []
    missing = OutboxDeadLetters(tmp_path / "typo.db", TABLE)
    with pytest.raises(StoreError, match="unable to open database"):
        await missing.list()
    assert not (tmp_path / "typo.db").exists()  # not created by the attempt
    wrong_table = OutboxDeadLetters(db, "nope")
    with pytest.raises(StoreError, match="no such table"):
        await wrong_table.counts()
    await wrong_table.close()


async def test_list_after_an_unknown_id_is_an_error(dlq: OutboxDeadLetters) -> None:
    with pytest.raises(StoreError, match="no event 'gone'"):
        await dlq.list(after="gone")


@pytest.mark.parametrize(
    ("outbox", "options", "path"),
    [
        ("redis://127.0.0.1/0", {}, "outbox"),
        ("sqlite://", {}, "outbox"),
        ("sqlite:///:memory:", {}, "outbox"),
        ("", {}, "outbox"),
        ("app.db", {"batch_size": 0}, "batch_size"),
        ("app.db", {"table": "Bad-Name"}, "table"),
    ],
)
def test_bad_options_are_named(outbox: str, options: dict[str, object], path: str) -> None:
    with pytest.raises(ConfigError, match=rf"^{path}: "):
        OutboxDeadLetters(outbox, **options)  # type: ignore[arg-type]


async def test_bad_arguments_are_refused(dlq: OutboxDeadLetters) -> None:
    with pytest.raises(ConfigError, match=r"^limit: "):
        await dlq.list(limit=0)
    with pytest.raises(ConfigError, match=r"^ids: must be a sequence of ids"):
        await dlq.replay("abc")

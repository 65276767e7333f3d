"""Crash safety: relays killed with SIGKILL mid-run, while events are written.

The relay runs as a subprocess (this module run as a script) whose publisher
"confirms" an event by committing its id into a log table, then prints a line. The
test kills it several times, then a final clean relay (its clock past the dead
relays' leases) publishes the rest: every committed event is in the log at least
once, and per key the first deliveries are in commit order.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import TracebackType

import psycopg
import pytest

from buttress import Pipeline, Timeout
from buttress.clock import FakeClock, MonotonicClock
from buttress.messaging import Envelope, Outbox, SQLInbox, migrate
from buttress.messaging.brokers import Publisher
from buttress.messaging.relay import PostgresRelayStore, Relay

URL = "postgresql://postgres@127.0.0.1:5432/test"
ROOT = Path(__file__).resolve().parents[2]
LEASE = 30.0


class LogPublisher:
    """Confirms an event by committing its id into ``<table>_log``."""

    def __init__(self, table: str, *, announce: bool = False) -> None:
        self.table = table
        self.announce = announce

    async def publish(self, envelopes: Sequence[Envelope]) -> None:
        conn = await psycopg.AsyncConnection.connect(URL, autocommit=True)
        async with conn, conn.cursor() as cursor:
            await cursor.executemany(
                f'INSERT INTO "{self.table}_log" (event_id) VALUES (%s)',
                [(e.id,) for e in envelopes],
            )
        if self.announce:
            print(len(envelopes), flush=True)

    async def close(self) -> None:
        pass

    async def __aenter__(self) -> Publisher:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        pass


class _Later(MonotonicClock):
    """The real clock with its wall time moved ``offset`` seconds ahead."""

    __slots__ = ("offset",)

    def __init__(self, offset: float) -> None:
        self.offset = offset

    def time(self) -> float:  # type: ignore[override]
        return time.time() + self.offset


async def _worker(table: str, run: int) -> None:  # pragma: no cover - runs in the subprocess
    store = PostgresRelayStore(URL, table)
    relay = Relay(
        store,
        LogPublisher(table, announce=True),
        batch_size=5,
        poll_interval=0.2,
        lease=LEASE,
        pipeline=Pipeline(Timeout(10.0)),
        # Each run past the leases of the runs killed before it, without waiting.
        clock=_Later(run * (LEASE + 1.0)),
    )
    await relay.run()


async def _final(table: str) -> None:
    store = PostgresRelayStore(URL, table)
    final = Relay(
        store,
        LogPublisher(table),
        pipeline=Pipeline(Timeout(10.0)),
        clock=FakeClock(wall=time.time() + 4 * (LEASE + 1.0)),  # past every lease
    )
    try:
        await final.drain()
    finally:
        await store.close()


@pytest.fixture
def table() -> Iterator[str]:
    from tests.conftest import require_service

    require_service("postgres")
    name = f"relay_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(URL) as conn:
        migrate(conn, name)
        conn.execute(f'CREATE TABLE "{name}_log" (n bigserial PRIMARY KEY, event_id text)')
        conn.commit()
    yield name
    with psycopg.connect(URL, autocommit=True) as admin:
        admin.execute(
            f'DROP TABLE IF EXISTS "{name}", "{name}_migrations", "{name}_log", '
            f'"{name}_inbox", "{name}_inbox_migrations", "{name}_effect"'
        )
        admin.execute(f'DROP FUNCTION IF EXISTS "{name}_notify"()')


def _write(table: str, count: int, written: list[Envelope]) -> None:
    with psycopg.connect(URL) as conn:
        for i in range(count):
            e = Envelope(source="/t", type="t", subject=f"k{i % 7}", data=i)
            Outbox(table).add(conn, e)
            conn.commit()
            written.append(e)


def test_relays_killed_mid_run_lose_nothing_and_keep_key_order(table: str) -> None:
    written: list[Envelope] = []
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for run in range(3):
        _write(table, 40, written)
        worker = subprocess.Popen(
            [sys.executable, "-m", "tests.integration.test_relay_crash", table, str(run)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert worker.stdout is not None
            for _ in range(3):  # some batches are confirmed, then: SIGKILL
                assert worker.stdout.readline(), "the relay subprocess ended early"
            _write(table, 10, written)  # written while it runs
        finally:
            worker.send_signal(signal.SIGKILL)
            worker.wait()
            if worker.stdout is not None:
                worker.stdout.close()
    asyncio.run(_final(table))
    with psycopg.connect(URL) as conn:
        log = [row[0] for row in conn.execute(f'SELECT event_id FROM "{table}_log" ORDER BY n')]
        pending = conn.execute(
            f"SELECT count(*) FROM \"{table}\" WHERE status <> 'published'"
        ).fetchone()
    assert pending == (0,)
    assert set(log) == {e.id for e in written}  # none lost
    first: dict[str, int] = {}
    for index, event_id in enumerate(log):
        first.setdefault(event_id, index)
    for key in {e.subject for e in written}:
        positions = [first[e.id] for e in written if e.subject == key]
        assert positions == sorted(positions), f"{key}: out of order"
    # An Inbox consumer handed every delivery in the log (duplicates included, as a
    # broker redelivers them) applies each event exactly once.
    inbox = SQLInbox("crash", f"{table}_inbox")
    with psycopg.connect(URL) as conn:
        migrate(conn, f"{table}_inbox", what="inbox")
        conn.execute(f'CREATE TABLE "{table}_effect" (event_id text)')
        conn.commit()
        for event_id in log:
            with conn.transaction():
                if not inbox.seen(conn, event_id):
                    conn.execute(f'INSERT INTO "{table}_effect" VALUES (%s)', (event_id,))
        effects = [row[0] for row in conn.execute(f'SELECT event_id FROM "{table}_effect"')]
    assert sorted(effects) == sorted(e.id for e in written)


if __name__ == "__main__":  # pragma: no cover - the relay subprocess
    asyncio.run(_worker(sys.argv[1], int(sys.argv[2])))

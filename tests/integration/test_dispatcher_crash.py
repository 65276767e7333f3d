"""Crash safety: dispatchers killed with SIGKILL mid-run lose no delivery.

The dispatcher runs as a subprocess (this module run as a script) posting to a
receiver in the test process, which fails one request in ten. The test kills it
with SIGKILL once the receiver has seen some of the messages, several times, while
more messages are sent; then a final dispatcher (its clock past the dead ones'
leases) delivers the rest. Every message must have reached the receiver at least
once and be marked delivered; nothing may be pending or dead.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sqlite3
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from buttress.clock import FakeClock
from buttress.webhooks.dispatcher import (
    DeliveryStore,
    Dispatcher,
    Endpoint,
    Message,
    RetrySchedule,
    SQLiteDeliveryStore,
    migrate,
)

from tests.unit.webhooks.test_dispatcher import LOOPBACK, SECRET, Receiver, serve

URL = "postgresql://postgres@127.0.0.1:5432/test"
ROOT = Path(__file__).resolve().parents[2]
LEASE = 30.0
SCHEDULE = RetrySchedule([0, 0.05, 0.05, 0.05, 0.05, 0.05, 0.05, 0.05], jitter=0)


def _store(backend: str, where: str, prefix: str) -> DeliveryStore:
    if backend == "sqlite":
        return SQLiteDeliveryStore(where, prefix)
    from buttress.webhooks.dispatcher import PostgresDeliveryStore

    return PostgresDeliveryStore(where, prefix)


def _endpoint(port: int) -> Endpoint:
    return Endpoint("a", f"http://127.0.0.1:{port}/hook", SECRET, max_concurrency=8)


async def _worker(backend: str, where: str, prefix: str, port: int, run: int) -> None:
    from tests.integration.test_relay_crash import _Later  # pragma: no cover

    store = _store(backend, where, prefix)  # pragma: no cover
    dispatcher = Dispatcher(  # pragma: no cover
        store,
        [_endpoint(port)],
        schedule=SCHEDULE,
        policy=LOOPBACK,
        batch_size=10,
        max_in_flight=20,
        poll_interval=0.05,
        lease=LEASE,
        # Each run past the leases of the runs killed before it, without waiting.
        clock=_Later(run * (LEASE + 1.0)),
    )
    await dispatcher.run()  # pragma: no cover


@pytest.fixture(params=["sqlite", "postgres"])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, str, str]]:
    prefix = f"crash_{uuid.uuid4().hex[:10]}"
    if request.param == "sqlite":
        path = str(tmp_path / "crash.db")
        with contextlib.closing(sqlite3.connect(path)) as conn:
            migrate(conn, prefix)
        yield "sqlite", path, prefix
        return
    from tests.conftest import require_service

    require_service("postgres")
    import psycopg

    with psycopg.connect(URL) as conn:
        migrate(conn, prefix)
    yield "postgres", URL, prefix
    _drop(prefix)


def _drop(prefix: str) -> None:
    import psycopg

    tables = ("messages", "deliveries", "attempts", "endpoints", "migrations")
    with psycopg.connect(URL, autocommit=True) as admin:
        admin.execute("DROP TABLE IF EXISTS " + ", ".join(f'"{prefix}_{t}"' for t in tables))


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    async with serve() as r:
        yield r


async def test_dispatchers_killed_mid_run_lose_no_delivery(
    receiver: Receiver, target: tuple[str, str, str]
) -> None:
    backend, where, prefix = target
    receiver.fail_every = 10
    store = _store(backend, where, prefix)
    sender = Dispatcher(store, [_endpoint(receiver.port)], policy=LOOPBACK)
    sent: list[str] = []
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    try:
        for run in range(3):
            batch = await sender.send_many([Message("t", {"run": run, "n": n}) for n in range(60)])
            sent += [msg_id for msg_id, _ in batch]
            before = len(receiver.received)
            worker = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "tests.integration.test_dispatcher_crash",
                backend, where, prefix, str(receiver.port), str(run),
                cwd=ROOT, env=env,
            )  # fmt: skip
            try:
                for _ in range(3000):  # until it delivered some, not all: then SIGKILL
                    if len(receiver.received) >= before + 20 or worker.returncode is not None:
                        break
                    await asyncio.sleep(0.01)
                assert worker.returncode is None, "the dispatcher subprocess ended early"
                assert len(receiver.received) >= before + 20, "it delivered nothing"
                more = await sender.send_many([Message("t", {"late": n}) for n in range(10)])
                sent += [msg_id for msg_id, _ in more]
            finally:
                worker.send_signal(signal.SIGKILL)
                await worker.wait()
        clock = FakeClock(wall=time.time() + 4 * (LEASE + 1.0))  # past every lease
        final = Dispatcher(
            store, [_endpoint(receiver.port)], schedule=SCHEDULE, policy=LOOPBACK, clock=clock
        )
        async with final:
            for _ in range(10):  # a failed attempt is due again 0.05 s later
                await final.drain()
                clock.advance(1.0)
        counts = await store.counts()
    finally:
        await sender.close()
        await store.close()
    assert counts == {"pending": 0, "delivered": len(sent), "dead": 0}
    got = {r.headers["webhook-id"] for r in receiver.received}
    assert got >= set(sent)  # none lost (some delivered twice: at least once)


if __name__ == "__main__":  # pragma: no cover - the dispatcher subprocess
    _backend, _where, _prefix, _port, _run = sys.argv[1:6]
    asyncio.run(_worker(_backend, _where, _prefix, int(_port), int(_run)))

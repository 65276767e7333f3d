"""The dispatcher against a receiver behind a fault-injecting proxy: refused and reset
connections are failed attempts, the endpoint's breaker opens and defers the rest
without using their attempts, and everything is delivered once the path is back."""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from buttress.clock import FakeClock
from buttress.policies.circuit import CircuitBreaker
from buttress.webhooks.dispatcher import (
    Dispatcher,
    Endpoint,
    RetrySchedule,
    SQLiteDeliveryStore,
    migrate,
)

from tests.faults import FaultProxy
from tests.unit.webhooks.test_dispatcher import LOOPBACK, SECRET, Receiver, serve


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    async with serve() as r:
        yield r


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLiteDeliveryStore]:
    path = str(tmp_path / "faults.db")
    with contextlib.closing(sqlite3.connect(path)) as conn:
        migrate(conn)
    s = SQLiteDeliveryStore(path)
    yield s
    await s.close()


def breaker(endpoint: Endpoint, clock: Any) -> CircuitBreaker:
    return CircuitBreaker(consecutive_failures=3, open_duration=30.0, clock=clock)


@pytest.mark.parametrize("mode", ["refuse", "reset"])
async def test_a_broken_path_opens_the_breaker_then_everything_is_delivered(
    receiver: Receiver, store: SQLiteDeliveryStore, mode: str
) -> None:
    clock = FakeClock(wall=time.time())
    async with FaultProxy(receiver.port, mode=mode) as proxy:  # type: ignore[arg-type]
        e = Endpoint("a", f"http://127.0.0.1:{proxy.port}/hook", SECRET, max_concurrency=1)
        d = Dispatcher(
            store,
            [e],
            schedule=RetrySchedule([0, 1, 1, 1], jitter=0),
            policy=LOOPBACK,
            breaker=breaker,
            clock=clock,
        )
        async with d:
            ids = [(await d.send("t", {"n": n}))[0] for n in range(10)]
            assert await d.drain() == 0
            states = [await d.delivery(i, "a") for i in ids]
            tried = [s for s in states if s and s.attempts]
            assert len(tried) == 3  # then the breaker opened: the others wait, untried
            assert all(s.last_status is None and s.last_error for s in tried)
            assert receiver.received == []
            await proxy.set_mode("pass")
            clock.advance(30)
            assert await d.drain() == 10
            attempts = await d.attempts(tried[0].message_id, "a")
    assert [a.status for a in attempts] == [None, 200]
    assert sorted(r.headers["webhook-id"] for r in receiver.received) == sorted(ids)

"""Many threads and tasks hammering one bulkhead: the bound holds, nothing is lost."""

from __future__ import annotations

import asyncio
import collections
import sys
import threading
from collections.abc import Iterator

import pytest

from buttress.errors import BulkheadFull
from buttress.events import CallRejected, Event
from buttress.policies.bulkhead import Bulkhead

from tests.helpers import tick, yield_gil

pytestmark = pytest.mark.stress


class Gauge:
    """Counts callers inside the bulkhead and remembers the most seen at once.

    Lock-free, so the gauge does not serialise the threads it watches: ``inside``
    holds one item per caller between its append and its pop, so its length is
    never more than the callers really inside. ``peak`` is a max written by many
    threads; a lost update can only make it lower, never higher than the truth.
    """

    def __init__(self) -> None:
        self.inside: collections.deque[None] = collections.deque()
        self.peak = 0
        self.finished: list[None] = []

    def sync_body(self) -> None:
        self.inside.append(None)
        self.peak = max(self.peak, len(self.inside))
        # A little pure-Python work so other threads get switched in mid-call.
        sum(range(20))
        self.inside.pop()
        self.finished.append(None)

    def yielding_body(self) -> None:
        """Like sync_body, but gives the GIL away mid-call (no time passes): the other
        threads surely find the slots taken, however the machine schedules them."""
        self.inside.append(None)
        self.peak = max(self.peak, len(self.inside))
        yield_gil()
        self.inside.pop()
        self.finished.append(None)

    async def async_body(self) -> None:
        self.inside.append(None)
        self.peak = max(self.peak, len(self.inside))
        try:
            await tick()
        finally:
            self.inside.pop()
            self.finished.append(None)

    @property
    def done(self) -> int:
        """Calls that ran to their end."""
        return len(self.finished)


@pytest.fixture(autouse=True)
def frequent_thread_switches() -> Iterator[None]:
    # Switch threads every 20 µs instead of 5 ms, so calls really overlap.
    previous = sys.getswitchinterval()
    sys.setswitchinterval(2e-5)
    yield
    sys.setswitchinterval(previous)


def run_threads(count: int, target: object) -> None:
    barrier = threading.Barrier(count)

    def body() -> None:
        barrier.wait()
        target()  # type: ignore[operator]

    threads = [threading.Thread(target=body) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not any(thread.is_alive() for thread in threads)


def test_sixteen_threads_never_exceed_the_limit() -> None:
    bulkhead = Bulkhead(4, max_queue=16)
    gauge = Gauge()
    calls = 10_000

    def worker() -> None:
        for index in range(calls):
            # Now and then a call gives the GIL away, so calls overlap for sure
            # however busy the machine is; the rest switch only mid-Python.
            bulkhead.call(gauge.yielding_body if index % 10 == 0 else gauge.sync_body)

    run_threads(16, worker)
    assert gauge.done == 16 * calls
    assert len(gauge.inside) == 0
    assert 2 <= gauge.peak <= 4
    assert (bulkhead.active, bulkhead.queued, bulkhead.available) == (0, 0, 4)


def test_sixteen_threads_with_rejections_count_exactly() -> None:
    bulkhead = Bulkhead(2, max_queue=1)
    gauge = Gauge()
    events: list[Event] = []
    bulkhead.subscribe(events.append)
    rejected = [0] * 16
    calls = 5_000

    def worker(index: int) -> None:
        for _ in range(calls):
            try:
                with bulkhead:
                    gauge.yielding_body()
            except BulkheadFull:
                rejected[index] += 1

    barrier = threading.Barrier(16)

    def body(index: int) -> None:
        barrier.wait()
        worker(index)

    threads = [threading.Thread(target=body, args=(i,)) for i in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert gauge.done + sum(rejected) == 16 * calls
    assert sum(rejected) > 0
    assert len(events) == sum(rejected)
    assert all(event == CallRejected(bulkhead.name, "bulkhead_full") for event in events)
    assert gauge.peak <= 2
    assert (bulkhead.active, bulkhead.queued, bulkhead.available) == (0, 0, 2)


async def test_a_thousand_tasks_never_exceed_the_limit() -> None:
    bulkhead = Bulkhead(10, max_queue=1000)
    gauge = Gauge()
    await asyncio.gather(*(bulkhead.acall(gauge.async_body) for _ in range(1000)))
    assert gauge.done == 1000
    assert gauge.peak == 10
    assert (bulkhead.active, bulkhead.queued, bulkhead.available) == (0, 0, 10)


async def test_a_thousand_tasks_some_cancelled_leak_nothing() -> None:
    bulkhead = Bulkhead(10, max_queue=1000)
    gauge = Gauge()
    tasks = [asyncio.create_task(bulkhead.acall(gauge.async_body)) for _ in range(1000)]
    await tick()
    for task in tasks[::3]:  # some running, most queued
        task.cancel()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    cancelled = sum(isinstance(result, asyncio.CancelledError) for result in results)
    assert cancelled == 334
    # Tasks 0, 3, 6 and 9 held slots and were cancelled inside the call.
    assert (gauge.done, len(gauge.inside)) == (1000 - cancelled + 4, 0)
    assert gauge.peak == 10
    assert (bulkhead.active, bulkhead.queued, bulkhead.available) == (0, 0, 10)


def test_threads_and_event_loops_share_one_bulkhead() -> None:
    bulkhead = Bulkhead(3, max_queue=64)
    gauge = Gauge()

    def thread_worker() -> None:
        for _ in range(3_000):
            bulkhead.call(gauge.sync_body)

    def loop_worker() -> None:
        async def main() -> None:
            for _ in range(10):
                await asyncio.gather(*(bulkhead.acall(gauge.async_body) for _ in range(30)))

        asyncio.run(main())

    targets = [thread_worker] * 4 + [loop_worker] * 2
    barrier = threading.Barrier(len(targets))

    def body(target: object) -> None:
        barrier.wait()
        target()  # type: ignore[operator]

    threads = [threading.Thread(target=body, args=(t,)) for t in targets]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert gauge.done == 4 * 3_000 + 2 * 10 * 30
    assert len(gauge.inside) == 0
    assert gauge.peak <= 3
    assert (bulkhead.active, bulkhead.queued, bulkhead.available) == (0, 0, 3)

"""The dispatcher against real HTTP receivers on 127.0.0.1, with a SQLite store.

The receiver (aiohttp's web server, allowed through the SSRF allowlist) is scripted
per path to answer 2xx, 500, 429 with ``Retry-After``, 410, to hang (a slow
receiver: the attempt times out) or to reset the connection. Time is a
:class:`FakeClock` (its wall time now, so the receiver can verify signatures); the
test moves it past each scheduled wait and asserts every attempt and final state.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import sqlite3
import struct
import time
from collections import defaultdict, deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from buttress.clock import FakeClock
from buttress.errors import ConfigError
from buttress.messaging.deadletters import DeadLetters
from buttress.policies.circuit import CircuitBreaker
from buttress.webhooks.dispatcher import (
    Dispatcher,
    Endpoint,
    EndpointDisabled,
    Exhausted,
    Message,
    MessageError,
    RetrySchedule,
    SQLiteDeliveryStore,
    migrate,
)
from buttress.webhooks.signing import Secret, Verifier
from buttress.webhooks.ssrf import AddressPolicy

SECRET = Secret.generate()
LOOPBACK = AddressPolicy(allow=["127.0.0.0/8"])
# A status, a status and headers, "hang" (never answer), "hold" (answer 200 after a
# moment), "reset" (reset the connection).
Answer = int | tuple[int, dict[str, str]] | str


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    """A scripted webhook receiver: answers per path in order, then ``default``."""

    port: int = 0
    script: dict[str, deque[Answer]] = field(default_factory=lambda: defaultdict(deque))
    received: list[Received] = field(default_factory=list)
    default: Answer = 200
    active: int = 0
    peak: int = 0
    """The most requests it was answering at once."""
    fail_every: int = 0
    """With ``n`` > 0, every n-th request is answered 500 (before the script)."""
    release: asyncio.Event = field(default_factory=asyncio.Event)

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def answer(self, path: str, *answers: Answer) -> None:
        self.script[path].extend(answers)

    def on(self, path: str) -> list[Received]:
        return [r for r in self.received if r.path == path]

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.received.append(Received(request.path, dict(request.headers), body))
        queue = self.script.get(request.path)
        answer = queue.popleft() if queue else self.default
        if self.fail_every and len(self.received) % self.fail_every == 0:
            answer = 500
        if answer == "hang":
            await self.release.wait()
            return web.Response(status=200)
        if answer == "hold":  # answer 200 after a moment, so requests overlap
            self.active += 1
            self.peak = max(self.peak, self.active)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.release.wait(), 0.02)
            self.active -= 1
            return web.Response(status=200)
        if answer == "reset":
            transport = request.transport
            assert transport is not None
            sock = transport.get_extra_info("socket")
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            transport.abort()
            return web.Response(status=200)
        status, headers = answer if isinstance(answer, tuple) else (answer, {})
        assert isinstance(status, int)
        return web.Response(status=status, headers=headers, text=f"answer {status}")


@contextlib.asynccontextmanager
async def serve() -> AsyncIterator[Receiver]:
    receiver = Receiver()
    app = web.Application()
    app.router.add_post("/{tail:.*}", receiver.handle)
    runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    server = site._server
    assert isinstance(server, asyncio.Server)
    receiver.port = server.sockets[0].getsockname()[1]
    try:
        yield receiver
    finally:
        receiver.release.set()
        await runner.cleanup()


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    async with serve() as r:
        yield r


@pytest.fixture
def database(tmp_path: Path) -> str:
    path = str(tmp_path / "webhooks.db")
    with contextlib.closing(sqlite3.connect(path)) as conn:
        assert migrate(conn) == ["0001_dispatcher"]
        assert migrate(conn) == []
    return path


@pytest.fixture
def wall() -> FakeClock:
    """A fake clock whose wall time is now (signatures verify against real time)."""
    return FakeClock(wall=time.time())


@pytest.fixture
async def store(database: str) -> AsyncIterator[SQLiteDeliveryStore]:
    s = SQLiteDeliveryStore(database)
    yield s
    await s.close()


def endpoint(receiver: Receiver, id: str = "a", path: str = "/hook", **kw: Any) -> Endpoint:
    return Endpoint(id, receiver.url(path), SECRET.export(), **kw)


@contextlib.asynccontextmanager
async def dispatcher(
    store: SQLiteDeliveryStore,
    endpoints: list[Endpoint],
    clock: FakeClock,
    *,
    delays: tuple[float, ...] = (0, 5, 300),
    **kw: Any,
) -> AsyncIterator[Dispatcher]:
    d = Dispatcher(
        store,
        endpoints,
        schedule=RetrySchedule(delays, jitter=0.0),
        policy=LOOPBACK,
        clock=clock,
        **kw,
    )
    async with d:
        yield d


def verify(clock: FakeClock, got: Received) -> None:
    Verifier(SECRET, clock=clock).verify(got.headers, got.body)


# -- fan-out, signing ------------------------------------------------------------------


async def test_fan_out_to_matching_enabled_endpoints_signed(
    receiver: Receiver, store: SQLiteDeliveryStore, wall: FakeClock
) -> None:
    endpoints = [
        endpoint(receiver, "inv", "/inv", event_types=["invoice.*"], headers={"X-Tenant": "t1"}),
        endpoint(receiver, "all", "/all"),
        endpoint(receiver, "users", "/users", event_types=["user.*"]),
        endpoint(receiver, "off", "/off", enabled=False),
    ]
    async with dispatcher(store, endpoints, wall) as d:
        msg_id, targets = await d.send("invoice.paid", {"amount": 42}, id="msg_1")
        assert (msg_id, sorted(targets)) == ("msg_1", ["all", "inv"])
        assert await d.drain() == 2
    assert {r.path for r in receiver.received} == {"/inv", "/all"}
    for got in receiver.received:
        verify(wall, got)
        assert got.body == b'{"amount":42}'
        assert got.headers["webhook-id"] == "msg_1"
        assert got.headers["Content-Type"] == "application/json"
    assert receiver.on("/inv")[0].headers["X-Tenant"] == "t1"
    assert (await store.counts())["delivered"] == 2


async def test_sending_the_same_id_again_adds_nothing(
    receiver: Receiver, store: SQLiteDeliveryStore, wall: FakeClock
) -> None:
    async with dispatcher(store, [endpoint(receiver)], wall) as d:
        await d.send_many([Message("t", b"raw", id="same"), Message("t", b"raw", id="same")])
        await d.send("t", b"raw", id="same")
        assert await d.drain() == 1
    assert len(receiver.received) == 1
    assert receiver.received[0].body == b"raw"


@pytest.mark.parametrize(
    "message",
    [
        Message("", {}),
        Message("t", {}, id="has space"),
        Message("t", {}, id="x" * 257),
        Message("t", object()),
        Message("t", float("nan")),
        Message("t", {}, key=3),  # type: ignore[arg-type]
    ],
)
async def test_bad_messages_are_refused_and_nothing_is_stored(
    receiver: Receiver, store: SQLiteDeliveryStore, wall: FakeClock, message: Message
) -> None:
    async with dispatcher(store, [endpoint(receiver)], wall) as d:
        with pytest.raises(MessageError):
            await d.send_many([Message("t", {}), message])
    assert await store.counts() == {"pending": 0, "delivered": 0, "dead": 0}


def test_an_endpoint_the_ssrf_policy_refuses_is_a_config_error(
    store: SQLiteDeliveryStore,
) -> None:
    with pytest.raises(ConfigError) as info:
        Dispatcher(store, [Endpoint("a", "http://127.0.0.1:8080/", SECRET)])
    assert info.value.path == "endpoints[0].url"
    e = Endpoint("a", "http://127.0.0.1/", SECRET)
    with pytest.raises(ConfigError, match="repeats"):
        Dispatcher(store, [e, e], policy=LOOPBACK)
    with pytest.raises(ConfigError) as bad_store:
        Dispatcher(object(), [e], policy=LOOPBACK)  # type: ignore[arg-type]
    assert bad_store.value.path == "storage"


async def test_a_name_resolving_to_loopback_is_refused_at_connect(
    receiver: Receiver, store: SQLiteDeliveryStore, wall: FakeClock
) -> None:
    e = Endpoint("a", f"http://localhost:{receiver.port}/hook", SECRET)
    d = Dispatcher(
        store, [e], schedule=RetrySchedule([0, 5], jitter=0), clock=wall,
        policy=AddressPolicy(ports=None),
    )  # fmt: skip
    async with d:
        msg_id, _ = await d.send("t", {})
        assert await d.drain() == 0
        (attempt,) = await d.attempts(msg_id, "a")
        state = await d.delivery(msg_id, "a")
    assert state is not None
    assert (state.status, state.attempts) == ("dead", 1)  # refused: not retried
    assert attempt.status is None
    assert attempt.error is not None
    assert "Unsafe" in attempt.error or "refus" in attempt.error.lower()
    assert receiver.received == []


# -- the retry schedule, status by status ---------------------------------------------


async def test_500_then_success_records_every_attempt_on_schedule(
    receiver: Receiver, store: SQLiteDeliveryStore, wall: FakeClock
) -> None:
    receiver.answer("/hook", 500, 503)
    async with dispatcher(store, [endpoint(receiver)], wall) as d:
        msg_id, _ = await d.send("t", {"n": 1})
        start = wall.time()
        assert await d.drain() == 0
        state = await d.delivery(msg_id, "a")
        assert state is not None
        assert (state.status, state.attempts, state.last_status) == ("pending", 1, 500)
        assert state.next_attempt_at == pytest.approx(start + 5)
        wall.advance(4.9)
        assert await d.drain() == 0  # not due yet
        assert len(receiver.received) == 1
        wall.advance(0.1)
        assert await d.drain() == 0
        state = await d.delivery(msg_id, "a")
        assert state is not None
        assert state.next_attempt_at == pytest.approx(start + 5 + 300)
        wall.advance(300)
        assert await d.drain() == 1
        attempts = await d.attempts(msg_id, "a")
        state = await d.delivery(msg_id, "a")
    assert [a.status for a in attempts] == [500, 503, 200]
    assert [a.attempt for a in attempts] == [1, 2, 3]
    assert [a.at - start for a in attempts] == pytest.approx([0, 5, 305])
    assert attempts[0].body == "answer 500"
    assert attempts[0].headers is not None
    assert "Content-Type" in attempts[0].headers
    assert all(a.latency >= 0 for a in attempts)
    assert state is not None
    assert (state.status, state.attempts) == ("delivered", 3)
    ids = {r.headers["webhook-id"] for r in receiver.received}
    assert ids == {msg_id}  # the same webhook-id on every retry
    stamps = [int(r.headers["webhook-timestamp"]) for r in receiver.received]
    assert stamps == sorted(stamps)
    assert stamps[0] < stamps[-1]
    for got in receiver.received:
        Verifier(SECRET, tolerance=1000, clock=wall).verify(got.headers, got.body)


async def test_429_retry_after_is_honoured(
    receiver: Receiver, store: SQLiteDeliveryStore, wall: FakeClock
) -> None:
    receiver.answer("/hook", (429, {"Retry-After": "120"}))
    async with dispatcher(store, [endpoint(receiver)], wall) as d:
        msg_id, _ = await d.send("t", {})
        start = wall.time()
        await d.drain()
        state = await d.delivery(msg_id, "a")
        assert state is not None
        assert state.next_attempt_at == pytest.approx(start + 120)
        wall.advance(119)
        await d.drain()
        assert len(receiver.received) == 1
        wall.advance(1)
        assert await d.drain() == 1
        assert [a.status for a in await d.attempts(msg_id, "a")] == [429, 200]


async def test_410_dead_letters_and_disables_the_endpoint(
    receiver: Receiver, store: SQLiteDeliveryStore, wall: FakeClock
) -> None:
    receiver.answer("/gone", 410)
    events: list[EndpointDisabled] = []
    gone, other = endpoint(receiver, "gone", "/gone"), endpoint(receiver, "ok", "/ok")
    async with dispatcher(store, [gone, other], wall, listeners=[events.append], batch_size=1) as d:
        first, _ = await d.send("t", {})
        second, _ = await d.send("t", {})  # both queued before the 410 came
        assert await d.drain() == 2  # the two to "ok"
        assert [e.endpoint_id for e in events] == ["gone"]
        assert events[0].reason == "410 Gone"
        gone_state = await d.delivery(first, "gone")
        assert gone_state is not None
        assert gone_state.status == "dead"
        second_state = await d.delivery(second, "gone")
        assert second_state is not None
        assert second_state.status == "dead"
        assert second_state.attempts == 0  # never tried: the endpoint was disabled
        assert len(receiver.on("/gone")) == 1
        _, targets = await d.send("t", {})
        assert targets == ["ok"]
    # A new dispatcher (a restart) knows it is disabled; enable() brings it back.
    async with dispatcher(store, [gone, other], wall) as again:
        assert (await again.send("t", {}))[1] == ["ok"]
        await again.enable("gone")
        assert sorted((await again.send("t", {}))[1]) == ["gone", "ok"]
        assert await again.drain() == 4  # with the one to "ok" sent before the restart


@pytest.mark.parametrize("status", [400, 404, 422])
async def test_a_permanent_4xx_is_not_retried(
    receiver: Receiver, store: SQLiteDeliveryStore, wall: FakeClock, status: int
) -> None:
    receiver.answer("/hook", status)
    async with dispatcher(store, [endpoint(receiver)], wall) as d:
        msg_id, _ = await d.send("t", {})
        await d.drain()
        wall.advance(10_000)
        await d.drain()
        state = await d.delivery(msg_id, "a")
    assert state is not None
    assert (state.status, state.attempts) == ("dead", 1)
    assert state.last_error == f"HTTP {status} (not retried)"
    assert len(receiver.received) == 1


async def test_a_slow_receiver_times_out_and_is_retried(
    receiver: Receiver, store: SQLiteDeliveryStore, wall: FakeClock
) -> None:
    receiver.answer("/hook", "hang")
    async with dispatcher(store, [endpoint(receiver, timeout=0.2)], wall) as d:
        msg_id, _ = await d.send("t", {})
        await d.drain()
        wall.advance(5)
        assert await d.drain() == 1
        attempts = await d.attempts(msg_id, "a")
    assert attempts[0].status is None
    assert attempts[0].error is not None
    assert "Timeout" in attempts[0].error
    assert attempts[1].status == 200


async def test_a_reset_connection_is_retried(
    receiver: Receiver, store: SQLiteDeliveryStore, wall: FakeClock
) -> None:
    receiver.answer("/hook", "reset")
    async with dispatcher(store, [endpoint(receiver)], wall) as d:
        msg_id, _ = await d.send("t", {})
        await d.drain()
        state = await d.delivery(msg_id, "a")
        assert state is not None
        assert state.status == "pending"
        assert state.last_status is None
        wall.advance(5)
        assert await d.drain() == 1
        attempts = await d.attempts(msg_id, "a")
    assert attempts[0].status is None
    assert attempts[0].error
    assert attempts[1].status == 200


# -- dead letters, hooks -----------------------------------------------------------------


async def test_exhausted_deliveries_are_dead_letters_to_replay_and_purge(
    receiver: Receiver, store: SQLiteDeliveryStore, wall: FakeClock
) -> None:
    receiver.default = 500
    hooked: list[Exhausted] = []

    async def compensate(item: Exhausted) -> None:
        hooked.append(item)

    e = endpoint(receiver, on_exhausted=compensate)
    async with dispatcher(store, [e], wall, delays=(0, 0)) as d:
        ids = [(await d.send("invoice.paid", {"n": n}))[0] for n in range(3)]
        await d.drain()  # two attempts each (no wait between them), then dead
        assert len(receiver.received) == 6
        letters = d.dead_letters()
        assert isinstance(letters, DeadLetters)
        listed = await letters.list()
        assert [x.envelope.id for x in listed if x.envelope] == ids
        first = listed[0]
        assert first.attempts == 2
        assert first.reason.startswith("2 attempts failed; last: HTTP 500")
        assert first.body == b'{"n":0}'
        assert first.dead_at is not None
        assert first.envelope is not None
        assert first.envelope.data == {"n": 0}
        assert first.envelope.type == "invoice.paid"
        assert [x.id for x in await letters.list(after=first.id)] == [x.id for x in listed[1:]]
        assert await letters.get(first.id) == first
        assert await letters.get("999999") is None
        assert sorted(h.message_id for h in hooked) == sorted(ids)  # once each

        receiver.default = 200
        assert await letters.replay([first.id]) == 1
        assert await d.drain() == 1
        state = await d.delivery(ids[0], "a")
        assert state is not None
        assert state.status == "delivered"
        assert receiver.received[-1].headers["webhook-id"] == ids[0]
        assert await letters.replay() == 2  # the rest, in bulk
        assert await d.drain() == 2
        assert await letters.list() == []
        assert len(hooked) == 3  # replayed deliveries that succeed run no hook

        receiver.default = 404
        await d.send("t", {})
        await d.drain()
        assert len(await letters.list()) == 1
        assert await letters.purge() == 1
        assert await letters.list() == []
        assert await letters.replay([]) == 0


async def test_hooks_left_pending_by_a_crash_run_at_start(
    receiver: Receiver, store: SQLiteDeliveryStore, wall: FakeClock
) -> None:
    receiver.default = 404
    calls: list[Exhausted] = []
    ran = asyncio.Event()

    def hook(item: Exhausted) -> None:
        calls.append(item)
        ran.set()

    e = endpoint(receiver, on_exhausted=hook)
    async with dispatcher(store, [e], wall) as d:
        msg_id, _ = await d.send("t", {})
        rows = await store.claim("crashed", 10, wall.time(), 60)
        (outcome,) = [await d._attempt(rows[0])]
        decision = d.engine.decide([(rows[0], outcome)], wall.time())
        await store.apply("crashed", decision, wall.time())  # dead, hook not run: crash
    assert calls == []
    async with dispatcher(store, [e], wall, poll_interval=0.01) as d2:
        task = asyncio.create_task(d2.run())
        await asyncio.wait_for(ran.wait(), 10.0)  # a bound, not a wait for time to pass
        d2.stop()
        await task
    assert [c.message_id for c in calls] == [msg_id]
    assert await store.pending_hooks(10) == []


# -- per-endpoint policies ------------------------------------------------------------


async def test_an_open_breaker_defers_without_using_attempts(
    receiver: Receiver, store: SQLiteDeliveryStore, wall: FakeClock
) -> None:
    receiver.default = 503

    def breaker(e: Endpoint, clock: Any) -> CircuitBreaker:
        return CircuitBreaker(consecutive_failures=2, open_duration=60.0, clock=clock)

    async with dispatcher(store, [endpoint(receiver, max_concurrency=1)], wall,
                          breaker=breaker, delays=(0, 1, 1, 1)) as d:  # fmt: skip
        ids = [(await d.send("t", {}))[0] for _ in range(4)]
        start = wall.time()
        await d.drain()
        assert len(receiver.received) == 2  # then the breaker opened
        states = [await d.delivery(i, "a") for i in ids]
        assert sorted(s.attempts for s in states if s) == [0, 0, 1, 1]
        deferred = [s for s in states if s and s.attempts == 0]
        assert all(s.next_attempt_at == pytest.approx(start + 60) for s in deferred)
        receiver.default = 200
        wall.advance(60)
        assert await d.drain() == 4
        after = [await d.delivery(i, "a") for i in ids]
        # The deferred ones were tried once, when the breaker let them: no attempt lost.
        assert sorted(s.attempts for s in after if s) == [1, 1, 2, 2]


async def test_the_rate_limit_defers_the_excess(
    receiver: Receiver, store: SQLiteDeliveryStore, wall: FakeClock
) -> None:
    async with dispatcher(store, [endpoint(receiver, rate_limit=2)], wall) as d:
        ids = [(await d.send("t", {}))[0] for _ in range(5)]
        start = wall.time()
        assert await d.drain() == 2
        assert (await store.counts())["pending"] == 3
        # The refused ones come back one token apart, not all at the next token.
        due = [s.next_attempt_at - start for i in ids[2:] if (s := await d.delivery(i, "a"))]
        assert due == pytest.approx([0.5, 1.0, 1.5])
        wall.advance(1.0)
        assert await d.drain() == 2
        wall.advance(1.0)
        assert await d.drain() == 1
    assert len(receiver.received) == 5


async def test_concurrency_per_endpoint_is_capped(
    receiver: Receiver, store: SQLiteDeliveryStore, wall: FakeClock
) -> None:
    receiver.default = "hold"
    async with dispatcher(store, [endpoint(receiver, max_concurrency=3)], wall) as d:
        for _ in range(12):
            await d.send("t", {})
        assert await d.drain() == 12
    assert 2 <= receiver.peak <= 3


async def test_the_worker_pool_bounds_attempts_in_flight(
    receiver: Receiver, store: SQLiteDeliveryStore
) -> None:
    receiver.default = "hold"
    endpoints = [endpoint(receiver, "a", "/a"), endpoint(receiver, "b", "/b")]
    d = Dispatcher(store, endpoints, policy=LOOPBACK, max_in_flight=5, poll_interval=0.05)
    async with d:
        task = asyncio.create_task(d.run())
        await d.send_many([Message("t", {}) for _ in range(20)])
        for _ in range(1000):
            if d.delivered == 40:
                break
            await asyncio.sleep(0.01)
        d.stop()
        await task
    assert d.delivered == 40
    assert 2 <= receiver.peak <= 5


# -- ordering ---------------------------------------------------------------------


async def test_ordered_endpoint_waits_for_each_message(
    receiver: Receiver, store: SQLiteDeliveryStore, wall: FakeClock
) -> None:
    receiver.answer("/hook", 500)  # the first message fails once
    async with dispatcher(store, [endpoint(receiver, ordering="endpoint")], wall) as d:
        ids = [(await d.send("t", {"n": n}))[0] for n in range(3)]
        await d.drain()
        assert [r.headers["webhook-id"] for r in receiver.received] == [ids[0]]
        wall.advance(5)
        assert await d.drain() == 3
    assert [r.headers["webhook-id"] for r in receiver.received] == [ids[0], *ids]


async def test_ordered_by_key_keeps_other_keys_flowing(
    receiver: Receiver, store: SQLiteDeliveryStore, wall: FakeClock
) -> None:
    receiver.answer("/hook", 500)
    async with dispatcher(store, [endpoint(receiver, ordering="key")], wall) as d:
        a1, _ = await d.send("t", {}, key="A")
        a2, _ = await d.send("t", {}, key="A")
        b1, _ = await d.send("t", {}, key="B")
        await d.drain()
        got = [r.headers["webhook-id"] for r in receiver.received]
        assert got[0] == a1
        assert b1 in got
        assert a2 not in got
        wall.advance(5)
        await d.drain()
    got = [r.headers["webhook-id"] for r in receiver.received]
    assert got.index(a2) > len(got) - 3
    assert got.count(a1) == 2


async def test_an_ordered_successor_goes_after_a_dead_letter(
    receiver: Receiver, store: SQLiteDeliveryStore, wall: FakeClock
) -> None:
    receiver.answer("/hook", 400)
    async with dispatcher(store, [endpoint(receiver, ordering="endpoint")], wall) as d:
        first, _ = await d.send("t", {})
        second, _ = await d.send("t", {})
        assert await d.drain() == 1
    assert [r.headers["webhook-id"] for r in receiver.received] == [first, second]


# -- endpoint health, leases, retention, the service -----------------------------------


async def test_an_endpoint_failing_continuously_is_disabled(
    receiver: Receiver, store: SQLiteDeliveryStore, wall: FakeClock
) -> None:
    receiver.default = 500
    events: list[EndpointDisabled] = []
    async with dispatcher(store, [endpoint(receiver)], wall, delays=(0, 600, 600, 600),
                          disable_after=1200, listeners=[events.append]) as d:  # fmt: skip
        _msg_id, _ = await d.send("t", {})
        for _ in range(3):
            await d.drain()
            wall.advance(600)
        assert [e.endpoint_id for e in events] == ["a"]
        assert "failing continuously" in events[0].reason
        assert (await d.send("t", {}))[1] == []
    failing, disabled = await store.health()
    assert "a" in disabled
    assert failing == {}


async def test_a_lease_left_by_a_dead_dispatcher_is_taken_over(
    receiver: Receiver, store: SQLiteDeliveryStore, wall: FakeClock
) -> None:
    async with dispatcher(store, [endpoint(receiver)], wall, lease=30) as d:
        await d.send("t", {})
        assert len(await store.claim("dead-one", 10, wall.time(), 30)) == 1
        assert await d.drain() == 0  # leased to the dead one
        wall.advance(30)
        assert await d.drain() == 1


async def test_retention_prunes_delivered_rows_in_batches(
    receiver: Receiver, store: SQLiteDeliveryStore, wall: FakeClock
) -> None:
    receiver.answer("/hook", 404)
    async with dispatcher(store, [endpoint(receiver)], wall, retention=3600) as d:
        dead_id, _ = await d.send("t", {})
        await d.drain()
        for _ in range(3):
            await d.send("t", {})
        await d.drain()
        assert await d.prune() == 0
        wall.advance(3601)
        assert await d.prune() == 3 * 3 + 1  # deliveries, attempts, messages; +1 attempt
        assert await store.counts() == {"pending": 0, "delivered": 0, "dead": 1}
        assert await d.dead_letters().get(str(1)) is not None  # dead letters are kept
        assert (await d.delivery(dead_id, "a")) is not None


async def test_the_service_delivers_what_is_sent_and_stops_gracefully(
    receiver: Receiver, store: SQLiteDeliveryStore
) -> None:
    e = endpoint(receiver)
    d = Dispatcher(store, [e], policy=LOOPBACK, poll_interval=5.0, max_in_flight=8,
                   batch_size=4)  # fmt: skip
    async with d:
        task = asyncio.create_task(d.run())
        await d.send_many([Message("t", {"n": n}) for n in range(50)])
        for _ in range(500):
            if (await store.counts())["delivered"] == 50:
                break
            await asyncio.sleep(0.01)
        d.stop()
        await task
        task2 = asyncio.create_task(d.run())
        await asyncio.sleep(0)
        with pytest.raises(RuntimeError, match="already running"):
            await d.run()
        with pytest.raises(RuntimeError, match="is running"):
            await d.drain()
        d.stop()
        await task2
    assert await store.counts() == {"pending": 0, "delivered": 50, "dead": 0}
    assert len({r.headers["webhook-id"] for r in receiver.received}) == 50


async def test_a_running_dispatcher_sees_endpoints_disabled_elsewhere(
    receiver: Receiver, store: SQLiteDeliveryStore, wall: FakeClock
) -> None:
    e = endpoint(receiver)
    async with dispatcher(store, [e], wall) as one, dispatcher(store, [e], wall) as other:
        assert (await other.send("t", {}))[1] == ["a"]
        await one.disable("a", "maintenance")
        await other._maybe_prune()  # what run() does every 30 s
        assert (await other.send("t", {}))[1] == []
        assert await other.drain() == 0  # the pending one is dead-lettered, not sent
        (letter,) = await other.dead_letters().list()
        assert "maintenance" in letter.reason
        await one.enable("a")
        wall.advance(31)
        await other._maybe_prune()
        assert (await other.send("t", {}))[1] == ["a"]
    assert receiver.received == []


async def test_the_default_schedule_over_a_day_then_a_dead_letter(
    receiver: Receiver, store: SQLiteDeliveryStore, wall: FakeClock
) -> None:
    receiver.default = 503
    d = Dispatcher(store, [endpoint(receiver)], policy=LOOPBACK, clock=wall, random=lambda: 0.5)
    async with d:
        msg_id, _ = await d.send("t", {})
        start = wall.time()
        await d.drain()  # the first attempt, at once
        for wait in (5, 300, 1800, 7200, 18000, 36000, 36000):
            wall.advance(wait - 0.001)
            await d.drain()  # not due yet: nothing is sent
            wall.advance(0.001)
            await d.drain()
        attempts = await d.attempts(msg_id, "a")
        state = await d.delivery(msg_id, "a")
    offsets = [round(a.at - start, 3) for a in attempts]
    assert offsets == [0, 5, 305, 2105, 9305, 27305, 63305, 99305]  # ~27.6 h
    assert [a.status for a in attempts] == [503] * 8
    assert state is not None
    assert (state.status, state.attempts) == ("dead", 8)
    assert state.last_error == "8 attempts failed; last: HTTP 503"


async def test_an_unexpected_error_is_a_failed_attempt_not_a_lost_delivery(
    receiver: Receiver,
    store: SQLiteDeliveryStore,
    wall: FakeClock,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with dispatcher(store, [endpoint(receiver)], wall) as d:
        msg_id, _ = await d.send("t", {})

        class Broken:
            def hit(self) -> None:
                raise RuntimeError("a bug")

        monkeypatch.setattr(d._lanes["a"], "limiter", Broken())
        assert await d.drain() == 0
        monkeypatch.undo()
        wall.advance(5)
        assert await d.drain() == 1
        attempts = await d.attempts(msg_id, "a")
    assert attempts[0].error == "RuntimeError: a bug"
    assert "failed unexpectedly" in caplog.text


async def test_lag_is_how_late_the_most_overdue_delivery_is(
    receiver: Receiver, store: SQLiteDeliveryStore, wall: FakeClock
) -> None:
    receiver.answer("/hook", 500)
    async with dispatcher(store, [endpoint(receiver)], wall) as d:
        assert await d.lag() == 0.0
        await d.send("t", {})
        wall.advance(7)
        assert await d.lag() == pytest.approx(7)
        await d.drain()  # failed: due again in 5 s, not late meanwhile
        assert await d.lag() == 0.0
        wall.advance(8)
        assert await d.lag() == pytest.approx(3)
        await d.drain()
        assert await d.lag() == 0.0
        assert await d.counts() == {"pending": 0, "delivered": 1, "dead": 0}

"""Shared circuit breakers against a real Redis.

Most tests simulate several processes in one: each "process" is an independent
breaker with its own :class:`BreakerSync` (its own owner id), all on one fake clock
whose wall time is sent to Redis (``time_source="client"``), and each sync is run by
hand with ``sync_once()``. One test runs real processes (multiprocessing, spawn),
one the background thread on the real clock, and the outage tests use a private
redis-server that is killed and restarted on the same port.
"""

from __future__ import annotations

import math
import multiprocessing
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from redis.crc import key_slot

from buttress.clock import FakeClock
from buttress.errors import CircuitOpen
from buttress.events import Event
from buttress.policies.circuit import (
    BreakerSync,
    CircuitBreaker,
    CircuitMetrics,
    CircuitState,
    CircuitStateChanged,
    RedisBreakerStore,
)
from buttress.stores import StoreFellBack, StoreRecovered

from tests.conftest import require_service
from tests.integration.test_stores_redis import PrivateRedis

pytestmark = pytest.mark.integration

CLOSED = CircuitState.CLOSED
OPEN = CircuitState.OPEN
HALF_OPEN = CircuitState.HALF_OPEN
ISOLATED = CircuitState.ISOLATED


class Down(OSError):
    """The protected dependency failed."""


def ok() -> str:
    return "ok"


def fail() -> str:
    raise Down("down")


def failing(breaker: CircuitBreaker, times: int = 1) -> None:
    for _ in range(times):
        with pytest.raises(Down):
            breaker.call(fail)


def succeed(breaker: CircuitBreaker, times: int = 1) -> None:
    for _ in range(times):
        assert breaker.call(ok) == "ok"


def recorder(target: CircuitBreaker | BreakerSync) -> list[Event]:
    events: list[Event] = []
    target.subscribe(events.append)
    return events


def transitions(events: list[Event]) -> list[tuple[str, str, str]]:
    return [
        (e.old.value, e.new.value, e.reason) for e in events if isinstance(e, CircuitStateChanged)
    ]


def sync_all(*syncs: BreakerSync) -> None:
    for breaker_sync in syncs:
        assert breaker_sync.sync_once()


@pytest.fixture
def client() -> Iterator[redis.Redis]:
    require_service("redis")
    client = redis.Redis(host="127.0.0.1", port=6379)
    yield client
    client.close()


@pytest.fixture
def prefix(client: redis.Redis) -> Iterator[str]:
    name = f"buttress-test-{uuid.uuid4().hex[:12]}"
    yield name
    keys = list(client.scan_iter(f"{name}:*"))
    if keys:
        client.delete(*keys)


class Cluster:
    """Several simulated processes on one fake clock: one BreakerSync each."""

    def __init__(self, client: redis.Redis, prefix: str) -> None:
        self.client = client
        self.prefix = prefix
        self.clock = FakeClock()
        self.syncs: list[BreakerSync] = []

    def sync(self, **options: Any) -> BreakerSync:
        breaker_sync = BreakerSync(
            self.client,
            background=False,
            clock=self.clock,
            time_source="client",
            prefix=self.prefix,
            **options,
        )
        self.syncs.append(breaker_sync)
        return breaker_sync

    def processes(
        self, count: int, *, name: str = "pay", **options: Any
    ) -> list[tuple[CircuitBreaker, BreakerSync]]:
        found = []
        for _ in range(count):
            breaker_sync = self.sync()
            breaker = CircuitBreaker(name=name, sync=breaker_sync, clock=self.clock, **options)
            found.append((breaker, breaker_sync))
        sync_all(*(s for _, s in found))  # every process joins
        return found

    def close(self) -> None:
        for breaker_sync in self.syncs:
            breaker_sync.close()


@pytest.fixture
def cluster(client: redis.Redis, prefix: str) -> Iterator[Cluster]:
    simulated = Cluster(client, prefix)
    yield simulated
    simulated.close()


# ---------------------------------------------------------------- tripping


def test_a_trip_in_one_process_opens_the_other(cluster: Cluster) -> None:
    (a, sa), (b, sb) = cluster.processes(2, window=10, min_calls=4, open_duration=30.0)
    events = recorder(b)
    failing(a, 4)
    assert (a.state, b.state) == (OPEN, CLOSED)
    sa.sync_once()
    sb.sync_once()
    assert b.state is OPEN
    assert b.until == a.until == 30.0
    with pytest.raises(CircuitOpen) as info:
        b.call(ok)
    assert info.value.retry_after == 30.0
    assert transitions(events) == [("closed", "open", "failure_ratio")]


def test_the_shared_window_trips_when_no_process_would_alone(cluster: Cluster) -> None:
    (a, sa), (b, sb) = cluster.processes(2, window=10, min_calls=6, failure_ratio=0.5)
    for breaker in (a, b):
        failing(breaker, 2)
        succeed(breaker)
    sa.sync_once()
    assert a.shared_metrics == CircuitMetrics(3, 2, 0, 0)
    assert a.state is CLOSED
    sb.sync_once()  # 6 calls, 4 failures: over the ratio
    assert b.state is OPEN
    assert b.shared_metrics == CircuitMetrics(6, 4, 0, 0)
    events = recorder(a)
    sa.sync_once()
    assert a.state is OPEN
    assert transitions(events) == [("closed", "open", "failure_ratio")]


def test_successes_elsewhere_are_weighed_against_failures(cluster: Cluster) -> None:
    (a, sa), (b, sb) = cluster.processes(2, window=100, min_calls=10, failure_ratio=0.5)
    failing(a, 4)
    succeed(b, 150)  # most of them on the lock-free path
    sync_all(sa, sb)
    assert b.shared_metrics == CircuitMetrics(100, 0, 0, 0)  # the last 100 outcomes
    sync_all(sa, sb)
    assert (a.state, b.state) == (CLOSED, CLOSED)


def test_the_count_window_cuts_its_oldest_chunk_pro_rata(cluster: Cluster) -> None:
    (a, sa), (b, sb) = cluster.processes(
        2, window=10, min_calls=10, failure_ratio=1.0, slow_call_duration=1.0
    )

    def slow() -> str:
        cluster.clock.advance(1.5)
        return "slow"

    failing(a, 6)
    sa.sync_once()
    assert a.shared_metrics == CircuitMetrics(6, 6, 0, 6)
    for _ in range(4):
        b.call(slow)
    succeed(b, 4)
    sb.sync_once()
    # 14 outcomes: the oldest chunk (6 failures) keeps 2 calls, and 2 failures of 6.
    assert b.shared_metrics == CircuitMetrics(10, 2, 4, 0)
    assert b.state is CLOSED


def test_the_time_window_forgets_old_buckets(cluster: Cluster) -> None:
    (a, sa), (b, sb) = cluster.processes(2, window_seconds=10, min_calls=4, failure_ratio=0.5)
    failing(a, 2)
    sa.sync_once()
    assert a.shared_metrics == CircuitMetrics(2, 2, 0, 2)
    cluster.clock.advance(11.0)
    failing(b, 1)
    succeed(b, 1)
    sb.sync_once()
    assert b.shared_metrics == CircuitMetrics(2, 1, 0, 0)  # a's failures left the window
    failing(a, 2)
    sa.sync_once()  # 4 calls, 3 failures
    assert a.state is OPEN
    sb.sync_once()
    assert b.state is OPEN


def test_consecutive_failures_add_up_across_processes(cluster: Cluster) -> None:
    (a, sa), (b, sb) = cluster.processes(2, consecutive_failures=4, min_calls=100)
    failing(a, 2)
    sa.sync_once()
    succeed(b)
    failing(b, 1)
    sb.sync_once()  # b's success ends the run: 1 failure since
    assert b.shared_metrics == CircuitMetrics(4, 3, 0, 1)
    failing(a, 1)
    sa.sync_once()
    failing(b, 1)
    sb.sync_once()
    assert b.shared_metrics == CircuitMetrics(6, 5, 0, 3)
    failing(b, 1)  # b has seen 3 in a row, a 3: neither trips alone
    assert (a.state, b.state) == (CLOSED, CLOSED)
    sb.sync_once()  # but there were 4 in a row since b's success
    assert b.state is OPEN
    events = recorder(a)
    sa.sync_once()
    assert transitions(events) == [("closed", "open", "consecutive_failures")]


def test_outcomes_of_an_era_that_is_over_are_dropped(cluster: Cluster) -> None:
    (a, sa), (b, sb) = cluster.processes(2, window=10, min_calls=4)
    failing(a, 3)  # not synced yet
    b.reset()
    sb.sync_once()
    sa.sync_once()
    assert a.shared_metrics == CircuitMetrics(0, 0, 0, 0)
    assert a.metrics == CircuitMetrics(0, 0, 0, 0)  # the reset reached a's window too
    failing(a, 1)
    sa.sync_once()
    assert a.shared_metrics == CircuitMetrics(1, 1, 0, 1)


# ---------------------------------------------------------------- recovery


def test_one_trial_in_one_process_closes_it_for_all(cluster: Cluster) -> None:
    (a, sa), (b, sb) = cluster.processes(2, window=4, min_calls=2, open_duration=10.0)
    failing(a, 2)
    sync_all(sa, sb)
    cluster.clock.advance(10.0)
    assert (a.state, b.state) == (HALF_OPEN, HALF_OPEN)
    with pytest.raises(CircuitOpen):
        a.call(ok)  # a wants a trial, the lease is not granted yet
    sync_all(sa, sb)
    with pytest.raises(CircuitOpen):
        b.call(ok)  # a holds the lease
    events = recorder(b)
    assert a.call(ok) == "ok"  # the trial
    assert a.state is CLOSED
    sync_all(sa, sb)
    assert b.state is CLOSED
    assert transitions(events) == [("half_open", "closed", "trials_succeeded")]
    succeed(b)


def test_no_more_than_half_open_calls_trials_across_processes(cluster: Cluster) -> None:
    procs = cluster.processes(3, window=4, min_calls=2, open_duration=5.0, half_open_calls=2)
    (a, sa), (b, sb), (c, sc) = procs
    failing(a, 2)
    sync_all(sa, sb, sc)
    cluster.clock.advance(5.0)
    for breaker, _ in procs:
        with pytest.raises(CircuitOpen):
            breaker.call(ok)  # everyone asks
    sync_all(sb, sa, sc)  # b asks first
    admitted = 0
    open_blocks: list[CircuitBreaker] = []
    for breaker, _ in procs:
        for _ in range(3):
            try:
                breaker.__enter__()  # a trial held open, as if still running
            except CircuitOpen:
                continue
            admitted += 1
            open_blocks.append(breaker)
    assert admitted == 2
    assert open_blocks == [b, b]
    sync_all(sa, sb, sc)  # b's trials are running: b keeps the lease
    for breaker in (a, c):
        with pytest.raises(CircuitOpen):
            breaker.call(ok)
    for breaker in open_blocks:
        breaker.__exit__(None, None, None)
    assert b.state is CLOSED
    sync_all(sb, sa, sc)
    assert (a.state, c.state) == (CLOSED, CLOSED)


def test_a_failed_trial_reopens_everywhere_for_longer(cluster: Cluster) -> None:
    (a, sa), (b, sb) = cluster.processes(
        2, window=4, min_calls=2, open_duration=10.0, open_duration_factor=2.0
    )
    failing(a, 2)
    sync_all(sa, sb)
    cluster.clock.advance(10.0)
    with pytest.raises(CircuitOpen):
        b.call(ok)
    sync_all(sb, sa)
    failing(b)  # the trial fails
    assert b.state is OPEN
    events = recorder(a)
    sync_all(sb, sa)
    assert a.state is OPEN
    assert a.until == b.until == 30.0  # 10 s, then 20 s from t=10
    assert transitions(events) == [("half_open", "open", "trial_failed")]
    cluster.clock.advance(20.0)
    with pytest.raises(CircuitOpen):
        a.call(ok)
    sync_all(sa, sb)
    assert a.call(ok) == "ok"
    sync_all(sa, sb)
    assert b.state is CLOSED


def test_the_lease_passes_on_when_its_holder_goes_quiet(cluster: Cluster) -> None:
    procs = cluster.processes(2, window=4, min_calls=2, open_duration=5.0)
    (a, sa), (b, sb) = procs
    assert sa.lease == 0.5
    failing(a, 2)
    sync_all(sa, sb)
    cluster.clock.advance(5.0)
    with pytest.raises(CircuitOpen):
        a.call(ok)
    sa.sync_once()  # a holds the lease, then never syncs again (it died)
    with pytest.raises(CircuitOpen):
        b.call(ok)
    sb.sync_once()
    with pytest.raises(CircuitOpen):
        b.call(ok)
    cluster.clock.advance(0.5)
    sb.sync_once()
    assert b.call(ok) == "ok"
    sb.sync_once()
    assert b.state is CLOSED


def test_the_holder_without_traffic_lets_the_lease_lapse(cluster: Cluster) -> None:
    procs = cluster.processes(2, window=4, min_calls=2, open_duration=5.0)
    (a, sa), (b, sb) = procs
    failing(a, 2)
    sync_all(sa, sb)
    cluster.clock.advance(5.0)
    with pytest.raises(CircuitOpen):
        a.call(ok)
    sync_all(sa, sb)  # a has the lease, but its callers went away
    for _ in range(2):
        with pytest.raises(CircuitOpen):
            b.call(ok)  # b's callers keep asking
        cluster.clock.advance(0.3)
        sync_all(sa, sb)  # a does not renew what it does not use
    assert b.call(ok) == "ok"


# ------------------------------------------------------- manual control


def test_isolate_and_reset_propagate(cluster: Cluster) -> None:
    (a, sa), (b, sb) = cluster.processes(2, window=10, min_calls=10)
    failing(b, 3)
    sb.sync_once()
    a.isolate()
    sync_all(sa, sb)
    assert b.state is ISOLATED
    assert b.until == math.inf
    with pytest.raises(CircuitOpen):
        b.call(ok)
    events = recorder(a)
    b.reset()
    sync_all(sb, sa)
    assert (a.state, b.state) == (CLOSED, CLOSED)
    assert transitions(events) == [("isolated", "closed", "reset")]
    assert a.shared_metrics == CircuitMetrics(0, 0, 0, 0)


def test_a_reset_wins_over_a_trip_made_before_it(cluster: Cluster) -> None:
    (a, sa), (b, sb) = cluster.processes(2, window=2, min_calls=2)
    failing(a, 2)  # a trips ...
    b.reset()  # ... while an operator resets the breaker through b
    sync_all(sb, sa)
    assert (a.state, b.state) == (CLOSED, CLOSED)
    sync_all(sb)
    assert b.state is CLOSED


def test_isolating_an_open_breaker_is_not_undone_by_its_open_time(cluster: Cluster) -> None:
    (a, sa), (b, sb) = cluster.processes(2, window=2, min_calls=2, open_duration=5.0)
    failing(a, 2)
    sync_all(sa, sb)
    b.isolate()
    sync_all(sb, sa)
    cluster.clock.advance(60.0)
    sync_all(sa, sb)
    assert (a.state, b.state) == (ISOLATED, ISOLATED)


# ------------------------------------------------------------- the keys


def test_keys_are_hash_tagged_and_expire(client: redis.Redis, prefix: str) -> None:
    clock = FakeClock()
    with BreakerSync(
        client, background=False, clock=clock, time_source="client", prefix=prefix, ttl=60.0
    ) as breaker_sync:
        breaker = CircuitBreaker(name="pay", window=10, sync=breaker_sync, clock=clock)
        failing(breaker, 1)
        assert breaker_sync.sync_once()
    state, window = f"{prefix}:{{circuit:pay}}:state", f"{prefix}:{{circuit:pay}}:window"
    assert RedisBreakerStore(client, prefix=prefix).keys("pay") == (state, window)
    assert key_slot(state.encode()) == key_slot(window.encode())
    assert 0 < client.pttl(state) <= 60_000
    assert 0 < client.pttl(window) <= 60_000
    fields = client.hgetall(state)
    assert fields[b"state"] == b"closed"
    assert fields[b"failures"] == b"1"
    assert client.lrange(window, 0, -1) == [b"1 1 0"]


def test_server_time_by_default(client: redis.Redis, prefix: str) -> None:
    with BreakerSync(client, background=False, prefix=prefix) as breaker_sync:
        breaker = CircuitBreaker(
            name="pay", window=2, min_calls=2, open_duration=30.0, sync=breaker_sync
        )
        breaker_sync.sync_once()
        failing(breaker, 2)
        breaker_sync.sync_once()
        until = float(client.hget(f"{prefix}:{{circuit:pay}}:state", "until") or 0)
        server_now = client.time()
        assert 29.0 < until - (server_now[0] + server_now[1] / 1e6) <= 30.0
        assert breaker.until is not None
        assert 29.0 < breaker.until - time.monotonic() <= 30.0


def test_a_store_from_a_url_is_closed_with_the_sync(prefix: str) -> None:
    require_service("redis")
    breaker_sync = BreakerSync(
        "redis://127.0.0.1:6379/0", background=False, prefix=prefix, timeout=1.0
    )
    breaker = CircuitBreaker(name="pay", sync=breaker_sync)
    assert breaker_sync.sync_once()
    store = breaker_sync._store
    assert isinstance(store, RedisBreakerStore)
    assert store._clients._sync is not None
    breaker_sync.close()
    assert store._clients._sync is None
    assert breaker.call(ok) == "ok"


# ------------------------------------------------------ a private server


@pytest.fixture
def private_redis() -> Iterator[PrivateRedis]:
    require_service("redis")  # the same binary; skips where Redis is absent
    server = PrivateRedis()
    server.start()
    yield server
    server.stop()


def test_one_round_trip_for_every_breaker(
    private_redis: PrivateRedis, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = private_redis.client()
    clock = FakeClock()
    with BreakerSync(client, background=False, clock=clock) as breaker_sync:
        breakers = [CircuitBreaker(name=f"b{i}", sync=breaker_sync, clock=clock) for i in range(20)]
        assert breaker_sync.sync_once()  # loads the script
        sends = 0
        original = redis.connection.Connection.send_packed_command

        def counting(self: Any, command: Any, check_health: bool = True) -> None:
            nonlocal sends
            sends += 1
            original(self, command, check_health)

        monkeypatch.setattr(redis.connection.Connection, "send_packed_command", counting)
        assert breaker_sync.sync_once()
        monkeypatch.undo()
        assert sends == 1
        assert len(client.keys("buttress:{circuit:b*}:state")) == len(breakers)
    client.close()


def test_the_script_is_reloaded_after_a_flush(private_redis: PrivateRedis) -> None:
    client = private_redis.client()
    clock = FakeClock()
    with BreakerSync(client, background=False, clock=clock) as breaker_sync:
        breaker = CircuitBreaker(name="pay", window=2, min_calls=2, sync=breaker_sync, clock=clock)
        assert breaker_sync.sync_once()
        client.script_flush()
        failing(breaker, 1)
        assert breaker_sync.sync_once()
        assert breaker.shared_metrics == CircuitMetrics(1, 1, 0, 1)
    client.close()


def _sync_until_it_answers(breaker_sync: BreakerSync) -> None:
    # A client's first command after the server restarted may still meet the dead
    # connection; the next one reconnects.
    for _ in range(5):
        if breaker_sync.sync_once():
            return
    raise AssertionError("the sync did not re-join")


def test_an_outage_never_reaches_the_callers_and_the_breakers_rejoin(
    private_redis: PrivateRedis,
) -> None:
    clock = FakeClock()
    options = {"window": 4, "min_calls": 2, "open_duration": 10.0, "clock": clock}
    syncs = [
        BreakerSync(
            private_redis.url, background=False, clock=clock, time_source="client", timeout=1.0
        )
        for _ in range(2)
    ]
    sa, sb = syncs
    a = CircuitBreaker(name="pay", sync=sa, **options)  # type: ignore[arg-type]
    b = CircuitBreaker(name="pay", sync=sb, **options)  # type: ignore[arg-type]
    events = recorder(sa)
    b_events = recorder(b)
    try:
        sync_all(sa, sb)
        succeed(a, 3)
        sync_all(sa, sb)
        private_redis.stop()

        assert not sa.sync_once()
        assert not sb.sync_once()
        assert (sa.degraded, sb.degraded) == (True, True)
        # Alone, each breaker still breaks: a trips on its own failures.
        failing(a, 2)
        assert (a.state, b.state) == (OPEN, CLOSED)
        succeed(b, 5)
        assert not sa.sync_once()  # still down: one event per outage, not per sync
        assert [type(e) for e in events] == [StoreFellBack]

        clock.advance(3.0)
        private_redis.start()  # same port, empty: the shared state is gone
        _sync_until_it_answers(sa)  # a re-joins and pushes the trip it made alone
        _sync_until_it_answers(sb)
        assert b.state is OPEN
        assert b.until == a.until
        assert transitions(b_events) == [("closed", "open", "failure_ratio")]
        assert [type(e) for e in events] == [StoreFellBack, StoreRecovered]
        recovered = events[-1]
        assert isinstance(recovered, StoreRecovered)
        assert recovered.down_for == 3.0
        # b's outcomes while away were not pushed into the fresh window.
        assert b.shared_metrics == CircuitMetrics(0, 0, 0, 0)
    finally:
        for breaker_sync in syncs:
            breaker_sync.close()


def test_a_live_outage_with_the_background_thread(private_redis: PrivateRedis) -> None:
    events: list[Event] = []
    switched = threading.Condition()

    def listener(event: Event) -> None:
        with switched:
            events.append(event)
            switched.notify_all()

    def wait_for(count: int) -> None:
        with switched:
            assert switched.wait_for(lambda: len(events) >= count, timeout=15)

    with BreakerSync(private_redis.url, interval=0.02, timeout=0.2) as breaker_sync:
        breaker_sync.subscribe(listener)
        breaker = CircuitBreaker(name="live", window=4, min_calls=4, sync=breaker_sync)
        guarded = breaker(ok)
        stop = threading.Event()
        errors: list[BaseException] = []
        served = [0]

        def caller() -> None:
            while not stop.is_set():
                try:
                    guarded()
                    served[0] += 1
                except BaseException as exc:
                    errors.append(exc)
                    return

        thread = threading.Thread(target=caller)
        thread.start()
        try:
            private_redis.stop()
            wait_for(1)
            before = served[0]
            private_redis.start()
            wait_for(2)
        finally:
            stop.set()
            thread.join()
        assert errors == []
        assert served[0] > before
        assert [type(e) for e in events] == [StoreFellBack, StoreRecovered]
        assert breaker.state is CLOSED


# ------------------------------------------------------------ real time


def test_the_thread_brings_a_trip_to_the_others_within_an_interval(
    client: redis.Redis, prefix: str
) -> None:
    interval = 0.1
    with (
        BreakerSync(client, interval=interval, prefix=prefix) as sa,
        BreakerSync(client, interval=interval, prefix=prefix) as sb,
    ):
        a = CircuitBreaker(name="pay", window=4, min_calls=4, sync=sa)
        b = CircuitBreaker(name="pay", window=4, min_calls=4, sync=sb)
        opened = threading.Event()
        b.subscribe(lambda event: opened.set(), CircuitStateChanged)
        joined = threading.Event()
        for _ in range(200):  # both threads have joined the shared state
            if a.shared_metrics is not None and b.shared_metrics is not None:
                joined.set()
                break
            joined.wait(0.01)
        assert joined.is_set()
        failing(a, 4)
        tripped = time.monotonic()
        assert opened.wait(5)
        seen_after = time.monotonic() - tripped
        assert b.state is OPEN
        # One interval, plus two round trips and thread scheduling.
        assert seen_after < interval + 0.05, seen_after


def _process(role: str, prefix: str, shared: tuple[Any, Any, Any], interval: float) -> None:
    """One real process: ``a`` fails until its breaker trips, ``b`` only watches."""
    tripped, done, results = shared
    sync = BreakerSync("redis://127.0.0.1:6379/0", interval=interval, prefix=prefix, timeout=1.0)
    breaker = CircuitBreaker(name="pay", window=10, min_calls=5, sync=sync)
    opened = threading.Event()
    breaker.subscribe(
        lambda event: opened.set() if event.new is CircuitState.OPEN else None,
        CircuitStateChanged,
    )
    try:
        pause = threading.Event()
        while breaker.shared_metrics is None:  # joined
            pause.wait(0.005)
        results.put((role, "joined"))
        if role == "a":
            done.wait(10)  # b has joined too
            while breaker.state is CircuitState.CLOSED:
                try:
                    breaker.call(fail)
                except (Down, CircuitOpen):
                    pass
            tripped.value = time.time()
            results.put((role, "tripped"))
        else:
            done.set()
            assert opened.wait(10)
            results.put((role, time.time()))
    finally:
        sync.close()


def test_real_processes_trip_together(client: redis.Redis, prefix: str) -> None:
    context = multiprocessing.get_context("spawn")
    tripped = context.Value("d", 0.0)
    done = context.Event()
    results = context.Queue()
    interval = 0.1
    processes = [
        context.Process(target=_process, args=(role, prefix, (tripped, done, results), interval))
        for role in ("a", "b")
    ]
    for process in processes:
        process.start()
    try:
        got = [results.get(timeout=60) for _ in range(4)]
    finally:
        for process in processes:
            process.join(30)
    assert [p.exitcode for p in processes] == [0, 0]
    seen = dict(item for item in got if item[1] != "joined")
    assert seen["a"] == "tripped"
    lag = seen["b"] - tripped.value
    assert lag < interval + 0.1, lag


def test_a_forked_child_syncs_on_its_own(client: redis.Redis, prefix: str) -> None:
    interval = 0.05
    with (
        BreakerSync(client, interval=interval, prefix=prefix) as parent_sync,
        BreakerSync(client, interval=interval, prefix=prefix) as other_sync,
    ):
        inherited = CircuitBreaker(name="pay", window=4, min_calls=4, sync=parent_sync)
        other = CircuitBreaker(name="pay", window=4, min_calls=4, sync=other_sync)
        opened = threading.Event()
        other.subscribe(lambda event: opened.set(), CircuitStateChanged)
        context = multiprocessing.get_context("fork")
        owners = context.Queue()

        def child() -> None:
            # The parent's thread did not come along: the child has its own sync.
            pause = threading.Event()
            for _ in range(500):
                if inherited.shared_metrics is not None:
                    break
                pause.wait(0.01)
            owners.put((parent_sync.owner, inherited.shared_metrics is not None))
            for _ in range(4):
                try:
                    inherited.call(fail)
                except Down:
                    pass
            parent_sync.close()  # pushes the trip before the child exits

        parent_owner = parent_sync.owner
        process = context.Process(target=child)
        process.start()
        try:
            child_owner, joined = owners.get(timeout=30)
            process.join(30)
        finally:
            if process.is_alive():  # a stuck child must fail the test, not hang the run
                process.kill()
                process.join(5)
        assert process.exitcode == 0
        assert joined
        assert child_owner != parent_owner
        assert opened.wait(5)
        assert other.state is OPEN
        assert parent_sync._thread is not None
        assert parent_sync._thread.is_alive()

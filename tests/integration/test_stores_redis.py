"""Stores against a real Redis: the memory and Redis twins decide alike, and more.

The shared suite runs the same sequences, with explicit times, on the memory store
and on the Redis store (whose Lua twins then use the given time) and expects the
same decisions. The rest covers what only Redis does: script reloading, server
time, hash-tagged keys with TTLs, batches in one round trip, error mapping, and the
fallback store riding out a Redis that dies and comes back (on a private
redis-server, never the shared one).
"""

from __future__ import annotations

import itertools
import math
import socket
import subprocess
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import redis
import redis.asyncio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis.crc import key_slot

from buttress.clock import FakeClock
from buttress.events import Event
from buttress.ratelimit import GCRA, Decision, FixedWindow, SlidingWindow, TokenBucket
from buttress.stores import (
    FallbackStore,
    MemoryStore,
    RedisStore,
    Store,
    StoreError,
    StoreFellBack,
    StoreRecovered,
    StoreUnavailable,
    store_from_url,
)
from buttress.stores.base import Algorithm
from buttress.stores.redis import run_scripts, script

from tests.conftest import require_service

pytestmark = pytest.mark.integration

INF = math.inf


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


@pytest.fixture
async def aclient() -> AsyncIterator[redis.asyncio.Redis]:
    require_service("redis")
    client = redis.asyncio.Redis(host="127.0.0.1", port=6379)
    yield client
    await client.aclose()


@pytest.fixture(params=["memory", "redis"])
def store(request: pytest.FixtureRequest) -> Store:
    if request.param == "memory":
        return MemoryStore(clock=FakeClock())
    client = request.getfixturevalue("client")
    return RedisStore(client, prefix=request.getfixturevalue("prefix"))


def same(a: Decision, b: Decision) -> bool:
    floats_match = all(x == y or abs(x - y) <= 1e-6 for x, y in ((a[3], b[3]), (a[4], b[4])))
    return a[:3] == b[:3] and floats_match


# ------------------------------------------------------------ the shared suite

# (algorithm, [(now, cost, expected decision)]) — every store must give exactly these.
SEQUENCES: list[tuple[Algorithm, list[tuple[float, int, Decision]]]] = [
    (
        TokenBucket(rate=2, period=1.0, burst=3),
        [
            (10.0, 1, Decision(True, 3, 2, 0.5, 0.0)),
            (10.0, 2, Decision(True, 3, 0, 1.5, 0.0)),
            (10.0, 1, Decision(False, 3, 0, 1.5, 0.5)),
            (10.25, 1, Decision(False, 3, 0, 1.25, 0.25)),
            (10.5, 1, Decision(True, 3, 0, 1.5, 0.0)),
            (10.5, 4, Decision(False, 3, 0, 1.5, INF)),
            (20.0, 0, Decision(True, 3, 3, 0.0, 0.0)),
        ],
    ),
    (
        GCRA(rate=10, period=1.0, burst=2),
        [
            (100.0, 1, Decision(True, 2, 1, 0.1, 0.0)),
            (100.0, 1, Decision(True, 2, 0, 0.2, 0.0)),
            (100.0, 1, Decision(False, 2, 0, 0.2, 0.1)),
            (100.15, 1, Decision(True, 2, 0, 0.15, 0.0)),
            (100.15, 3, Decision(False, 2, 0, 0.15, INF)),
            (105.0, 2, Decision(True, 2, 0, 0.2, 0.0)),
        ],
    ),
    (
        FixedWindow(limit=3, period=10.0),
        [
            (12.0, 2, Decision(True, 3, 1, 8.0, 0.0)),
            (15.0, 2, Decision(False, 3, 1, 5.0, 5.0)),
            (15.0, 1, Decision(True, 3, 0, 5.0, 0.0)),
            (19.5, 1, Decision(False, 3, 0, 0.5, 0.5)),
            (20.0, 1, Decision(True, 3, 2, 10.0, 0.0)),
            (21.0, 4, Decision(False, 3, 2, 9.0, INF)),
        ],
    ),
    (
        SlidingWindow(limit=4, period=10.0),
        [
            (5.0, 4, Decision(True, 4, 0, 15.0, 0.0)),
            (12.5, 1, Decision(True, 4, 0, 17.5, 0.0)),
            (12.5, 1, Decision(False, 4, 0, 17.5, 2.5)),
            (15.0, 1, Decision(True, 4, 0, 15.0, 0.0)),
            (25.0, 1, Decision(True, 4, 2, 15.0, 0.0)),
            (40.0, 0, Decision(True, 4, 4, 0.0, 0.0)),
        ],
    ),
]


@pytest.mark.parametrize(
    ("algorithm", "steps"), SEQUENCES, ids=["token_bucket", "gcra", "fixed", "sliding"]
)
def test_every_store_gives_the_same_decisions(
    store: Store, algorithm: Algorithm, steps: list[tuple[float, int, Decision]]
) -> None:
    for now, cost, expected in steps:
        decision = store.decide("k", algorithm, cost, now=now)
        assert same(decision, expected), (now, cost, decision, expected)
    # Other keys are untouched.
    assert (
        store.decide("other", algorithm, 0, now=steps[-1][0]).remaining
        == algorithm.decide(None, 0.0, 0)[1].remaining
    )


@pytest.mark.parametrize(
    ("algorithm", "steps"), SEQUENCES, ids=["token_bucket", "gcra", "fixed", "sliding"]
)
def test_batches_give_the_same_decisions(
    store: Store, algorithm: Algorithm, steps: list[tuple[float, int, Decision]]
) -> None:
    now = steps[0][0]
    batch = [("k", algorithm, cost) for t, cost, _ in steps if t == now]
    expected = [d for t, _, d in steps if t == now]
    decisions = store.decide_many(batch, now=now)
    assert all(same(d, e) for d, e in zip(decisions, expected, strict=True)), decisions
    assert store.decide_many([], now=now) == []


def test_reset_forgets_a_key(store: Store) -> None:
    window = FixedWindow(1, 60)
    assert store.decide("k", window, now=1.0).allowed
    assert not store.decide("k", window, now=2.0).allowed
    store.reset("k", window)
    assert store.decide("k", window, now=3.0).allowed


algorithms = st.one_of(
    st.builds(
        lambda cls, rate, period, burst: cls(rate, period, burst),
        st.sampled_from([TokenBucket, GCRA]),
        st.floats(0.1, 20.0),
        st.floats(0.5, 10.0),
        st.integers(1, 6),
    ),
    st.builds(
        lambda cls, limit, period: cls(limit, period),
        st.sampled_from([FixedWindow, SlidingWindow]),
        st.integers(1, 6),
        st.floats(0.5, 10.0),
    ),
)
sequences = st.lists(
    st.tuples(
        st.sampled_from(["a", "b", "c"]),
        st.one_of(st.just(0.0), st.floats(0.0, 4.0)),
        st.integers(0, 4),
    ),
    min_size=1,
    max_size=40,
)
_examples = itertools.count()


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(algorithm=algorithms, steps=sequences, start=st.floats(0.0, 2e9))
def test_memory_and_redis_twins_agree(
    client: redis.Redis, prefix: str, algorithm: Algorithm, steps: list[Any], start: float
) -> None:
    memory = MemoryStore()
    remote = RedisStore(client, prefix=prefix)
    run = next(_examples)
    now = start
    for key, dt, cost in steps:
        now += dt
        mine = memory.decide(key, algorithm, cost, now=now)
        theirs = remote.decide(f"{run}:{key}", algorithm, cost, now=now)
        assert same(mine, theirs), (key, now, cost, mine, theirs)


async def test_async_twin_agrees(
    aclient: redis.asyncio.Redis, client: redis.Redis, prefix: str
) -> None:
    memory = MemoryStore()
    remote = RedisStore(async_client=aclient, prefix=prefix)
    for algorithm, steps in SEQUENCES:
        for now, cost, _ in steps:
            assert same(
                await memory.adecide("k", algorithm, cost, now=now),
                await remote.adecide("k", algorithm, cost, now=now),
            )
        batch = [("b", algorithm, 1), ("b", algorithm, 1)]
        mine = await memory.adecide_many(batch, now=50.0)
        theirs = await remote.adecide_many(batch, now=50.0)
        assert all(same(m, t) for m, t in zip(mine, theirs, strict=True))
    await remote.areset("k", FixedWindow(3, 10.0))
    assert not client.exists(remote.key("k", FixedWindow(3, 10.0)))


# ------------------------------------------------ the shared suite, several limits

# (limits, [(now, cost, expected decisions)]): all or nothing, on every store.
SEQUENCES_ALL: list[tuple[tuple[Algorithm, ...], list[tuple[float, int, tuple[Decision, ...]]]]] = [
    (
        (TokenBucket(rate=2, period=1.0, burst=2), FixedWindow(limit=3, period=10.0)),
        [
            (12.0, 1, (Decision(True, 2, 1, 0.5, 0.0), Decision(True, 3, 2, 8.0, 0.0))),
            (12.0, 1, (Decision(True, 2, 0, 1.0, 0.0), Decision(True, 3, 1, 8.0, 0.0))),
            # The bucket refuses: the window reports its standing and keeps its count.
            (12.0, 1, (Decision(False, 2, 0, 1.0, 0.5), Decision(True, 3, 1, 8.0, 0.0))),
            (13.0, 1, (Decision(True, 2, 1, 0.5, 0.0), Decision(True, 3, 0, 7.0, 0.0))),
            # Now the window refuses, and the bucket keeps its token.
            (13.0, 1, (Decision(True, 2, 1, 0.5, 0.0), Decision(False, 3, 0, 7.0, 7.0))),
            (20.0, 2, (Decision(True, 2, 0, 1.0, 0.0), Decision(True, 3, 1, 10.0, 0.0))),
            (20.0, 3, (Decision(False, 2, 0, 1.0, INF), Decision(False, 3, 1, 10.0, 10.0))),
        ],
    ),
    (
        # Two limits of one kind keep separate states (slots tb and tb.2), plus GCRA.
        (TokenBucket(rate=1, period=1.0, burst=2), TokenBucket(rate=3, period=60.0), GCRA(10)),
        [
            (
                0.0,
                2,
                (
                    Decision(True, 2, 0, 2.0, 0.0),
                    Decision(True, 3, 1, 40.0, 0.0),
                    Decision(True, 10, 8, 0.2, 0.0),
                ),
            ),
            (
                1.0,
                1,
                (
                    Decision(True, 2, 0, 2.0, 0.0),
                    Decision(True, 3, 0, 59.0, 0.0),
                    Decision(True, 10, 9, 0.1, 0.0),
                ),
            ),
            (
                3.0,
                1,
                (
                    Decision(True, 2, 2, 0.0, 0.0),
                    Decision(False, 3, 0, 57.0, 17.0),
                    Decision(True, 10, 10, 0.0, 0.0),
                ),
            ),
        ],
    ),
    (
        (SlidingWindow(limit=4, period=10.0),),
        [
            (5.0, 4, (Decision(True, 4, 0, 15.0, 0.0),)),
            (12.5, 1, (Decision(True, 4, 0, 17.5, 0.0),)),
            (12.5, 1, (Decision(False, 4, 0, 17.5, 2.5),)),
        ],
    ),
]


def same_all(a: tuple[Decision, ...], b: tuple[Decision, ...]) -> bool:
    return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))


@pytest.mark.parametrize(("limits", "steps"), SEQUENCES_ALL, ids=["tb+fw", "tb+tb+gcra", "sw"])
def test_every_store_decides_several_limits_alike(
    store: Store,
    limits: tuple[Algorithm, ...],
    steps: list[tuple[float, int, tuple[Decision, ...]]],
) -> None:
    for now, cost, expected in steps:
        decisions = store.decide_all("k", limits, cost, now=now)
        assert same_all(decisions, expected), (now, cost, decisions, expected)
    # A single decision sees the first limit's slot.
    assert same(
        store.decide("k", limits[0], 0, now=steps[-1][0]),
        store.decide_all("k", limits, 0, now=steps[-1][0])[0],
    )
    store.reset_all("k", limits)
    fresh = store.decide_all("k", limits, 0, now=steps[-1][0])
    assert [d.remaining for d in fresh] == [d.limit for d in fresh]


@pytest.mark.parametrize(("limits", "steps"), SEQUENCES_ALL, ids=["tb+fw", "tb+tb+gcra", "sw"])
def test_several_limits_in_batches(
    store: Store,
    limits: tuple[Algorithm, ...],
    steps: list[tuple[float, int, tuple[Decision, ...]]],
) -> None:
    now = steps[0][0]
    batch = [("k", limits, cost) for t, cost, _ in steps if t == now]
    expected = [d for t, _, d in steps if t == now]
    decisions = store.decide_all_many(batch, now=now)
    assert all(same_all(d, e) for d, e in zip(decisions, expected, strict=True)), decisions
    assert store.decide_all_many([], now=now) == []


limit_lists = st.lists(algorithms, min_size=1, max_size=4).map(tuple)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(limits=limit_lists, steps=sequences, start=st.floats(0.0, 2e9))
def test_memory_and_redis_agree_on_several_limits(
    client: redis.Redis,
    prefix: str,
    limits: tuple[Algorithm, ...],
    steps: list[Any],
    start: float,
) -> None:
    memory = MemoryStore()
    remote = RedisStore(client, prefix=prefix)
    run = next(_examples)
    now = start
    for key, dt, cost in steps:
        now += dt
        mine = memory.decide_all(key, limits, cost, now=now)
        theirs = remote.decide_all(f"{run}:{key}", limits, cost, now=now)
        assert same_all(mine, theirs), (key, now, cost, mine, theirs)


async def test_async_twins_agree_on_several_limits(
    aclient: redis.asyncio.Redis, client: redis.Redis, prefix: str
) -> None:
    memory = MemoryStore()
    remote = RedisStore(async_client=aclient, prefix=prefix)
    for limits, steps in SEQUENCES_ALL:
        for now, cost, _ in steps:
            assert same_all(
                await memory.adecide_all("k", limits, cost, now=now),
                await remote.adecide_all("k", limits, cost, now=now),
            )
        batch = [("b", limits, 1), ("b", limits, 1)]
        mine = await memory.adecide_all_many(batch, now=50.0)
        theirs = await remote.adecide_all_many(batch, now=50.0)
        assert all(same_all(m, t) for m, t in zip(mine, theirs, strict=True))
        await remote.areset_all("k", limits)
        assert not any(client.exists(key) for key in remote.keys_of("k", limits))


def test_several_limits_share_one_cluster_slot_and_expire(client: redis.Redis, prefix: str) -> None:
    store = RedisStore(client, prefix=prefix, ttl_slack=0.0)
    limits = (
        TokenBucket(rate=1, burst=10),
        FixedWindow(100, 60.0),
        TokenBucket(rate=10, period=60.0),
    )
    keys = store.keys_of("user:42", limits)
    tag = f"{prefix}:{{user:42}}"
    assert keys == [f"{tag}:tb", f"{tag}:fw", f"{tag}:tb.2"]
    assert len({key_slot(key.encode()) for key in keys}) == 1
    store.decide_all("user:42", limits, cost=4, now=30.0)
    assert [round(client.pttl(key) / 1000) for key in keys] == [4, 30, 24]
    # A refusal writes nothing, not even the states it read.
    before = [client.get(key) for key in keys]
    refused = store.decide_all("user:42", limits, 7, now=31.0)
    assert [d.allowed for d in refused] == [True, True, False]
    assert [client.get(key) for key in keys] == before
    store.reset_all("user:42", limits)
    assert not any(client.exists(key) for key in keys)


def test_several_limits_errors_are_mapped(client: redis.Redis, prefix: str) -> None:
    dead = RedisStore.from_url(f"redis://127.0.0.1:{free_port()}/0", timeout=0.5)
    limits = (TokenBucket(1), FixedWindow(1))
    with pytest.raises(StoreUnavailable):
        dead.decide_all("k", limits)
    with pytest.raises(StoreUnavailable):
        dead.decide_all_many([("k", limits, 1)])
    with pytest.raises(StoreUnavailable):
        dead.reset_all("k", limits)
    dead.close()
    store = RedisStore(client, prefix=prefix)
    with pytest.raises(ValueError, match="cost"):
        store.decide_all("k", limits, -1)
    with pytest.raises(ValueError, match="algorithm"):
        store.decide_all("k", ())


async def test_async_several_limits_errors_are_mapped() -> None:
    dead = RedisStore.from_url(f"redis://127.0.0.1:{free_port()}/0", timeout=0.5)
    limits = (TokenBucket(1), FixedWindow(1))
    with pytest.raises(StoreUnavailable):
        await dead.adecide_all("k", limits)
    with pytest.raises(StoreUnavailable):
        await dead.adecide_all_many([("k", limits, 1)])
    with pytest.raises(StoreUnavailable):
        await dead.areset_all("k", limits)
    await dead.aclose()


# ---------------------------------------------------------- Redis specifics


def test_server_time_is_the_default(client: redis.Redis, prefix: str) -> None:
    store = RedisStore(client, prefix=prefix, clock=FakeClock(wall=1.0))
    gcra = GCRA(rate=1, period=1.0, burst=5)
    seconds, micros = client.time()
    store.decide("k", gcra)
    (tat,) = (float(x) for x in client.get(store.key("k", gcra)).split())  # type: ignore[union-attr]
    # The stored arrival time is the server's now plus one interval.
    assert tat - 1.0 == pytest.approx(seconds + micros / 1e6, abs=5.0)


def test_client_time_on_request(client: redis.Redis, prefix: str) -> None:
    store = RedisStore(client, prefix=prefix, time_source="client", clock=FakeClock(wall=5000.0))
    gcra = GCRA(rate=1, period=1.0, burst=5)
    store.decide("k", gcra)
    assert client.get(store.key("k", gcra)) == b"5001"
    store.decide_many([("k", gcra, 1)])
    assert client.get(store.key("k", gcra)) == b"5002"


def test_keys_are_hash_tagged_and_expire(client: redis.Redis, prefix: str) -> None:
    store = RedisStore(client, prefix=prefix, ttl_slack=0.0)
    bucket = TokenBucket(rate=1, burst=10)
    assert store.key("user:42", bucket) == f"{prefix}:{{user:42}}:tb"
    assert key_slot(store.key("user:42", bucket).encode()) == key_slot(
        store.key("user:42", GCRA(1)).encode()
    )
    decision = store.decide("user:42", bucket, cost=4)
    assert decision.reset_after == pytest.approx(4.0, abs=1e-3)
    assert 3000 < client.pttl(store.key("user:42", bucket)) <= 4000

    slack = RedisStore(client, prefix=prefix, ttl_slack=1.0)
    slack.decide("user:43", bucket, cost=4)
    assert 4000 < client.pttl(slack.key("user:43", bucket)) <= 5000


def test_fresh_states_are_not_kept(client: redis.Redis, prefix: str) -> None:
    store = RedisStore(client, prefix=prefix)
    window = FixedWindow(2, 10.0)
    store.decide("k", window, 0, now=1.0)
    assert not client.exists(store.key("k", window))
    store.decide("k", window, 1, now=1.0)
    assert client.exists(store.key("k", window))
    store.decide("k", window, 0, now=11.0)  # the window is over: the state is deleted
    assert not client.exists(store.key("k", window))


def test_errors_are_mapped(client: redis.Redis, prefix: str) -> None:
    dead = RedisStore.from_url(f"redis://127.0.0.1:{free_port()}/0", timeout=0.5, name="dead")
    with pytest.raises(StoreUnavailable) as info:
        dead.decide("k", TokenBucket(1))
    assert isinstance(info.value.__cause__, redis.ConnectionError)
    assert info.value.store == "dead"
    with pytest.raises(StoreUnavailable):
        dead.decide_many([("k", TokenBucket(1), 1)])
    with pytest.raises(StoreUnavailable):
        dead.reset("k", TokenBucket(1))
    dead.close()

    store = RedisStore(client, prefix=prefix)
    client.hset(store.key("k", TokenBucket(1)), "x", 1)  # WRONGTYPE for GET
    with pytest.raises(StoreError) as wrong:
        store.decide("k", TokenBucket(1))
    assert not isinstance(wrong.value, StoreUnavailable)
    with pytest.raises(StoreError):
        store.decide_many([("k", TokenBucket(1), 1)])
    with pytest.raises(ValueError, match="cost"):
        store.decide("k", TokenBucket(1), -1)


async def test_async_errors_are_mapped() -> None:
    dead = RedisStore.from_url(f"redis://127.0.0.1:{free_port()}/0", timeout=0.5)
    with pytest.raises(StoreUnavailable):
        await dead.adecide("k", TokenBucket(1))
    with pytest.raises(StoreUnavailable):
        await dead.adecide_many([("k", TokenBucket(1), 1)])
    with pytest.raises(StoreUnavailable):
        await dead.areset("k", TokenBucket(1))
    await dead.aclose()


def test_from_url_and_configuration(prefix: str) -> None:
    require_service("redis")
    store = store_from_url("redis://127.0.0.1:6379/0", prefix=prefix)
    assert isinstance(store, RedisStore)
    assert store.decide("k", FixedWindow(1, 60), now=1.0).allowed
    store.close()
    wrapped = store_from_url("redis://127.0.0.1:6379/0", fallback=True, prefix=prefix)
    assert isinstance(wrapped, FallbackStore)
    assert isinstance(wrapped.primary, RedisStore)
    wrapped.close()
    for bad in ("postgres://x", "nothing"):
        with pytest.raises(ValueError, match="url"):
            store_from_url(bad)
    with pytest.raises(ValueError, match="time_source"):
        RedisStore(redis.Redis(), time_source="local")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="client"):
        RedisStore()


# ------------------------------------------------------- a private redis-server


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class PrivateRedis:
    """A redis-server of our own on a free port, to stop and start at will."""

    def __init__(self) -> None:
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                *("redis-server", "--port", str(self.port), "--bind", "127.0.0.1"),
                *("--save", "", "--appendonly", "no"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        pause = threading.Event()
        for _ in range(250):
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.1):
                    return
            except OSError:
                pause.wait(0.02)
        raise RuntimeError("private redis-server did not start")

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait(10)
            self.process = None

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port)


@pytest.fixture
def private_redis() -> Iterator[PrivateRedis]:
    require_service("redis")  # the same binary; skips where Redis is absent
    server = PrivateRedis()
    server.start()
    yield server
    server.stop()


def test_a_batch_of_100_is_one_round_trip(
    private_redis: PrivateRedis, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = private_redis.client()
    store = RedisStore(client)
    bucket = TokenBucket(10)
    store.decide("warm", bucket)  # loads the script

    def evalsha_calls() -> int:
        stats: dict[str, Any] = client.info("commandstats")
        return int(stats.get("cmdstat_evalsha", {}).get("calls", 0))

    sends = 0
    original = redis.connection.Connection.send_packed_command

    def counting(self: Any, command: Any, check_health: bool = True) -> None:
        nonlocal sends
        sends += 1
        original(self, command, check_health)

    before = evalsha_calls()
    monkeypatch.setattr(redis.connection.Connection, "send_packed_command", counting)
    decisions = store.decide_many([(f"user:{i}", bucket, 1) for i in range(100)])
    monkeypatch.undo()
    assert sends == 1
    assert evalsha_calls() - before == 100
    assert all(d == Decision(True, 10, 9, pytest.approx(0.1), 0.0) for d in decisions)
    assert len(client.keys("buttress:{user:*}:tb")) == 100
    client.close()


def test_several_limits_for_100_keys_are_one_round_trip(
    private_redis: PrivateRedis, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = private_redis.client()
    store = RedisStore(client)
    limits = (TokenBucket(10), FixedWindow(1000, 3600))
    store.decide_all("warm", limits)  # loads the script
    sends = 0
    original = redis.connection.Connection.send_packed_command

    def counting(self: Any, command: Any, check_health: bool = True) -> None:
        nonlocal sends
        sends += 1
        original(self, command, check_health)

    monkeypatch.setattr(redis.connection.Connection, "send_packed_command", counting)
    batches = store.decide_all_many([(f"user:{i}", limits, 1) for i in range(100)])
    single = store.decide_all("user:0", limits)
    monkeypatch.undo()
    assert sends == 2  # the batch, then the single decision: one round trip each
    assert all([d.remaining for d in batch] == [9, 999] for batch in batches)
    assert [d.remaining for d in single] == [8, 998]
    assert len(client.keys("buttress:{user:*}:*")) == 200
    client.close()


def test_scripts_are_reloaded_after_a_flush(private_redis: PrivateRedis) -> None:
    # On a private server: SCRIPT FLUSH on the shared one would disturb other tests.
    client = private_redis.client()
    store = RedisStore(client)
    bucket = TokenBucket(5)
    assert store.decide("k", bucket, now=1.0).remaining == 4
    client.script_flush()
    assert store.decide("k", bucket, now=1.0).remaining == 3
    client.script_flush()
    batch = store.decide_many([("k", bucket, 1), ("j", GCRA(5), 1)], now=1.0)
    assert [d.remaining for d in batch] == [2, 4]
    limits = (bucket, FixedWindow(3, 60.0))
    client.script_flush()
    assert [d.remaining for d in store.decide_all("k", limits, now=1.0)] == [1, 2]
    client.script_flush()
    many = store.decide_all_many([("k", limits, 1), ("m", limits, 1)], now=1.0)
    assert [[d.remaining for d in decisions] for decisions in many] == [[0, 1], [4, 2]]
    client.close()


def test_a_reload_is_one_more_round_trip(
    private_redis: PrivateRedis, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = private_redis.client()
    sends = 0
    original = redis.connection.Connection.send_packed_command

    def counting(self: Any, command: Any, check_health: bool = True) -> None:
        nonlocal sends
        sends += 1
        original(self, command, check_health)

    client.ping()  # connected before counting
    monkeypatch.setattr(redis.connection.Connection, "send_packed_command", counting)
    # Two scripts, both unknown to the server: loaded together, then called again.
    one, two = script("return 'one'"), script("return 'two'")
    calls = [(*one, (0,)), (*two, (0,)), (*one, (0,))]
    assert run_scripts(client, calls, "test") == [b"one", b"two", b"one"]
    assert sends == 2
    assert run_scripts(client, calls, "test") == [b"one", b"two", b"one"]
    assert sends == 3  # loaded now: one round trip
    client.script_flush()
    sends = 0
    assert run_scripts(client, calls[:1], "test") == [b"one"]
    assert sends == 2  # EVALSHA, then SCRIPT LOAD with EVALSHA in one pipeline
    monkeypatch.undo()
    with pytest.raises(StoreError, match="test") as info:
        run_scripts(client, [(*script("return redis.error_reply('nope')"), (0,))], "test")
    assert not isinstance(info.value, StoreUnavailable)
    client.close()


def test_valkey_urls_reach_a_redis_server(prefix: str) -> None:
    require_service("redis")
    store = store_from_url("valkey://127.0.0.1:6379/0", prefix=prefix)
    assert isinstance(store, RedisStore)
    assert store.decide("k", FixedWindow(2, 60.0), now=1.0).remaining == 1
    store.close()


async def test_async_scripts_are_reloaded_after_a_flush(private_redis: PrivateRedis) -> None:
    client = redis.asyncio.Redis(host="127.0.0.1", port=private_redis.port)
    store = RedisStore(async_client=client)
    await client.script_flush()
    assert (await store.adecide("k", TokenBucket(5), now=1.0)).remaining == 4
    await client.script_flush()
    batch = await store.adecide_many([("k", TokenBucket(5), 1)], now=1.0)
    assert batch[0].remaining == 3
    limits = (TokenBucket(5), GCRA(3))
    await client.script_flush()
    assert [d.remaining for d in await store.adecide_all("k", limits, now=1.0)] == [2, 2]
    await client.script_flush()
    many = await store.adecide_all_many([("k", limits, 1)], now=1.0)
    assert [d.remaining for d in many[0]] == [1, 1]
    await client.aclose()


def test_fallback_rides_out_a_dead_redis(private_redis: PrivateRedis) -> None:
    clock = FakeClock()
    store = store_from_url(private_redis.url, fallback=True, probe_interval=5.0, clock=clock)
    assert isinstance(store, FallbackStore)
    events: list[Event] = []
    store.subscribe(events.append)
    window = FixedWindow(3, 3600.0)
    check = private_redis.client()
    key = "buttress:{k}:fw"

    assert store.decide("k", window).remaining == 2
    assert check.exists(key)  # decided by Redis
    check.close()

    private_redis.stop()
    decisions = [store.decide("k", window) for _ in range(4)]
    # No exception; the limit is enforced from memory (which starts afresh).
    assert [d.allowed for d in decisions] == [True, True, True, False]
    assert store.degraded
    assert [type(e) for e in events] == [StoreFellBack]
    assert isinstance(events[0].error, StoreUnavailable)  # type: ignore[attr-defined]

    private_redis.start()
    check = private_redis.client()
    clock.advance(4.9)
    assert not store.decide("k", window).allowed  # still memory: no probe yet
    assert not check.exists(key)
    clock.advance(0.1)
    back = store.decide("k", window)
    assert back.allowed
    assert back.remaining == 2  # the restarted Redis's own count
    assert check.exists(key)
    assert not store.degraded
    assert [type(e) for e in events] == [StoreFellBack, StoreRecovered]
    assert events[1] == StoreRecovered(store.name, 5.0)
    assert store.decide("k", window).remaining == 1
    check.close()
    store.close()


async def test_async_fallback_rides_out_a_dead_redis(private_redis: PrivateRedis) -> None:
    clock = FakeClock()
    store = store_from_url(private_redis.url, fallback=True, probe_interval=2.0, clock=clock)
    events: list[Event] = []
    store.subscribe(events.append)  # type: ignore[attr-defined]
    window = SlidingWindow(2, 3600.0)
    assert (await store.adecide("k", window)).remaining == 1

    private_redis.stop()
    decisions = [await store.adecide("k", window) for _ in range(3)]
    assert [d.allowed for d in decisions] == [True, True, False]
    many = await store.adecide_many([("k", window, 1)])
    assert not many[0].allowed

    private_redis.start()
    clock.advance(2.0)
    assert (await store.adecide("k", window)).remaining == 1
    assert [type(e) for e in events] == [StoreFellBack, StoreRecovered]
    await store.aclose()

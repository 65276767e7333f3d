"""Outbox relay throughput and latency against the real services, side by side with the
issue's minimal hand-written relay (psycopg 3 + aio-pika, publisher confirms,
``FOR UPDATE SKIP LOCKED`` batches).

Not a pyperf script: a relay moves thousands of events per run, so each scenario is
timed once per round, over a backlog or a steady offered load, and reported in
events/s or milliseconds. ``bench/run.py`` runs it after the pyperf scenarios
(``--markdown``) and adds its tables to RESULTS.md; run it alone with::

    python bench/bench_relay.py                   # everything, 3 rounds
    python bench/bench_relay.py --only drain      # backlog drains only
    python bench/bench_relay.py --only latency --rounds 1
    python bench/bench_relay.py --profile drain-pg-rabbitmq   # cProfile of one run

Scenarios:

* **drain** — ``--events`` rows written first (``--keys`` ordering keys, round robin),
  then one relay publishes all of them; events/s from the first claim to the last
  mark. PostgreSQL → RabbitMQ (buttress and the minimal relay), PostgreSQL → Redis
  Streams, SQLite → Redis Streams, and PostgreSQL → NATS when
  ``bench/bench_relay_nats.py`` provides it (the hook: that module's
  ``SCENARIOS``, a list of ``(name, async function(args) -> events/s)``).
* **latency** — writers in other processes (one per 500/s offered) commit one event
  per transaction at 100/s and 1,000/s for ``--seconds``; the relay runs woken by LISTEN/NOTIFY;
  commit-to-confirm = the wall time the relay's publisher saw the broker's confirm
  minus the wall time the writer's commit returned (one machine, one clock).

Needs PostgreSQL (``test`` db), RabbitMQ and Redis on 127.0.0.1; a scenario whose
service is down is reported as skipped. Every run uses tables, exchanges, queues and
streams of its own, removed afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import json
import math
import os
import platform
import pstats
import socket
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

HERE = Path(__file__).resolve().parent
PG = os.environ.get("BUTTRESS_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/test")
AMQP = os.environ.get("BUTTRESS_BENCH_AMQP", "amqp://guest:guest@127.0.0.1:5672/")
REDIS = os.environ.get("BUTTRESS_BENCH_REDIS", "redis://127.0.0.1:6379/0")
PORTS = {"postgres": 5432, "rabbitmq": 5672, "redis": 6379}

# The issue's targets on these two cores.
TARGETS = {
    "drain-pg-rabbitmq": 6000.0,
    "drain-pg-redis": 25000.0,
    "drain-sqlite-redis": 3000.0,
    "drain-pg-nats": 25000.0,
}


def up(service: str) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", PORTS[service]), timeout=0.5):
            return True
    except OSError:
        return False


def tag() -> str:
    return uuid.uuid4().hex[:10]


# ----------------------------------------------------------------------------- outbox


def events(count: int, keys: int) -> list[Any]:
    from buttress.messaging import Envelope

    return [
        Envelope(
            source="/bench",
            type="order.changed",
            subject=f"order-{i % keys}" if keys else None,
            data={"n": i, "sku": "ABC-123", "qty": 2, "note": "x" * 64},
        )
        for i in range(count)
    ]


def pg_table(count: int, keys: int) -> str:
    """A fresh PostgreSQL outbox table holding ``count`` pending events."""
    import psycopg

    from buttress.messaging import Outbox, migrate

    name = f"bench_relay_{tag()}"
    with psycopg.connect(PG) as conn:
        migrate(conn, name)
        outbox = Outbox(name)
        batch = events(count, keys)
        for start in range(0, len(batch), 1000):
            outbox.add_many(conn, batch[start : start + 1000])
        conn.commit()
    with psycopg.connect(PG, autocommit=True) as conn:
        conn.execute(f'ANALYZE "{name}"')
    return name


def pg_drop(name: str) -> None:
    import psycopg

    with psycopg.connect(PG, autocommit=True) as conn:
        conn.execute(f'DROP TABLE IF EXISTS "{name}", "{name}_migrations"')
        conn.execute(f'DROP FUNCTION IF EXISTS "{name}_notify"()')


def pg_pending(name: str) -> int:
    import psycopg

    with psycopg.connect(PG) as conn:
        row = conn.execute(f"SELECT count(*) FROM \"{name}\" WHERE status = 'pending'").fetchone()
        assert row is not None
        return int(row[0])


def sqlite_file(count: int, keys: int) -> str:
    from buttress.messaging import Outbox, migrate

    path = os.path.join(tempfile.mkdtemp(prefix="bench-relay-"), "outbox.db")
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    migrate(conn)
    conn.execute("BEGIN")
    batch = events(count, keys)
    for start in range(0, len(batch), 500):
        Outbox().add_many(conn, batch[start : start + 500])
    conn.execute("COMMIT")
    conn.close()
    return path


# ----------------------------------------------------------------------------- brokers


async def rabbit_topology(name: str) -> None:
    import aio_pika

    connection = await aio_pika.connect(AMQP)
    async with connection:
        channel = await connection.channel()
        exchange = await channel.declare_exchange(name, "topic", durable=True)
        queue = await channel.declare_queue(f"{name}.q", durable=True)
        await queue.bind(exchange, "#")


async def rabbit_drop(name: str) -> None:
    import aio_pika

    connection = await aio_pika.connect(AMQP)
    async with connection:
        channel = await connection.channel()
        for queue in (f"{name}.q", f"{name}.q.dlq"):
            with contextlib.suppress(Exception):
                await channel.queue_delete(queue)
        channel = await connection.channel()
        for exchange in (name, f"{name}.q.dlx"):
            with contextlib.suppress(Exception):
                await channel.exchange_delete(exchange)


async def redis_drop(stream: str) -> None:
    import redis.asyncio

    client = redis.asyncio.Redis.from_url(REDIS)
    await client.delete(stream)
    await client.aclose()


class Timed:
    """A Publisher wrapper noting when the broker confirmed each event (wall time)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.confirmed: dict[str, float] = {}
        self.batches: list[int] = []

    async def publish(self, envelopes: Sequence[Any]) -> None:
        try:
            await self.inner.publish(envelopes)
        except Exception as exc:
            bad = set(getattr(exc, "unconfirmed", ()))
            now = time.time()
            for e in envelopes:
                if e.id not in bad:
                    self.confirmed.setdefault(e.id, now)
            raise
        now = time.time()
        self.batches.append(len(envelopes))
        for e in envelopes:
            self.confirmed.setdefault(e.id, now)

    async def close(self) -> None:
        await self.inner.close()

    async def __aenter__(self) -> Timed:
        await self.inner.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.inner.__aexit__(exc_type, exc, tb)


def rabbit_publisher(name: str) -> Any:
    from buttress.messaging.brokers.rabbitmq import RabbitMQPublisher

    return RabbitMQPublisher(AMQP, exchange=name, queue=f"{name}.q", dead_letter=False)


def redis_publisher(stream: str) -> Any:
    from buttress.messaging.brokers.redis_streams import RedisStreamsPublisher

    return RedisStreamsPublisher(REDIS, stream=stream, maxlen=None)


# ----------------------------------------------------------------------------- relays


CONCURRENCY = [2]  # --concurrency: batches in flight per relay


def relay(store: Any, publisher: Any, batch: int, **options: Any) -> Any:
    from buttress.messaging.relay import Relay

    return Relay(
        store,
        publisher,
        batch_size=batch,
        retention=None,
        concurrency=CONCURRENCY[0],
        **options,
    )


# ----------------------------------------------------------------------------- CPU


_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
BROKERS = {"rabbitmq": "beam.smp", "redis": "redis-server", "nats": "nats-server"}
CPU: dict[str, list[dict[str, float]]] = {}
"""Per scenario, per round: CPU seconds per event of the relay process, of its
PostgreSQL backends and of the broker's server process (read from /proc)."""


def _cpu(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICK  # utime + stime


def _pids(command: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if (entry / "comm").read_text().strip() == command:
                    found.append(int(entry.name))
    return found


def _backends(application: str) -> list[int]:
    import psycopg

    with psycopg.connect(PG, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE application_name = %s", (application,)
        ).fetchall()
    return [int(pid) for (pid,) in rows]


class CpuMeter:
    """CPU used during a run by this process, by the PostgreSQL backends named
    ``application`` and by the broker's server (``None``: no broker measured).
    Other engineers' work on the same servers is counted too: an upper bound."""

    def __init__(self, application: str, broker: str | None) -> None:
        self.application = application
        self.broker = broker

    def start(self) -> None:
        self.own = time.process_time()
        self.pg = {pid: _cpu(pid) for pid in _backends(self.application)}
        self.server = {pid: _cpu(pid) for pid in _pids(BROKERS[self.broker])} if self.broker else {}

    def stop(self, scenario: str, events: int) -> None:
        own = time.process_time() - self.own
        pg = sum(_cpu(pid) - self.pg.get(pid, 0.0) for pid in _backends(self.application))
        server = sum(_cpu(pid) - before for pid, before in self.server.items())
        CPU.setdefault(scenario, []).append(
            {"relay": own / events, "postgres": pg / events, "broker": server / events}
        )


async def drain_buttress(
    store: Any, publisher: Any, batch: int, expected: int, *, scenario: str = "", broker: str = ""
) -> float:
    application = getattr(store, "application_name", "")
    meter = CpuMeter(application, broker or None)
    async with publisher:
        r = relay(store, publisher, batch)
        if application:
            await store.oldest_pending()  # the pool's first connection, for the meter
        meter.start()
        start = time.perf_counter()
        done = await r.drain()
        elapsed = time.perf_counter() - start
        meter.stop(scenario, expected)
        await store.close()
    if done != expected:
        raise RuntimeError(f"drained {done} of {expected}")
    return expected / elapsed


class MinimalRelay:
    """The issue's minimal hand-written relay: psycopg 3 + aio-pika, persistent
    messages, publisher confirms (one future per message, gathered), batches claimed
    with ``FOR UPDATE SKIP LOCKED`` and held locked while they are published; the
    stored CloudEvents JSON is the body (structured mode). No per-key order, no
    retry, no leases: what a first outbox relay looks like."""

    def __init__(self, table: str, exchange: str, batch: int, on_confirm: Any = None) -> None:
        self.application = f"bench minimal {tag()}"
        self.table = table
        self.exchange_name = exchange
        self.batch = batch
        self.on_confirm = on_confirm
        self.claim = (
            f'SELECT seq, event_id, event_type, envelope FROM "{table}" '
            "WHERE status = 'pending' ORDER BY seq LIMIT %s FOR UPDATE SKIP LOCKED"
        )
        self.mark = (
            f"UPDATE \"{table}\" SET status = 'published', published_at = now() WHERE seq = ANY(%s)"
        )

    async def __aenter__(self) -> MinimalRelay:
        import aio_pika
        import psycopg

        self.conn = await psycopg.AsyncConnection.connect(PG, application_name=self.application)
        self.amqp = await aio_pika.connect(AMQP)
        channel = await self.amqp.channel(publisher_confirms=True)
        self.exchange = await channel.get_exchange(self.exchange_name)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.conn.close()
        await self.amqp.close()

    async def once(self) -> int:
        import aio_pika

        async with self.conn.transaction():
            cursor = await self.conn.execute(self.claim, (self.batch,))
            rows = await cursor.fetchall()
            if not rows:
                return 0
            await asyncio.gather(
                *(
                    self.exchange.publish(
                        aio_pika.Message(
                            envelope.encode(),
                            message_id=event_id,
                            content_type="application/cloudevents+json",
                            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                        ),
                        routing_key=event_type,
                    )
                    for _, event_id, event_type, envelope in rows
                )
            )
            if self.on_confirm is not None:
                self.on_confirm([row[1] for row in rows])
            await self.conn.execute(self.mark, ([row[0] for row in rows],))
        return len(rows)

    async def drain(self) -> int:
        total = 0
        while n := await self.once():
            total += n
        return total

    async def run(self, stop: asyncio.Event) -> None:
        """Drain on every NOTIFY (a LISTEN connection of its own), or every second."""
        import psycopg

        listen = await psycopg.AsyncConnection.connect(PG, autocommit=True)
        await listen.execute(f'LISTEN "{self.table}"')
        wake = asyncio.Event()

        async def notified() -> None:
            async for _ in listen.notifies():
                wake.set()

        task = asyncio.create_task(notified())
        try:
            while not stop.is_set():
                await self.drain()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wake.wait(), 1.0)
                wake.clear()
        finally:
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
            await listen.close()


# ----------------------------------------------------------------------------- drains


@dataclass
class Args:
    events: int = 20_000
    keys: int = 5_000
    batch: int = 500
    rounds: int = 3
    seconds: float = 10.0
    pool: int = 2
    extra: dict[str, Any] = field(default_factory=dict)


async def drain_pg_rabbitmq(args: Args) -> float:
    from buttress.messaging.relay import PostgresRelayStore

    table, name = pg_table(args.events, args.keys), f"bench.relay.{tag()}"
    try:
        await rabbit_topology(name)
        store = PostgresRelayStore(PG, table, application_name=f"bench relay {tag()}")
        return await drain_buttress(
            store,
            rabbit_publisher(name),
            args.batch,
            args.events,
            scenario="drain-pg-rabbitmq",
            broker="rabbitmq",
        )
    finally:
        pg_drop(table)
        await rabbit_drop(name)


async def drain_pg_rabbitmq_minimal(args: Args) -> float:
    table, name = pg_table(args.events, args.keys), f"bench.relay.{tag()}"
    try:
        await rabbit_topology(name)
        async with MinimalRelay(table, name, args.batch) as minimal:
            meter = CpuMeter(minimal.application, "rabbitmq")
            meter.start()
            start = time.perf_counter()
            done = await minimal.drain()
            elapsed = time.perf_counter() - start
            meter.stop("drain-pg-rabbitmq-minimal", done)
        if done != args.events:
            raise RuntimeError(f"drained {done} of {args.events}")
        return done / elapsed
    finally:
        pg_drop(table)
        await rabbit_drop(name)


async def drain_pg_redis(args: Args) -> float:
    from buttress.messaging.relay import PostgresRelayStore

    table, stream = pg_table(args.events, args.keys), f"bench:relay:{tag()}"
    try:
        store = PostgresRelayStore(PG, table, application_name=f"bench relay {tag()}")
        return await drain_buttress(
            store,
            redis_publisher(stream),
            args.batch,
            args.events,
            scenario="drain-pg-redis",
            broker="redis",
        )
    finally:
        pg_drop(table)
        await redis_drop(stream)


async def drain_sqlite_redis(args: Args) -> float:
    from buttress.messaging.relay import SQLiteRelayStore

    path, stream = sqlite_file(args.events, args.keys), f"bench:relay:{tag()}"
    try:
        return await drain_buttress(
            SQLiteRelayStore(path),
            redis_publisher(stream),
            args.batch,
            args.events,
            scenario="drain-sqlite-redis",
            broker="redis",
        )
    finally:
        for suffix in ("", "-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path + suffix)
        await redis_drop(stream)


Scenario = tuple[str, str, Sequence[str], Callable[[Args], Awaitable[float]]]
"""(name, label, services needed, async function returning events/s)."""

DRAINS: list[Scenario] = [
    ("drain-pg-rabbitmq", "PostgreSQL → RabbitMQ, buttress", ("postgres", "rabbitmq"),
     drain_pg_rabbitmq),
    ("drain-pg-rabbitmq-minimal", "PostgreSQL → RabbitMQ, minimal hand-written relay",
     ("postgres", "rabbitmq"), drain_pg_rabbitmq_minimal),
    ("drain-pg-redis", "PostgreSQL → Redis Streams, buttress", ("postgres", "redis"),
     drain_pg_redis),
    ("drain-sqlite-redis", "SQLite → Redis Streams, buttress", ("redis",), drain_sqlite_redis),
]  # fmt: skip


# ----------------------------------------------------------------------------- latency

WRITER = """
import json, sys, time, psycopg
from buttress.messaging import Envelope, Outbox
pg, table, out = sys.argv[1], sys.argv[2], sys.argv[5]
rate, seconds = float(sys.argv[3]), float(sys.argv[4])
outbox, committed = Outbox(table), {}
with psycopg.connect(pg) as conn:
    interval, start = 1.0 / rate, time.perf_counter()
    for i in range(int(rate * seconds)):
        due = start + i * interval
        pause = due - time.perf_counter()
        if pause > 0:
            time.sleep(pause)
        key = f"order-{sys.argv[6]}-{i % 1000}"
        e = Envelope(source="/bench", type="order.changed", subject=key,
                     data={"n": i, "sku": "ABC-123", "qty": 2, "note": "x" * 64})
        outbox.add(conn, e)
        conn.commit()
        committed[e.id] = time.time()
    achieved = len(committed) / (time.perf_counter() - start)
json.dump({"committed": committed, "achieved": achieved}, open(out, "w"))
"""


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


async def _latency(
    args: Args, rate: float, run: Callable[[str, asyncio.Event], Awaitable[dict[str, float]]]
) -> dict[str, float]:
    table = pg_table(0, 0)
    # One writer process per 500 events/s offered: a writer commits one event per
    # transaction, and one connection tops out near 1,000/s on an idle machine.
    writers = max(1, math.ceil(rate / 500))
    outs = [tempfile.mktemp(suffix=".json") for _ in range(writers)]
    stop = asyncio.Event()
    try:
        task = asyncio.create_task(run(table, stop))
        await asyncio.sleep(1.0)  # listening, caught up
        started = time.perf_counter()
        procs = [
            await asyncio.create_subprocess_exec(
                sys.executable,
                "-c",
                WRITER,
                PG,
                table,
                str(rate / writers),
                str(args.seconds),
                out,
                str(index),  # its own keys: writers of one key must be serialised
            )
            for index, out in enumerate(outs)
        ]
        for proc in procs:
            await proc.wait()
        wrote = time.perf_counter() - started
        deadline = time.monotonic() + 30
        while pg_pending(table) and time.monotonic() < deadline:  # noqa: ASYNC110 - another process
            await asyncio.sleep(0.2)
        stop.set()
        confirmed = await task
        committed: dict[str, float] = {}
        for out in outs:
            committed |= json.loads(Path(out).read_text())["committed"]  # noqa: ASYNC240
        delays = [(confirmed[i] - t) * 1000 for i, t in committed.items() if i in confirmed]
        if len(delays) != len(committed):
            raise RuntimeError(f"{len(committed) - len(delays)} events never confirmed")
        return {
            "p50": percentile(delays, 0.5),
            "p99": percentile(delays, 0.99),
            "max": max(delays),
            "achieved": len(committed) / wrote,
        }
    finally:
        for out in outs:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(out)
        pg_drop(table)


def latency_buttress(rate: float, broker: str) -> Callable[[Args], Awaitable[dict[str, float]]]:
    async def scenario(args: Args) -> dict[str, float]:
        from buttress.messaging.relay import PostgresRelayStore

        name = f"bench.relay.{tag()}" if broker == "rabbitmq" else f"bench:relay:{tag()}"

        async def run(table: str, stop: asyncio.Event) -> dict[str, float]:
            inner = rabbit_publisher(name) if broker == "rabbitmq" else redis_publisher(name)
            timed = Timed(inner)
            store = PostgresRelayStore(PG, table)
            async with timed:
                r = relay(store, timed, args.batch, poll_interval=5.0)
                task = asyncio.create_task(r.run())
                await stop.wait()
                r.stop()
                await task
            await store.close()
            return timed.confirmed

        try:
            if broker == "rabbitmq":
                await rabbit_topology(name)
            return await _latency(args, rate, run)
        finally:
            if broker == "rabbitmq":
                await rabbit_drop(name)
            else:
                await redis_drop(name)

    return scenario


def latency_minimal(rate: float) -> Callable[[Args], Awaitable[dict[str, float]]]:
    async def scenario(args: Args) -> dict[str, float]:
        name = f"bench.relay.{tag()}"

        async def run(table: str, stop: asyncio.Event) -> dict[str, float]:
            confirmed: dict[str, float] = {}

            def note(ids: list[str]) -> None:
                now = time.time()
                for i in ids:
                    confirmed.setdefault(i, now)

            async with MinimalRelay(table, name, args.batch, on_confirm=note) as minimal:
                await minimal.run(stop)
            return confirmed

        try:
            await rabbit_topology(name)
            return await _latency(args, rate, run)
        finally:
            await rabbit_drop(name)

    return scenario


LatencyScenario = tuple[str, str, Sequence[str], Callable[[Args], Awaitable[dict[str, float]]]]

LATENCIES: list[LatencyScenario] = [
    (f"latency-{broker}-{who}-{rate}", f"{label} at {rate:,}/s", services, make(rate))
    for rate in (100, 1000)
    for broker, who, label, services, make in (
        ("rabbitmq", "buttress", "PostgreSQL → RabbitMQ, buttress", ("postgres", "rabbitmq"),
         lambda r: latency_buttress(r, "rabbitmq")),
        ("rabbitmq", "minimal", "PostgreSQL → RabbitMQ, minimal relay", ("postgres", "rabbitmq"),
         latency_minimal),
        ("redis", "buttress", "PostgreSQL → Redis Streams, buttress", ("postgres", "redis"),
         lambda r: latency_buttress(r, "redis")),
    )
]  # fmt: skip

LATENCY_TARGETS = {
    "latency-rabbitmq-buttress-1000": ("p99", 50.0),
    "latency-rabbitmq-buttress-100": ("p50", 5.0),
    "latency-redis-buttress-100": ("p50", 5.0),
}

try:  # bench/bench_relay_nats.py: PostgreSQL → NATS JetStream, when present
    sys.path.insert(0, str(HERE))
    import bench_relay_nats  # type: ignore[import-not-found]

    DRAINS += list(getattr(bench_relay_nats, "SCENARIOS", []))
    if hasattr(bench_relay_nats, "latency_nats"):
        for _rate, _target in getattr(bench_relay_nats, "LATENCY_TARGETS", {}).items():
            _name = f"latency-nats-buttress-{_rate}"
            LATENCIES.append(
                (
                    _name,
                    f"PostgreSQL → NATS JetStream, buttress at {_rate:,}/s",
                    ("postgres", "nats"),
                    bench_relay_nats.latency_nats(_rate),
                )
            )
            LATENCY_TARGETS[_name] = _target
except ImportError:
    pass


# ----------------------------------------------------------------------------- report


def latency_row(
    label: str, results: list[dict[str, float]], target: tuple[str, float] | None
) -> str:
    """A table row: the best round (lowest p99) and the median of the rounds."""
    best = min(results, key=lambda r: r["p99"])
    mid = {key: statistics.median(r[key] for r in results) for key in best}

    def cell(key: str, unit: str = " ms", spec: str = ".1f") -> str:
        return f"{best[key]:{spec}}{unit} / {mid[key]:{spec}}{unit}"

    goal = verdict = ""
    if target is not None:
        which, limit = target
        goal = f"{which} ≤ {limit:g} ms"
        verdict = " / ".join(
            "met" if value <= limit else f"missed ({value:.1f} ms)"
            for value in (best[which], mid[which])
        )
    return (
        f"| {label} | {cell('achieved', '/s', ',.0f')} | {cell('p50')} | {cell('p99')} | "
        f"{cell('max')} | {goal} | {verdict} |"
    )


def load_note() -> str:
    try:
        return ", ".join(f"{load:.2f}" for load in os.getloadavg())
    except OSError:
        return "?"


async def run_all(args: Args, only: str, profile: str | None) -> str:
    lines: list[str] = []
    if profile:
        chosen = [s for s in DRAINS if s[0] == profile]
        if not chosen:
            raise SystemExit(f"no drain scenario named {profile!r}")
        prof = cProfile.Profile()
        prof.enable()
        rate = await chosen[0][3](args)
        prof.disable()
        stats = pstats.Stats(prof).sort_stats("tottime")
        stats.print_stats(30)
        stats.sort_stats("cumulative").print_stats(40)
        return f"{profile}: {rate:,.0f} events/s under cProfile"
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    lines += [
        "## Outbox relay: backlog drain and commit-to-confirm latency (issue 8)",
        "",
        f"`python bench/bench_relay.py` — {when}, {os.cpu_count()} cores, "
        f"{platform.python_implementation()} {platform.python_version()}, load average "
        f"at start {load_note()} (on a shared machine figures move by ±20 % between "
        "runs). Services on 127.0.0.1. "
        f"Best and median of {args.rounds} round(s).",
        "",
    ]
    if "drain" in only or not only:
        lines += [
            f"### Backlog drain ({args.events:,} events, {args.keys:,} keys, "
            f"batches of {args.batch})",
            "",
            "| scenario | best | median | target | verdict "
            "| CPU µs/event: relay / PostgreSQL / broker |",
            "|---|---:|---:|---:|---|---|",
        ]
        minimal_best = ours_best = None
        for name, label, services, fn in DRAINS:
            if only and only not in name and only != "drain":
                continue
            missing = [s for s in services if not up(s)]
            if missing:
                lines.append(f"| {label} | skipped: {', '.join(missing)} down | | | |")
                continue
            rates = []
            for _ in range(args.rounds):
                rates.append(await fn(args))
                print(f"{name}: {rates[-1]:,.0f} events/s", file=sys.stderr, flush=True)
            best, median = max(rates), statistics.median(rates)
            if name == "drain-pg-rabbitmq-minimal":
                minimal_best = best
            elif name == "drain-pg-rabbitmq":
                ours_best = best
            target = TARGETS.get(name)
            verdict = ""
            if target is not None:
                verdict = "met" if best >= target else f"missed ({best / target:.0%})"
            cpu = CPU.get(name)
            used = ""
            if cpu:
                mid = {k: statistics.median(r[k] for r in cpu) * 1e6 for k in cpu[0]}
                used = f"{mid['relay']:.0f} / {mid['postgres']:.0f} / {mid['broker']:.0f}"
            lines.append(
                f"| {label} | {best:,.0f}/s | {median:,.0f}/s | "
                f"{'' if target is None else f'≥ {target:,.0f}/s'} | {verdict} | {used} |"
            )
        if minimal_best and ours_best:
            lines += [
                "",
                f"buttress / minimal relay to RabbitMQ (best of each): "
                f"{ours_best / minimal_best:.2f}×.",
            ]
        lines.append("")
    if "latency" in only or not only:
        lines += [
            "### Commit-to-confirm latency (writers in other processes, one per 500/s, "
            f"one event per transaction, {args.seconds:g} s per load; LISTEN/NOTIFY wake-ups)",
            "",
            "Each cell: the best round (the lowest p99) / the median of the rounds.",
            "",
            "| scenario | writers achieved | p50 | p99 | max | target | verdict (best / median) |",
            "|---|---:|---:|---:|---:|---:|---|",
        ]
        for name, label, services, fn in LATENCIES:
            if only and only not in name and only != "latency":
                continue
            missing = [s for s in services if not up(s)]
            if missing:
                lines.append(f"| {label} | skipped: {', '.join(missing)} down | | | | | |")
                continue
            results = []
            for _ in range(args.rounds):
                results.append(await fn(args))
                print(f"{name}: {results[-1]}", file=sys.stderr, flush=True)
            lines.append(latency_row(label, results, LATENCY_TARGETS.get(name)))
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default="", help="drain, latency, or a scenario name")
    parser.add_argument("--events", type=int, default=Args.events)
    parser.add_argument("--keys", type=int, default=Args.keys)
    parser.add_argument("--batch", type=int, default=Args.batch)
    parser.add_argument("--rounds", type=int, default=Args.rounds)
    parser.add_argument("--seconds", type=float, default=Args.seconds)
    parser.add_argument("--concurrency", type=int, default=CONCURRENCY[0])
    parser.add_argument("--profile", default=None, help="cProfile one drain scenario")
    parser.add_argument("--markdown", action="store_true", help="print only the tables")
    options = parser.parse_args()
    args = Args(
        events=options.events,
        keys=options.keys,
        batch=options.batch,
        rounds=options.rounds,
        seconds=options.seconds,
    )
    CONCURRENCY[0] = options.concurrency
    report = asyncio.run(run_all(args, options.only, options.profile))
    print(report)


if __name__ == "__main__":
    main()

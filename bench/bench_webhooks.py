"""Webhook dispatcher throughput, latency and memory, against a local receiver.

Not a pyperf script: each scenario moves thousands of deliveries and is timed once
per round. The receiver is an aiohttp server in a process of its own on 127.0.0.1
(answering 200, or 500 to every n-th request); the dispatcher runs in this process
with durable state on SQLite (a temporary file) or PostgreSQL. Run it with::

    python bench/bench_webhooks.py                       # everything, SQLite
    python bench/bench_webhooks.py --store postgres      # PostgreSQL (the test db)
    python bench/bench_webhooks.py --only drain --deliveries 20000
    python bench/bench_webhooks.py --only peers --peers dramatiq --concurrency 8

Scenarios:

* **drain** — ``--deliveries`` messages sent first (one endpoint), then one
  dispatcher delivers all of them: durable deliveries/s from start to the last one
  written delivered.
* **drain-10%-failing** — the same with the receiver answering 500 to every 10th
  request; the failed ones are retried (schedule 0, 50 ms, 100 ms, ...); the rate
  counts deliveries that succeeded. The issue's target: >= 85 % of the drain rate.
* **latency** — messages sent one by one at ``--rate``/s for ``--seconds`` while the
  dispatcher runs; enqueue-to-delivered = the wall time the receiver got the request
  minus the wall time ``send()`` returned (one machine, one clock): p50 and p99.
* **peers** — the same drain (with and without 10 % failing) and latency with what
  Python users run today: a Celery worker (RabbitMQ broker, prefork, ``acks_late``)
  and a Dramatiq worker (RabbitMQ, 2 processes), each posting with httpx and retrying
  with exponential backoff and jitter. Their rates are measured at the receiver,
  from the first delivery to the last (their workers' start-up is not counted); the
  dispatcher's drain reports both ways. Needs RabbitMQ on 127.0.0.1.
* **dead-endpoint** — 10,000 deliveries pending for an endpoint that refuses every
  connection, the dispatcher running for ``--seconds``: the process's RSS at the
  start and the end (it must stay flat: state is in the database, not in memory).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))

PG = os.environ.get("BUTTRESS_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/test")
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
TABLES = ("messages", "deliveries", "attempts", "endpoints", "migrations")


# -- the receiver (a process of its own) -----------------------------------------------


def serve(port: int, fail_every: int) -> None:  # runs in the receiver process
    from aiohttp import web

    seen: dict[str, float] = {}
    count = 0

    async def hook(request: web.Request) -> web.Response:
        nonlocal count
        await request.read()
        count += 1
        if fail_every and count % fail_every == 0:
            return web.Response(status=500)
        seen.setdefault(request.headers["webhook-id"], time.time())
        return web.Response(status=204)

    async def stats(request: web.Request) -> web.Response:
        return web.json_response({"requests": count, "seen": seen})

    async def reset(request: web.Request) -> web.Response:
        nonlocal count
        seen.clear()
        count = 0
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hook", hook)
    app.router.add_get("/stats", stats)
    app.router.add_post("/reset", reset)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.asynccontextmanager
async def receiver(fail_every: int = 0) -> AsyncIterator[int]:
    port = free_port()
    process = await asyncio.create_subprocess_exec(
        sys.executable, __file__, "--serve", str(port), "--fail-every", str(fail_every)
    )
    try:
        for _ in range(500):
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port)):
                break
            await asyncio.sleep(0.01)
        yield port
    finally:
        process.terminate()
        await process.wait()


async def receiver_stats(port: int) -> dict[str, Any]:
    import aiohttp

    async with aiohttp.ClientSession() as s, s.get(f"http://127.0.0.1:{port}/stats") as r:
        return dict(await r.json())


# -- storage --------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def storage(kind: str) -> AsyncIterator[Any]:
    from buttress.webhooks.dispatcher import SQLiteDeliveryStore, migrate

    prefix = f"bench_{uuid.uuid4().hex[:10]}"
    if kind == "sqlite":
        with tempfile.TemporaryDirectory() as folder:
            path = os.path.join(folder, "webhooks.db")
            with contextlib.closing(sqlite3.connect(path)) as conn:
                migrate(conn, prefix)
            store = SQLiteDeliveryStore(path, prefix)
            try:
                yield store
            finally:
                await store.close()
        return
    import psycopg

    from buttress.webhooks.dispatcher import PostgresDeliveryStore

    with psycopg.connect(PG) as conn:
        migrate(conn, prefix)
    pg = PostgresDeliveryStore(PG, prefix)
    try:
        yield pg
    finally:
        await pg.close()
        with psycopg.connect(PG, autocommit=True) as admin:
            admin.execute("DROP TABLE IF EXISTS " + ", ".join(f'"{prefix}_{t}"' for t in TABLES))


def dispatcher(store: Any, port: int, **options: Any) -> Any:
    from buttress.webhooks.dispatcher import Dispatcher, Endpoint, RetrySchedule
    from buttress.webhooks.ssrf import AddressPolicy

    endpoint = Endpoint("bench", f"http://127.0.0.1:{port}/hook", SECRET, max_concurrency=256)
    options.setdefault(
        "schedule", RetrySchedule([0, 0.05, 0.1, 0.2, 0.4, 0.8, 1.6, 3.2], jitter=0.2)
    )
    return Dispatcher(store, [endpoint], policy=AddressPolicy(allow=["127.0.0.0/8"]), **options)


async def send_backlog(d: Any, count: int) -> None:
    from buttress.webhooks.dispatcher import Message

    for start in range(0, count, 1000):
        await d.send_many(
            [Message("bench.event", {"n": n}) for n in range(start, min(count, start + 1000))]
        )


# -- the peers: Celery and Dramatiq workers posting with httpx ---------------------------
#
# What Python users run today for webhooks: a task per delivery on RabbitMQ, posted with
# httpx (signed the same way), retried with exponential backoff and jitter on an error
# (0.05 s doubling, as the dispatcher's schedule here). Their workers import this module
# with BENCH_WEBHOOKS_PEER set, which defines the task at import.

AMQP = os.environ.get("BUTTRESS_BENCH_AMQP", "amqp://guest:guest@127.0.0.1:5672/")
PEER = os.environ.get("BENCH_WEBHOOKS_PEER", "")
PEER_URL = os.environ.get("BENCH_WEBHOOKS_URL", "")
PEER_QUEUE = os.environ.get("BENCH_WEBHOOKS_QUEUE", "bench_webhooks")
_client_local: Any = None


def post_with_httpx(msg_id: str, body: bytes) -> None:
    """One signed POST with a (per process) httpx client; raises on a non-2xx answer."""
    global _client_local
    import httpx

    from buttress.webhooks.signing import Signer

    if _client_local is None:
        _client_local = (httpx.Client(timeout=15.0), Signer(SECRET))
    client, signer = _client_local
    headers = signer.headers(msg_id, body)
    headers["content-type"] = "application/json"
    client.post(PEER_URL, content=body, headers=headers).raise_for_status()


def backoff(retries: int) -> float:
    import random

    return 0.05 * 2**retries * random.uniform(0.8, 1.2)


def peer_task(kind: str) -> Any:
    """The peer's task (its ``send(msg_id, body)`` enqueues one delivery)."""
    if kind == "dramatiq":
        import dramatiq
        from dramatiq.brokers.rabbitmq import RabbitmqBroker

        dramatiq.set_broker(RabbitmqBroker(url=AMQP))

        @dramatiq.actor(queue_name=PEER_QUEUE, max_retries=8, min_backoff=50, max_backoff=3200)
        def deliver(msg_id: str, body: str) -> None:
            post_with_httpx(msg_id, body.encode())

        return deliver
    from celery import Celery

    app = Celery("bench_webhooks", broker=AMQP)
    app.conf.update(
        task_acks_late=True,
        task_ignore_result=True,
        task_default_queue=PEER_QUEUE,
        worker_prefetch_multiplier=4,
        broker_connection_retry_on_startup=True,
    )

    @app.task(bind=True, max_retries=8, name="bench_webhooks.deliver")
    def deliver_celery(self: Any, msg_id: str, body: str) -> None:
        import httpx

        try:
            post_with_httpx(msg_id, body.encode())
        except httpx.HTTPError as exc:
            raise self.retry(exc=exc, countdown=backoff(self.request.retries)) from None

    deliver_celery.send = lambda msg_id, body: deliver_celery.apply_async((msg_id, body))
    deliver_celery.app_ = app
    return deliver_celery


if PEER:  # a worker process of the peer
    TASK = peer_task(PEER)
    if PEER == "celery":
        app = TASK.app_


def peer_worker(kind: str, port: int, queue: str, concurrency: int) -> Any:
    env = {
        **os.environ,
        "BENCH_WEBHOOKS_PEER": kind,
        "BENCH_WEBHOOKS_URL": f"http://127.0.0.1:{port}/hook",
        "BENCH_WEBHOOKS_QUEUE": queue,
        "PYTHONPATH": f"{HERE}{os.pathsep}{HERE.parent / 'src'}",
    }
    bin_dir = Path(sys.executable).parent
    if kind == "dramatiq":
        command = [str(bin_dir / "dramatiq"), "bench_webhooks", "--processes", "2",
                   "--threads", str(max(1, concurrency // 2))]  # fmt: skip
    else:
        command = [str(bin_dir / "celery"), "-A", "bench_webhooks", "worker", "--pool",
                   "prefork", "-c", str(concurrency), "-Q", queue, "-l", "warning",
                   "--without-heartbeat", "--without-gossip", "--without-mingle"]  # fmt: skip
    return subprocess.Popen(
        command, cwd=HERE, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )


async def drop_queues(queue: str) -> None:
    import aio_pika

    connection = await aio_pika.connect(AMQP)
    async with connection:
        channel = await connection.channel()
        for name in (queue, f"{queue}.DQ", f"{queue}.XQ"):
            with contextlib.suppress(Exception):
                await channel.queue_delete(name)
        with contextlib.suppress(Exception):
            await channel.exchange_delete(queue)


def rate_at_receiver(seen: dict[str, float], ids: list[str]) -> float:
    """Deliveries/s between the first and the last first delivery the receiver saw."""
    times = sorted(seen[i] for i in ids if i in seen)
    return (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 else float("nan")


async def wait_seen(port: int, ids: list[str], within: float) -> dict[str, float]:
    deadline = time.monotonic() + within
    while True:
        seen: dict[str, float] = (await receiver_stats(port))["seen"]
        if all(i in seen for i in ids) or time.monotonic() > deadline:
            return seen
        await asyncio.sleep(0.1)


async def peer_drain(kind: str, count: int, fail_every: int, concurrency: int) -> dict[str, float]:
    queue = f"bench_{kind}_{uuid.uuid4().hex[:8]}"
    async with receiver(fail_every) as port:
        os.environ["BENCH_WEBHOOKS_QUEUE"] = queue
        global PEER_QUEUE
        PEER_QUEUE = queue
        task = peer_task(kind)
        ids = [f"msg_{uuid.uuid4().hex}" for _ in range(count)]
        await asyncio.to_thread(
            lambda: [task.send(i, json.dumps({"n": n})) for n, i in enumerate(ids)]
        )
        worker = peer_worker(kind, port, queue, concurrency)
        try:
            seen = await wait_seen(port, ids, within=300)
        finally:
            worker.terminate()
            worker.wait()
            await drop_queues(queue)
    return {"deliveries/s": rate_at_receiver(seen, ids), "delivered": float(len(seen))}


async def peer_latency(
    kind: str, rate: float, seconds: float, concurrency: int
) -> dict[str, float]:
    queue = f"bench_{kind}_{uuid.uuid4().hex[:8]}"
    async with receiver() as port:
        global PEER_QUEUE
        PEER_QUEUE = queue
        task = peer_task(kind)
        worker = peer_worker(kind, port, queue, concurrency)
        try:
            warm = f"msg_{uuid.uuid4().hex}"
            await asyncio.to_thread(task.send, warm, "{}")
            await wait_seen(port, [warm], within=60)

            def produce() -> dict[str, float]:
                sent: dict[str, float] = {}
                begin = time.perf_counter()
                for n in range(int(rate * seconds)):
                    delay = begin + n / rate - time.perf_counter()
                    if delay > 0:
                        time.sleep(delay)
                    msg_id = f"msg_{uuid.uuid4().hex}"
                    task.send(msg_id, json.dumps({"n": n}))
                    sent[msg_id] = time.time()
                return sent

            sent = await asyncio.to_thread(produce)
            seen = await wait_seen(port, list(sent), within=60)
        finally:
            worker.terminate()
            worker.wait()
            await drop_queues(queue)
    return percentiles([(seen[i] - t) * 1000 for i, t in sent.items() if i in seen])


def percentiles(waits: list[float]) -> dict[str, float]:
    waits.sort()
    return {
        "p50 ms": statistics.median(waits),
        "p99 ms": waits[min(len(waits) - 1, int(len(waits) * 0.99))],
        "max ms": waits[-1],
        "messages": float(len(waits)),
    }


# -- scenarios ------------------------------------------------------------------------


async def drain(kind: str, count: int, fail_every: int, in_flight: int) -> dict[str, float]:
    async with receiver(fail_every) as port, storage(kind) as store:
        d = dispatcher(store, port, max_in_flight=in_flight, batch_size=200, poll_interval=0.2)
        async with d:
            await send_backlog(d, count)
            start = time.perf_counter()
            task = asyncio.create_task(d.run())
            while d.delivered < count:
                await asyncio.sleep(0.01)
                if task.done():
                    task.result()
            elapsed = time.perf_counter() - start
            d.stop()
            await task
        stats = await receiver_stats(port)
        counts = await store.counts()
    assert counts["delivered"] == count, counts
    return {
        "deliveries/s": count / elapsed,
        "at the receiver/s": rate_at_receiver(stats["seen"], list(stats["seen"])),
        "requests": float(stats["requests"]),
        "seconds": elapsed,
    }


async def latency(kind: str, rate: float, seconds: float) -> dict[str, float]:
    async with receiver() as port, storage(kind) as store:
        d = dispatcher(store, port, poll_interval=1.0)
        async with d:
            task = asyncio.create_task(d.run())
            await d.send("warm.up", {})
            await asyncio.sleep(0.5)
            sent: dict[str, float] = {}
            total = int(rate * seconds)
            begin = time.perf_counter()
            for n in range(total):
                target = begin + n / rate
                delay = target - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                msg_id, _ = await d.send("bench.event", {"n": n})
                sent[msg_id] = time.time()
            while d.delivered < total + 1:  # noqa: ASYNC110 - polling a counter
                await asyncio.sleep(0.01)
            d.stop()
            await task
        seen = (await receiver_stats(port))["seen"]
    return percentiles([(seen[i] - t) * 1000 for i, t in sent.items()])


def rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


async def dead_endpoint(kind: str, seconds: float) -> dict[str, float]:
    port = free_port()  # nothing listens there: every connection is refused
    async with storage(kind) as store:
        d = dispatcher(store, port, poll_interval=0.2)
        async with d:
            await send_backlog(d, 10_000)
            task = asyncio.create_task(d.run())
            await asyncio.sleep(1.0)
            start = rss_mb()
            await asyncio.sleep(seconds)
            end = rss_mb()
            d.stop()
            await task
        counts = await store.counts()
    return {
        "rss start MB": start,
        "rss end MB": end,
        "pending": float(counts["pending"]),
        "attempts failed": float(d.failed_attempts),
    }


async def run_all(args: argparse.Namespace) -> dict[str, Any]:
    print(f"# webhook dispatcher ({args.store}) — {platform.python_version()}, "
          f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}")  # fmt: skip
    results: dict[str, Any] = {}
    for round_ in range(args.rounds):
        if args.only in ("all", "drain"):
            results[f"drain #{round_}"] = await drain(
                args.store, args.deliveries, 0, args.in_flight
            )
            print("drain", results[f"drain #{round_}"], flush=True)
            results[f"drain-10% #{round_}"] = await drain(
                args.store, args.deliveries, 10, args.in_flight
            )
            print("drain-10%-failing", results[f"drain-10% #{round_}"], flush=True)
        if args.only in ("all", "latency"):
            results[f"latency #{round_}"] = await latency(args.store, args.rate, args.seconds)
            print(f"latency at {args.rate:.0f}/s", results[f"latency #{round_}"], flush=True)
        if args.only in ("all", "peers"):
            for kind in args.peers:
                for fail in (0, 10):
                    key = f"{kind} drain{'-10%' if fail else ''} #{round_}"
                    results[key] = await peer_drain(kind, args.deliveries, fail, args.concurrency)
                    print(key, results[key], flush=True)
                key = f"{kind} latency #{round_}"
                results[key] = await peer_latency(kind, args.rate, args.seconds, args.concurrency)
                print(key, results[key], flush=True)
        if args.only in ("all", "dead"):
            results[f"dead #{round_}"] = await dead_endpoint(args.store, args.seconds)
            print("dead-endpoint", results[f"dead #{round_}"], flush=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument(
        "--only", choices=("all", "drain", "latency", "dead", "peers"), default="all"
    )
    parser.add_argument("--peers", nargs="*", default=["dramatiq", "celery"])
    parser.add_argument("--concurrency", type=int, default=16, help="the peers' workers")
    parser.add_argument("--deliveries", type=int, default=10_000)
    parser.add_argument("--in-flight", type=int, default=256)
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--json", help="write the figures to this file")
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--fail-every", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.fail_every)
        return
    results = asyncio.run(run_all(args))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()

"""``buttress dlq`` and ``buttress relay`` against the real services.

- PostgreSQL outbox -> real Redis Streams: ``buttress relay run`` as a subprocess
  publishes; dead events are listed and replayed with ``buttress dlq``, and the
  replay's NOTIFY wakes the relay (its poll is an hour away), which publishes them;
  ``relay status`` counts; SIGTERM stops it cleanly.
- A NATS JetStream dead-letter stream, opened through ``--queue nats://...``.

Unique tables, streams and subjects per test, removed afterwards.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import psycopg
import pytest
import redis
from click.testing import CliRunner

from buttress.cli._app import app
from buttress.messaging import Envelope, Outbox, migrate

from tests.conftest import SERVICES, require_service

PG = "postgresql://postgres@127.0.0.1:5432/test"
REDIS = f"redis://127.0.0.1:{SERVICES['redis']}/0"
NATS = f"nats://127.0.0.1:{SERVICES['nats']}"
ROOT = Path(__file__).resolve().parents[2]
BOUND = 30.0


def cli(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def table() -> Iterator[str]:
    require_service("postgres")
    name = f"dlqcli_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG) as conn:
        migrate(conn, name)
    yield name
    with psycopg.connect(PG, autocommit=True) as admin:
        admin.execute(f'DROP TABLE IF EXISTS "{name}", "{name}_migrations"')
        admin.execute(f'DROP FUNCTION IF EXISTS "{name}_notify"()')


@pytest.fixture
def stream() -> Iterator[str]:
    require_service("redis")
    name = f"test:buttress:dlqcli:{uuid.uuid4().hex[:12]}"
    yield name
    with redis.Redis.from_url(REDIS) as client:
        client.delete(name)


def wait_for(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + BOUND
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)  # the subprocess's progress, in real time


def published(stream: str) -> list[str]:
    with redis.Redis.from_url(REDIS) as client:
        return [Envelope.from_redis_fields(fields).id for _, fields in client.xrange(stream)]


def test_relay_run_and_dlq_replay_through_postgres_and_redis(table: str, stream: str) -> None:
    events = [Envelope(source="/o", type="order.placed", subject=f"o-{i}") for i in range(4)]
    with psycopg.connect(PG) as conn:
        Outbox(table).add_many(conn, events[:2])
    relay = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "buttress",
            "relay",
            "run",
            "--outbox",
            PG,
            "--table",
            table,
            "--broker",
            f"{REDIS}?stream={stream}",
            "--poll-interval",
            "3600",
            "--concurrency",
            "3",
            "--pool-size",
            "2",
        ],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # The catch-up on start publishes what was there.
        wait_for(lambda: published(stream) == [e.id for e in events[:2]], "the catch-up")
        # Two events die (as after N refused publishes), written while it runs.
        with psycopg.connect(PG) as conn:
            Outbox(table).add_many(conn, events[2:])
            conn.execute(
                f"UPDATE \"{table}\" SET status = 'dead', attempts = 10, "
                "last_error = 'PublishRefused: no route' WHERE event_id = ANY(%s)",
                ([e.id for e in events[2:]],),
            )
        code, out, _ = cli("relay", "status", "--outbox", PG, "--table", table, "--json")
        assert code == 0, out
        counts = json.loads(out)
        assert (counts["pending"], counts["dead"]) == (0, 2)
        code, out, _ = cli("dlq", "list", "--outbox", PG, "--table", table, "--json")
        assert code == 0, out
        assert [json.loads(line)["id"] for line in out.splitlines()] == [e.id for e in events[2:]]
        code, out, _ = cli("dlq", "show", events[2].id, "--outbox", PG, "--table", table)
        assert code == 0
        assert "PublishRefused: no route" in out
        # The replay's NOTIFY wakes the relay: published long before its poll.
        code, out, _ = cli("dlq", "replay", "--all", "--outbox", PG, "--table", table)
        assert (code, out.strip()) == (0, "replayed 2 dead letters")
        wait_for(lambda: len(published(stream)) == 4, "the replayed events")
        assert published(stream) == [e.id for e in events]
        relay.send_signal(signal.SIGTERM)
        _, err = relay.communicate(timeout=BOUND)
    finally:
        if relay.poll() is None:
            relay.kill()
            relay.communicate()
    assert relay.returncode == 0, err
    assert "stopped: 4 published, 0 dead-lettered" in err
    code, out, _ = cli("relay", "status", "--outbox", PG, "--table", table, "--json")
    assert (json.loads(out)["pending"], json.loads(out)["dead"]) == (0, 0)


def test_relay_run_with_the_broker_down_exits_3(table: str) -> None:
    code, _, err = cli(
        "relay",
        "run",
        "--outbox",
        PG,
        "--table",
        table,
        "--broker",
        "redis://127.0.0.1:1/0?stream=x",
    )
    assert code == 3, err
    assert "redis://127.0.0.1:1/0" in err


def test_dlq_purge_on_postgres(table: str) -> None:
    events = [Envelope(source="/o", type="t", subject="k") for _ in range(3)]
    with psycopg.connect(PG) as conn:
        Outbox(table).add_many(conn, events)
        conn.execute(f"UPDATE \"{table}\" SET status = 'dead'")
    code, out, _ = cli("dlq", "purge", events[0].id, "--yes", "--outbox", PG, "--table", table)
    assert (code, out.strip()) == (0, "purged 1 dead letter")
    code, out, _ = cli("dlq", "purge", "--all", "--yes", "--outbox", PG, "--table", table)
    assert (code, out.strip()) == (0, "purged 2 dead letters")


# -- a broker's queue: NATS JetStream ------------------------------------------------------


@pytest.fixture
async def nats_dlq() -> AsyncIterator[tuple[str, str]]:
    """A dead-letter stream with two dead letters: ``(stream, subject)``."""
    require_service("nats")
    import nats

    suffix = uuid.uuid4().hex[:10]
    name, subject = f"TDLQ_{suffix}", f"test.dlqcli.{suffix}.dead"
    client = await nats.connect(NATS)
    js = client.jetstream()
    await js.add_stream(name=name, subjects=[subject])
    try:
        for i in range(2):
            event = Envelope(source="/o", type="order.placed", subject=f"o-{i}", data={"i": i})
            headers, body = event.to_headers(binding="nats")
            headers |= {"Buttress-Dead-Reason": f"handler failed {i}"}
            headers |= {"Buttress-Dead-Deliveries": "5"}
            await js.publish(subject, body, headers=headers)
        yield name, subject
    finally:
        await js.delete_stream(name)
        await client.close()


async def test_dlq_on_a_nats_queue(nats_dlq: tuple[str, str]) -> None:
    name, subject = nats_dlq
    url = f"{NATS}?stream={name}&subject={subject}"

    def run() -> list[tuple[int, str, str]]:
        return [
            cli("dlq", "list", "--queue", url, "--json"),
            cli("dlq", "show", "1", "--queue", url),
            cli("dlq", "purge", "1", "--yes", "--queue", url),
            cli("dlq", "list", "--queue", url, "--json"),
        ]

    # CliRunner runs asyncio.run(): off this test's event loop.
    listed, shown, purged, after = await asyncio.to_thread(run)
    assert listed[0] == 0, listed
    records = [json.loads(line) for line in listed[1].splitlines()]
    assert [(r["id"], r["type"], r["attempts"], r["reason"]) for r in records] == [
        ("1", "order.placed", 5, "handler failed 0"),
        ("2", "order.placed", 5, "handler failed 1"),
    ]
    assert shown[0] == 0
    assert "handler failed 0" in shown[1]
    assert purged[1].strip() == "purged 1 dead letter"
    assert [json.loads(line)["id"] for line in after[1].splitlines()] == ["2"]


# -- relay run to each broker, by URL scheme ----------------------------------------------


def run_relay_until(table: str, broker: str, done: Callable[[], bool]) -> str:
    """``buttress relay run`` until ``done()``, then SIGTERM; its standard error."""
    relay = subprocess.Popen(
        [
            *(sys.executable, "-m", "buttress", "relay", "run", "--outbox", PG),
            *("--table", table, "--broker", broker, "--poll-interval", "0.2"),
        ],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(done, f"the events at {broker}")
        relay.send_signal(signal.SIGTERM)
        _, err = relay.communicate(timeout=BOUND)
    finally:
        if relay.poll() is None:
            relay.kill()
            relay.communicate()
    assert relay.returncode == 0, err
    return err


def test_relay_run_to_nats(table: str) -> None:
    require_service("nats")
    import nats

    stream = f"TRELAYCLI_{uuid.uuid4().hex[:10]}"
    events = [Envelope(source="/o", type="order.placed", subject=f"o-{i}") for i in range(3)]
    with psycopg.connect(PG) as conn:
        Outbox(table).add_many(conn, events)

    async def stored() -> int:
        client = await nats.connect(NATS)
        try:
            info = await client.jetstream().stream_info(stream)
            return int(info.state.messages)
        except nats.js.errors.NotFoundError:
            return 0
        finally:
            await client.close()

    async def drop() -> None:
        client = await nats.connect(NATS)
        try:
            await client.jetstream().delete_stream(stream)
        finally:
            await client.close()

    try:
        url = f"{NATS}?stream={stream}&subject_prefix={stream.lower()}"
        err = run_relay_until(table, url, lambda: asyncio.run(stored()) == 3)
    finally:
        asyncio.run(drop())
    assert "stopped: 3 published" in err


def test_relay_run_to_rabbitmq(table: str) -> None:
    require_service("rabbitmq")
    import aio_pika

    name = f"test.buttress.relaycli.{uuid.uuid4().hex[:10]}"
    amqp = f"amqp://guest:guest@127.0.0.1:{SERVICES['rabbitmq']}/"
    events = [Envelope(source="/o", type="order.placed", subject=f"o-{i}") for i in range(3)]
    with psycopg.connect(PG) as conn:
        Outbox(table).add_many(conn, events)

    async def queued() -> int:
        connection = await aio_pika.connect(amqp)
        async with connection:
            channel = await connection.channel()
            try:
                queue = await channel.declare_queue(name, passive=True)
            except aio_pika.exceptions.ChannelClosed:
                return 0
            return int(queue.declaration_result.message_count or 0)

    async def drop() -> None:
        connection = await aio_pika.connect(amqp)
        async with connection:
            channel = await connection.channel()
            for queue in (name, f"{name}.dlq"):
                await channel.queue_delete(queue)
            for exchange in (name, f"{name}.dlx"):
                await channel.exchange_delete(exchange)

    try:
        url = f"{amqp}?exchange={name}&queue={name}"
        err = run_relay_until(table, url, lambda: asyncio.run(queued()) == 3)
    finally:
        asyncio.run(drop())
    assert "stopped: 3 published" in err

"""``buttress dlq --queue`` on the real brokers' dead-letter queues, opened by URL
scheme through the registry: Redis Streams (``<stream>:dead``) and RabbitMQ
(``<queue>.dlq``), each filled as their consumers dead-letter a message.

Unique stream keys and queue names per test, deleted afterwards.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aio_pika
import pytest
import redis.asyncio
from click.testing import CliRunner

from buttress.cli._app import app
from buttress.messaging import Envelope

from tests.conftest import SERVICES, require_service

REDIS = f"redis://127.0.0.1:{SERVICES['redis']}/0"
AMQP = f"amqp://guest:guest@127.0.0.1:{SERVICES['rabbitmq']}/"


def event(i: int) -> Envelope:
    return Envelope(source="/orders", type="order.placed", subject=f"o-{i}", data={"i": i})


def cli(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


async def commands(*runs: list[str]) -> list[tuple[int, str, str]]:
    """Run ``buttress`` commands off the test's event loop (each runs asyncio.run)."""
    return await asyncio.to_thread(lambda: [cli(*args) for args in runs])


# -- Redis Streams ----------------------------------------------------------------------


@pytest.fixture
async def redis_stream() -> AsyncIterator[tuple[redis.asyncio.Redis, str]]:
    require_service("redis")
    client = redis.asyncio.Redis.from_url(REDIS)
    name = f"test:buttress:dlqq:{uuid.uuid4().hex[:12]}"
    async with client:
        yield client, name
        found = [k async for k in client.scan_iter(match=f"{name}*")]
        if found:
            await client.delete(*found)


async def test_dlq_on_a_redis_streams_queue(
    redis_stream: tuple[redis.asyncio.Redis, str],
) -> None:
    client, stream = redis_stream
    sent = [event(i) for i in range(3)]
    ids: list[str] = []
    for i, e in enumerate(sent):
        fields: dict[Any, Any] = {**e.to_redis_fields(), "buttress_reason": f"failed {i}"}
        fields["buttress_deliveries"] = "4"
        entry: Any = await client.xadd(f"{stream}:dead", fields)
        ids.append(entry.decode())
    await client.xadd(f"{stream}:poison", {"data": b"not an event", "buttress_reason": "bad"})
    url = f"{REDIS}?stream={stream}"
    listed, shown, replayed, purged, after, poison = await commands(
        ["dlq", "list", "--queue", url, "--json"],
        ["dlq", "show", ids[1], "--queue", url],
        ["dlq", "replay", ids[0], "--queue", url],
        ["dlq", "purge", "--all", "--yes", "--queue", url],
        ["dlq", "list", "--queue", url],
        ["dlq", "list", "--queue", f"{url}&poison=true", "--json"],
    )
    assert listed[0] == 0, listed
    records = [json.loads(line) for line in listed[1].splitlines()]
    assert [(r["id"], r["event_id"], r["attempts"], r["reason"]) for r in records] == [
        (ids[i], sent[i].id, 4, f"failed {i}") for i in range(3)
    ]
    assert shown[0] == 0
    assert "failed 1" in shown[1]
    assert replayed[1].strip() == "replayed 1 dead letter"
    assert purged[1].strip() == "purged 2 dead letters"
    assert after[1].strip() == "no dead letters"
    [bad] = [json.loads(line) for line in poison[1].splitlines()]
    assert (bad["event"], bad["body"], bad["reason"]) == (None, "not an event", "bad")
    # The replayed one went back to the stream its consumers read.
    entries: Any = await client.xrange(stream)
    [(_, back)] = entries
    assert Envelope.from_redis_fields(back).id == sent[0].id


# -- RabbitMQ ---------------------------------------------------------------------------


@pytest.fixture
async def amqp_queue() -> AsyncIterator[tuple[aio_pika.abc.AbstractChannel, str]]:
    require_service("rabbitmq")
    name = f"test.buttress.dlqq.{uuid.uuid4().hex[:12]}"
    connection = await aio_pika.connect_robust(AMQP)
    async with connection:
        channel = await connection.channel()
        await channel.declare_queue(name, durable=True)
        await channel.declare_queue(f"{name}.dlq", durable=True)
        yield channel, name
        for queue in (name, f"{name}.dlq"):
            await channel.queue_delete(queue)


async def test_dlq_on_a_rabbitmq_queue(
    amqp_queue: tuple[aio_pika.abc.AbstractChannel, str],
) -> None:
    channel, queue = amqp_queue
    sent = [event(i) for i in range(2)]
    for i, e in enumerate(sent):
        properties, content_type, body = e.to_amqp()
        headers: dict[str, object] = {
            **properties,
            "x-buttress-reason": f"failed {i}",
            "x-buttress-deliveries": 5,
            "x-buttress-dead-id": f"dead-{i}",
        }
        await channel.default_exchange.publish(
            aio_pika.Message(
                body,
                content_type=content_type,
                message_id=e.id,
                headers=headers,  # type: ignore[arg-type]
            ),
            routing_key=f"{queue}.dlq",
        )
    url = f"{AMQP}?queue={queue}"
    listed, replayed, after = await commands(
        ["dlq", "list", "--queue", url, "--json"],
        ["dlq", "replay", "dead-1", "--queue", url],
        ["dlq", "list", "--queue", url, "--json"],
    )
    assert listed[0] == 0, listed
    records = [json.loads(line) for line in listed[1].splitlines()]
    assert [(r["id"], r["event_id"], r["attempts"], r["reason"]) for r in records] == [
        ("dead-0", sent[0].id, 5, "failed 0"),
        ("dead-1", sent[1].id, 5, "failed 1"),
    ]
    assert replayed[1].strip() == "replayed 1 dead letter"
    assert [json.loads(line)["id"] for line in after[1].splitlines()] == ["dead-0"]
    back = await (await channel.get_queue(queue)).get(timeout=5)
    assert back is not None
    await back.ack()
    assert Envelope.from_amqp(back.headers, back.content_type, back.body).id == sent[1].id

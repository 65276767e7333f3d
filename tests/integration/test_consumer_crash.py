"""Crash safety: a consumer process SIGKILLed mid-handler loses nothing.

The consumer runs as a subprocess (this module run as a script) whose handler prints
the event id and then never returns. The test kills it with SIGKILL while the
handler runs; a second consumer then receives the same message again (at least
once), on RabbitMQ (the dead connection's unacknowledged message is requeued) and on
Redis Streams (the dead member's pending entry is claimed after ``claim_idle``).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from buttress.messaging import Envelope
from buttress.messaging.brokers.rabbitmq import RabbitMQPublisher
from buttress.messaging.brokers.rabbitmq_consumer import RabbitMQSource
from buttress.messaging.brokers.redis_streams import RedisStreamsPublisher
from buttress.messaging.brokers.redis_streams_consumer import RedisStreamsSource
from buttress.messaging.consumer import Consumer, Received

from tests.conftest import SERVICES, require_service

AMQP = f"amqp://guest:guest@127.0.0.1:{SERVICES['rabbitmq']}/"
REDIS = f"redis://127.0.0.1:{SERVICES['redis']}/0"
ROOT = Path(__file__).resolve().parents[2]
CLAIM_IDLE = 0.5


def make_source(broker: str, name: str, member: str) -> RabbitMQSource | RedisStreamsSource:
    if broker == "rabbitmq":
        return RabbitMQSource(AMQP, exchange=name, queue=f"{name}.q")
    return RedisStreamsSource(REDIS, stream=name, group="g", consumer=member, claim_idle=CLAIM_IDLE)


async def worker(broker: str, name: str) -> None:
    """The subprocess: consume, announce each message, never finish handling it."""

    async def handler(envelope: Envelope) -> None:
        print(envelope.id, flush=True)
        await asyncio.Event().wait()

    source = make_source(broker, name, "doomed")
    await source.connect()
    await Consumer(source, handler, receive_timeout=0.1).run()


@pytest.fixture(params=["rabbitmq", "redis"])
async def broker(request: pytest.FixtureRequest) -> AsyncIterator[tuple[str, str]]:
    kind: str = request.param
    require_service(kind)
    name = f"test.buttress.crash.{uuid.uuid4().hex[:12]}"
    yield kind, name
    if kind == "rabbitmq":
        import aio_pika

        connection = await aio_pika.connect(AMQP)
        async with connection:
            channel = await connection.channel()
            for queue in (f"{name}.q", f"{name}.q.dlq", f"{name}.q.poison"):
                await channel.queue_delete(queue)
            for exchange in (name, f"{name}.q.dlx"):
                await channel.exchange_delete(exchange)
    else:
        import redis.asyncio

        client = redis.asyncio.Redis.from_url(REDIS)
        async with client:
            keys = [k async for k in client.scan_iter(match=f"{name}*")]
            if keys:
                await client.delete(*keys)


async def test_a_consumer_killed_mid_handler_has_its_message_redelivered(
    broker: tuple[str, str],
) -> None:
    kind, name = broker
    [sent] = [Envelope(source="/orders", type="order.placed", data={"n": 1})]
    first = make_source(kind, name, "setup")
    await first.connect()  # the topology, before publishing
    await first.close()
    if kind == "rabbitmq":
        async with RabbitMQPublisher(AMQP, exchange=name, queue=f"{name}.q") as pub:
            await pub.publish([sent])
    else:
        async with RedisStreamsPublisher(REDIS, stream=name, maxlen=None) as rpub:
            await rpub.publish([sent])

    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.integration.test_consumer_crash",
        kind,
        name,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        assert process.stdout is not None
        async with asyncio.timeout(30):
            line = await process.stdout.readline()
        assert line.decode().strip() == sent.id  # the handler is running
    finally:
        process.send_signal(signal.SIGKILL)
        await process.wait()

    source = make_source(kind, name, "survivor")
    await source.connect()
    try:
        got: list[Received] = []
        async with asyncio.timeout(30):
            while not got:
                got = list(await source.receive(10, 0.5))
        [message] = got
        assert message.envelope() == sent
        assert message.deliveries == 2
        await message.ack()
    finally:
        await source.close()


if __name__ == "__main__":
    asyncio.run(worker(sys.argv[1], sys.argv[2]))

"""The consumer runner on RabbitMQSource, against the real RabbitMQ.

Every test declares its own exchange and queues (unique names) and deletes them after.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import aio_pika
import aio_pika.abc
import pytest
import redis.asyncio

from buttress.errors import ConfigError
from buttress.messaging import Envelope
from buttress.messaging.brokers.rabbitmq import RabbitMQPublisher
from buttress.messaging.brokers.rabbitmq_consumer import (
    RabbitMQDeadLetters,
    RabbitMQSource,
    delay_step,
)
from buttress.messaging.consumer import Consumer, Received, Source, SourceUnavailable
from buttress.messaging.deadletters import DeadLetters
from buttress.policies.backoff import Constant

from tests.conftest import SERVICES, require_service
from tests.faults import FaultProxy

URL = f"amqp://guest:guest@127.0.0.1:{SERVICES['rabbitmq']}/"


@dataclass
class Names:
    exchange: str
    queue: str


@pytest.fixture
async def admin() -> AsyncIterator[aio_pika.abc.AbstractChannel]:
    require_service("rabbitmq")
    connection = await aio_pika.connect(URL)
    async with connection:
        yield await connection.channel()


@pytest.fixture
async def names(admin: aio_pika.abc.AbstractChannel) -> AsyncIterator[Names]:
    tag = uuid.uuid4().hex[:12]
    found = Names(exchange=f"test.buttress.{tag}", queue=f"test.buttress.{tag}.q")
    yield found
    queues = [found.queue, f"{found.queue}.dlq", f"{found.queue}.poison"]
    queues += [f"{found.queue}.retry.{ms}" for ms in (10, 15, 20, 30, 50, 75, 100, 150, 200)]
    for queue in queues:
        await admin.queue_delete(queue)
    for exchange in (found.exchange, f"{found.queue}.dlx"):
        await admin.exchange_delete(exchange)


def events(n: int) -> list[Envelope]:
    return [
        Envelope(source="/orders", type="order.placed", subject=f"o-{i}", data={"i": i})
        for i in range(n)
    ]


def publisher(names: Names) -> RabbitMQPublisher:
    return RabbitMQPublisher(URL, exchange=names.exchange, queue=names.queue)


def source(names: Names, **options: object) -> RabbitMQSource:
    return RabbitMQSource(URL, exchange=names.exchange, queue=names.queue, **options)  # type: ignore[arg-type]


async def wait_for(condition: Callable[[], bool], seconds: float = 15.0) -> None:
    async with asyncio.timeout(seconds):
        while not condition():  # noqa: ASYNC110 - polls a counter
            await asyncio.sleep(0.02)


async def test_source_and_dead_letters_implement_the_protocols(names: Names) -> None:
    async with source(names) as src:
        assert isinstance(src, Source)
        assert isinstance(src.dead_letters(), DeadLetters)


async def test_the_publishers_topology_is_declared_alike_on_either_side_first(
    names: Names,
) -> None:
    consumer_first = source(names, priority=5)
    await consumer_first.connect()
    async with RabbitMQPublisher(URL, exchange=names.exchange, queue=names.queue, priority=5):
        pass
    await consumer_first.close()
    with pytest.raises(ConfigError) as caught:
        async with source(names):  # other arguments than the queue has
            pass
    assert caught.value.path == "queue"


async def test_messages_are_handled_and_acked_after_success(
    admin: aio_pika.abc.AbstractChannel, names: Names
) -> None:
    sent = events(5)
    got: list[Envelope] = []

    async def handler(envelope: Envelope) -> None:
        got.append(envelope)

    async with source(names) as src, publisher(names) as pub:
        await pub.publish(sent)
        runner = Consumer(src, handler, receive_timeout=0.5)
        assert await runner.drain() == 5
    assert got == sent  # one consumer, one queue: in order
    queue = await admin.declare_queue(names.queue, passive=True)
    assert queue.declaration_result.message_count == 0


async def test_failures_are_retried_then_dead_lettered_then_replayed(
    admin: aio_pika.abc.AbstractChannel, names: Names
) -> None:
    [bad] = events(1)
    broken = True
    seen: list[int] = []

    async def handler(envelope: Envelope) -> None:
        seen.append(1)
        if broken:
            raise RuntimeError("downstream refused")

    async with source(names) as src, publisher(names) as pub:
        await pub.publish([bad])
        runner = Consumer(
            src, handler, max_deliveries=3, backoff=Constant(0.05), receive_timeout=0.1
        )
        task = asyncio.create_task(runner.run())
        await wait_for(lambda: runner.dead_lettered == 1)
        assert len(seen) == 3
        assert runner.retried == 2
        dead = src.dead_letters()
        [letter] = await dead.list()
        assert letter.envelope == bad
        assert letter.attempts == 3
        assert "RuntimeError: downstream refused" in letter.reason
        assert letter.dead_at is not None
        assert await dead.get(letter.id) == letter
        broken = False
        assert await dead.replay() == 1
        await wait_for(lambda: runner.handled == 1)
        assert await dead.list() == []
        runner.stop()
        await task
        await dead.close()


async def test_a_quorum_queue_retries_counts_and_dead_letters(
    admin: aio_pika.abc.AbstractChannel, names: Names
) -> None:
    [bad] = events(1)
    seen: list[int] = []

    async def handler(envelope: Envelope) -> None:
        seen.append(1)
        raise RuntimeError("downstream refused")

    quorum = RabbitMQPublisher(URL, exchange=names.exchange, queue=names.queue, queue_type="quorum")
    async with source(names, queue_type="quorum") as src, quorum as pub:
        await pub.publish([bad])
        runner = Consumer(
            src, handler, max_deliveries=3, backoff=Constant(0.05), receive_timeout=0.1
        )
        task = asyncio.create_task(runner.run())
        await wait_for(lambda: runner.dead_lettered == 1)
        runner.stop()
        await task
        assert len(seen) == 3  # counted right: not one delivery more, nor less
        dead = src.dead_letters()
        [letter] = await dead.list()
        assert letter.envelope == bad
        assert letter.attempts == 3
        await dead.close()
    with pytest.raises(ConfigError) as caught:
        async with source(names):  # a classic declaration of the quorum queue: refused
            pass
    assert caught.value.path == "queue"


async def test_a_retry_waits_at_least_its_delay(names: Names) -> None:
    async with source(names) as src, publisher(names) as pub:
        await pub.publish(events(1))
        [message] = await src.receive(10, 5.0)
        await message.retry(0.2)
        loop = asyncio.get_running_loop()
        start = loop.time()
        [again] = await src.receive(10, 5.0)
        assert loop.time() - start >= 0.19
        assert again.deliveries == 2
        assert again.envelope() == message.envelope()
        await again.ack()


async def test_a_malformed_message_goes_to_the_poison_queue_and_the_runner_goes_on(
    admin: aio_pika.abc.AbstractChannel, names: Names
) -> None:
    handled: list[str] = []

    async def handler(envelope: Envelope) -> None:
        handled.append(envelope.id)

    async with source(names) as src, publisher(names) as pub:
        exchange = await admin.get_exchange(names.exchange)
        await exchange.publish(
            aio_pika.Message(b"\xff not json", content_type="application/json"), "junk"
        )
        await pub.publish(events(1))
        runner = Consumer(src, handler, receive_timeout=0.5)
        await runner.drain()
        poison = src.dead_letters(poison=True)
        [letter] = await poison.list()
        await poison.close()
    assert runner.poisoned == 1
    assert len(handled) == 1
    assert letter.envelope is None
    assert letter.body == b"\xff not json"
    assert letter.reason.startswith("EnvelopeError")


async def test_at_most_concurrency_handlers_at_once(names: Names) -> None:
    running = peak = 0

    async def handler(envelope: Envelope) -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.02)
        running -= 1

    async with source(names, prefetch=4) as src, publisher(names) as pub:
        await pub.publish(events(12))
        runner = Consumer(src, handler, concurrency=4, receive_timeout=0.5)
        assert await runner.drain() == 12
    assert peak == 4


async def test_a_runner_cancelled_mid_handler_leaves_the_message_to_be_redelivered(
    names: Names,
) -> None:
    [sent] = events(1)
    started = asyncio.Event()

    async def stuck(envelope: Envelope) -> None:
        started.set()
        await asyncio.Event().wait()

    async with publisher(names) as pub:
        await pub.publish([sent])
    first = source(names)
    await first.connect()
    runner = Consumer(first, stuck, receive_timeout=0.1)
    task = asyncio.create_task(runner.run())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await first.close()  # the unacknowledged message goes back to the queue

    async with source(names) as second:
        messages: list[Received] = []
        async with asyncio.timeout(10):
            while not messages:
                messages = list(await second.receive(10, 1.0))
        [message] = messages
        assert message.envelope() == sent
        assert message.deliveries == 2  # RabbitMQ flagged it redelivered
        await message.ack()


async def test_with_an_inbox_a_duplicate_has_no_second_effect(names: Names) -> None:
    require_service("redis")
    from buttress.messaging.inbox import RedisInbox

    [sent] = events(1)
    effects: list[str] = []

    async def handler(envelope: Envelope) -> None:
        effects.append(envelope.id)

    client = redis.asyncio.Redis.from_url(f"redis://127.0.0.1:{SERVICES['redis']}/0")
    prefix = f"test:buttress:inbox:{uuid.uuid4().hex[:12]}:"
    try:
        inbox = RedisInbox(client, ttl=60, prefix=prefix)
        async with source(names) as src, publisher(names) as pub:
            await pub.publish([sent, sent])  # published twice (at least once)
            runner = Consumer(src, handler, inbox=inbox, receive_timeout=0.5, concurrency=1)
            assert await runner.drain() == 2
        assert effects == [sent.id]
        assert runner.duplicates == 1
    finally:
        await client.delete(prefix + sent.id)
        await client.aclose()


async def test_dead_letters_list_in_order_page_and_purge(names: Names) -> None:
    async with source(names) as src, publisher(names) as pub:
        await pub.publish(events(4))
        got: list[Received] = []
        async with asyncio.timeout(10):
            while len(got) < 4:
                got.extend(await src.receive(10, 1.0))
        for message in got:
            await message.dead_letter(f"given up on {message.envelope().subject}")
        dead = src.dead_letters()
        letters = await dead.list()
        assert [x.reason for x in letters] == [f"given up on o-{i}" for i in range(4)]
        assert await dead.list() == letters  # listing puts them back, in order
        page = await dead.list(limit=2, after=letters[0].id)
        assert [x.id for x in page] == [letters[1].id, letters[2].id]
        assert await dead.purge([letters[1].id, "nope"]) == 1
        assert await dead.get(letters[1].id) is None
        assert [x.id for x in await dead.list()] == [letters[0].id, letters[2].id, letters[3].id]
        assert await dead.purge() == 3
        assert await dead.list() == []
        await dead.close()


def test_delay_steps_round_up() -> None:
    assert delay_step(0) == 0
    assert delay_step(0.001) == 10
    assert delay_step(0.2) == 200
    assert delay_step(0.25) == 300
    assert delay_step(1.2) == 1500
    assert delay_step(4) == 5000
    assert delay_step(300) == 300_000


def test_bad_options_are_refused_by_name() -> None:
    for options, path in [
        ({"url": "http://x"}, "url"),
        ({"queue": ""}, "queue"),
        ({"prefetch": 0}, "prefetch"),
        ({"exchange_type": "nope"}, "exchange_type"),
        ({"timeout": 0}, "timeout"),
        ({"queue_type": "stream"}, "queue_type"),
        ({"queue_type": "quorum", "priority": 5}, "priority"),
    ]:
        kwargs: dict[str, object] = {"url": URL, "exchange": "e", "queue": "q", **options}
        with pytest.raises(ConfigError) as caught:
            RabbitMQSource(**kwargs)  # type: ignore[arg-type]
        assert caught.value.path == path
    with pytest.raises(ConfigError):
        RabbitMQDeadLetters(URL, queue="q", timeout=-1)


async def test_a_consumer_whose_connection_is_reset_reconnects_and_goes_on(
    names: Names,
) -> None:
    handled: list[str] = []

    async def handler(envelope: Envelope) -> None:
        handled.append(envelope.id)

    async with FaultProxy(SERVICES["rabbitmq"]) as proxy, publisher(names) as pub:
        url = f"amqp://guest:guest@127.0.0.1:{proxy.port}/"
        src = RabbitMQSource(url, exchange=names.exchange, queue=names.queue, timeout=2)
        async with src:
            runner = Consumer(src, handler, receive_timeout=0.1)
            task = asyncio.create_task(runner.run())
            await pub.publish(events(2))  # straight to RabbitMQ, not through the proxy
            await wait_for(lambda: len(handled) == 2)
            await proxy.set_mode("reset")  # the consumer's connection is cut
            await pub.publish(events(2))
            await asyncio.sleep(0.5)
            assert not task.done()
            await proxy.set_mode("pass")
            await wait_for(lambda: len(handled) >= 4, 30)  # after the reconnection
            runner.stop()
            await task
    assert len(set(handled)) == 4


async def test_a_copy_that_cannot_be_published_hands_the_message_back_at_once(
    admin: aio_pika.abc.AbstractChannel, names: Names
) -> None:
    async with source(names) as src, publisher(names) as pub:
        await pub.publish(events(1))
        [message] = await src.receive(10, 5.0)
        await admin.queue_delete(f"{names.queue}.dlq")  # the copy has nowhere to go
        with pytest.raises(SourceUnavailable):
            await message.dead_letter("given up")
        [again] = await src.receive(10, 5.0)  # not held until the channel closes
        assert again.envelope() == message.envelope()
        assert again.deliveries == 2
        await again.ack()


async def test_runners_cancelled_again_and_again_lose_nothing(names: Names) -> None:
    sent = events(120)
    rng = random.Random(8)
    done: set[str] = set()

    async def handler(envelope: Envelope) -> None:
        await asyncio.sleep(rng.random() * 0.02)
        if rng.random() < 0.2:
            raise RuntimeError("flaky")
        done.add(envelope.id)

    def runner() -> Consumer:
        return Consumer(
            src,
            handler,
            concurrency=4,
            backoff=Constant(0.01),
            max_deliveries=50,
            receive_timeout=0.1,
        )

    async with source(names, prefetch=4) as src, publisher(names) as pub:
        await pub.publish(sent)
        for _ in range(5):
            task = asyncio.create_task(runner().run())
            await asyncio.sleep(0.05)
            task.cancel()  # mid-handler, mid-receive, wherever it is
            with pytest.raises(asyncio.CancelledError):
                await task
        assert len(done) < len(sent)
        async with asyncio.timeout(60):
            await runner().drain()
    assert done == {e.id for e in sent}  # every one handled, at least once


def test_the_publisher_checks_the_queue_type_alike() -> None:
    for options, path in [
        ({"queue_type": "stream"}, "queue_type"),
        ({"queue_type": "quorum", "priority": 5}, "priority"),
    ]:
        with pytest.raises(ConfigError) as caught:
            RabbitMQPublisher(URL, exchange="e", queue="q", **options)  # type: ignore[arg-type]
        assert caught.value.path == path

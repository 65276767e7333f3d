"""RabbitMQPublisher against the real RabbitMQ, with faults injected through a TCP proxy.

Every test declares its own exchange and queues (unique names) and deletes them after.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aio_pika
import aio_pika.abc
import pytest
from cloudevents.core.bindings import amqp

from buttress import CircuitBreaker, CircuitState, Pipeline, Retry
from buttress.clock import FakeClock
from buttress.errors import CircuitOpen, ConfigError, RetryExhausted, is_transient
from buttress.messaging import Envelope
from buttress.messaging.brokers import BrokerUnavailable, PublishRefused, rabbitmq
from buttress.messaging.brokers.rabbitmq import RabbitMQPublisher

from tests.conftest import SERVICES, require_service
from tests.faults import FaultProxy

URL = f"amqp://guest:guest@127.0.0.1:{SERVICES['rabbitmq']}/"
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


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
    for queue in (found.queue, f"{found.queue}.dlq"):
        await admin.queue_delete(queue)
    for exchange in (found.exchange, f"{found.queue}.dlx"):
        await admin.exchange_delete(exchange)


def events(n: int, **kwargs: object) -> list[Envelope]:
    return [
        Envelope(source="/orders", type="order.placed", subject=f"o-{i}", data={"i": i}, **kwargs)  # type: ignore[arg-type]
        for i in range(n)
    ]


async def drain(
    admin: aio_pika.abc.AbstractChannel, name: str
) -> list[aio_pika.abc.AbstractIncomingMessage]:
    queue = await admin.declare_queue(name, passive=True)
    got = []
    while (message := await queue.get(fail=False)) is not None:
        await message.ack()
        got.append(message)
    return got


async def test_messages_are_persistent_with_the_event_id_and_read_by_the_cloudevents_sdk(
    admin: aio_pika.abc.AbstractChannel, names: Names
) -> None:
    sent = [
        Envelope(
            source="/orders",
            type="com.example.order.placed",
            subject="order-42",
            data={"total": 12.5, "note": 'naïve "q" 100%'},
            time=dt.datetime(2026, 11, 27, 12, 30, 45, 123456, tzinfo=dt.UTC),
            dataschema="https://example.com/schemas/order.json",
            schemaversion="3",
            traceparent=TRACEPARENT,
            extensions={"tenant": "acme corp"},
        ),
        Envelope(
            source="/blobs",
            type="blob.stored",
            datacontenttype="application/octet-stream",
            data=b"\x00\xff raw",
        ),
    ]
    async with RabbitMQPublisher(URL, exchange=names.exchange, queue=names.queue) as publisher:
        await publisher.publish(sent)
    got = await drain(admin, names.queue)
    assert [m.message_id for m in got] == [e.id for e in sent]
    for message, ours in zip(got, sent, strict=True):
        assert message.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
        assert message.routing_key == ours.type
        assert message.headers["cloudEvents_id"] == ours.id
        assert message.headers["cloudEvents_specversion"] == "1.0"
        assert message.content_type == ours.datacontenttype
        assert message.content_type is not None
        assert Envelope.from_amqp(message.headers, message.content_type, message.body) == ours
        sdk = amqp.from_binary_event(
            amqp.AMQPMessage(
                properties={"content-type": message.content_type},
                application_properties=dict(message.headers),
                application_data=message.body,
            )
        )
        assert sdk.get_id() == ours.id
        assert sdk.get_source() == ours.source
        assert sdk.get_type() == ours.type
        assert sdk.get_subject() == ours.subject
        assert sdk.get_time() == ours.time
        assert sdk.get_datacontenttype() == ours.datacontenttype
        assert sdk.get_data() == ours.data
    sdk_first = amqp.from_binary_event(
        amqp.AMQPMessage(
            properties={"content-type": got[0].content_type},
            application_properties=dict(got[0].headers),
            application_data=got[0].body,
        )
    )
    assert sdk_first.get_extension("traceparent") == TRACEPARENT
    assert sdk_first.get_extension("tenant") == "acme corp"
    assert sdk_first.get_extension("schemaversion") == "3"


async def test_dead_letter_queue_is_declared_and_receives_rejected_messages(
    admin: aio_pika.abc.AbstractChannel, names: Names
) -> None:
    async with RabbitMQPublisher(URL, exchange=names.exchange, queue=names.queue) as publisher:
        assert publisher.dead_letter_queue == f"{names.queue}.dlq"
        [event] = events(1)
        await publisher.publish([event])
    queue = await admin.declare_queue(names.queue, passive=True)
    message = await queue.get()
    await message.reject(requeue=False)  # a consumer gives up on it
    dead = await admin.declare_queue(f"{names.queue}.dlq", passive=True)
    for _ in range(100):  # dead-lettering is asynchronous in the broker
        got = await dead.get(fail=False)
        if got is not None:
            break
        await asyncio.sleep(0.01)
    assert got is not None
    assert got.message_id == event.id
    assert got.headers["x-death"]  # type: ignore[truthy-bool]
    await got.ack()


async def test_priority_queue_delivers_higher_priority_first(
    admin: aio_pika.abc.AbstractChannel, names: Names
) -> None:
    urgent = {"urgent"}
    async with RabbitMQPublisher(
        URL,
        exchange=names.exchange,
        queue=names.queue,
        priority=5,
        message_priority=lambda e: 5 if e.subject in urgent else 1,
    ) as publisher:
        low = events(3)
        high = Envelope(source="/orders", type="order.placed", subject="urgent")
        await publisher.publish([*low, high])
    got = await drain(admin, names.queue)
    assert [m.message_id for m in got] == [high.id, *(e.id for e in low)]
    assert got[0].priority == 5


async def test_topology_is_declared_idempotently_and_conflicts_are_config_errors(
    names: Names,
) -> None:
    async with RabbitMQPublisher(URL, exchange=names.exchange, queue=names.queue) as first:
        await first.connect()  # again: nothing happens
        async with RabbitMQPublisher(URL, exchange=names.exchange, queue=names.queue) as second:
            await second.publish(events(1))
        conflicting = RabbitMQPublisher(URL, exchange=names.exchange, queue=names.queue, priority=3)
        with pytest.raises(ConfigError) as info:
            await conflicting.connect()
        assert info.value.path == "queue"
        await conflicting.close()


async def test_a_batch_of_1000_is_confirmed(
    admin: aio_pika.abc.AbstractChannel, names: Names
) -> None:
    batch = events(1000)
    async with RabbitMQPublisher(
        URL, exchange=names.exchange, queue=names.queue, max_in_flight=100
    ) as publisher:
        await publisher.publish(batch)
    queue = await admin.declare_queue(names.queue, passive=True)
    assert queue.declaration_result.message_count == 1000
    got = await drain(admin, names.queue)
    assert [m.message_id for m in got] == [e.id for e in batch]  # one channel: in order


async def test_unroutable_events_are_refused_not_dropped(names: Names) -> None:
    # No queue is bound to the exchange: RabbitMQ returns mandatory messages.
    async with RabbitMQPublisher(URL, exchange=names.exchange) as publisher:
        batch = events(3)
        with pytest.raises(PublishRefused) as info:
            await publisher.publish(batch)
    assert info.value.unconfirmed == tuple(e.id for e in batch)
    assert not is_transient(info.value)


async def test_broker_unreachable_at_first_publish_is_transient() -> None:
    require_service("rabbitmq")
    async with FaultProxy(SERVICES["rabbitmq"], mode="refuse") as proxy:
        publisher = RabbitMQPublisher(
            f"amqp://guest:guest@127.0.0.1:{proxy.port}/", exchange="unused", timeout=2
        )
        batch = events(2)
        with pytest.raises(BrokerUnavailable) as info:
            await publisher.publish(batch)
        assert info.value.unconfirmed == tuple(e.id for e in batch)
        assert is_transient(info.value)
        await publisher.close()


@pytest.mark.parametrize("fault", ["reset", "stall"])
async def test_broker_cut_off_raises_transient_error_then_publishing_resumes(
    admin: aio_pika.abc.AbstractChannel, names: Names, fault: str
) -> None:
    async with FaultProxy(SERVICES["rabbitmq"]) as proxy:
        publisher = RabbitMQPublisher(
            f"amqp://guest:guest@127.0.0.1:{proxy.port}/",
            exchange=names.exchange,
            queue=names.queue,
            timeout=1,
            reconnect_interval=0.1,
        )
        async with publisher:
            await publisher.publish(events(1))
            await proxy.set_mode(fault)  # type: ignore[arg-type]
            cut = events(3)
            with pytest.raises(BrokerUnavailable) as info:
                # The guard is only against a hang; the publisher's own timeout is 1 s.
                await asyncio.wait_for(publisher.publish(cut), 30)
            assert set(info.value.unconfirmed) <= {e.id for e in cut}
            assert info.value.unconfirmed
            assert is_transient(info.value)
            await proxy.set_mode("pass")
            after = events(2)
            for _ in range(20):  # the robust connection may still be reconnecting
                try:
                    await publisher.publish(after)
                    break
                except BrokerUnavailable:
                    continue
            else:
                pytest.fail("publishing never resumed after the broker came back")
    got = {m.message_id for m in await drain(admin, names.queue)}
    assert {e.id for e in after} <= got  # at-least-once: the cut ones may be there too


async def test_retry_and_circuit_breaker_around_publish(
    admin: aio_pika.abc.AbstractChannel, names: Names
) -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(consecutive_failures=3, open_duration=60, clock=clock)
    pipeline = Pipeline(Retry(2, delay=0.5, clock=clock), breaker)
    async with FaultProxy(SERVICES["rabbitmq"]) as proxy:
        publisher = RabbitMQPublisher(
            f"amqp://guest:guest@127.0.0.1:{proxy.port}/",
            exchange=names.exchange,
            queue=names.queue,
            timeout=1,
            reconnect_interval=0.1,
        )
        async with publisher:
            calls = 0

            async def publish(batch: list[Envelope]) -> None:
                nonlocal calls
                calls += 1
                try:
                    await publisher.publish(batch)
                finally:
                    if calls == 1:  # the broker comes back after the first attempt
                        await proxy.set_mode("pass")

            # A failure the retry absorbs: the first attempt meets a cut connection.
            await proxy.set_mode("reset")
            first = events(2)
            await pipeline.acall(publish, first)
            assert calls == 2
            assert breaker.state is CircuitState.CLOSED

            # A lasting outage: the breaker opens and spares the broker.
            await proxy.set_mode("reset")
            with pytest.raises(RetryExhausted) as info:
                await pipeline.acall(publish, events(1))
            assert isinstance(info.value.last_error, BrokerUnavailable)
            with pytest.raises((RetryExhausted, CircuitOpen)):
                await pipeline.acall(publish, events(1))
            assert breaker.state is CircuitState.OPEN
            before = calls
            with pytest.raises((RetryExhausted, CircuitOpen)):
                await pipeline.acall(publish, events(1))
            assert calls == before  # the breaker did not let it reach the broker
    got = {m.message_id for m in await drain(admin, names.queue)}
    assert {e.id for e in first} <= got


async def test_nacked_events_are_named_and_the_confirmed_ones_are_not(
    admin: aio_pika.abc.AbstractChannel, names: Names
) -> None:
    # A full queue with x-overflow=reject-publish makes RabbitMQ nack what it refuses.
    exchange = await admin.declare_exchange(names.exchange, "topic", durable=True)
    queue = await admin.declare_queue(
        names.queue,
        durable=True,
        arguments={"x-max-length": 2, "x-overflow": "reject-publish"},
    )
    await queue.bind(exchange, routing_key="#")
    async with RabbitMQPublisher(URL, exchange=names.exchange, max_in_flight=1) as publisher:
        batch = events(5)
        with pytest.raises(BrokerUnavailable) as info:
            await publisher.publish(batch)
    assert info.value.unconfirmed == tuple(e.id for e in batch[2:])
    assert set(info.value.causes) == set(info.value.unconfirmed)
    assert is_transient(info.value)
    got = await drain(admin, names.queue)
    assert [m.message_id for m in got] == [e.id for e in batch[:2]]


# -- the batch path: one write per batch, confirmations settled together --------------


async def _tables(publisher: RabbitMQPublisher) -> tuple[int, int]:
    assert publisher._channel is not None
    channel = await publisher._channel.get_underlay_channel()
    return len(channel.confirmations), len(channel.message_id_delivery_tag)  # type: ignore[attr-defined]


async def test_concurrent_batches_are_all_confirmed_and_leave_no_entries(
    admin: aio_pika.abc.AbstractChannel, names: Names
) -> None:
    batches = [events(200) for _ in range(4)]
    async with RabbitMQPublisher(URL, exchange=names.exchange, queue=names.queue) as publisher:
        assert publisher._channel is not None
        # The installed aiormq is recognised: the batch path is the one measured.
        assert rabbitmq._batchable(await publisher._channel.get_underlay_channel())
        await asyncio.gather(*(publisher.publish(batch) for batch in batches))
        assert await _tables(publisher) == (0, 0)
    got = [str(m.message_id) for m in await drain(admin, names.queue)]
    assert sorted(got) == sorted(e.id for batch in batches for e in batch)
    for batch in batches:  # each batch went out in one write: in order
        ids = [e.id for e in batch]
        assert [i for i in got if i in set(ids)] == ids


async def test_a_cancelled_batch_leaves_no_entries_and_the_next_is_confirmed(
    admin: aio_pika.abc.AbstractChannel, names: Names
) -> None:
    async with RabbitMQPublisher(URL, exchange=names.exchange, queue=names.queue) as publisher:
        for delay in (0.0, 0.001, 0.005):
            task = asyncio.create_task(publisher.publish(events(500)))
            await asyncio.sleep(delay)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert await _tables(publisher) == (0, 0)
        after = events(3)
        await publisher.publish(after)
        assert await _tables(publisher) == (0, 0)
    got = {m.message_id for m in await drain(admin, names.queue)}
    assert {e.id for e in after} <= got


async def test_aio_pikas_own_path_publishes_alike_when_aiormq_is_not_recognised(
    admin: aio_pika.abc.AbstractChannel, names: Names, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(rabbitmq, "_batchable", lambda channel: False)
    batch = events(20)
    async with RabbitMQPublisher(URL, exchange=names.exchange, queue=names.queue) as publisher:
        await publisher.publish(batch)
    got = await drain(admin, names.queue)
    assert [m.message_id for m in got] == [e.id for e in batch]
    assert got[0].headers["cloudEvents_id"] == batch[0].id
    async with RabbitMQPublisher(URL, exchange=f"{names.exchange}.unbound") as unbound:
        with pytest.raises(PublishRefused):
            await unbound.publish(events(2))
    await admin.exchange_delete(f"{names.exchange}.unbound")


async def test_a_body_larger_than_a_frame_is_split_and_arrives_whole(
    admin: aio_pika.abc.AbstractChannel, names: Names
) -> None:
    big = Envelope(source="/orders", type="order.placed", data={"blob": "x" * 300_000})
    small = events(2)
    async with RabbitMQPublisher(URL, exchange=names.exchange, queue=names.queue) as publisher:
        await publisher.publish([small[0], big, small[1]])
    got = await drain(admin, names.queue)
    assert [m.message_id for m in got] == [small[0].id, big.id, small[1].id]
    assert Envelope.from_amqp(got[1].headers, got[1].content_type, got[1].body) == big


def test_the_batch_path_needs_aiormqs_internals() -> None:
    class Unknown:
        publisher_confirms = True

    assert not rabbitmq._batchable(Unknown())
    assert not rabbitmq._batchable(object())

"""RedisStreamsPublisher against the real Redis, with faults injected through a TCP proxy.

Every test uses its own stream keys (unique names) and deletes them after.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from collections.abc import AsyncIterator

import pytest
import redis.asyncio

from buttress.errors import is_transient
from buttress.messaging import Envelope
from buttress.messaging.brokers import BrokerUnavailable, PublishRefused
from buttress.messaging.brokers.redis_streams import RedisStreamsPublisher

from tests.conftest import SERVICES, require_service
from tests.faults import FaultProxy

URL = f"redis://127.0.0.1:{SERVICES['redis']}/0"
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


@pytest.fixture
async def admin() -> AsyncIterator[redis.asyncio.Redis]:
    require_service("redis")
    client = redis.asyncio.Redis.from_url(URL)
    async with client:
        yield client


@pytest.fixture
async def key(admin: redis.asyncio.Redis) -> AsyncIterator[str]:
    """A unique key prefix; every key under it is deleted after the test."""
    prefix = f"test:buttress:streams:{uuid.uuid4().hex[:12]}"
    yield prefix
    found = [k async for k in admin.scan_iter(match=f"{prefix}*")]
    if found:
        await admin.delete(*found)


def events(n: int, **kwargs: object) -> list[Envelope]:
    return [
        Envelope(source="/orders", type="order.placed", subject=f"o-{i}", data={"i": i}, **kwargs)  # type: ignore[arg-type]
        for i in range(n)
    ]


async def read(admin: redis.asyncio.Redis, stream: str) -> list[Envelope]:
    return [Envelope.from_redis_fields(fields) for _id, fields in await admin.xrange(stream)]


async def test_fields_round_trip_and_carry_the_event_id(
    admin: redis.asyncio.Redis, key: str
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
        Envelope(source="/pings", type="ping"),  # no data at all
    ]
    async with RedisStreamsPublisher(URL, stream=key) as publisher:
        await publisher.publish(sent)
    entries = await admin.xrange(key)
    assert [fields[b"ce_id"].decode() for _id, fields in entries] == [e.id for e in sent]
    assert entries[0][1][b"ce_specversion"] == b"1.0"
    assert entries[0][1][b"ce_traceparent"] == TRACEPARENT.encode()
    assert b"data" not in entries[2][1]
    assert await read(admin, key) == sent


async def test_stream_per_event_and_order_kept_within_each(
    admin: redis.asyncio.Redis, key: str
) -> None:
    batch = [
        Envelope(source="/s", type=kind, subject=f"k-{i}", data={"i": i})
        for i in range(30)
        for kind in ("order.placed", "order.paid")
    ]
    async with RedisStreamsPublisher(URL, stream=lambda e: f"{key}:{e.type}") as publisher:
        await publisher.publish(batch[:20])
        await publisher.publish(batch[20:])
    for kind in ("order.placed", "order.paid"):
        assert await read(admin, f"{key}:{kind}") == [e for e in batch if e.type == kind]


async def test_maxlen_trims_approximately(admin: redis.asyncio.Redis, key: str) -> None:
    async with RedisStreamsPublisher(URL, stream=key, maxlen=10) as publisher:
        for _ in range(10):
            await publisher.publish(events(100))
    length = await admin.xlen(key)
    # MAXLEN ~ trims whole macro-nodes (100 entries each by default): about 10 kept,
    # never all 1,000.
    assert 10 <= length < 1000
    untrimmed = f"{key}:all"
    async with RedisStreamsPublisher(URL, stream=untrimmed, maxlen=None) as publisher:
        for _ in range(3):
            await publisher.publish(events(100))
    assert await admin.xlen(untrimmed) == 300


async def test_a_batch_of_1000_is_confirmed_in_order(admin: redis.asyncio.Redis, key: str) -> None:
    batch = events(1000)
    async with RedisStreamsPublisher(URL, stream=key) as publisher:
        await publisher.publish(batch)
    assert await admin.xlen(key) == 1000
    assert [e.id for e in await read(admin, key)] == [e.id for e in batch]


async def test_wrong_type_key_is_refused_naming_only_its_events(
    admin: redis.asyncio.Redis, key: str
) -> None:
    wrong = f"{key}:wrong"
    await admin.set(wrong, "not a stream")
    good = f"{key}:good"
    batch = events(4)
    refused = {batch[1].id, batch[3].id}
    async with RedisStreamsPublisher(
        URL, stream=lambda e: wrong if e.id in refused else good
    ) as publisher:
        with pytest.raises(PublishRefused) as info:
            await publisher.publish(batch)
    assert info.value.unconfirmed == (batch[1].id, batch[3].id)
    assert set(info.value.causes) == refused
    assert "WRONGTYPE" in str(info.value)
    assert not is_transient(info.value)
    assert [e.id for e in await read(admin, good)] == [batch[0].id, batch[2].id]


async def test_unreachable_redis_is_transient() -> None:
    require_service("redis")
    async with FaultProxy(SERVICES["redis"], mode="refuse") as proxy:
        publisher = RedisStreamsPublisher(f"redis://127.0.0.1:{proxy.port}/0", stream="x")
        batch = events(2)
        with pytest.raises(BrokerUnavailable) as info:
            await publisher.publish(batch)
        assert info.value.unconfirmed == tuple(e.id for e in batch)
        assert is_transient(info.value)
        with pytest.raises(BrokerUnavailable):
            await publisher.connect()
        await publisher.close()


@pytest.mark.parametrize("fault", ["reset", "stall"])
async def test_redis_cut_off_raises_transient_error_then_publishing_resumes(
    admin: redis.asyncio.Redis, key: str, fault: str
) -> None:
    async with FaultProxy(SERVICES["redis"]) as proxy:
        publisher = RedisStreamsPublisher(
            f"redis://127.0.0.1:{proxy.port}/0", stream=key, timeout=0.5
        )
        async with publisher:
            before = events(1)
            await publisher.publish(before)
            await proxy.set_mode(fault)  # type: ignore[arg-type]
            cut = events(3)
            with pytest.raises(BrokerUnavailable) as info:
                # The guard is only against a hang; the publisher's own timeout is 0.5 s.
                await asyncio.wait_for(publisher.publish(cut), 30)
            assert info.value.unconfirmed == tuple(e.id for e in cut)
            assert is_transient(info.value)
            await proxy.set_mode("pass")
            after = events(2)
            await publisher.publish(after)  # a fresh connection: no waiting needed
    got = [e.id for e in await read(admin, key)]
    assert got[0] == before[0].id
    assert got[-2:] == [e.id for e in after]
    assert set(got) <= {e.id for e in before + cut + after}  # cut ones: at least once


async def test_each_event_loop_gets_its_own_client(key: str) -> None:
    require_service("redis")
    publisher = RedisStreamsPublisher(URL, stream=key)

    def other_loop() -> None:
        asyncio.run(publisher.publish(events(2)))

    await asyncio.to_thread(other_loop)
    await publisher.publish(events(3))
    await publisher.close()
    admin = redis.asyncio.Redis.from_url(URL)
    async with admin:
        assert await admin.xlen(key) == 5


async def test_a_batch_cut_short_never_leaves_its_replies_to_the_next(
    admin: redis.asyncio.Redis, key: str
) -> None:
    async with FaultProxy(SERVICES["redis"]) as proxy:
        publisher = RedisStreamsPublisher(
            f"redis://127.0.0.1:{proxy.port}/0", stream=key, timeout=0.3
        )
        async with publisher:
            await publisher.publish(events(1))  # a pooled connection exists
            await proxy.set_mode("stall")  # sent, but no reply comes back in time
            with pytest.raises(BrokerUnavailable):
                await asyncio.wait_for(publisher.publish(events(500)), 30)
            # The connection that was waiting for replies is closed, not pooled as is.
            pool = publisher._clients.for_loop("redis-streams").connection_pool
            assert not pool._in_use_connections
            assert not any(conn.is_connected for conn in pool._available_connections)
            await proxy.set_mode("pass")
            after = events(3)
            await publisher.publish(after)
    got = [e.id for e in await read(admin, key)]
    assert got[-3:] == [e.id for e in after]


async def test_a_consumer_written_with_the_cloudevents_sdk_reads_the_entries(
    admin: redis.asyncio.Redis, key: str
) -> None:
    """Redis Streams has no CloudEvents binding; the fields follow the Kafka binding's
    ``ce_`` names, so the SDK's Kafka binding reads an entry as a Kafka message."""
    from cloudevents.core.bindings import kafka

    sent = Envelope(
        source="/orders",
        type="com.example.order.placed",
        subject="order-42",
        data={"total": 12.5, "note": 'naïve "q"'},
        time=dt.datetime(2026, 11, 27, 12, 30, 45, 123456, tzinfo=dt.UTC),
        extensions={"tenant": "acme"},
    )
    async with RedisStreamsPublisher(URL, stream=key) as publisher:
        await publisher.publish([sent])
    [(_, fields)] = await admin.xrange(key)
    headers = {k.decode(): v for k, v in fields.items() if k.startswith(b"ce_")}
    got = kafka.from_binary_event(
        kafka.KafkaMessage(headers=headers, key=None, value=fields.get(b"data", b""))
    )
    assert got.get_id() == sent.id
    assert got.get_type() == sent.type
    assert got.get_source() == sent.source
    assert got.get_subject() == "order-42"
    assert got.get_time() == sent.time
    assert got.get_extension("tenant") == "acme"
    assert got.get_data() == sent.data

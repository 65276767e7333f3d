"""NatsPublisher against the real NATS JetStream, with faults injected through a TCP proxy.

Every test uses its own stream and subjects (unique names) and deletes its streams.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import sqlite3
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import nats
import nats.js.errors
import pytest
from cloudevents.core.bindings import http
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import StorageType

from buttress import Pipeline, Timeout
from buttress.errors import ConfigError, is_transient
from buttress.messaging import Envelope, Outbox, Relay, SQLiteRelayStore, migrate
from buttress.messaging.brokers import BrokerUnavailable, Publisher, PublishRefused
from buttress.messaging.brokers.nats import NatsPublisher

from tests.conftest import SERVICES, require_service
from tests.faults import FaultProxy

URL = f"nats://127.0.0.1:{SERVICES['nats']}"
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


@pytest.fixture
async def admin() -> AsyncIterator[Client]:
    require_service("nats")
    client = await nats.connect(URL)
    yield client
    await client.close()


@pytest.fixture
async def name(admin: Client) -> AsyncIterator[str]:
    """A unique stream name, also the subject prefix; its streams are deleted after."""
    tag = f"test_nats_pub_{uuid.uuid4().hex[:12]}"
    yield tag
    js = admin.jetstream()
    for stream in await js.streams_info():
        if stream.config.name.startswith(tag):
            await js.delete_stream(stream.config.name)


def events(n: int, kind: str = "order.placed") -> list[Envelope]:
    return [
        Envelope(source="/orders", type=kind, subject=f"o-{i}", data={"i": i}) for i in range(n)
    ]


async def stored(js: JetStreamContext, stream: str) -> list[tuple[str, dict[str, str], bytes]]:
    """Every message of ``stream``, in stream order: (subject, headers, payload)."""
    info = await js.stream_info(stream)
    out = []
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        try:
            msg = await js.get_msg(stream, seq)
        except nats.js.errors.NotFoundError:
            continue
        out.append((msg.subject or "", dict(msg.headers or {}), msg.data or b""))
    return out


def decoded(messages: list[tuple[str, dict[str, str], bytes]]) -> list[Envelope]:
    return [Envelope.from_headers(h, body, binding="nats") for _s, h, body in messages]


async def test_headers_carry_the_event_and_the_cloudevents_sdk_reads_it(
    admin: Client, name: str
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
    publisher = NatsPublisher(URL, stream=name, subject_prefix=name)
    assert isinstance(publisher, Publisher)
    async with publisher:
        await publisher.publish(sent)
    messages = await stored(admin.jetstream(), name)
    assert [s for s, _h, _b in messages] == [f"{name}.{e.type}" for e in sent]
    assert [h["Nats-Msg-Id"] for _s, h, _b in messages] == [e.id for e in sent]
    assert messages[0][1]["ce-specversion"] == "1.0"
    assert messages[0][1]["content-type"] == "application/json"
    assert decoded(messages) == sent
    # A consumer written with the cloudevents SDK, not buttress: the NATS binding's
    # binary mode uses the HTTP binding's ce- header names.
    _subject, headers, body = messages[0]
    sdk = http.from_binary_event(http.HTTPMessage(headers=headers, body=body))
    assert sdk.get_id() == sent[0].id
    assert sdk.get_type() == "com.example.order.placed"
    assert sdk.get_source() == "/orders"
    assert sdk.get_subject() == "order-42"
    assert sdk.get_time() == sent[0].time
    assert sdk.get_dataschema() == sent[0].dataschema
    assert sdk.get_data() == sent[0].data
    assert sdk.get_extension("traceparent") == TRACEPARENT
    assert sdk.get_extension("tenant") == "acme corp"


async def test_the_stream_is_durable_with_its_duplicate_window(admin: Client, name: str) -> None:
    async with NatsPublisher(
        URL, stream=name, subject_prefix=name, duplicate_window=30, max_age=3600
    ):
        pass
    info = await admin.jetstream().stream_info(name)
    assert info.config.storage == StorageType.FILE
    assert info.config.subjects == [f"{name}.>"]
    assert info.config.duplicate_window == 30
    assert info.config.max_age == 3600
    # Declaring it again, alike, is fine; otherwise it is a configuration error.
    async with NatsPublisher(
        URL, stream=name, subject_prefix=name, duplicate_window=30, max_age=3600
    ):
        pass
    with pytest.raises(ConfigError) as info_error:
        await NatsPublisher(URL, stream=name, subject_prefix=name, duplicate_window=60).connect()
    assert info_error.value.path == "stream"


async def test_an_event_published_again_is_stored_once(admin: Client, name: str) -> None:
    batch = events(50)
    async with NatsPublisher(URL, stream=name, subject_prefix=name) as publisher:
        await publisher.publish(batch)
        await publisher.publish(batch[10:30])  # as after a lost PubAck: acknowledged again
        await publisher.publish(batch)
    info = await admin.jetstream().stream_info(name)
    assert info.state.messages == 50
    assert [e.id for e in decoded(await stored(admin.jetstream(), name))] == [e.id for e in batch]


async def test_a_batch_of_2000_is_acknowledged_and_stored_in_order(
    admin: Client, name: str
) -> None:
    batch = events(2000)
    async with NatsPublisher(URL, stream=name, subject_prefix=name) as publisher:
        await publisher.publish(batch)
        await publisher.publish([])  # nothing to do
    got = decoded(await stored(admin.jetstream(), name))
    assert [e.id for e in got] == [e.id for e in batch]


async def test_subjects_fixed_or_computed(admin: Client, name: str) -> None:
    js = admin.jetstream()
    await js.add_stream(name=name, subjects=[f"{name}.>"])
    async with NatsPublisher(URL, subject=f"{name}.fixed") as publisher:
        await publisher.publish(events(2))
    async with NatsPublisher(URL, subject=lambda e: f"{name}.by-key.{e.subject}") as publisher:
        await publisher.publish(events(2))
    subjects = [s for s, _h, _b in await stored(js, name)]
    assert subjects == [
        f"{name}.fixed",
        f"{name}.fixed",
        f"{name}.by-key.o-0",
        f"{name}.by-key.o-1",
    ]


async def test_events_that_cannot_travel_are_refused_and_the_others_stored(
    admin: Client, name: str
) -> None:
    good = events(3)
    bad_type = Envelope(source="/s", type="has space", data=1)
    line_break = Envelope(source="/s", type="ok", data=1, extensions={"note": "two\nlines"})
    batch = [good[0], bad_type, good[1], line_break, good[2]]
    async with NatsPublisher(URL, stream=name, subject_prefix=name) as publisher:
        with pytest.raises(PublishRefused) as info:
            await publisher.publish(batch)
    assert info.value.unconfirmed == (bad_type.id, line_break.id)
    assert isinstance(info.value.causes[bad_type.id], ConfigError)
    assert not is_transient(info.value)
    assert [e.id for e in decoded(await stored(admin.jetstream(), name))] == [e.id for e in good]


async def test_no_stream_for_the_subject_is_refused(name: str) -> None:
    require_service("nats")
    batch = events(3)
    async with NatsPublisher(URL, subject_prefix=f"{name}.nowhere") as publisher:
        with pytest.raises(PublishRefused) as info:
            await publisher.publish(batch)
    assert info.value.unconfirmed == tuple(e.id for e in batch)
    assert "no JetStream stream" in str(info.value)
    assert not is_transient(info.value)


async def test_a_message_over_the_streams_limit_is_refused_alone(admin: Client, name: str) -> None:
    await admin.jetstream().add_stream(name=name, subjects=[f"{name}.>"], max_msg_size=2000)
    small = events(2)
    big = Envelope(source="/s", type="big", data="x" * 5000)
    async with NatsPublisher(URL, subject_prefix=name) as publisher:
        with pytest.raises(PublishRefused) as info:
            await publisher.publish([small[0], big, small[1]])
    assert info.value.unconfirmed == (big.id,)
    assert len(await stored(admin.jetstream(), name)) == 2


async def test_closed_publisher_refuses() -> None:
    publisher = NatsPublisher(URL)
    await publisher.close()
    batch = events(1)
    with pytest.raises(PublishRefused) as info:
        await publisher.publish(batch)
    assert info.value.unconfirmed == (batch[0].id,)
    with pytest.raises(PublishRefused):
        await publisher.connect()


async def test_unreachable_nats_is_transient() -> None:
    require_service("nats")
    async with FaultProxy(SERVICES["nats"], mode="refuse") as proxy:
        publisher = NatsPublisher(f"nats://127.0.0.1:{proxy.port}", timeout=2)
        batch = events(2)
        with pytest.raises(BrokerUnavailable) as info:
            await publisher.publish(batch)
        assert info.value.unconfirmed == tuple(e.id for e in batch)
        assert is_transient(info.value)
        with pytest.raises(BrokerUnavailable):
            await publisher.connect()
        await publisher.close()


@pytest.mark.parametrize("fault", ["reset", "stall"])
async def test_nats_cut_off_raises_transient_error_then_publishing_resumes(
    admin: Client, name: str, fault: str
) -> None:
    async with FaultProxy(SERVICES["nats"]) as proxy:
        publisher = NatsPublisher(
            f"nats://127.0.0.1:{proxy.port}",
            stream=name,
            subject_prefix=name,
            timeout=1,
            reconnect_interval=0.1,
        )
        async with publisher:
            before = events(1)
            await publisher.publish(before)
            await proxy.set_mode(fault)  # type: ignore[arg-type]
            cut = events(3)
            with pytest.raises(BrokerUnavailable) as info:
                # The guard is only against a hang; the publisher's own timeout is 1 s.
                await asyncio.wait_for(publisher.publish(cut), 30)
            assert info.value.unconfirmed == tuple(e.id for e in cut)
            assert is_transient(info.value)
            await proxy.set_mode("pass")
            after = events(2)
            for _ in range(50):  # the client reconnects by itself, every 0.1 s
                try:
                    await publisher.publish(after)
                    break
                except BrokerUnavailable:
                    continue
            else:
                pytest.fail("publishing did not resume after NATS came back")
            await publisher.publish(cut)  # the retry: stored once, whatever got through
    got = [e.id for e in decoded(await stored(admin.jetstream(), name))]
    assert got[0] == before[0].id
    assert sorted(got) == sorted(e.id for e in before + cut + after)


async def test_the_relay_drains_an_outbox_into_nats(
    admin: Client, name: str, tmp_path: Path
) -> None:
    path = tmp_path / "app.db"
    with sqlite3.connect(path) as conn:
        migrate(conn, "outbox")
        written = [
            Envelope(source="/orders", type="order.placed", subject=f"order-{i % 4}", data={"i": i})
            for i in range(120)
        ]
        Outbox("outbox").add_many(conn, written)
        conn.commit()
    conn.close()
    store = SQLiteRelayStore(path, "outbox")
    async with NatsPublisher(URL, stream=name, subject_prefix=name) as publisher:
        relay = Relay(store, publisher, batch_size=50, pipeline=Pipeline(Timeout(10.0)))
        assert await relay.drain() == 120
    got = decoded(await stored(admin.jetstream(), name))
    assert sorted(e.id for e in got) == sorted(e.id for e in written)
    for key in {e.subject for e in written}:  # per-key order kept
        assert [e.id for e in got if e.subject == key] == [
            e.id for e in written if e.subject == key
        ]


async def test_a_message_over_the_servers_max_payload_is_refused_alone(
    admin: Client, name: str
) -> None:
    small = events(2)
    huge = Envelope(source="/s", type="huge", data="x" * (admin.max_payload + 10))
    async with NatsPublisher(URL, stream=name, subject_prefix=name) as publisher:
        with pytest.raises(PublishRefused) as info:
            await publisher.publish([small[0], huge, small[1]])
    assert info.value.unconfirmed == (huge.id,)
    assert [e.id for e in decoded(await stored(admin.jetstream(), name))] == [e.id for e in small]


async def test_without_the_drivers_internals_each_message_goes_through_publish(
    admin: Client, name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from buttress.messaging.brokers import _nats_publisher

    monkeypatch.setattr(_nats_publisher, "_batchable", lambda client: False)
    batch = events(300)
    huge = Envelope(source="/s", type="huge", data="x" * (admin.max_payload + 10))
    async with NatsPublisher(URL, stream=name, subject_prefix=name) as publisher:
        await publisher.publish(batch)
        with pytest.raises(PublishRefused) as info:
            await publisher.publish([*batch[:5], huge])  # the five: duplicates, confirmed
    assert info.value.unconfirmed == (huge.id,)
    assert [e.id for e in decoded(await stored(admin.jetstream(), name))] == [e.id for e in batch]


async def test_the_relay_keeps_events_pending_while_nats_is_cut_off_then_publishes_each_once(
    admin: Client, name: str, tmp_path: Path
) -> None:
    from buttress.policies.backoff import Constant

    path = tmp_path / "app.db"
    with sqlite3.connect(path) as conn:
        migrate(conn, "outbox")
        written = events(30)
        Outbox("outbox").add_many(conn, written)
        conn.commit()
    conn.close()

    def pending() -> int:
        with sqlite3.connect(path) as db:
            (count,) = db.execute("SELECT count(*) FROM outbox WHERE status = 'pending'").fetchone()
        db.close()
        return int(count)

    store = SQLiteRelayStore(path, "outbox")
    async with FaultProxy(SERVICES["nats"]) as proxy:
        publisher = NatsPublisher(
            f"nats://127.0.0.1:{proxy.port}",
            stream=name,
            subject_prefix=name,
            timeout=0.5,
            reconnect_interval=0.1,
        )
        async with publisher:
            relay = Relay(
                store,
                publisher,
                batch_size=10,
                max_attempts=1000,
                backoff=Constant(0.05),
                pipeline=Pipeline(Timeout(5.0)),
            )
            await proxy.set_mode("stall")
            assert await relay.drain() == 0
            assert pending() == 30
            await proxy.set_mode("pass")
            published = 0
            async with asyncio.timeout(30):
                while published < 30:
                    published += await relay.drain()
                    await asyncio.sleep(0.05)  # the retries fall due 0.05 s after each failure
    assert pending() == 0
    # What the stalled connection delivered late and the retries sent again: stored once.
    info = await admin.jetstream().stream_info(name)
    assert info.state.messages == 30
    assert sorted(e.id for e in decoded(await stored(admin.jetstream(), name))) == sorted(
        e.id for e in written
    )

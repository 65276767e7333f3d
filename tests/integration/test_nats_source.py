"""NatsSource and NatsDeadLetters against the real NATS JetStream.

Every test has its own stream, dead-letter stream and durable consumer (unique names),
deleted after.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from collections.abc import AsyncIterator, Callable

import nats
import pytest
from nats.aio.client import Client

from buttress.errors import ConfigError, is_transient
from buttress.messaging import Envelope, EnvelopeError
from buttress.messaging.brokers import BrokerUnavailable, PublishRefused
from buttress.messaging.brokers.nats import (
    NatsDeadLetters,
    NatsPublisher,
    NatsReceived,
    NatsSource,
)
from buttress.messaging.consumer import Consumer, Received, Source
from buttress.messaging.deadletters import DeadLetters
from buttress.policies.backoff import Constant

from tests.conftest import SERVICES, require_service
from tests.faults import FaultProxy

URL = f"nats://127.0.0.1:{SERVICES['nats']}"


@pytest.fixture
async def admin() -> AsyncIterator[Client]:
    require_service("nats")
    client = await nats.connect(URL)
    yield client
    await client.close()


@pytest.fixture
async def name(admin: Client) -> AsyncIterator[str]:
    """A unique stream name (also the subject prefix); its streams are deleted after."""
    tag = f"test_nats_src_{uuid.uuid4().hex[:12]}"
    yield tag
    js = admin.jetstream()
    for stream in await js.streams_info():
        if stream.config.name.startswith(tag):
            await js.delete_stream(stream.config.name)


def events(n: int) -> list[Envelope]:
    return [
        Envelope(source="/orders", type="order.placed", subject=f"o-{i}", data={"i": i})
        for i in range(n)
    ]


async def publish(name: str, batch: list[Envelope]) -> None:
    async with NatsPublisher(URL, stream=name, subject_prefix=name) as publisher:
        await publisher.publish(batch)


def source(name: str, **options: object) -> NatsSource:
    return NatsSource(URL, stream=name, durable="workers", **options)  # type: ignore[arg-type]


async def receive_all(src: NatsSource, n: int, wait: float = 5.0) -> list[NatsReceived]:
    got: list[NatsReceived] = []
    async with asyncio.timeout(wait):
        while len(got) < n:
            got.extend(await src.receive(n - len(got), 1.0))
    return got


async def test_receive_ack_and_nothing_more(name: str) -> None:
    batch = events(3)
    await publish(name, batch)
    async with source(name) as src:
        assert isinstance(src, Source)
        got = await receive_all(src, 3)
        assert all(isinstance(m, Received) for m in got)
        assert [m.envelope() for m in got] == batch
        assert [m.message_id for m in got] == ["1", "2", "3"]
        assert [m.deliveries for m in got] == [1, 1, 1]
        assert got[0].headers["Nats-Msg-Id"] == batch[0].id
        assert got[0].subject == f"{name}.order.placed"
        assert got[0].body == b'{"i":0}'
        for message in got:
            await message.ack()
        assert await src.receive(10, 0.2) == []
    # The durable consumer remembers: a new source of the same name gets nothing.
    async with source(name) as again:
        assert await again.receive(10, 0.2) == []


async def test_retry_redelivers_after_the_delay(name: str) -> None:
    await publish(name, events(1))
    async with source(name) as src:
        (first,) = await receive_all(src, 1)
        await first.retry(0.8)
        assert await src.receive(1, 0.2) == []  # not yet
        (second,) = await receive_all(src, 1)
        assert second.message_id == first.message_id
        assert second.deliveries == 2
        with pytest.raises(ConfigError):
            await second.retry(-1)
        await second.ack()


async def test_an_unacknowledged_message_comes_back_after_ack_wait(name: str) -> None:
    await publish(name, events(1))
    async with source(name, ack_wait=1) as src:
        (first,) = await receive_all(src, 1)
        (again,) = await receive_all(src, 1)  # never acked: delivered again
        assert again.message_id == first.message_id
        assert again.deliveries == 2
        await again.ack()


async def test_a_released_message_comes_back_at_once(name: str) -> None:
    await publish(name, events(1))
    async with source(name, ack_wait=60) as src:
        (first,) = await receive_all(src, 1)
        await first.release()  # the runner interrupted its handler
        (again,) = await receive_all(src, 1, wait=5.0)  # not after ack_wait (60 s)
        assert again.message_id == first.message_id
        assert again.deliveries == 2
        await again.ack()


async def test_dead_letter_copies_with_the_reason_and_terminates(name: str) -> None:
    batch = events(2)
    await publish(name, batch)
    async with source(name) as src:
        got = await receive_all(src, 2)
        await got[0].dead_letter("ValueError: boom\n  at line 2")
        await got[1].ack()
        assert await src.receive(10, 0.3) == []  # terminated: not redelivered
        async with src.dead_letters() as dlq:
            assert isinstance(dlq, DeadLetters)
            (letter,) = await dlq.list()
            assert letter.envelope == batch[0]
            assert letter.reason == "ValueError: boom at line 2"
            assert letter.attempts == 1
            assert letter.body == b'{"i":0}'
            assert letter.dead_at is not None
            assert abs(letter.dead_at - dt.datetime.now(dt.UTC)) < dt.timedelta(minutes=1)
            assert await dlq.get(letter.id) == letter
        async with src.dead_letters(poison=True) as poison:
            assert await poison.list() == []
            assert await poison.get(letter.id) is None  # not on the poison subject


async def test_a_copy_made_twice_is_stored_once(admin: Client, name: str) -> None:
    await publish(name, events(1))
    async with source(name) as src:
        (message,) = await receive_all(src, 1)
        await message.dead_letter("first")
        with pytest.raises(BrokerUnavailable):  # already terminated
            await message.dead_letter("again")
    info = await admin.jetstream().stream_info(f"{name}_DLQ")
    assert info.state.messages == 1


async def test_poison_goes_to_the_poison_subject(admin: Client, name: str) -> None:
    await publish(name, events(1))  # declares the stream
    await admin.jetstream().publish(f"{name}.junk", b"not an event")
    async with source(name) as src:
        got = await receive_all(src, 2)
        await got[0].ack()
        with pytest.raises(EnvelopeError):
            got[1].envelope()
        await got[1].dead_letter("specversion: must be '1.0'", poison=True)
        async with src.dead_letters(poison=True) as poison:
            (letter,) = await poison.list()
            assert letter.envelope is None
            assert letter.body == b"not an event"
            assert letter.reason == "specversion: must be '1.0'"
        async with src.dead_letters() as dlq:
            assert await dlq.list() == []


async def test_replay_sends_dead_letters_back_and_removes_them(name: str) -> None:
    batch = events(3)
    await publish(name, batch)
    async with source(name) as src:
        got = await receive_all(src, 3)
        for message in got:
            await message.dead_letter("handler failed")
        async with src.dead_letters() as dlq:
            letters = await dlq.list()
            assert [d.envelope for d in letters] == batch
            assert await dlq.replay([letters[1].id, "999", "nonsense"]) == 1
            assert [d.id for d in await dlq.list()] == [letters[0].id, letters[2].id]
            (back,) = await receive_all(src, 1)
            # Not dropped as a duplicate of the original, though within its window.
            assert back.envelope() == batch[1]
            assert back.deliveries == 1
            await back.ack()
            assert await dlq.replay() == 2
            assert await dlq.list() == []
            assert await dlq.replay() == 0
        again = await receive_all(src, 2)
        assert sorted(m.envelope().id for m in again) == sorted([batch[0].id, batch[2].id])
        for message in again:
            await message.ack()


async def test_purge_and_paging(name: str) -> None:
    await publish(name, events(5))
    async with source(name) as src:
        for message in await receive_all(src, 5):
            await message.dead_letter("nope")
        async with src.dead_letters() as dlq:
            first = await dlq.list(limit=2)
            second = await dlq.list(limit=2, after=first[-1].id)
            rest = await dlq.list(limit=10, after=second[-1].id)
            ids = [d.id for d in first + second + rest]
            assert len(ids) == 5 == len(set(ids))
            with pytest.raises(ConfigError):
                await dlq.list(after="x")
            with pytest.raises(ConfigError):
                await dlq.list(limit=0)
            assert await dlq.purge([ids[0], ids[0], "404"]) == 1
            assert await dlq.get(ids[0]) is None
            assert await dlq.purge() == 4
            assert await dlq.list() == []


async def test_the_consumer_runner_over_nats(name: str) -> None:
    good = events(6)
    failing = Envelope(source="/orders", type="order.placed", subject="bad", data={"fail": True})
    await publish(name, [*good, failing])
    handled: list[str] = []
    failures = 0
    done = asyncio.Event()

    async def handler(event: Envelope) -> None:
        nonlocal failures
        if event.data == {"fail": True}:
            failures += 1
            if failures == 3 and len(handled) == 6:
                done.set()
            raise RuntimeError("cannot handle it")
        handled.append(event.id)
        if failures == 3 and len(handled) == 6:
            done.set()

    async with source(name) as src:
        consumer = Consumer(
            src,
            handler,
            concurrency=4,
            max_deliveries=3,
            backoff=Constant(0.05),
            receive_timeout=0.2,
        )
        task = asyncio.create_task(consumer.run())
        try:
            async with asyncio.timeout(20):
                await done.wait()
        finally:
            consumer.stop()  # lets the last failure settle: dead-lettered
            await task
        assert consumer.dead_lettered == 1
        assert sorted(handled) == sorted(e.id for e in good)
        async with src.dead_letters() as dlq:
            (letter,) = await dlq.list()
            assert letter.envelope == failing
            assert letter.attempts == 3
            assert "cannot handle it" in letter.reason


async def test_a_missing_stream_is_refused_and_nothing_declared(admin: Client, name: str) -> None:
    with pytest.raises(PublishRefused, match="does not exist"):
        await source(f"{name}_none").connect()
    assert not [s for s in await admin.jetstream().streams_info() if s.config.name.startswith(name)]


async def test_a_dead_letter_stream_without_our_subjects_is_a_config_error(
    admin: Client, name: str
) -> None:
    await publish(name, events(1))
    await admin.jetstream().add_stream(name=f"{name}_DLQ", subjects=[f"other.{name}"])
    with pytest.raises(ConfigError) as info:
        await source(name).connect()
    assert info.value.path == "dead_letter_stream"


async def test_receive_reports_a_cut_connection_and_recovers(name: str) -> None:
    await publish(name, events(2))
    async with FaultProxy(SERVICES["nats"]) as proxy:
        src = NatsSource(
            f"nats://127.0.0.1:{proxy.port}",
            stream=name,
            durable="workers",
            timeout=1,
            reconnect_interval=0.1,
        )
        async with src:
            (first,) = await src.receive(1, 1.0)
            await first.ack()
            await proxy.set_mode("reset")
            outcomes: list[object] = []
            for _ in range(3):
                try:
                    outcomes.append(await src.receive(1, 0.2))
                except BrokerUnavailable as exc:
                    outcomes.append(exc)
            errors = [o for o in outcomes if isinstance(o, BrokerUnavailable)]
            assert errors
            assert all(is_transient(e) for e in errors)
            assert not any(o for o in outcomes if isinstance(o, list))  # nothing got through
            await proxy.set_mode("pass")
            got: list[NatsReceived] = []
            async with asyncio.timeout(15):
                while not got:
                    try:
                        got = list(await src.receive(1, 0.5))
                    except BrokerUnavailable:
                        await asyncio.sleep(0.1)
            assert got[0].envelope().data == {"i": 1}
            await got[0].ack()


def test_dead_letters_options() -> None:
    make: Callable[..., NatsDeadLetters] = NatsDeadLetters
    with pytest.raises(ConfigError) as info:
        make(URL, stream="a.b", subject="x")
    assert info.value.path == "stream"
    with pytest.raises(ConfigError) as info:
        make(URL, stream="DLQ", subject="x.*")
    assert info.value.path == "subject"


async def test_settling_after_the_source_closed_fails_and_the_message_comes_back(name: str) -> None:
    await publish(name, events(1))
    src = source(name, ack_wait=1)
    async with src:
        (message,) = await receive_all(src, 1)
    for settle in (message.ack(), message.retry(0.1)):
        with pytest.raises(BrokerUnavailable) as info:
            await settle
        assert is_transient(info.value)
    # The source itself is closed for good.
    with pytest.raises(PublishRefused, match="the source is closed"):
        await message.dead_letter("late")
    with pytest.raises(PublishRefused, match="the source is closed"):
        await src.receive(1, 0.1)
    async with source(name) as again:  # never settled: delivered again
        (back,) = await receive_all(again, 1)
        assert back.message_id == message.message_id
        # Usually 2; 1 when the server saw the first delivery's subscriber gone before
        # it counted it (its own no-interest rule), which happens under load.
        assert back.deliveries in (1, 2)
        await back.ack()

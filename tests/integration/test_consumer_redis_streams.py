"""The consumer runner on RedisStreamsSource, against the real Redis.

Every test uses its own stream keys (unique names) and deletes them after.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import AsyncIterator

import pytest
import redis.asyncio

from buttress.errors import ConfigError
from buttress.messaging import Envelope
from buttress.messaging.brokers.redis_streams import RedisStreamsPublisher
from buttress.messaging.brokers.redis_streams_consumer import (
    RedisStreamsDeadLetters,
    RedisStreamsSource,
)
from buttress.messaging.consumer import Consumer, Received, Source
from buttress.messaging.deadletters import DeadLetters
from buttress.policies.backoff import Constant

from tests.conftest import SERVICES, require_service
from tests.faults import FaultProxy

URL = f"redis://127.0.0.1:{SERVICES['redis']}/0"


@pytest.fixture
async def admin() -> AsyncIterator[redis.asyncio.Redis]:
    require_service("redis")
    client = redis.asyncio.Redis.from_url(URL)
    async with client:
        yield client


@pytest.fixture
async def stream(admin: redis.asyncio.Redis) -> AsyncIterator[str]:
    """A unique stream name; every key under it is deleted after the test."""
    name = f"test:buttress:consumer:{uuid.uuid4().hex[:12]}"
    yield name
    found = [k async for k in admin.scan_iter(match=f"{name}*")]
    if found:
        await admin.delete(*found)


def events(n: int) -> list[Envelope]:
    return [
        Envelope(source="/orders", type="order.placed", subject=f"o-{i}", data={"i": i})
        for i in range(n)
    ]


async def publish(stream: str, envelopes: list[Envelope]) -> None:
    async with RedisStreamsPublisher(URL, stream=stream, maxlen=None) as publisher:
        await publisher.publish(envelopes)


def source(stream: str, **options: object) -> RedisStreamsSource:
    options.setdefault("group", "g")
    return RedisStreamsSource(URL, stream=stream, **options)  # type: ignore[arg-type]


async def wait_for(condition: object, seconds: float = 10.0) -> None:
    async with asyncio.timeout(seconds):
        while not condition():  # type: ignore[operator]  # noqa: ASYNC110 - polls a counter
            await asyncio.sleep(0.02)


async def test_source_and_dead_letters_implement_the_protocols(stream: str) -> None:
    async with source(stream) as src:
        assert isinstance(src, Source)
        assert isinstance(src.dead_letters(), DeadLetters)


async def test_messages_are_handled_and_acked_after_success(
    admin: redis.asyncio.Redis, stream: str
) -> None:
    sent = events(5)
    await publish(stream, sent)
    got: list[Envelope] = []

    async def handler(envelope: Envelope) -> None:
        got.append(envelope)

    async with source(stream) as src:
        runner = Consumer(src, handler, receive_timeout=0.2)
        assert await runner.drain() == 5
    assert sorted(e.id for e in got) == sorted(e.id for e in sent)
    assert got[0] == next(e for e in sent if e.id == got[0].id)
    pending = await admin.xpending(stream, "g")
    assert pending["pending"] == 0


async def test_failures_are_retried_then_dead_lettered_then_replayed(
    admin: redis.asyncio.Redis, stream: str
) -> None:
    [bad] = events(1)
    await publish(stream, [bad])
    broken = True
    seen: list[int] = []

    async def handler(envelope: Envelope) -> None:
        seen.append(1)
        if broken:
            raise RuntimeError("downstream refused")

    async with source(stream, claim_idle=30) as src:
        runner = Consumer(
            src, handler, max_deliveries=3, backoff=Constant(0.1), receive_timeout=0.1
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
        assert (await admin.xpending(stream, "g"))["pending"] == 0
        broken = False
        assert await dead.replay() == 1
        await wait_for(lambda: runner.handled == 1)
        assert await dead.list() == []
        runner.stop()
        await task
        await dead.close()


async def test_a_malformed_entry_goes_to_the_poison_stream_and_the_runner_goes_on(
    admin: redis.asyncio.Redis, stream: str
) -> None:
    await admin.xadd(stream, {"ce_id": "x", "data": b"\xff\xfe"})  # no specversion
    await publish(stream, events(1))
    handled: list[str] = []

    async def handler(envelope: Envelope) -> None:
        handled.append(envelope.id)

    async with source(stream) as src:
        runner = Consumer(src, handler, receive_timeout=0.2)
        await runner.drain()
        poison = src.dead_letters(poison=True)
        [letter] = await poison.list()
        await poison.close()
    assert runner.poisoned == 1
    assert len(handled) == 1
    assert letter.envelope is None
    assert letter.body == b"\xff\xfe"
    assert letter.reason.startswith("EnvelopeError")
    assert await admin.xlen(f"{stream}:dead") == 0


async def test_at_most_concurrency_handlers_at_once(stream: str) -> None:
    await publish(stream, events(12))
    running = peak = 0

    async def handler(envelope: Envelope) -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.02)
        running -= 1

    async with source(stream) as src:
        runner = Consumer(src, handler, concurrency=4, receive_timeout=0.2)
        assert await runner.drain() == 12
    assert peak == 4


async def test_a_runner_cancelled_mid_handler_leaves_the_message_to_another_member(
    stream: str,
) -> None:
    [sent] = events(1)
    await publish(stream, [sent])
    started = asyncio.Event()

    async def stuck(envelope: Envelope) -> None:
        started.set()
        await asyncio.Event().wait()

    first = source(stream, consumer="a", claim_idle=0.3)
    await first.connect()
    runner = Consumer(first, stuck, receive_timeout=0.1)
    task = asyncio.create_task(runner.run())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await first.close()  # "a" still has it pending: it stays in the group

    second = source(stream, consumer="b", claim_idle=0.3)
    async with second:
        messages: list[Received] = []
        async with asyncio.timeout(10):
            while not messages:
                messages = list(await second.receive(10, 0.1))
        [message] = messages
        assert message.envelope() == sent
        assert message.deliveries == 2  # delivered to "a", then claimed by "b"
        await message.ack()


async def test_a_retry_waits_its_delay_and_other_groups_never_see_it(
    admin: redis.asyncio.Redis, stream: str
) -> None:
    await publish(stream, events(1))
    async with source(stream, group="g1") as one, source(stream, group="g2") as two:
        [message] = await one.receive(10, 1.0)
        await message.retry(0.5)
        assert await one.receive(10, 0) == []  # not due yet
        [again] = await one.receive(10, 2.0)  # blocks only until it is due
        assert again.message_id == message.message_id
        assert again.deliveries == 2
        await again.ack()
        [other] = await two.receive(10, 1.0)
        assert other.deliveries == 1
        await other.ack()
        assert await two.receive(10, 0) == []
    assert await admin.xlen(stream) == 1  # nothing re-added


async def test_with_an_inbox_a_duplicate_has_no_second_effect(
    admin: redis.asyncio.Redis, stream: str
) -> None:
    from buttress.messaging.inbox import RedisInbox

    [sent] = events(1)
    await publish(stream, [sent, sent])  # the relay published it twice (at least once)
    effects: list[str] = []

    async def handler(envelope: Envelope) -> None:
        effects.append(envelope.id)

    inbox = RedisInbox(admin, ttl=60, prefix=f"{stream}:inbox:")
    async with source(stream) as src:
        runner = Consumer(src, handler, inbox=inbox, receive_timeout=0.2, concurrency=1)
        assert await runner.drain() == 2
    assert effects == [sent.id]
    assert runner.duplicates == 1


async def test_dead_letters_purge_by_id_and_all(stream: str) -> None:
    await publish(stream, events(3))
    async with source(stream) as src:
        for message in await src.receive(10, 1.0):
            await message.dead_letter("given up")
        dead = src.dead_letters()
        letters = await dead.list()
        assert [letter.reason for letter in letters] == ["given up"] * 3
        assert [x.id for x in await dead.list(limit=1, after=letters[0].id)] == [letters[1].id]
        assert await dead.purge([letters[0].id, "0-1"]) == 1
        assert await dead.get(letters[0].id) is None
        assert await dead.get("not-an-id") is None
        assert await dead.purge() == 2
        assert await dead.list() == []
        await dead.close()


def test_bad_options_are_refused_by_name() -> None:
    with pytest.raises(ConfigError) as caught:
        RedisStreamsSource(URL, stream="", group="g")
    assert caught.value.path == "stream"
    with pytest.raises(ConfigError) as caught:
        RedisStreamsSource(URL, stream="s", group="g", claim_idle=0)
    assert caught.value.path == "claim_idle"
    with pytest.raises(ConfigError) as caught:
        RedisStreamsSource("http://x", stream="s", group="g")
    assert caught.value.path == "url"
    with pytest.raises(ConfigError):
        RedisStreamsDeadLetters(URL, stream="s", timeout=-1)


@pytest.mark.parametrize("fault", ["reset", "stall"])
async def test_a_consumer_cut_off_from_redis_goes_on_once_it_is_back(
    stream: str, fault: str
) -> None:
    handled: list[str] = []

    async def handler(envelope: Envelope) -> None:
        handled.append(envelope.id)

    async with FaultProxy(SERVICES["redis"]) as proxy:
        url = f"redis://127.0.0.1:{proxy.port}/0"
        async with RedisStreamsSource(url, stream=stream, group="g", timeout=0.5) as src:
            runner = Consumer(src, handler, receive_timeout=0.1)
            task = asyncio.create_task(runner.run())
            await publish(stream, events(2))
            await wait_for(lambda: len(handled) == 2)
            await proxy.set_mode(fault)  # type: ignore[arg-type]
            await publish(stream, events(2))  # straight to Redis, not through the proxy
            await asyncio.sleep(1.0)  # receives fail meanwhile; the runner carries on
            assert not task.done()
            await proxy.set_mode("pass")
            await wait_for(lambda: len(handled) == 4, 30)
            runner.stop()
            await task
    assert len(set(handled)) == 4


async def test_a_member_back_under_its_name_takes_its_pending_entries_at_once(
    stream: str,
) -> None:
    [sent] = events(1)
    await publish(stream, [sent])
    async with source(stream, consumer="worker-1") as before:
        [message] = await before.receive(10, 1.0)  # then the process "dies"
    async with source(stream, consumer="worker-1") as after:  # claim_idle is 60 s
        [again] = await after.receive(10, 0)
        assert again.message_id == message.message_id
        assert again.deliveries == 2
        await again.ack()
        assert await after.receive(10, 0) == []


async def test_delete_on_ack_removes_handled_entries(
    admin: redis.asyncio.Redis, stream: str
) -> None:
    await publish(stream, events(3))
    async with source(stream, delete_on_ack=True) as src:
        assert await Consumer(src, lambda envelope: None, receive_timeout=0.2).drain() == 3
    assert await admin.xlen(stream) == 0
    assert (await admin.xpending(stream, "g"))["pending"] == 0


async def test_runners_cancelled_again_and_again_lose_nothing(stream: str) -> None:
    sent = events(120)
    await publish(stream, sent)
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

    async with source(stream) as src:  # one member, claim_idle 60 s: no waiting on it
        for _ in range(5):
            task = asyncio.create_task(runner().run())
            await asyncio.sleep(0.05)
            task.cancel()  # mid-handler, mid-receive, wherever it is
            with pytest.raises(asyncio.CancelledError):
                await task
        assert len(done) < len(sent)
        last = runner()
        async with asyncio.timeout(60):
            await last.drain()
    assert done == {e.id for e in sent}  # every one handled, at least once

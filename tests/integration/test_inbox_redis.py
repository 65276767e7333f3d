"""RedisInbox against the real Redis: SET NX with a TTL, release, and an outage
(through a fault proxy) that fails the claim loudly instead of skipping the message.

Every test uses its own key prefix and deletes its keys after.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
import redis.asyncio

from buttress.errors import StoreUnavailable, is_transient
from buttress.messaging.inbox import RedisInbox

from tests.conftest import SERVICES, require_service
from tests.faults import FaultProxy

URL = f"redis://127.0.0.1:{SERVICES['redis']}/0"


@pytest.fixture
async def client() -> AsyncIterator[redis.asyncio.Redis]:
    require_service("redis")
    connection = redis.asyncio.Redis.from_url(URL)
    async with connection:
        yield connection


@pytest.fixture
async def prefix(client: redis.asyncio.Redis) -> AsyncIterator[str]:
    name = f"test:buttress:inbox:{uuid.uuid4().hex[:12]}:"
    yield name
    found = [k async for k in client.scan_iter(match=f"{name}*")]
    if found:
        await client.delete(*found)


async def test_a_redelivered_message_has_no_second_effect(
    client: redis.asyncio.Redis, prefix: str
) -> None:
    inbox = RedisInbox(client, 60, prefix)
    effects: list[str] = []

    async def handle(message_id: str, *, fail: bool = False) -> None:
        if not await inbox.claim(message_id):
            return
        try:
            if fail:
                raise RuntimeError("handler failed")
            effects.append(message_id)
        except RuntimeError:
            await inbox.release(message_id)  # let the redelivery run it again
            raise

    with pytest.raises(RuntimeError):
        await handle("m-1", fail=True)
    for _ in range(3):
        await handle("m-1")
    await handle("m-2")
    assert effects == ["m-1", "m-2"]
    ttl = await client.pttl(f"{prefix}m-1")
    assert 55_000 < ttl <= 60_000


async def test_the_ttl_is_in_milliseconds_and_prefixes_are_independent(
    client: redis.asyncio.Redis, prefix: str
) -> None:
    short = RedisInbox(client, 2.5, prefix + "a:")
    other = RedisInbox(client, 60, prefix + "b:")
    assert await short.claim("m") is True
    assert await other.claim("m") is True
    assert await short.claim("m") is False
    assert 2_000 < await client.pttl(f"{prefix}a:m") <= 2_500
    assert await client.get(f"{prefix}b:m") == b"1"


async def test_an_outage_raises_store_unavailable(prefix: str) -> None:
    require_service("redis")
    async with FaultProxy(SERVICES["redis"]) as proxy:
        connection = redis.asyncio.Redis(
            host="127.0.0.1", port=proxy.port, socket_timeout=0.5, socket_connect_timeout=0.5
        )
        async with connection:
            inbox = RedisInbox(connection, 60, prefix)
            assert await inbox.claim("m-1") is True
            await proxy.set_mode("reset")
            with pytest.raises(StoreUnavailable) as raised:
                await inbox.claim("m-2")
            assert is_transient(raised.value)
            await proxy.set_mode("pass")
            assert await inbox.claim("m-2") is True
            assert await inbox.release("m-1") is True

"""The webhook receiver under a real server (uvicorn on 127.0.0.1, mounted as a
Starlette route), posted to by httpx, and deduplicating through the real Redis."""

from __future__ import annotations

import asyncio
import json
import math
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import httpx
import pytest
import redis.asyncio
import standardwebhooks
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from starlette.applications import Starlette
from starlette.routing import Route

from buttress.messaging.inbox import RedisInbox
from buttress.webhooks import Secret, Signer, WebhookEvent, webhook_route

from tests.conftest import SERVICES, require_service
from tests.integration.test_asgi_server import serving

pytestmark = pytest.mark.integration

SECRET = Secret.generate()


class Recorder:
    def __init__(self) -> None:
        self.events: list[WebhookEvent] = []
        self.arrived = asyncio.Event()

    async def __call__(self, event: WebhookEvent) -> None:
        self.events.append(event)
        self.arrived.set()


def post_args(msg_id: str, payload: object, secret: Secret = SECRET) -> dict[str, object]:
    body = json.dumps(payload).encode()
    headers = Signer(secret).headers(msg_id, body)
    return {"content": body, "headers": {**headers, "content-type": "application/json"}}


async def test_signed_webhooks_over_the_wire() -> None:
    handler = Recorder()
    receiver = webhook_route(handler, secrets=SECRET, max_body=1000)
    app = Starlette(routes=[Route("/hooks", receiver, methods=["POST"])])
    async with serving(app) as (client, _):
        accepted = await client.post("/hooks", **post_args("msg_a", {"type": "x.created"}))  # type: ignore[arg-type]
        duplicate = await client.post("/hooks", **post_args("msg_a", {"type": "x.created"}))  # type: ignore[arg-type]
        forged = await client.post("/hooks", **post_args("msg_b", {}, Secret.generate()))  # type: ignore[arg-type]
        unsigned = await client.post("/hooks", json={"type": "x"})

        async def stream() -> AsyncIterator[bytes]:
            for _ in range(30):
                yield b"x" * 100

        # Chunked, no Content-Length: the cap is found while reading.
        big_headers = Signer(SECRET).headers("msg_c", b"x" * 3000)
        too_big = await client.post("/hooks", content=stream(), headers=big_headers)
        await asyncio.wait_for(receiver.drain(), 10)

    assert accepted.status_code == 202
    assert accepted.json() == {"id": "msg_a", "status": "accepted"}
    assert duplicate.status_code == 200
    assert duplicate.json()["status"] == "duplicate"
    for response, status in ((forged, 401), (unsigned, 400), (too_big, 413)):
        assert response.status_code == status
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["status"] == status
        assert response.json()["instance"] == "/hooks"
    assert [event.id for event in handler.events] == ["msg_a"]
    assert handler.events[0].type == "x.created"
    assert handler.events[0].sender == "ip:127.0.0.1"


async def test_the_reference_library_signs_and_the_receiver_accepts() -> None:
    handler = Recorder()
    receiver = webhook_route(handler, secrets=SECRET.export(), ack="after")
    app = Starlette(routes=[Route("/hooks", receiver, methods=["POST"])])
    reference = standardwebhooks.Webhook(SECRET.export())
    now = datetime.now(tz=UTC)
    body = json.dumps({"type": "user.created", "data": {"id": 7}})
    headers = {
        "webhook-id": "msg_ref",
        "webhook-timestamp": str(math.floor(now.timestamp())),
        "webhook-signature": reference.sign("msg_ref", now, body),
    }
    async with serving(app) as (client, _):
        response = await client.post("/hooks", content=body.encode(), headers=headers)
    assert response.status_code == 200
    assert response.json() == {"id": "msg_ref", "status": "handled"}
    assert handler.events[0].payload == {"type": "user.created", "data": {"id": 7}}


@pytest.fixture
async def redis_client() -> AsyncIterator[redis.asyncio.Redis]:
    require_service("redis")
    client = redis.asyncio.Redis.from_url(f"redis://127.0.0.1:{SERVICES['redis']}/0")
    async with client:
        yield client


@pytest.fixture
async def prefix(redis_client: redis.asyncio.Redis) -> AsyncIterator[str]:
    name = f"test:buttress:webhooks:{uuid.uuid4().hex[:12]}:"
    yield name
    found = [key async for key in redis_client.scan_iter(match=f"{name}*")]
    if found:
        await redis_client.delete(*found)


async def test_two_receivers_share_a_redis_inbox(
    redis_client: redis.asyncio.Redis, prefix: str
) -> None:
    # Two receivers (two processes behind a load balancer) and one inbox: a message
    # delivered to both is handled once.
    first, second = Recorder(), Recorder()
    inbox = RedisInbox(redis_client, 3600, prefix)
    app = Starlette(
        routes=[
            Route(
                "/a",
                webhook_route(first, secrets=SECRET, inbox=inbox, ack="after"),
                methods=["POST"],
            ),
            Route(
                "/b",
                webhook_route(second, secrets=SECRET, inbox=inbox, ack="after"),
                methods=["POST"],
            ),
        ]
    )
    async with serving(app) as (client, _):
        one = await client.post("/a", **post_args("msg_shared", {"n": 1}))  # type: ignore[arg-type]
        two = await client.post("/b", **post_args("msg_shared", {"n": 1}))  # type: ignore[arg-type]
        other = await client.post("/b", **post_args("msg_other", {"n": 2}))  # type: ignore[arg-type]
    assert (one.status_code, two.status_code, other.status_code) == (200, 200, 200)
    assert two.json()["status"] == "duplicate"
    assert [e.id for e in first.events] == ["msg_shared"]
    assert [e.id for e in second.events] == ["msg_other"]
    assert await redis_client.exists(prefix + "msg_shared") == 1
    assert 0 < await redis_client.ttl(prefix + "msg_shared") <= 3600


async def test_a_failed_handler_releases_its_redis_claim(
    redis_client: redis.asyncio.Redis, prefix: str
) -> None:
    calls: list[str] = []

    async def flaky(event: WebhookEvent) -> None:
        calls.append(event.id)
        if len(calls) == 1:
            raise RuntimeError("first try fails")

    inbox = RedisInbox(redis_client, 3600, prefix)
    receiver = webhook_route(flaky, secrets=SECRET, inbox=inbox, ack="after")
    app = Starlette(routes=[Route("/hooks", receiver, methods=["POST"])])
    async with serving(app) as (client, _):
        failed = await client.post("/hooks", **post_args("msg_f", {}))  # type: ignore[arg-type]
        assert await redis_client.exists(prefix + "msg_f") == 0
        retried = await client.post("/hooks", **post_args("msg_f", {}))  # type: ignore[arg-type]
    assert failed.status_code == 500
    assert failed.headers["content-type"] == "application/problem+json"
    assert retried.status_code == 200
    assert calls == ["msg_f", "msg_f"]


async def test_redis_down_answers_503_and_hands_nothing_on() -> None:
    # A client pointed at a closed loopback port: the inbox cannot claim.
    handler = Recorder()
    client = redis.asyncio.Redis(
        host="127.0.0.1", port=1, socket_connect_timeout=1, retry=Retry(NoBackoff(), 0)
    )
    inbox = RedisInbox(client, 60, "test:buttress:webhooks:down:")
    app = Starlette(
        routes=[
            Route("/hooks", webhook_route(handler, secrets=SECRET, inbox=inbox), methods=["POST"])
        ]
    )
    async with serving(app) as (http, _):
        response = await http.post("/hooks", **post_args("msg_d", {}))  # type: ignore[arg-type]
    await client.aclose()
    assert response.status_code == 503
    assert response.headers["retry-after"] == "5"
    assert handler.events == []


async def test_httpx_mounted_without_a_server() -> None:
    # The receiver is a plain ASGI app: it works as a whole application too.
    handler = Recorder()
    receiver = webhook_route(handler, secrets=SECRET, ack="after")
    transport = httpx.ASGITransport(app=receiver, client=("127.0.0.1", 1))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        response = await client.post("/", **post_args("msg_x", {"ok": True}))  # type: ignore[arg-type]
    assert response.status_code == 200
    assert handler.events[0].payload == {"ok": True}

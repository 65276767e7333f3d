"""The inbound webhook receiver, driven through the ASGI protocol directly.

Every refusal is checked for its status, its problem+json document, and that
nothing reached the handler.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import MutableMapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from buttress.clock import FakeClock
from buttress.errors import ConfigError
from buttress.webhooks import MemoryInbox, Secret, Signer, WebhookEvent, webhook_route
from buttress.webhooks.receiver import WebhookReceiver

from tests.helpers import tick

SECRET = Secret(b"s" * 32)
OTHER = Secret(b"o" * 32)
NOW = 1_767_225_600


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes
    reads: int  # how many times the app called receive()

    @property
    def json(self) -> Any:
        return json.loads(self.body)


async def call(
    app: WebhookReceiver,
    *,
    body: bytes | Sequence[bytes] = b"{}",
    headers: Sequence[tuple[str, str]] = (),
    method: str = "POST",
    client: tuple[str, int] | None = ("127.0.0.1", 50000),
    path: str = "/hooks",
) -> Response:
    chunks = [body] if isinstance(body, bytes) else list(body)
    reads = 0

    async def receive() -> dict[str, Any]:
        nonlocal reads
        reads += 1
        if reads > len(chunks):
            return {"type": "http.disconnect"}
        return {
            "type": "http.request",
            "body": chunks[reads - 1],
            "more_body": reads < len(chunks),
        }

    sent: list[MutableMapping[str, Any]] = []

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)

    scope: dict[str, Any] = {
        "type": "http",
        "method": method,
        "path": path,
        "headers": [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers],
        "client": client,
    }
    await app(scope, receive, send)
    assert [m["type"] for m in sent] == ["http.response.start", "http.response.body"]
    head = {k.decode(): v.decode() for k, v in sent[0]["headers"]}
    return Response(sent[0]["status"], head, sent[1]["body"], reads)


def signed(
    body: bytes = b"{}",
    msg_id: str = "msg_1",
    ts: int = NOW,
    secret: Any = SECRET,
) -> list[tuple[str, str]]:
    headers = Signer(secret).headers(msg_id, body, timestamp=ts)
    return [*headers.items(), ("content-type", "application/json")]


@dataclass
class Recorder:
    events: list[WebhookEvent] = field(default_factory=list)
    fail: bool = False

    async def __call__(self, event: WebhookEvent) -> None:
        self.events.append(event)
        if self.fail:
            raise RuntimeError("handler broke")


def receiver(handler: Any = None, **options: Any) -> WebhookReceiver:
    options.setdefault("secrets", SECRET)
    options.setdefault("clock", FakeClock())
    return webhook_route(handler if handler is not None else Recorder(), **options)


def assert_problem(response: Response, status: int) -> dict[str, Any]:
    assert response.status == status, response.body
    assert response.headers["content-type"] == "application/problem+json"
    document: dict[str, Any] = response.json
    assert document["status"] == status
    assert document["instance"] == "/hooks"
    assert document["detail"]
    return document


# --------------------------------------------------------------------------- accepting


async def test_a_good_webhook_is_acknowledged_and_handed_on() -> None:
    handler = Recorder()
    app = receiver(handler)
    body = b'{"type":"invoice.paid","data":{"id":1}}'
    response = await call(app, body=body, headers=signed(body))
    assert response.status == 202
    assert response.json == {"id": "msg_1", "status": "accepted"}
    await app.drain()
    [event] = handler.events
    assert event.id == "msg_1"
    assert event.timestamp == NOW
    assert event.payload == {"type": "invoice.paid", "data": {"id": 1}}
    assert event.type == "invoice.paid"
    assert event.body == body
    assert event.sender == "ip:127.0.0.1"
    assert event.received_at == NOW
    assert event.headers["content-type"] == "application/json"


async def test_the_handler_runs_after_the_answer() -> None:
    started = asyncio.Event()
    release = asyncio.Event()

    async def slow(event: WebhookEvent) -> None:
        started.set()
        await release.wait()

    app = receiver(slow)
    response = await call(app, headers=signed())
    assert response.status == 202
    await tick()
    assert started.is_set()
    assert app.pending == 1
    release.set()
    await app.drain()
    assert app.pending == 0


async def test_a_duplicate_is_answered_200_and_not_handed_on_again() -> None:
    handler = Recorder()
    app = receiver(handler)
    assert (await call(app, headers=signed())).status == 202
    again = await call(app, headers=signed())
    assert again.status == 200
    assert again.json == {"id": "msg_1", "status": "duplicate"}
    # A retry signed anew (fresh timestamp) is the same message too.
    retried = await call(app, headers=signed(ts=NOW + 30))
    assert retried.json["status"] == "duplicate"
    await app.drain()
    assert len(handler.events) == 1


async def test_ack_after_awaits_the_handler() -> None:
    handler = Recorder()
    app = receiver(handler, ack="after")
    response = await call(app, headers=signed())
    assert response.status == 200
    assert response.json == {"id": "msg_1", "status": "handled"}
    assert len(handler.events) == 1


async def test_ack_after_a_failed_handler_is_a_500_and_the_retry_runs_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    handler = Recorder(fail=True)
    app = receiver(handler, ack="after")
    with caplog.at_level(logging.ERROR, "buttress.webhooks"):
        response = await call(app, headers=signed())
    document = assert_problem(response, 500)
    assert "handler broke" not in json.dumps(document)
    assert "handler failed" in caplog.text
    handler.fail = False
    assert (await call(app, headers=signed())).status == 200
    assert len(handler.events) == 2


async def test_a_background_handler_failure_releases_the_claim(
    caplog: pytest.LogCaptureFixture,
) -> None:
    handler = Recorder(fail=True)
    app = receiver(handler)
    with caplog.at_level(logging.ERROR, "buttress.webhooks"):
        assert (await call(app, headers=signed())).status == 202
        await app.drain()
    assert "acknowledged already" in caplog.text
    handler.fail = False
    assert (await call(app, headers=signed())).status == 202
    await app.drain()
    assert len(handler.events) == 2


async def test_events_go_into_a_queue() -> None:
    queue: asyncio.Queue[WebhookEvent] = asyncio.Queue(maxsize=1)
    app = receiver(queue)
    assert (await call(app, headers=signed(msg_id="a"))).status == 202
    # Full: refused with 503, and the claim forgotten so the retry is taken.
    full = await call(app, headers=signed(msg_id="b"))
    assert_problem(full, 503)
    assert full.headers["retry-after"] == "1"
    assert queue.get_nowait().id == "a"
    assert (await call(app, headers=signed(msg_id="b"))).status == 202
    assert queue.get_nowait().id == "b"


async def test_too_many_running_handlers_answer_503() -> None:
    release = asyncio.Event()
    seen: list[str] = []

    async def blocked(event: WebhookEvent) -> None:
        seen.append(event.id)
        await release.wait()

    app = receiver(blocked, max_pending=1)
    assert (await call(app, headers=signed(msg_id="a"))).status == 202
    assert_problem(await call(app, headers=signed(msg_id="b")), 503)
    release.set()
    await app.drain()
    assert (await call(app, headers=signed(msg_id="b"))).status == 202
    await app.drain()
    assert seen == ["a", "b"]


async def test_rotation_either_secret_is_accepted() -> None:
    handler = Recorder()
    app = receiver(handler, secrets=[SECRET, OTHER], ack="after")
    assert (await call(app, headers=signed(msg_id="a", secret=OTHER))).status == 200
    assert (await call(app, headers=signed(msg_id="b", secret=[OTHER, SECRET]))).status == 200
    assert [e.id for e in handler.events] == ["a", "b"]


async def test_body_in_chunks_is_put_together() -> None:
    handler = Recorder()
    app = receiver(handler, ack="after")
    body = b'{"a": [1, 2, 3]}'
    response = await call(app, body=[body[:3], body[3:9], body[9:]], headers=signed(body))
    assert response.status == 200
    assert response.reads == 3
    assert handler.events[0].payload == {"a": [1, 2, 3]}


async def test_a_custom_inbox_with_only_claim_is_used() -> None:
    class Claims:
        def __init__(self) -> None:
            self.ids: list[str] = []

        async def claim(self, message_id: str) -> bool:
            first = message_id not in self.ids
            self.ids.append(message_id)
            return first

    inbox = Claims()
    app = receiver(inbox=inbox, ack="after")
    assert (await call(app, headers=signed())).status == 200
    assert (await call(app, headers=signed())).status == 200
    assert inbox.ids == ["msg_1", "msg_1"]


async def test_an_unreachable_inbox_answers_503_and_hands_nothing_on() -> None:
    class Broken:
        async def claim(self, message_id: str) -> bool:
            raise ConnectionError("redis is down")

    handler = Recorder()
    app = receiver(handler, inbox=Broken())
    response = await call(app, headers=signed())
    assert_problem(response, 503)
    assert response.headers["retry-after"] == "5"
    await app.drain()
    assert handler.events == []


async def test_non_http_scopes_are_left_alone() -> None:
    app = receiver()
    sent: list[MutableMapping[str, Any]] = []

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)

    async def receive() -> dict[str, Any]:
        raise AssertionError("not read")

    await app({"type": "lifespan"}, receive, send)
    assert sent == []
    await app({"type": "websocket", "path": "/hooks", "headers": []}, receive, send)
    assert sent == [{"type": "websocket.close", "code": 1008}]


# ---------------------------------------------------------------------------- refusals


def headers_without(name: str) -> list[tuple[str, str]]:
    return [(k, v) for k, v in signed() if k != name]


def headers_with(name: str, value: str) -> list[tuple[str, str]]:
    return [(k, value if k == name else v) for k, v in signed()]


BAD_HEADERS = {
    "missing id": headers_without("webhook-id"),
    "missing timestamp": headers_without("webhook-timestamp"),
    "missing signature": headers_without("webhook-signature"),
    "duplicated signature": [*signed(), ("webhook-signature", signed(secret=OTHER)[2][1])],
    "duplicated id": [*signed(), ("Webhook-Id", "msg_2")],
    "duplicated timestamp": [*signed(), ("webhook-timestamp", str(NOW))],
    "signature without version": headers_with("webhook-signature", "c2lnbmF0dXJl"),
    "signature not base64": headers_with("webhook-signature", "v1,!!!!"),
    "signature too short": headers_with("webhook-signature", "v1,YWJj"),
    "only v1a signatures": headers_with("webhook-signature", "v1a,YWJj"),
    "empty signature": headers_with("webhook-signature", ""),
    "timestamp not numeric": headers_with("webhook-timestamp", "yesterday"),
    "timestamp with decimals": headers_with("webhook-timestamp", f"{NOW}.0"),
    "timestamp negative": headers_with("webhook-timestamp", "-1"),
    "timestamp huge": headers_with("webhook-timestamp", "1" * 30),
    "id with space": headers_with("webhook-id", "msg 1"),
}


@pytest.mark.parametrize("case", sorted(BAD_HEADERS))
async def test_bad_headers_are_400(case: str) -> None:
    handler = Recorder()
    app = receiver(handler)
    response = await call(app, headers=BAD_HEADERS[case])
    document = assert_problem(response, 400)
    assert document["detail"].startswith("Bad webhook headers")
    # Refused before the body was read.
    assert response.reads == 0
    await app.drain()
    assert handler.events == []


@pytest.mark.parametrize(("skew", "word"), [(-301, "future"), (301, "old"), (-(10**9), "future")])
async def test_stale_or_future_timestamps_are_400(skew: int, word: str) -> None:
    handler = Recorder()
    app = receiver(handler, clock=FakeClock(wall=NOW + skew))
    response = await call(app, headers=signed())
    document = assert_problem(response, 400)
    assert word in document["detail"]
    assert response.reads == 0
    assert handler.events == []


async def test_a_replayed_message_outside_the_tolerance_is_refused() -> None:
    clock = FakeClock(auto_advance=False)
    handler = Recorder()
    app = receiver(handler, clock=clock)
    captured = signed()
    assert (await call(app, headers=captured)).status == 202
    # Replayed within the tolerance: a duplicate; after it: stale.
    assert (await call(app, headers=captured)).status == 200
    clock.advance(301)
    assert_problem(await call(app, headers=captured), 400)
    await app.drain()
    assert len(handler.events) == 1


async def test_a_wrong_signature_is_401() -> None:
    handler = Recorder()
    app = receiver(handler)
    response = await call(app, headers=signed(secret=OTHER))
    assert_problem(response, 401)
    assert response.headers["www-authenticate"].startswith("Signature")
    tampered = await call(app, body=b'{"x":1}', headers=signed(b'{"x":2}'))
    assert_problem(tampered, 401)
    assert handler.events == []


async def test_a_sender_using_the_secret_text_as_the_key_is_401() -> None:
    # A common mistake: signing with the "whsec_..." text (or its base64 without
    # the prefix) as the HMAC key instead of the decoded key.
    text = SECRET.export()
    for wrong in (text.encode(), text.removeprefix("whsec_").encode()):
        response = await call(receiver(), headers=signed(secret=Secret(wrong)))
        assert_problem(response, 401)


def test_a_receiver_secret_without_its_prefix_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="whsec_"):
        webhook_route(Recorder(), secrets=SECRET.export().removeprefix("whsec_"))


async def test_a_body_over_the_cap_by_content_length_is_413_unread() -> None:
    handler = Recorder()
    app = receiver(handler, max_body=100)
    body = b'{"pad":"' + b"x" * 200 + b'"}'
    response = await call(
        app, body=body, headers=[*signed(body), ("content-length", str(len(body)))]
    )
    assert_problem(response, 413)
    assert response.reads == 0
    assert handler.events == []


async def test_a_streamed_body_over_the_cap_stops_being_read_at_the_cap() -> None:
    handler = Recorder()
    app = receiver(handler, max_body=100)
    chunks = [b"x" * 40] * 10  # 400 bytes, no Content-Length
    response = await call(app, body=chunks, headers=signed(b"".join(chunks)))
    assert_problem(response, 413)
    assert response.reads == 3  # 40, 80, 120 > 100: stop
    assert handler.events == []


async def test_a_body_of_exactly_the_cap_passes() -> None:
    body = b'{"p":"' + b"x" * 92 + b'"}'
    assert len(body) == 100
    app = receiver(max_body=100)
    assert (await call(app, body=body, headers=signed(body))).status == 202


@pytest.mark.parametrize("body", [b"not json", b"", b'{"a":', b"\xff\xfe{}", b"{}}"])
async def test_a_body_that_is_not_json_is_400(body: bytes) -> None:
    handler = Recorder()
    app = receiver(handler)
    document = assert_problem(await call(app, body=body, headers=signed(body)), 400)
    assert "JSON" in document["detail"]
    await app.drain()
    assert handler.events == []


async def test_an_unsigned_non_json_body_is_401_not_400() -> None:
    # The signature is checked before the body is parsed: a stranger learns nothing.
    response = await call(receiver(), body=b"junk", headers=signed(b"other"))
    assert_problem(response, 401)


async def test_a_non_json_body_does_not_burn_its_id() -> None:
    app = receiver(ack="after")
    assert_problem(await call(app, body=b"nope", headers=signed(b"nope")), 400)
    assert (await call(app, body=b"{}", headers=signed(b"{}"))).status == 200


async def test_only_post_is_accepted() -> None:
    response = await call(receiver(), method="GET", headers=signed())
    assert_problem(response, 405)
    assert response.headers["allow"] == "POST"


async def test_a_client_that_disconnects_mid_body_hands_nothing_on() -> None:
    handler = Recorder()
    app = receiver(handler)
    body = b'{"a":1}'

    sent: list[MutableMapping[str, Any]] = []
    messages: list[dict[str, Any]] = [
        {"type": "http.request", "body": body[:3], "more_body": True},
        {"type": "http.disconnect"},
    ]

    async def receive() -> dict[str, Any]:
        return messages.pop(0)

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/hooks",
        "headers": [(k.encode(), v.encode()) for k, v in signed(body)],
        "client": ("127.0.0.1", 1),
    }
    await app(scope, receive, send)
    assert sent[0]["status"] == 400
    assert handler.events == []


# -------------------------------------------------------------- addresses and rates


async def test_allow_ips_refuses_other_senders_with_403() -> None:
    handler = Recorder()
    app = receiver(handler, allow_ips=["127.0.0.0/8", "2001:db8::1"], ack="after")
    assert (await call(app, headers=signed(msg_id="a"))).status == 200
    assert (await call(app, headers=signed(msg_id="b"), client=("2001:db8::1", 1))).status == 200
    assert_problem(await call(app, headers=signed(msg_id="c"), client=("10.0.0.1", 1)), 403)
    assert_problem(await call(app, headers=signed(msg_id="d"), client=("2001:db8::2", 1)), 403)
    assert_problem(await call(app, headers=signed(msg_id="e"), client=None), 403)
    assert [e.id for e in handler.events] == ["a", "b"]


async def test_allow_ips_reads_forwarded_for_only_from_trusted_proxies() -> None:
    app = receiver(allow_ips=["203.0.113.0/24"], trusted_proxies=["10.0.0.0/8"], ack="after")
    via_proxy = [*signed(msg_id="a"), ("x-forwarded-for", "203.0.113.9")]
    assert (await call(app, headers=via_proxy, client=("10.1.2.3", 1))).status == 200
    # The same header from an untrusted peer is ignored.
    spoofed = [*signed(msg_id="b"), ("x-forwarded-for", "203.0.113.9")]
    assert_problem(await call(app, headers=spoofed, client=("198.51.100.1", 1)), 403)


async def test_the_ip_check_comes_before_the_signature() -> None:
    app = receiver(allow_ips=["127.0.0.1"])
    assert_problem(await call(app, headers=[], client=("10.0.0.1", 1)), 403)


async def test_rate_limit_per_sender_is_429_with_retry_after() -> None:
    clock = FakeClock(auto_advance=False)
    handler = Recorder()
    app = receiver(handler, rate_limit="2/second", clock=clock, ack="after")
    assert (await call(app, headers=signed(msg_id="a"))).status == 200
    assert (await call(app, headers=signed(msg_id="b"))).status == 200
    limited = await call(app, headers=signed(msg_id="c"))
    assert_problem(limited, 429)
    assert limited.headers["retry-after"] == "1"
    # Another sender has its own allowance.
    assert (await call(app, headers=signed(msg_id="c"), client=("127.0.0.2", 1))).status == 200
    clock.advance(1.0)
    assert (await call(app, headers=signed(msg_id="d"))).status == 200
    assert [e.id for e in handler.events] == ["a", "b", "c", "d"]


async def test_a_rate_limiter_object_is_used_as_given() -> None:
    from buttress.ratelimit import RateLimiter, TokenBucket

    clock = FakeClock(auto_advance=False)
    limiter = RateLimiter(TokenBucket(1, 10.0), name="hooks-test", clock=clock)
    app = receiver(rate_limit=limiter, clock=clock)
    assert (await call(app, headers=signed(msg_id="a"))).status == 202
    assert_problem(await call(app, headers=signed(msg_id="b")), 429)


# ------------------------------------------------------------------------ MemoryInbox


async def test_memory_inbox_forgets_after_its_ttl() -> None:
    clock = FakeClock(auto_advance=False)
    inbox = MemoryInbox(60, clock=clock)
    assert await inbox.claim("a")
    assert not await inbox.claim("a")
    clock.advance(59)
    assert not await inbox.claim("a")
    clock.advance(1)
    assert await inbox.claim("a")
    assert len(inbox) == 1


async def test_memory_inbox_keeps_at_most_max_ids() -> None:
    inbox = MemoryInbox(max_ids=2, clock=FakeClock())
    for name in "abc":
        assert await inbox.claim(name)
    assert len(inbox) == 2
    assert await inbox.claim("a")  # the oldest was forgotten
    assert not await inbox.claim("c")


async def test_memory_inbox_release() -> None:
    inbox = MemoryInbox(clock=FakeClock())
    assert await inbox.claim("a")
    assert await inbox.release("a")
    assert not await inbox.release("a")
    assert await inbox.claim("a")


@pytest.mark.parametrize(
    ("options", "path"),
    [({"ttl": 0}, "ttl"), ({"ttl": float("nan")}, "ttl"), ({"max_ids": 0}, "max_ids")],
)
def test_memory_inbox_options_are_checked(options: dict[str, Any], path: str) -> None:
    with pytest.raises(ConfigError, match=path):
        MemoryInbox(**options)


# ------------------------------------------------------------------------- options


@pytest.mark.parametrize(
    ("options", "path"),
    [
        ({"max_body": 0}, "max_body"),
        ({"max_body": True}, "max_body"),
        ({"max_pending": 0}, "max_pending"),
        ({"ack": "later"}, "ack"),
        ({"inbox": object()}, "inbox"),
        ({"allow_ips": ["not-an-ip"]}, "allow_ips"),
        ({"allow_ips": "127.0.0.1"}, "allow_ips"),
        ({"rate_limit": 5}, "rate_limit"),
        ({"tolerance": 0}, "tolerance"),
    ],
)
def test_bad_options_are_config_errors(options: dict[str, Any], path: str) -> None:
    with pytest.raises(ConfigError, match=path):
        receiver(**options)


def test_ack_after_needs_a_handler() -> None:
    with pytest.raises(ConfigError, match="queue"):
        webhook_route(asyncio.Queue(), secrets=SECRET, ack="after")


def test_the_target_must_be_a_handler_or_a_queue() -> None:
    with pytest.raises(ConfigError, match="handler_or_queue"):
        webhook_route("nope", secrets=SECRET)  # type: ignore[arg-type]


# ------------------------------------------------------------------------ never 500


header_text = st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF), max_size=80)


@given(
    msg_id=st.one_of(st.none(), header_text),
    timestamp=st.one_of(st.none(), header_text, st.integers(-(10**12), 10**16).map(str)),
    signature=st.one_of(st.none(), header_text, st.just("v1,")),
    body=st.binary(max_size=300),
)
def test_arbitrary_input_is_never_a_500_nor_handed_on(
    msg_id: str | None, timestamp: str | None, signature: str | None, body: bytes
) -> None:
    async def run() -> Response:
        handler = Recorder()
        app = receiver(handler, max_body=200)
        headers = [
            (name, value)
            for name, value in (
                ("webhook-id", msg_id),
                ("webhook-timestamp", timestamp),
                ("webhook-signature", signature),
            )
            if value is not None
        ]
        response = await call(app, body=body, headers=headers)
        await app.drain()
        assert handler.events == []
        return response

    response = asyncio.run(run())
    assert 400 <= response.status < 500
    assert response.headers["content-type"] == "application/problem+json"


async def test_a_failing_rate_limiter_lets_the_request_through(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from buttress.ratelimit import RateLimiter

    class Down(RateLimiter):
        async def ahit(self, key: str | None = None, cost: int | None = None) -> Any:
            raise ConnectionError("redis is down")

    handler = Recorder()
    app = receiver(handler, rate_limit=Down("1/second", name="down"), ack="after")
    with caplog.at_level(logging.WARNING, "buttress.webhooks"):
        assert (await call(app, headers=signed())).status == 200
    assert "rate limiter failed" in caplog.text
    assert len(handler.events) == 1


async def test_ack_after_a_retry_while_the_handler_runs_is_409_not_duplicate() -> None:
    release = asyncio.Event()
    calls: list[str] = []

    async def slow(event: WebhookEvent) -> None:
        calls.append(event.id)
        await release.wait()

    app = receiver(slow, ack="after")
    first = asyncio.create_task(call(app, headers=signed()))
    await tick(3)
    assert calls == ["msg_1"]
    retry = await call(app, headers=signed())
    assert_problem(retry, 409)
    assert retry.headers["retry-after"] == "5"
    release.set()
    assert (await first).status == 200
    # Once handled, a retry is a plain duplicate.
    assert (await call(app, headers=signed())).json["status"] == "duplicate"
    assert calls == ["msg_1"]


def test_the_facade_loads_the_receiver_without_optional_dependencies() -> None:
    import subprocess
    import sys

    code = (
        "import sys, buttress.webhooks as w\n"
        "w.webhook_route, w.Verifier, w.MemoryInbox\n"
        "print(sorted({m.partition('.')[0] for m in sys.modules}"
        " & {'starlette', 'aiohttp', 'redis', 'httpx', 'uvicorn'}))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == "[]"


def test_the_facade_names_its_exports() -> None:
    import buttress.webhooks as package

    assert {"webhook_route", "WebhookEvent", "MemoryInbox", "Verifier", "Secret"} <= set(
        dir(package)
    )
    with pytest.raises(AttributeError, match="no_such_name"):
        package.no_such_name  # noqa: B018

"""RequestIdMiddleware: ids accepted when safe, generated otherwise, echoed, in context."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest

from buttress.errors import ConfigError
from buttress.integrations.asgi import Message, Receive, RequestIdMiddleware, Scope, Send
from buttress.observe.context import correlation_id, current_ids, request_id

from tests.unit.integrations.asgi.asgi_calls import call, scope_of

seen: list[dict[str, Any]] = []


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    seen.append({"context": current_ids(), "state": dict(scope.get("state", {}))})
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


@pytest.fixture(autouse=True)
def _clear() -> None:
    seen.clear()


def is_uuid4(text: str) -> bool:
    try:
        return uuid.UUID(text).version == 4 and str(uuid.UUID(text)) == text
    except ValueError:
        return False


async def test_an_id_is_generated_echoed_and_set_for_the_request() -> None:
    done = await call(RequestIdMiddleware(app))
    rid = done.headers["x-request-id"]
    assert is_uuid4(rid)
    # The first service of a chain starts the correlation with its request id.
    assert done.headers["x-correlation-id"] == rid
    assert seen == [
        {
            "context": {"request_id": rid, "correlation_id": rid},
            "state": {"request_id": rid, "correlation_id": rid},
        }
    ]
    # Set for the request only.
    assert current_ids() == {}


async def test_each_request_gets_its_own_id() -> None:
    middleware = RequestIdMiddleware(app)
    ids = {(await call(middleware)).headers["x-request-id"] for _ in range(5)}
    assert len(ids) == 5


async def test_valid_incoming_ids_are_kept() -> None:
    headers = [(b"x-request-id", b"req-7f3a.1:x"), (b"x-correlation-id", b"order/42@checkout")]
    done = await call(RequestIdMiddleware(app), headers=headers)
    assert done.headers["x-request-id"] == "req-7f3a.1:x"
    assert done.headers["x-correlation-id"] == "order/42@checkout"
    assert seen[0]["context"] == {
        "request_id": "req-7f3a.1:x",
        "correlation_id": "order/42@checkout",
    }


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"abc\r\nSet-Cookie: session=evil",
        b"abc\ninjected log line",
        b'"quoted"',
        b"with space",
        b"semi;colon",
        b"caf\xe9",
        b"a" * 129,
        b"<script>",
    ],
    ids=["empty", "crlf", "lf", "quotes", "space", "semicolon", "latin1", "too-long", "markup"],
)
async def test_invalid_incoming_ids_are_replaced_never_echoed(raw: bytes) -> None:
    headers = [(b"x-request-id", raw), (b"x-correlation-id", raw)]
    done = await call(RequestIdMiddleware(app), headers=headers)
    rid = done.headers["x-request-id"]
    assert is_uuid4(rid)
    assert done.headers["x-correlation-id"] == rid
    assert all(raw not in value for _, value in done.header_list()) or raw == b""
    assert seen[0]["context"]["request_id"] == rid


async def test_the_length_limit_is_inclusive_and_configurable() -> None:
    exact = b"a" * 128
    assert (await call(RequestIdMiddleware(app), headers=[(b"x-request-id", exact)])).headers[
        "x-request-id"
    ] == exact.decode()
    short = RequestIdMiddleware(app, max_length=40)
    done = await call(short, headers=[(b"x-request-id", b"b" * 41)])
    assert done.headers["x-request-id"] != "b" * 41
    # A generator whose ids do not fit is refused when the middleware is built.
    with pytest.raises(ConfigError, match="at most 16 safe characters"):
        RequestIdMiddleware(app, max_length=16)


async def test_only_the_first_occurrence_counts() -> None:
    headers = [(b"x-request-id", b"bad id"), (b"x-request-id", b"good-id")]
    done = await call(RequestIdMiddleware(app), headers=headers)
    assert done.headers["x-request-id"] != "good-id"


async def test_incoming_ids_can_be_ignored() -> None:
    middleware = RequestIdMiddleware(app, accept_incoming=False)
    done = await call(middleware, headers=[(b"x-request-id", b"from-the-client")])
    assert done.headers["x-request-id"] != "from-the-client"


async def test_header_names_and_generator_are_configurable() -> None:
    counter = iter(range(1, 100))
    middleware = RequestIdMiddleware(
        app,
        request_header="Request-Id",
        correlation_header=None,
        generate=lambda: f"id-{next(counter)}",
    )
    done = await call(middleware, headers=[(b"x-correlation-id", b"ignored")])
    # id-1 went to the check at construction.
    assert done.headers == {"request-id": "id-2"}
    assert seen[0]["context"] == {"request_id": "id-2"}
    assert seen[0]["state"] == {"request_id": "id-2"}


async def test_an_id_the_application_set_is_not_duplicated() -> None:
    async def own(scope: Scope, receive: Receive, send: Send) -> None:
        await send(
            {"type": "http.response.start", "status": 200, "headers": [(b"x-request-id", b"mine")]}
        )
        await send({"type": "http.response.body", "body": b""})

    done = await call(RequestIdMiddleware(own))
    assert [v for k, v in done.header_list() if k == b"x-request-id"] == [b"mine"]


async def test_tasks_started_by_the_request_keep_its_ids() -> None:
    results: list[str | None] = []
    release = asyncio.Event()
    tasks: list[asyncio.Task[None]] = []

    async def background() -> None:
        await release.wait()
        results.append(request_id.get())
        results.append(correlation_id.get())

    async def spawning(scope: Scope, receive: Receive, send: Send) -> None:
        tasks.append(asyncio.create_task(background()))
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    done = await call(RequestIdMiddleware(spawning), headers=[(b"x-correlation-id", b"corr-1")])
    release.set()
    await tasks[0]
    assert results == [done.headers["x-request-id"], "corr-1"]


async def test_websockets_get_ids_on_accept() -> None:
    async def ws(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        seen.append({"context": current_ids(), "state": dict(scope["state"])})
        await send({"type": "websocket.accept", "headers": []})
        await send({"type": "websocket.close", "code": 1000})

    sent: list[Message] = []
    scope = scope_of("/ws", [(b"x-request-id", b"ws-1")], kind="websocket")

    async def receive() -> Message:
        return {"type": "websocket.connect"}

    async def send(message: Message) -> None:
        sent.append(message)

    await RequestIdMiddleware(ws)(scope, receive, send)
    assert sent[0]["headers"] == [(b"x-request-id", b"ws-1"), (b"x-correlation-id", b"ws-1")]
    assert seen[0]["context"] == {"request_id": "ws-1", "correlation_id": "ws-1"}


async def test_lifespan_passes_through_untouched() -> None:
    scopes: list[Scope] = []

    async def lifespan(scope: Scope, receive: Receive, send: Send) -> None:
        scopes.append(scope)
        assert current_ids() == {}

    scope: dict[str, Any] = {"type": "lifespan"}

    async def nothing() -> Message:
        raise AssertionError  # pragma: no cover

    async def drop(message: Message) -> None:
        raise AssertionError  # pragma: no cover

    await RequestIdMiddleware(lifespan)(scope, nothing, drop)
    assert scopes == [{"type": "lifespan"}]


async def test_the_server_state_namespace_is_kept() -> None:
    scope = scope_of()
    scope["state"] = {"pool": "db"}

    async def receive() -> Message:
        return {"type": "http.request", "body": b""}

    async def send(message: Message) -> None:
        pass

    await RequestIdMiddleware(app)(scope, receive, send)
    assert seen[0]["state"]["pool"] == "db"
    assert "request_id" in seen[0]["state"]


@pytest.mark.parametrize(
    ("options", "path"),
    [
        ({"request_header": "X Request"}, "request_header"),
        ({"request_header": ""}, "request_header"),
        ({"correlation_header": "bad:name"}, "correlation_header"),
        ({"correlation_header": "x-request-id"}, "correlation_header"),
        ({"max_length": 4}, "max_length"),
        ({"max_length": True}, "max_length"),
        ({"accept_incoming": "yes"}, "accept_incoming"),
        ({"generate": "uuid4"}, "generate"),
        ({"generate": lambda: "not safe\n"}, "generate"),
        ({"generate": lambda: 42}, "generate"),
    ],
)
def test_bad_options_are_refused_by_name(options: dict[str, Any], path: str) -> None:
    with pytest.raises(ConfigError) as info:
        RequestIdMiddleware(app, **options)
    assert info.value.path == path


def test_repr_names_the_headers() -> None:
    text = repr(RequestIdMiddleware(app))
    assert "request_header='x-request-id'" in text
    assert "correlation_header='x-correlation-id'" in text

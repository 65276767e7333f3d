"""ProblemMiddleware: every mapped error as problem+json, and nothing internal in a 500."""

from __future__ import annotations

import logging
import warnings
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from buttress.errors import (
    BulkheadFull,
    CircuitOpen,
    ConfigError,
    RateLimited,
    RetryExhausted,
    StoreError,
    StoreUnavailable,
    TimeoutExceeded,
)
from buttress.integrations.asgi import (
    Conflict,
    DependencyFailed,
    DependencyTimeout,
    Forbidden,
    NotFound,
    Problem,
    ProblemError,
    ProblemMiddleware,
    Receive,
    RequestIdMiddleware,
    Scope,
    Send,
    ServiceUnavailable,
    ShuttingDown,
    TooManyRequests,
    Unauthorized,
    ValidationFailed,
)

from tests.unit.integrations.asgi.asgi_calls import call
from tests.unit.integrations.asgi.helpers import client_of

SECRET = "password=hunter2 at db-internal.example:5432"


def raising(exc: BaseException) -> Any:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        raise exc

    return app


def problem_app(exc: BaseException, **options: Any) -> Any:
    return RequestIdMiddleware(ProblemMiddleware(raising(exc), **options))


TAXONOMY = [
    (ValidationFailed("the date is in the past"), 400, "Bad Request"),
    (Unauthorized("token expired"), 401, "Unauthorized"),
    (Forbidden("not your order"), 403, "Forbidden"),
    (NotFound("no order 42"), 404, "Not Found"),
    (Conflict("version 3 is not the latest"), 409, "Conflict"),
    (TooManyRequests("slow down"), 429, "Too Many Requests"),
    (DependencyFailed("the payment provider failed"), 502, "Bad Gateway"),
    (ServiceUnavailable("maintenance"), 503, "Service Unavailable"),
    (DependencyTimeout("the payment provider is slow"), 504, "Gateway Timeout"),
]


@pytest.mark.parametrize(("exc", "status", "title"), TAXONOMY, ids=lambda v: type(v).__name__)
async def test_the_taxonomy_answers_with_its_status_and_detail(
    exc: ProblemError, status: int, title: str
) -> None:
    done = await call(problem_app(exc), "/orders/42", [(b"x-request-id", b"req-1")])
    assert done.status == status
    assert done.headers["content-type"] == "application/problem+json"
    assert int(done.headers["content-length"]) == len(done.body)
    assert done.headers["x-request-id"] == "req-1"
    assert done.json() == {
        "type": "about:blank",
        "title": title,
        "status": status,
        "detail": exc.detail,
        "instance": "/orders/42",
        "request_id": "req-1",
    }


async def test_unauthorized_carries_its_challenge() -> None:
    done = await call(problem_app(Unauthorized(challenge='Bearer realm="api"')))
    assert done.headers["www-authenticate"] == 'Bearer realm="api"'
    assert (await call(problem_app(Unauthorized()))).headers["www-authenticate"] == "Bearer"


async def test_retry_after_is_sent_in_whole_seconds() -> None:
    done = await call(problem_app(TooManyRequests(retry_after=2.2)))
    assert done.headers["retry-after"] == "3"
    done = await call(problem_app(ServiceUnavailable("maintenance", retry_after=600)))
    assert done.headers["retry-after"] == "600"


async def test_extra_members_and_a_type_of_ones_own() -> None:
    class OutOfCredit(ProblemError):
        status = 403
        title = "You do not have enough credit."
        type = "https://example.com/probs/out-of-credit"

    exc = OutOfCredit("Your balance is 30, the cost 50.", balance=30, accounts=["/account/1"])
    body = (await call(problem_app(exc), "/buy")).json()
    assert body == {
        "type": "https://example.com/probs/out-of-credit",
        "title": "You do not have enough credit.",
        "status": 403,
        "detail": "Your balance is 30, the cost 50.",
        "instance": "/buy",
        "request_id": body["request_id"],
        "balance": 30,
        "accounts": ["/account/1"],
    }


async def test_validation_errors_list_the_fields() -> None:
    exc = ValidationFailed(errors=[{"field": "email", "message": "not an address"}])
    body = (await call(problem_app(exc))).json()
    assert "detail" not in body
    assert body["errors"] == [{"field": "email", "message": "not an address"}]


BUTTRESS = [
    (RateLimited("login", 1.5, key="user:42"), 429, "2"),
    (CircuitOpen("payments-db", 100.0, 29.2), 503, "30"),
    (BulkheadFull("reports"), 503, None),
    (ShuttingDown("api", retry_after=5.0), 503, "5"),
    (StoreUnavailable("redis", SECRET), 503, None),
    (TimeoutExceeded("payments", 2.0), 504, None),
    (TimeoutError(SECRET), 504, None),
    (RetryExhausted("payments", 3, ConnectionError(SECRET)), 502, None),
]


@pytest.mark.parametrize(("exc", "status", "retry_after"), BUTTRESS, ids=lambda v: type(v).__name__)
async def test_buttress_errors_are_mapped_without_their_internals(
    exc: Exception, status: int, retry_after: str | None, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="buttress.integrations.asgi")
    done = await call(problem_app(exc))
    assert done.status == status
    assert done.headers.get("retry-after") == retry_after
    body = done.body.decode()
    # Names of breakers, limiters and keys, and messages, are internals.
    for internal in (SECRET, "payments", "login", "user:42", "reports", type(exc).__name__):
        assert internal not in body
    assert done.json()["detail"]
    if status >= 500:
        (record,) = caplog.records
        assert record.levelname == "WARNING"
        assert record.exc_info is None
        assert done.json()["request_id"] in record.getMessage()


async def test_an_unhandled_exception_is_a_bare_500_and_a_logged_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="buttress.integrations.asgi")
    app = problem_app(KeyError(SECRET))
    done = await call(app, "/orders", [(b"x-request-id", b"req-500")])
    assert done.status == 500
    assert done.json() == {
        "type": "about:blank",
        "title": "Internal Server Error",
        "status": 500,
        "instance": "/orders",
        "request_id": "req-500",
    }
    assert "hunter2" not in done.body.decode()
    assert "KeyError" not in done.body.decode()
    (record,) = caplog.records
    assert record.levelname == "ERROR"
    assert "req-500" in record.getMessage()
    assert record.exc_info is not None
    assert record.exc_info[1] is not None
    assert SECRET in str(record.exc_info[1])
    assert "Traceback" in caplog.text
    assert "KeyError" in caplog.text


async def test_buttress_bugs_are_500s_too() -> None:
    for exc in (ConfigError("bad", path="x"), StoreError("memory", "used from the wrong loop")):
        done = await call(problem_app(exc))
        assert done.status == 500
        assert "detail" not in done.json()


class NoResultFound(Exception):
    pass


class Duplicate(Exception):
    pass


class PaymentDeclined(Exception):
    def __init__(self, reason: str) -> None:
        self.reason = reason


async def test_own_errors_map_to_a_status_a_problem_or_a_function() -> None:
    errors = {
        NoResultFound: 404,
        Duplicate: Problem(409, detail="Already exists."),
        PaymentDeclined: lambda exc: Problem(402, detail=f"Declined: {exc.reason}."),
    }
    not_found = await call(problem_app(NoResultFound(SECRET), errors=errors))
    assert (not_found.status, not_found.json()["title"]) == (404, "Not Found")
    assert "detail" not in not_found.json()
    duplicate = await call(problem_app(Duplicate(), errors=errors))
    assert (duplicate.status, duplicate.json()["detail"]) == (409, "Already exists.")
    declined = await call(problem_app(PaymentDeclined("expired card"), errors=errors))
    assert (declined.status, declined.json()["detail"]) == (402, "Declined: expired card.")


async def test_the_most_specific_class_wins_and_none_falls_through() -> None:
    class Base(Exception):
        pass

    class Child(Base):
        pass

    class Quiet(Child):
        pass

    errors = {Base: 400, Child: lambda exc: None if isinstance(exc, Quiet) else Problem(409)}
    middleware = problem_app(Child(), errors=errors)
    assert (await call(middleware)).status == 409
    assert (await call(problem_app(Quiet(), errors=errors))).status == 400
    # Defaults can be overridden by naming the same class.
    assert (
        await call(problem_app(CircuitOpen("x", 1.0, 1.0), errors={CircuitOpen: 502}))
    ).status == 502


async def test_a_failing_mapping_function_is_a_500(caplog: pytest.LogCaptureFixture) -> None:
    def broken(exc: BaseException) -> Problem:
        raise ValueError("bug in the mapping")

    done = await call(problem_app(Duplicate(), errors={Duplicate: broken}))
    assert done.status == 500
    assert [r.levelname for r in caplog.records] == ["ERROR", "ERROR"]


async def test_a_group_of_one_error_is_mapped_as_that_error() -> None:
    group = ExceptionGroup("task group", [ExceptionGroup("inner", [NotFound("gone")])])
    assert (await call(problem_app(group))).status == 404
    several = ExceptionGroup("task group", [NotFound("a"), Conflict("b")])
    assert (await call(problem_app(several))).status == 500


async def test_after_the_response_started_the_error_propagates_and_is_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def streaming(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"first", "more_body": True})
        raise RuntimeError(SECRET)

    app = RequestIdMiddleware(ProblemMiddleware(streaming))
    from tests.unit.integrations.asgi.asgi_calls import Call, scope_of

    attempt = Call(app, scope_of("/stream", [(b"x-request-id", b"req-s")]), [])
    with pytest.raises(RuntimeError):
        await attempt.run()
    # No second response start: the server closes the connection.
    assert len(attempt.starts) == 1
    (record,) = caplog.records
    assert record.levelname == "ERROR"
    assert "req-s" in record.getMessage()
    assert record.exc_info is not None


async def test_cancellation_is_not_an_error() -> None:
    import asyncio

    with pytest.raises(asyncio.CancelledError):
        await call(problem_app(asyncio.CancelledError()))


@pytest.mark.parametrize(
    ("errors", "path"),
    [
        ({"NotFound": 404}, "errors"),
        ({KeyError: "404"}, "errors[KeyError]"),
        ({KeyError: 200}, "status"),
        ({KeyError: True}, "errors[KeyError]"),
    ],
)
def test_bad_mappings_are_refused(errors: Any, path: str) -> None:
    with pytest.raises(ConfigError) as info:
        ProblemMiddleware(raising(KeyError()), errors)
    assert info.value.path == path


@pytest.mark.parametrize(
    ("options", "path"),
    [
        ({"status": 302}, "status"),
        ({"status": 404, "extra": {"status": 1}}, "extra"),
        ({"status": 404, "headers": (("X-A", "b\r\nc"),)}, "headers"),
        ({"status": 404, "detail": 3}, "detail"),
        ({"status": 404, "title": 3}, "title"),
    ],
)
def test_bad_problems_are_refused(options: dict[str, Any], path: str) -> None:
    with pytest.raises(ConfigError) as info:
        Problem(**options)
    assert info.value.path == path


async def test_websockets_and_lifespan_pass_through() -> None:
    scopes: list[str] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        scopes.append(scope["type"])

    middleware = ProblemMiddleware(app)

    async def receive() -> Any:
        raise AssertionError  # pragma: no cover

    async def send(message: Any) -> None:
        raise AssertionError  # pragma: no cover

    await middleware({"type": "websocket", "path": "/ws"}, receive, send)
    await middleware({"type": "lifespan"}, receive, send)
    assert scopes == ["websocket", "lifespan"]


# -------------------------------------------------------------------- in Starlette


async def missing(request: Request) -> PlainTextResponse:
    raise NotFound(f"no item {request.path_params['id']}")


async def teapot(request: Request) -> PlainTextResponse:
    raise HTTPException(418, "short and stout")


async def crash(request: Request) -> PlainTextResponse:
    raise RuntimeError(SECRET)


def starlette_app() -> Starlette:
    return Starlette(
        routes=[Route("/items/{id}", missing), Route("/teapot", teapot), Route("/crash", crash)],
        middleware=[Middleware(RequestIdMiddleware), Middleware(ProblemMiddleware)],
    )


async def test_in_starlette_middleware_the_problem_answers(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with client_of(starlette_app()) as client:
        missing_item = await client.get("/items/9")
        pot = await client.get("/teapot")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            crashed = await client.get("/crash")
    assert missing_item.status_code == 404
    assert missing_item.headers["content-type"] == "application/problem+json"
    assert missing_item.json()["detail"] == "no item 9"
    assert missing_item.json()["request_id"] == missing_item.headers["x-request-id"]
    # Starlette's own exception handlers still answer what they handle.
    assert pot.status_code == 418
    assert crashed.status_code == 500
    assert crashed.headers["content-type"] == "application/problem+json"
    assert "hunter2" not in crashed.text
    errors = [r for r in caplog.records if r.name == "buttress.integrations.asgi"]
    assert crashed.headers["x-request-id"] in errors[-1].getMessage()


def test_problem_error_messages_are_the_detail_or_the_title() -> None:
    assert str(NotFound("no order 42")) == "no order 42"
    assert str(NotFound()) == "Not Found"
    assert NotFound().problem == Problem(404)

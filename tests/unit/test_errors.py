"""The error hierarchy, the transient classifier and Retry-After parsing."""

from __future__ import annotations

import errno
import pickle
import socket
import subprocess
import sys
import textwrap
import time
from types import SimpleNamespace
from typing import Any

import aio_pika.exceptions
import aiohttp
import aiormq.exceptions
import httpx
import nats.errors
import psycopg
import psycopg.errors
import pytest
import redis.exceptions
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from buttress.errors import (
    BulkheadFull,
    ButtressError,
    CircuitOpen,
    ConfigError,
    RateLimited,
    Rejected,
    RetryExhausted,
    TimeoutExceeded,
    http_status_of,
    is_transient,
    retry_after_of,
)

REJECTIONS: list[Rejected] = [
    CircuitOpen("payments", until=12.5, retry_after=2.5),
    BulkheadFull("db", reason="queue_timeout"),
    RateLimited("api", 1.25, key="tenant-1", limit=10, remaining=0),
]


class Failure(Exception):
    """An exception that carries whatever attributes a test gives it."""

    def __init__(self, **attributes: Any) -> None:
        super().__init__("failure")
        for name, value in attributes.items():
            setattr(self, name, value)


# ------------------------------------------------------------------------------ hierarchy


@pytest.mark.parametrize("error", REJECTIONS, ids=lambda e: type(e).__name__)
def test_rejections_are_buttress_errors(error: Rejected) -> None:
    assert isinstance(error, ButtressError)
    assert isinstance(error, Rejected)
    assert isinstance(error, Exception)


def test_the_other_errors_are_buttress_errors_but_not_rejections() -> None:
    for error in (
        TimeoutExceeded("call", 2.0),
        RetryExhausted("retry", 3),
        ConfigError("bad"),
    ):
        assert isinstance(error, ButtressError)
        assert not isinstance(error, Rejected)


def test_timeout_exceeded_is_a_timeout_error() -> None:
    error = TimeoutExceeded("slow", 1.5)
    assert isinstance(error, TimeoutError)
    assert (error.name, error.timeout) == ("slow", 1.5)
    assert str(error) == "'slow' timed out after 1.5s"
    with pytest.raises(TimeoutError):
        raise error


def test_config_error_is_a_value_error_and_names_its_path() -> None:
    error = ConfigError("must be positive", path="policies.payments.max_attempts")
    assert isinstance(error, ValueError)
    assert error.path == "policies.payments.max_attempts"
    assert str(error) == "policies.payments.max_attempts: must be positive"
    bare = ConfigError("no path")
    assert bare.path is None
    assert str(bare) == "no path"


def test_rejection_attributes_and_messages() -> None:
    circuit, bulkhead, limited = REJECTIONS
    assert isinstance(circuit, CircuitOpen)
    assert (circuit.name, circuit.until, circuit.retry_after) == ("payments", 12.5, 2.5)
    assert str(circuit) == "circuit 'payments' is open; next trial in 2.500s"
    assert isinstance(bulkhead, BulkheadFull)
    assert (bulkhead.name, bulkhead.reason, bulkhead.retry_after) == ("db", "queue_timeout", None)
    assert BulkheadFull("db").reason == "full"
    assert isinstance(limited, RateLimited)
    assert (limited.key, limited.limit, limited.remaining) == ("tenant-1", 10, 0)
    assert str(limited) == "rate limit 'api' exceeded for key 'tenant-1'; retry after 1.250s"
    assert str(RateLimited("api", 0.5)) == "rate limit 'api' exceeded; retry after 0.500s"


def test_retry_exhausted_attributes() -> None:
    last = ConnectionResetError("reset")
    error = RetryExhausted("fetch", 4, last_error=last)
    assert (error.attempts, error.last_error, error.last_result) == (4, last, None)
    assert error.reason == "max_attempts"
    assert str(error) == "'fetch' gave up after 4 attempt(s): max attempts"
    by_result = RetryExhausted("poll", 2, last_result="pending")
    assert (by_result.last_error, by_result.last_result) == (None, "pending")
    told = RetryExhausted(
        "fetch", 1, last, reason="retry_after", detail="Retry-After 60 s exceeds max_delay 30 s"
    )
    assert told.reason == "retry_after"
    assert (
        str(told) == "'fetch' gave up after 1 attempt(s): Retry-After 60 s exceeds max_delay 30 s"
    )


def test_timeout_exceeded_detail() -> None:
    plain = TimeoutExceeded("total", 2.0)
    assert plain.detail is None
    assert str(plain) == "'total' timed out after 2s"
    told = TimeoutExceeded("total", 2.0, "retry 'api' would wait 1.000s with 0.200s left")
    assert str(told) == "'total' timed out after 2s: retry 'api' would wait 1.000s with 0.200s left"


def _attributes(error: BaseException) -> dict[str, Any]:
    values = {k: v for k, v in vars(error).items() if k != "last_error"}
    return {"type": type(error), "str": str(error), "args": error.args, **values}


@pytest.mark.parametrize(
    "error",
    [
        *REJECTIONS,
        RateLimited("anonymous", 3.0),
        TimeoutExceeded("slow", 0.25),
        RetryExhausted("fetch", 3, last_error=ConnectionResetError("reset")),
        RetryExhausted("poll", 2, last_result={"state": "pending"}),
        ConfigError("must be positive", path="retry.max_attempts"),
        ConfigError("no path"),
        Rejected(),
    ],
    ids=lambda e: type(e).__name__,
)
def test_pickling_round_trips_keep_attributes(error: ButtressError) -> None:
    copy = pickle.loads(pickle.dumps(error))
    assert _attributes(copy) == _attributes(error)
    assert getattr(copy, "retry_after", None) == getattr(error, "retry_after", None)
    if isinstance(error, RetryExhausted) and error.last_error is not None:
        assert isinstance(copy.last_error, ConnectionResetError)
        assert copy.last_error.args == error.last_error.args


# ----------------------------------------------------------------------- is_transient


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (ConnectionResetError(), True),
        (ConnectionRefusedError(), True),
        (BrokenPipeError(), True),
        (TimeoutError(), True),
        (socket.gaierror(socket.EAI_NONAME, "Name or service not known"), True),
        (socket.herror(1, "Unknown host"), True),
        (OSError(errno.ECONNREFUSED, "Connection refused"), True),
        (OSError(errno.ENETUNREACH, "Network is unreachable"), True),
        (OSError(errno.EHOSTUNREACH, "No route to host"), True),
        (OSError(errno.ETIMEDOUT, "timed out"), True),
        (FileNotFoundError(errno.ENOENT, "No such file"), False),
        (PermissionError(errno.EACCES, "Permission denied"), False),
        (OSError("no errno"), False),
        (ValueError("bad input"), False),
        (KeyError("k"), False),
        (RuntimeError(), False),
    ],
    ids=repr,
)
def test_builtins(error: BaseException, expected: bool) -> None:
    assert is_transient(error) is expected


@pytest.mark.parametrize(
    "error",
    [
        *REJECTIONS,
        TimeoutExceeded("t", 1.0),
        # A retry gives up on dependency failures only: a breaker or fallback outside
        # it sees a failure. (Retry itself does not retry it unless named.)
        RetryExhausted("r", 3, last_error=ConnectionResetError()),
    ],
    ids=lambda e: type(e).__name__,
)
def test_rejections_timeouts_and_exhausted_retries_are_transient(error: ButtressError) -> None:
    assert is_transient(error) is True


def test_configuration_errors_are_permanent() -> None:
    assert is_transient(ConfigError("bad")) is False


TRANSIENT_STATUSES = [408, 425, 429, 500, 502, 503, 504, 599]
PERMANENT_STATUSES = [200, 301, 400, 401, 403, 404, 409, 422, 501, 505]


@pytest.mark.parametrize("attr", ["status_code", "status", "code"])
@pytest.mark.parametrize("status", TRANSIENT_STATUSES + PERMANENT_STATUSES)
def test_http_status_on_the_exception(attr: str, status: int) -> None:
    error = Failure(**{attr: status})
    assert is_transient(error) is (status in TRANSIENT_STATUSES)
    assert http_status_of(error) == status


@pytest.mark.parametrize("attr", ["status_code", "status", "code"])
@pytest.mark.parametrize("status", TRANSIENT_STATUSES + PERMANENT_STATUSES)
def test_http_status_on_the_response(attr: str, status: int) -> None:
    error = Failure(response=SimpleNamespace(**{attr: status}))
    assert is_transient(error) is (status in TRANSIENT_STATUSES)
    assert http_status_of(error) == status


@pytest.mark.parametrize("value", [True, "503", 503.0, 99, 600, -1, None])
def test_values_that_are_not_http_statuses(value: object) -> None:
    error = Failure(status_code=value, response=SimpleNamespace(status=value))
    assert http_status_of(error) is None
    assert is_transient(error) is False


def test_an_out_of_range_status_settles_its_holder() -> None:
    # aiohttp reports "no response" as status 0 and warns when ``code`` is read.
    class Holder(Exception):
        status = 0

        @property
        def code(self) -> int:
            raise AssertionError("code must not be read once status answered")

    assert http_status_of(Holder()) is None
    assert http_status_of(Failure(status=0, response=SimpleNamespace(status_code=503))) == 503


@pytest.mark.parametrize(
    ("sqlstate", "expected"),
    [
        ("08006", True),
        ("08001", True),
        ("08003", True),
        ("40001", True),
        ("40P01", True),
        ("53300", True),
        ("55P03", True),
        ("57P01", True),
        ("57P03", True),
        ("23505", False),
        ("23503", False),
        ("42P01", False),
        ("42601", False),
        ("22012", False),
    ],
)
@pytest.mark.parametrize("attr", ["sqlstate", "pgcode"])
def test_sqlstate(attr: str, sqlstate: str, expected: bool) -> None:
    assert is_transient(Failure(**{attr: sqlstate})) is expected


def test_sqlstate_wins_over_an_http_looking_code() -> None:
    assert is_transient(Failure(sqlstate="23505", status=503)) is False
    assert is_transient(Failure(sqlstate="40001", status=400)) is True


@pytest.mark.parametrize("value", [None, "", "4000", "400001", 40001])
def test_malformed_sqlstates_are_ignored(value: object) -> None:
    assert is_transient(Failure(sqlstate=value)) is False


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (Failure(transient=True), True),
        (Failure(transient=False, status=503), False),
        (Failure(transient=True, sqlstate="23505"), True),
        (Failure(transient="yes", status=404), False),  # only a real bool overrides
        (Failure(transient=None, status=503), True),
    ],
    ids=["true", "false-beats-503", "true-beats-23505", "non-bool-ignored", "none-ignored"],
)
def test_transient_attribute_override(error: Exception, expected: bool) -> None:
    assert is_transient(error) is expected


def test_transient_attribute_on_a_builtin_subclass() -> None:
    class QuietReset(ConnectionResetError):
        transient = False

    assert is_transient(QuietReset()) is False


# ----------------------------------------------------------------- real driver errors

_REQUEST = httpx.Request("GET", "https://api.example.org/orders")


def _aiohttp_response_error(status: int) -> aiohttp.ClientResponseError:
    url = URL("https://api.example.org/orders")
    info = aiohttp.RequestInfo(url, "GET", CIMultiDictProxy(CIMultiDict()), url)
    return aiohttp.ClientResponseError(info, (), status=status, message="status")


def _driver_case_id(value: object) -> str:
    if isinstance(value, BaseException):
        status = http_status_of(value)
        name = f"{type(value).__module__.split('.')[0]}.{type(value).__name__}"
        return f"{name}-{status}" if status else name
    return "transient" if value else "permanent"


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (httpx.ConnectError("refused", request=_REQUEST), True),
        (httpx.ReadTimeout("slow", request=_REQUEST), True),
        (httpx.ConnectTimeout("slow", request=_REQUEST), True),
        (httpx.RemoteProtocolError("peer closed", request=_REQUEST), True),
        (
            httpx.HTTPStatusError(
                "503", request=_REQUEST, response=httpx.Response(503, request=_REQUEST)
            ),
            True,
        ),
        (
            httpx.HTTPStatusError(
                "404", request=_REQUEST, response=httpx.Response(404, request=_REQUEST)
            ),
            False,
        ),
        (httpx.UnsupportedProtocol("ftp://"), False),
        (aiohttp.ClientConnectionError(), True),
        (aiohttp.ServerDisconnectedError(), True),
        (aiohttp.ServerTimeoutError(), True),
        (_aiohttp_response_error(503), True),
        (_aiohttp_response_error(429), True),
        (_aiohttp_response_error(404), False),
        (_aiohttp_response_error(0), False),
        (redis.exceptions.ConnectionError("reset"), True),
        (redis.exceptions.TimeoutError("slow"), True),
        (redis.exceptions.BusyLoadingError("loading"), True),
        (redis.exceptions.ResponseError("WRONGTYPE"), False),
        (psycopg.OperationalError("connection refused"), True),
        (psycopg.errors.SerializationFailure("conflict"), True),
        (psycopg.errors.DeadlockDetected("deadlock"), True),
        (psycopg.errors.AdminShutdown("terminating"), True),
        (psycopg.errors.UniqueViolation("duplicate key"), False),
        (psycopg.errors.UndefinedTable("no table"), False),
        (psycopg.ProgrammingError("bad query"), False),
        (aiormq.exceptions.AMQPConnectionError("closed"), True),
        (aio_pika.exceptions.AMQPConnectionError("closed"), True),
        (aiormq.exceptions.ChannelInvalidStateError("closed"), True),
        (nats.errors.ConnectionClosedError(), True),
        (nats.errors.TimeoutError(), True),
        (nats.errors.NoServersError(), True),
        (nats.errors.BadSubjectError(), False),
    ],
    ids=_driver_case_id,
)
def test_real_driver_errors(error: BaseException, expected: bool) -> None:
    assert is_transient(error) is expected


def test_psycopg_errors_carry_their_sqlstate() -> None:
    # The SQLSTATE rule, not a driver check, is what decides these.
    assert psycopg.errors.SerializationFailure.sqlstate == "40001"
    assert psycopg.errors.UniqueViolation.sqlstate == "23505"
    assert psycopg.OperationalError("x").sqlstate is None


def _run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-W", "error", "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_the_classifier_imports_no_driver() -> None:
    result = _run(
        """
        import sys
        from buttress.errors import is_transient
        assert is_transient(ConnectionError("down")) is True
        assert is_transient(ValueError("bad")) is False
        class Odd(Exception):
            status = 418
        assert is_transient(Odd()) is False
        drivers = ["httpx", "aiohttp", "redis", "psycopg", "aio_pika", "aiormq", "nats"]
        loaded = [name for name in drivers if name in sys.modules]
        assert not loaded, loaded
        print("clean")
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "clean"


# ----------------------------------------------------------------------- retry_after_of

NOW = 1_445_412_480.0  # Wed, 21 Oct 2015 07:28:00 GMT


def test_retry_after_attribute() -> None:
    assert retry_after_of(RateLimited("api", 1.5)) == 1.5
    assert retry_after_of(CircuitOpen("c", until=10.0, retry_after=4.0)) == 4.0
    assert retry_after_of(Failure(retry_after=3)) == 3.0
    assert retry_after_of(Failure(retry_after="7")) == 7.0
    assert retry_after_of(BulkheadFull("b")) is None
    assert retry_after_of(ValueError()) is None


def test_the_attribute_wins_over_headers() -> None:
    error = Failure(retry_after=2.0, headers={"Retry-After": "30"})
    assert retry_after_of(error) == 2.0


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("120", 120.0),
        (" 5 ", 5.0),
        ("0", 0.0),
        ("1.5", 1.5),
        (b"12", 12.0),
        ("-3", 0.0),
        (b"-1", 0.0),
        ("Wed, 21 Oct 2015 07:28:30 GMT", 30.0),
        ("Wed, 21 Oct 2015 07:30:00 GMT", 120.0),
        (b"Wed, 21 Oct 2015 07:28:10 GMT", 10.0),
        ("Wed, 21 Oct 2015 07:28:30 -0000", 30.0),
        ("Wed, 21 Oct 2015 07:28:30", 30.0),
        ("Wed, 21 Oct 2015 09:28:30 +0200", 30.0),
        ("Wed, 21 Oct 2015 07:27:00 GMT", 0.0),  # in the past
        ("soon", None),
        ("", None),
        ("   ", None),
        ("nan", None),
        ("inf", None),
        ("-inf", None),
        ("1e400", None),
        ("Wed, 99 Foo 2015", None),
        (b"\xff\xfe", None),
    ],
)
def test_retry_after_header(header: str | bytes, expected: float | None) -> None:
    error = Failure(headers={"Retry-After": header})
    assert retry_after_of(error, now=NOW) == expected


def test_http_dates_are_gmt_whatever_the_local_zone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    try:
        error = Failure(headers={"Retry-After": "Wed, 21 Oct 2015 07:28:30 -0000"})
        assert retry_after_of(error, now=NOW) == 30.0
    finally:
        monkeypatch.undo()
        time.tzset()


def test_http_date_measured_from_the_current_time_by_default() -> None:
    error = Failure(headers={"Retry-After": "Wed, 21 Oct 2015 07:28:30 GMT"})
    assert retry_after_of(error) == 0.0  # long past


@pytest.mark.parametrize(
    "value",
    [float("nan"), float("inf"), 10**400, True, [1], object()],
    ids=["nan", "inf", "huge-int", "bool", "list", "object"],
)
def test_retry_after_garbage_attributes(value: object) -> None:
    assert retry_after_of(Failure(retry_after=value)) is None


@pytest.mark.parametrize("value", [-5, -0.5])
def test_negative_retry_after_is_zero(value: float) -> None:
    assert retry_after_of(Failure(retry_after=value)) == 0.0


def test_retry_after_on_the_response_headers() -> None:
    response = httpx.Response(429, headers={"Retry-After": "17"}, request=_REQUEST)
    error = httpx.HTTPStatusError("429", request=_REQUEST, response=response)
    assert retry_after_of(error) == 17.0
    lower = Failure(response=SimpleNamespace(headers={"retry-after": "4"}))
    assert retry_after_of(lower) == 4.0


def test_retry_after_on_aiohttp_headers() -> None:
    url = URL("https://api.example.org/")
    info = aiohttp.RequestInfo(url, "GET", CIMultiDictProxy(CIMultiDict()), url)
    headers = CIMultiDictProxy(CIMultiDict({"retry-after": "9"}))
    error = aiohttp.ClientResponseError(info, (), status=503, headers=headers)
    assert retry_after_of(error) == 9.0


def test_misbehaving_headers_are_no_answer() -> None:
    class Broken:
        def get(self, key: str) -> str:
            raise RuntimeError("broken headers")

    assert retry_after_of(Failure(headers=Broken())) is None
    assert retry_after_of(Failure(headers=None, response=None)) is None
    assert retry_after_of(Failure(headers={"Other": "1"})) is None


# ------------------------------------------------------------ review follow-ups


def test_amqp_refusals_are_permanent_although_they_are_connection_errors() -> None:
    import aiormq.exceptions as amqp

    assert issubclass(amqp.ProbableAuthenticationError, ConnectionError)
    assert not is_transient(amqp.ProbableAuthenticationError("ACCESS_REFUSED"))
    assert not is_transient(amqp.AuthenticationError("bad credentials"))
    assert not is_transient(amqp.IncompatibleProtocolError())
    assert is_transient(amqp.ConnectionClosed(320, "CONNECTION_FORCED"))


def test_a_property_that_raises_does_not_break_the_classifier() -> None:
    class Weird(Exception):
        @property
        def response(self) -> object:
            raise RuntimeError("lazy response failed to load")

        @property
        def retry_after(self) -> float:
            raise LookupError("no header")

    assert is_transient(Weird()) is False
    assert retry_after_of(Weird()) is None


def test_driver_checks_follow_imports() -> None:
    from buttress import errors

    first = errors._driver_checks()
    assert errors._driver_checks() is first  # cached while no module is imported
    import sys
    import types

    sys.modules["_buttress_probe_module"] = types.ModuleType("_buttress_probe_module")
    try:
        assert errors._driver_checks() is not first
    finally:
        del sys.modules["_buttress_probe_module"]

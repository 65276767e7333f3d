"""The one outcome model: defaults that agree, named types, results, Retry-After."""

from __future__ import annotations

import asyncio
import email.utils
from dataclasses import dataclass, field
from typing import Any

import pytest

from buttress._outcome import (
    DEFAULT,
    NEVER,
    PROGRAMMING_ERRORS,
    Matcher,
    Outcome,
    as_matcher,
    default_retry_after,
    response_status,
    result_is_failure,
)
from buttress.errors import (
    BulkheadFull,
    CircuitOpen,
    ConfigError,
    RateLimited,
    Rejected,
    RetryExhausted,
    TimeoutExceeded,
)


class HTTPError(Exception):
    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status_code = status


class FakeResponse:
    """Shaped like httpx/requests: a status, headers and raise_for_status."""

    def __init__(self, status: int, headers: dict[str, str] | None = None) -> None:
        self.status_code = status
        self.headers = headers or {}

    def raise_for_status(self) -> None:
        if self.status_code >= 400:
            raise HTTPError(self.status_code)


@dataclass
class TypedResponse:
    status: int
    headers: dict[str, str] = field(default_factory=dict)


@pytest.mark.parametrize(
    "error",
    [
        ConnectionResetError(),
        TimeoutError(),
        TimeoutExceeded("t", 1.0),
        HTTPError(503),
        HTTPError(429),
        HTTPError(408),
        CircuitOpen("c", 0.0, 1.0),
        BulkheadFull("b"),
        RateLimited("r", 1.0),
        RetryExhausted("r", 3, ConnectionError()),
    ],
    ids=repr,
)
def test_default_failures(error: Exception) -> None:
    assert DEFAULT.error_is_failure(error)
    assert DEFAULT.is_failure(Outcome(error=error))


@pytest.mark.parametrize(
    "error",
    [HTTPError(404), HTTPError(400), HTTPError(501), ValueError(), KeyError("k"), ConfigError("x")],
    ids=repr,
)
def test_answers_are_not_failures(error: Exception) -> None:
    assert not DEFAULT.error_is_failure(error)


@pytest.mark.parametrize("kind", PROGRAMMING_ERRORS)
def test_programming_errors_propagate_unless_named(kind: type[Exception]) -> None:
    error = kind("bug")
    assert not DEFAULT.error_is_failure(error)
    assert not Matcher(Exception).error_is_failure(error)
    assert not Matcher(lambda exc: True).error_is_failure(error)
    assert Matcher(kind).error_is_failure(error)
    assert Matcher(Exception, kind).error_is_failure(error)


def test_a_named_base_of_a_programming_error_names_its_subclasses() -> None:
    assert Matcher(NameError).error_is_failure(UnboundLocalError("x"))
    assert Matcher(ImportError).error_is_failure(ModuleNotFoundError("x"))
    assert not Matcher(NameError).error_is_failure(TypeError("x"))


def test_base_exceptions_are_never_failures() -> None:
    for matcher in (DEFAULT, Matcher(Exception), Matcher(lambda exc: True)):
        for error in (asyncio.CancelledError(), KeyboardInterrupt(), SystemExit()):
            assert not matcher.error_is_failure(error)


def test_types_and_predicates() -> None:
    matcher = Matcher(KeyError, lambda exc: "flaky" in str(exc))
    assert matcher.error_is_failure(KeyError("k"))
    assert matcher.error_is_failure(ValueError("flaky thing"))
    assert not matcher.error_is_failure(ValueError("solid"))
    assert not matcher.error_is_failure(ConnectionError())  # replaced the default
    assert matcher.names(KeyError("k"))
    assert not matcher.names(ValueError("flaky"))
    assert not DEFAULT.names(CircuitOpen("c", 0, 0))
    assert Matcher(CircuitOpen).names(CircuitOpen("c", 0, 0))


def test_union_keeps_both_rules_and_names() -> None:
    matcher = DEFAULT | Matcher(KeyError)
    assert matcher.error_is_failure(ConnectionError())
    assert matcher.error_is_failure(KeyError("k"))
    assert not matcher.error_is_failure(ValueError())
    assert matcher.names(KeyError("k"))
    assert matcher.result_is_failure(FakeResponse(503))


def test_bad_specs_name_the_option() -> None:
    with pytest.raises(ConfigError, match="not an Exception") as caught:
        Matcher(asyncio.CancelledError)
    assert caught.value.path == "errors[0]"
    with pytest.raises(ConfigError, match="not an exception class"):
        Matcher(int)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="predicate"):
        Matcher(3)  # type: ignore[arg-type]
    with pytest.raises(ConfigError) as caught:
        as_matcher((KeyError, 3))
    assert caught.value.path == "on"
    with pytest.raises(ConfigError, match="matches nothing"):
        as_matcher(())
    with pytest.raises(ConfigError) as caught:
        as_matcher(None, "yes")
    assert caught.value.path == "on_result"


def test_as_matcher() -> None:
    assert as_matcher() is DEFAULT
    assert as_matcher(KeyError).error_is_failure(KeyError())
    assert as_matcher((KeyError, IndexError)).error_is_failure(IndexError())
    assert as_matcher(lambda exc: True).error_is_failure(ValueError())
    custom = Matcher(KeyError)
    assert as_matcher(custom) is custom
    by_result = as_matcher(None, lambda result: result == "pending")
    assert by_result.result_is_failure("pending")
    assert by_result.error_is_failure(ConnectionError())  # the default error rule stays
    both = as_matcher(custom, lambda result: result is None)
    assert both.result_is_failure(None)
    assert both.names(KeyError())


# ---------------------------------------------------------------------------- results


@pytest.mark.parametrize(
    ("status", "failed"),
    [
        (200, False),
        (404, False),
        (400, False),
        (501, False),
        (503, True),
        (500, True),
        (429, True),
        (408, True),
        (425, True),
    ],
)
def test_results_that_are_responses(status: int, failed: bool) -> None:
    assert result_is_failure(FakeResponse(status)) is failed
    assert result_is_failure(TypedResponse(status)) is failed
    assert DEFAULT.is_failure(Outcome(FakeResponse(status))) is failed


@pytest.mark.parametrize("value", [None, 0, 503, "503", b"", {}, [], (), 1.5, object()])
def test_plain_results_are_successes(value: object) -> None:
    assert not result_is_failure(value)
    assert response_status(value) is None


def test_a_status_field_that_is_no_status() -> None:
    @dataclass
    class Odd:
        status: Any

    assert not result_is_failure(Odd("down"))
    assert not result_is_failure(Odd(True))
    assert not result_is_failure(Odd(9999))


def test_a_response_whose_status_raises_is_no_failure() -> None:
    class Broken(FakeResponse):
        @property  # type: ignore[override]
        def status_code(self) -> int:
            raise RuntimeError("closed")

    assert not result_is_failure(Broken.__new__(Broken))


def test_never() -> None:
    assert not NEVER.error_is_failure(ConnectionError())
    assert not NEVER.result_is_failure(FakeResponse(503))
    assert not NEVER.checks_results
    assert DEFAULT.checks_results


# ------------------------------------------------------------------------ Retry-After


def test_retry_after_from_a_response_in_seconds_or_as_a_date() -> None:
    assert default_retry_after(Outcome(FakeResponse(503, {"Retry-After": "4"}))) == 4.0
    assert default_retry_after(Outcome(FakeResponse(429, {"retry-after": "0.5"}))) == 0.5
    date = email.utils.formatdate(1_000_060.0, usegmt=True)
    assert (
        default_retry_after(Outcome(FakeResponse(503, {"Retry-After": date})), now=1_000_000.0)
        == 60.0
    )
    assert default_retry_after(Outcome(FakeResponse(503))) is None
    assert default_retry_after(Outcome(FakeResponse(503, {"Retry-After": "soon"}))) is None
    assert default_retry_after(Outcome({"Retry-After": "4"})) is None  # not a response


def test_retry_after_from_an_error() -> None:
    assert default_retry_after(Outcome(error=RateLimited("r", 2.5))) == 2.5
    error = HTTPError(503)
    error.response = FakeResponse(503, {"Retry-After": "7"})  # type: ignore[attr-defined]
    assert default_retry_after(Outcome(error=error)) == 7.0
    assert default_retry_after(Outcome(error=ValueError())) is None


def test_outcome() -> None:
    assert Outcome(1).raised is False
    assert Outcome(error=ValueError()).raised is True


def test_names_within_a_family() -> None:
    broad = Matcher(Exception)
    opened = CircuitOpen("c", 0.0, 1.0)
    assert broad.names(opened)  # Exception names it...
    assert not broad.names(opened, within=Rejected)  # ...but not as a rejection
    assert Matcher(CircuitOpen).names(opened, within=Rejected)
    assert Matcher(Rejected).names(opened, within=Rejected)
    assert not Matcher(BulkheadFull).names(opened, within=Rejected)


def test_a_response_type_status_attribute_is_learned_and_relearned() -> None:
    from http import HTTPStatus

    from buttress._outcome import response_status

    class AioLike:
        def raise_for_status(self) -> None:
            pass

        def __init__(self, status: object) -> None:
            self.status = status

    assert response_status(AioLike(503)) == 503
    assert response_status(AioLike(200)) == 200  # read from the learned attribute
    assert response_status(AioLike(HTTPStatus.BAD_GATEWAY)) == 502
    assert response_status(AioLike(True)) is None  # a bool is no status
    assert response_status(AioLike("503")) is None

    class Switching:
        def raise_for_status(self) -> None:
            pass

        def __init__(self, **attrs: object) -> None:
            self.__dict__.update(attrs)

    assert response_status(Switching(status=429)) == 429
    assert response_status(Switching(status_code=500)) == 500  # looks at both again

"""docs/errors.md lists every error type with the HTTP status it is answered with.

A class added to ``buttress.errors`` (or an error exported by the ASGI
integration) that the page does not list fails here, and so does a status on the
page that ``ProblemMiddleware`` does not answer.
"""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

import buttress.errors
from buttress.integrations import asgi
from buttress.integrations.asgi import ProblemError, ProblemMiddleware

PAGE = Path(__file__).resolve().parent.parent / "docs" / "errors.md"
ROW = re.compile(r"^\| `(\w+)` \| (\d{3}) \| (.+) \|$", re.MULTILINE)


def documented() -> dict[str, int]:
    return {name: int(status) for name, status, _ in ROW.findall(PAGE.read_text())}


def error_classes(module: object) -> dict[str, type[BaseException]]:
    return {
        name: value
        for name, value in vars(module).items()
        if inspect.isclass(value) and issubclass(value, BaseException) and not name.startswith("_")
    }


def test_every_error_of_buttress_errors_is_listed() -> None:
    own = {
        name
        for name, value in error_classes(buttress.errors).items()
        if value.__module__ == "buttress.errors"
    }
    assert own, "no error classes found"
    assert sorted(own - documented().keys()) == []


def test_every_error_of_the_asgi_integration_is_listed() -> None:
    exported = {name for name in asgi.__all__ if name in error_classes(asgi)}
    assert "NotFound" in exported
    assert sorted(exported - documented().keys()) == []


# One instance of each error, built as the code that raises it does.
SAMPLES: dict[str, BaseException] = {
    "ButtressError": buttress.errors.ButtressError("x"),
    "ConfigError": buttress.errors.ConfigError("bad", path="x"),
    "Rejected": buttress.errors.Rejected("x"),
    "CircuitOpen": buttress.errors.CircuitOpen("db", 10.0, 3.0),
    "BulkheadFull": buttress.errors.BulkheadFull("reports"),
    "RateLimited": buttress.errors.RateLimited("api", 1.0),
    "TimeoutExceeded": buttress.errors.TimeoutExceeded("api", 2.0),
    "RetryExhausted": buttress.errors.RetryExhausted("api", 3, ConnectionError()),
    "StoreError": buttress.errors.StoreError("redis", "wrong loop"),
    "StoreUnavailable": buttress.errors.StoreUnavailable("redis", "down"),
    "ShuttingDown": asgi.ShuttingDown("api"),
}


@pytest.mark.parametrize(("name", "status"), sorted(documented().items()))
def test_the_listed_status_is_the_one_answered(name: str, status: int) -> None:
    sample = SAMPLES.get(name)
    if sample is None:
        kind = getattr(asgi, name)
        assert issubclass(kind, ProblemError), f"add a sample of {name} to SAMPLES"
        sample = kind()
    problem = ProblemMiddleware(lambda *args: None).problem_for(sample)  # type: ignore[arg-type]
    assert (500 if problem is None else problem.status) == status

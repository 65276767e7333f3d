"""buttress.observe.logging: one structured line per event."""

from __future__ import annotations

import logging

import pytest
import structlog
from structlog.testing import capture_logs

import buttress
from buttress import CircuitBreaker, Pipeline, RateLimiter, Retry
from buttress.clock import FakeClock
from buttress.errors import CircuitOpen
from buttress.observe.context import bind_ids
from buttress.observe.logging import (
    LogListener,
    RequestIdFilter,
    add_request_ids,
    event_fields,
    event_level,
)
from buttress.policies.circuit import CircuitState, CircuitStateChanged
from buttress.policies.retry import RetryGaveUp, RetryScheduled
from buttress.stores import store_from_url


def fail() -> None:
    raise ConnectionError("refused")


def records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "buttress"]


def test_one_line_per_event_with_fields_ids_and_the_call(caplog: pytest.LogCaptureFixture) -> None:
    unsubscribe = buttress.subscribe(LogListener(structlog=False))
    try:
        retry = Retry(2, delay=0, name="api-retry")
        with (
            caplog.at_level(logging.INFO, logger="buttress"),
            bind_ids(request="req-1", correlation="cor-9"),
            pytest.raises(buttress.RetryExhausted),
        ):
            retry.call(fail)
    finally:
        unsubscribe()
    lines = records(caplog)
    assert [r.event for r in lines] == ["retry_scheduled", "retry_gave_up"]  # type: ignore[attr-defined]
    scheduled, gave_up = lines
    assert scheduled.levelno == logging.INFO
    assert gave_up.levelno == logging.WARNING
    assert gave_up.policy == "api-retry"  # type: ignore[attr-defined]
    assert gave_up.reason == "max_attempts"  # type: ignore[attr-defined]
    assert gave_up.request_id == "req-1"  # type: ignore[attr-defined]
    assert gave_up.correlation_id == "cor-9"  # type: ignore[attr-defined]
    assert gave_up.call.endswith("fail")  # type: ignore[attr-defined]
    assert gave_up.error == "ConnectionError: refused"  # type: ignore[attr-defined]
    message = gave_up.getMessage()
    assert message.startswith("retry gave up: ")
    assert "policy=api-retry" in message
    assert "request_id=req-1" in message


def test_levels_by_kind() -> None:
    opened = CircuitStateChanged(
        "b", CircuitState.CLOSED, CircuitState.OPEN, "consecutive_failures"
    )
    closed = CircuitStateChanged(
        "b", CircuitState.HALF_OPEN, CircuitState.CLOSED, "trials_succeeded"
    )
    bug = RetryGaveUp("r", 1, "not_retryable", TypeError("bad"), None)
    outage = RetryGaveUp("r", 3, "max_attempts", ConnectionError("x"), None)
    assert event_level(opened) == logging.WARNING
    assert event_level(closed) == logging.INFO
    assert event_level(bug) == logging.ERROR
    assert event_level(outage) == logging.WARNING
    assert event_level(RetryScheduled("r", 1, 0.5, None, object())) == logging.INFO


def test_returned_values_are_logged_by_type_only() -> None:
    class Secret:
        pass

    fields = event_fields(RetryScheduled("r", 1, 0.25, None, Secret()))
    assert fields["result"] == "test_returned_values_are_logged_by_type_only.<locals>.Secret"

    class Response:
        status_code: int

        def __init__(self, status_code: int) -> None:
            self.status_code = status_code

    fields = event_fields(RetryScheduled("r", 1, 0.25, None, Response(503)))
    assert fields["result"].endswith("Response 503")  # type: ignore[union-attr]
    assert fields["delay"] == 0.25
    assert "error" not in fields


def test_a_level_filter_builds_nothing_below_it(caplog: pytest.LogCaptureFixture) -> None:
    listener = LogListener(structlog=False, level=logging.WARNING)
    with caplog.at_level(logging.DEBUG, logger="buttress"):
        listener(RetryScheduled("r", 1, 0.5, ConnectionError("x"), None))
        listener(RetryGaveUp("r", 2, "max_attempts", ConnectionError("x"), None))
    assert [r.event for r in records(caplog)] == ["retry_gave_up"]  # type: ignore[attr-defined]


def test_structlog_gets_the_same_fields() -> None:
    listener = LogListener(structlog=True)
    breaker = CircuitBreaker(name="sl", consecutive_failures=1)
    unsubscribe = breaker.subscribe(listener)
    try:
        with capture_logs() as logs, bind_ids(request="r-2"), pytest.raises(ConnectionError):
            breaker.call(fail)
        with capture_logs() as rejected, pytest.raises(CircuitOpen):
            breaker.call(fail)
    finally:
        unsubscribe()
    assert logs == [
        {
            "event": "circuit_state_changed",
            "log_level": "warning",
            "policy": "sl",
            "call": logs[0]["call"],
            "old": "closed",
            "new": "open",
            "reason": "consecutive_failures",
            "request_id": "r-2",
        }
    ]
    assert rejected[0]["event"] == "call_rejected"
    assert rejected[0]["log_level"] == "info"
    assert rejected[0]["reason"] == "circuit_open"


def test_structlog_is_chosen_only_when_configured() -> None:
    structlog.reset_defaults()
    assert not structlog.is_configured()
    assert LogListener()._structlog is None
    structlog.configure(processors=[structlog.processors.KeyValueRenderer()])
    try:
        assert LogListener()._structlog is not None
    finally:
        structlog.reset_defaults()


def test_a_store_outage_logs_once_per_transition_not_per_call(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A real outage: nothing listens on port 1, so every Redis call is refused.
    clock = FakeClock()
    store = store_from_url("redis://127.0.0.1:1/0", fallback=True, probe_interval=60, clock=clock)
    limiter = RateLimiter("100/second", store=store, name="outage-limiter")
    unsubscribe = buttress.subscribe(LogListener(structlog=False))
    try:
        with caplog.at_level(logging.INFO):
            for _ in range(20):
                assert limiter.allow("k")
            clock.advance(61)  # probes again, still down: no new line
            for _ in range(5):
                limiter.allow("k")
    finally:
        unsubscribe()
    outage_lines = [
        r for r in caplog.records if "failed" in r.getMessage() and r.name.startswith("buttress")
    ]
    assert len(outage_lines) == 1
    assert outage_lines[0].levelno == logging.WARNING
    assert outage_lines[0].name == "buttress.stores"
    assert not [r for r in caplog.records if r.name == "buttress"]


def test_a_pipeline_logs_its_policies_events(caplog: pytest.LogCaptureFixture) -> None:
    pipeline = Pipeline(Retry(2, delay=0, name="pr"), CircuitBreaker(name="pb"))
    unsubscribe = pipeline.subscribe(LogListener(structlog=False))
    try:
        with (
            caplog.at_level(logging.INFO, logger="buttress"),
            pytest.raises(buttress.RetryExhausted),
        ):
            pipeline.call(fail)
    finally:
        unsubscribe()
    assert {r.policy for r in records(caplog)} == {"pr"}  # type: ignore[attr-defined]


def test_the_filter_stamps_every_record_with_the_ids() -> None:
    records_seen: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records_seen.append(record)

    handler = Keep()
    handler.addFilter(RequestIdFilter())
    app_log = logging.getLogger("tests.app")
    app_log.addHandler(handler)
    app_log.setLevel(logging.INFO)
    try:
        with bind_ids(request="r-7", correlation="c-7"):
            app_log.info("inside")
            app_log.info("own", extra={"request_id": "mine"})
        app_log.info("outside")
    finally:
        app_log.removeHandler(handler)
    assert [(r.request_id, r.correlation_id) for r in records_seen] == [  # type: ignore[attr-defined]
        ("r-7", "c-7"),
        ("mine", "c-7"),
        (None, None),
    ]


def test_the_structlog_processor_adds_the_ids() -> None:
    with bind_ids(request="r-8"):
        assert add_request_ids(None, "info", {"event": "x"}) == {"event": "x", "request_id": "r-8"}
    assert add_request_ids(None, "info", {"event": "y"}) == {"event": "y"}
    with bind_ids(request="r-9"):
        assert add_request_ids(None, "info", {"request_id": "kept"})["request_id"] == "kept"


def test_health_changes_log_warning_on_fail_with_the_output() -> None:
    from buttress.observe.health import HealthStatus, HealthStatusChanged

    class Result:  # stands in for a CheckResult: only buttress's own results show output
        output = "ConnectionRefusedError: refused"

    failing = HealthStatusChanged("api", "redis", HealthStatus.PASS, HealthStatus.FAIL)
    assert event_level(failing) == logging.WARNING
    back = HealthStatusChanged("api", "redis", HealthStatus.FAIL, HealthStatus.PASS)
    assert event_level(back) == logging.INFO
    assert event_fields(failing)["new"] == "fail"
    assert "result" not in event_fields(failing)


async def test_a_health_check_result_logs_its_output(caplog: pytest.LogCaptureFixture) -> None:
    from buttress.observe.health import HealthMonitor

    def broken() -> None:
        raise ConnectionRefusedError("refused")

    monitor = HealthMonitor(name="obs-health")
    monitor.add("db", broken)
    unsubscribe = monitor.subscribe(LogListener(structlog=False))
    try:
        with caplog.at_level(logging.INFO, logger="buttress"):
            await monitor.run()
    finally:
        unsubscribe()
    db_line = next(r for r in records(caplog) if getattr(r, "check", None) == "db")
    assert db_line.levelno == logging.WARNING
    assert "refused" in db_line.result  # type: ignore[attr-defined]

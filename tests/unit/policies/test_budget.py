"""ErrorBudget and LatencyBudget: options, feeding by hand and as policies, answers."""

from __future__ import annotations

import asyncio
import gc
import threading
from dataclasses import dataclass
from datetime import timedelta

import pytest

import buttress
from buttress import (
    BurnAlert,
    CircuitBreaker,
    CircuitOpen,
    ConfigError,
    ErrorBudget,
    FakeClock,
    LatencyBudget,
    Pipeline,
    Registry,
    Timeout,
    TimeoutExceeded,
)
from buttress._strategy import live as live_strategies
from buttress.policies.budget import (
    DEFAULT_ALERTS,
    ErrorBudgetOptions,
    LatencyBudgetOptions,
    live,
)
from buttress.registry import register_kind

from tests.helpers import tick


@dataclass
class Response:
    status_code: int


def fail(exc: BaseException) -> None:
    raise exc


# ---------------------------------------------------------------------------- options


@pytest.mark.parametrize(
    ("kwargs", "path"),
    [
        ({"target": 1.0}, "target"),
        ({"target": 0}, "target"),
        ({"target": True}, "target"),
        ({"target": 0.99, "window": 0}, "window"),
        ({"target": 0.99, "buckets": 0}, "buckets"),
        ({"target": 0.99, "alert_buckets": 1.5}, "alert_buckets"),
        ({"target": 0.99, "window": 3000.0}, "alerts[0].long"),
        ({"target": 0.9}, "alerts[0].factor"),
        ({"target": 0.99, "alerts": [BurnAlert(3600, 300, 100.0)]}, "alerts[0].factor"),
        ({"target": 0.99, "alerts": [(3600, 300, 0)]}, "alerts[0].factor"),
        ({"target": 0.99, "alerts": [{"long": 60, "short": 60, "factor": 2}]}, "alerts[0].short"),
        ({"target": 0.99, "alerts": [{"long": 60, "factor": 2}]}, "alerts[0]"),
        ({"target": 0.99, "alerts": ["1h"]}, "alerts[0]"),
        ({"target": 0.99, "alerts": BurnAlert(3600, 300, 2)}, "alerts"),
        ({"target": 0.99, "on": 3}, "on"),
    ],
)
def test_error_budget_options_name_the_bad_one(kwargs: dict[str, object], path: str) -> None:
    with pytest.raises(ConfigError) as info:
        ErrorBudgetOptions(**kwargs)  # type: ignore[arg-type]
    assert info.value.path == path


def test_burn_alert_checks_itself() -> None:
    with pytest.raises(ConfigError) as info:
        BurnAlert(long=300, short=3600, factor=2)
    assert info.value.path == "short"
    with pytest.raises(ConfigError) as info:
        BurnAlert(long=-1, short=1, factor=2)
    assert info.value.path == "long"
    alert = BurnAlert(timedelta(hours=1), timedelta(minutes=5), 14.4)
    assert (alert.long, alert.short) == (3600.0, 300.0)
    assert alert == BurnAlert(3600, 300, 14.4)
    assert hash(alert) == hash(BurnAlert(3600, 300, 14.4))
    assert repr(alert) == "BurnAlert(long=3600, short=300, factor=14.4)"
    with pytest.raises(AttributeError):
        alert.factor = 2.0


def test_defaults_are_the_workbook_pairs_and_timedeltas_are_seconds() -> None:
    budget = ErrorBudget(0.999, window=timedelta(days=30))
    assert budget.options.window == 30 * 86_400.0
    assert budget.options.alerts == DEFAULT_ALERTS
    assert [(a.long, a.short, a.factor) for a in DEFAULT_ALERTS] == [
        (3600.0, 300.0, 14.4),
        (21_600.0, 1800.0, 6.0),
    ]
    assert budget.options.windows == (30 * 86_400.0, 21_600.0, 3600.0, 1800.0, 300.0)
    assert budget.options.allowed == 0.001
    assert ErrorBudget(0.9, alerts=()).options.alerts == ()


@pytest.mark.parametrize(
    ("kwargs", "path"),
    [
        ({"threshold": 0}, "threshold"),
        ({"threshold": 0.3, "percentile": 99}, "percentile"),
        ({"threshold": 0.3, "window": -1}, "window"),
        ({"threshold": 0.3, "buckets": 100_001}, "buckets"),
    ],
)
def test_latency_budget_options_name_the_bad_one(kwargs: dict[str, object], path: str) -> None:
    with pytest.raises(ConfigError) as info:
        LatencyBudgetOptions(**kwargs)  # type: ignore[arg-type]
    assert info.value.path == path


def test_from_options_and_the_registry() -> None:
    clock = FakeClock()
    options = ErrorBudgetOptions(target=0.99, alerts=())
    budget = ErrorBudget.from_options(options, name="orders", clock=clock)
    assert budget.name == "orders"
    assert budget.options is options
    with pytest.raises(ConfigError) as info:
        ErrorBudget.from_options(LatencyBudgetOptions(threshold=1.0))  # type: ignore[arg-type]
    assert info.value.path == "options"

    register_kind("test_error_budget", ErrorBudget, replace=True)
    register_kind("test_latency_budget", LatencyBudget, replace=True)
    registry = Registry.from_mapping(
        {
            "policies": {
                "api": {
                    "type": "test_error_budget",
                    "target": 0.999,
                    "alerts": [{"long": 3600, "short": 300, "factor": 14.4}],
                },
                "api-latency": {"type": "test_latency_budget", "threshold": "300ms"},
            }
        }
    )
    api = registry.get("api")
    assert isinstance(api, ErrorBudget)
    assert api.options.alerts == (BurnAlert(3600, 300, 14.4),)
    latency = registry.get("api-latency")
    assert isinstance(latency, LatencyBudget)
    assert latency.options.threshold == 0.3
    with pytest.raises(ConfigError) as info:
        Registry.from_mapping(
            {"policies": {"api": {"type": "test_error_budget", "target": 0.999, "alerts": 3}}}
        )
    assert info.value.path == "policies.api.alerts"


# ----------------------------------------------------------------------- error budget


def test_remaining_error_rate_and_burn_rate() -> None:
    clock = FakeClock()
    budget = ErrorBudget(0.99, name="api", clock=clock)
    assert budget.remaining() == 1.0
    assert budget.error_rate() == 0.0
    assert budget.burn_rate() == 0.0
    budget.record(True, 99)
    budget.record(False)
    assert budget.counts() == (99, 1)
    assert budget.error_rate() == 0.01
    assert budget.burn_rate() == 1.0
    assert budget.remaining() == 0.0
    budget.record(False, 100)  # overspent: below zero
    assert budget.remaining() < 0
    assert budget.burn_rate(timedelta(minutes=5)) == budget.burn_rate(300)
    with pytest.raises(ConfigError) as info:
        budget.burn_rate(120)
    assert info.value.path == "window"
    assert "3600" in str(info.value)
    with pytest.raises(ConfigError):
        budget.record(1)  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        budget.record(True, 0)
    budget.reset()
    assert budget.counts() == (0, 0)
    assert budget.remaining() == 1.0


def test_old_outcomes_leave_the_window() -> None:
    clock = FakeClock()
    budget = ErrorBudget(0.99, window=3600, buckets=60, alerts=(), clock=clock)
    budget.record(False)
    clock.advance(1800)
    budget.record(True)
    assert budget.counts() == (1, 1)
    clock.advance(1800)  # the bad call's bucket has left the window
    assert budget.counts() == (1, 0)
    clock.advance(7200)
    assert budget.counts() == (0, 0)


def test_an_alert_needs_both_windows_above_the_factor() -> None:
    clock = FakeClock()
    fast = BurnAlert(long=3600, short=300, factor=14.4)
    slow = BurnAlert(long=21_600, short=1800, factor=6)
    budget = ErrorBudget(0.999, alerts=[fast, slow], clock=clock)
    # A burst of errors, then ten minutes of health: the long window still burns,
    # the short one has cooled down, so the fast alert stops.
    budget.record(True, 900)
    budget.record(False, 100)  # 10 % errors: burn rate 100
    statuses = budget.alerts()
    assert [s.firing for s in statuses] == [True, True]
    assert budget.alerting()
    assert budget.alerting(fast)
    clock.advance(600)
    budget.record(True, 10)
    assert budget.burn_rate(3600) > 14.4
    assert budget.burn_rate(300) == 0.0
    assert not budget.alerting(fast)
    assert budget.alerting(slow)  # 30 min window still holds the burst
    with pytest.raises(ConfigError):
        budget.alerting(BurnAlert(60, 30, 2))


def test_snapshot_has_what_the_metrics_need() -> None:
    clock = FakeClock()
    budget = ErrorBudget(0.999, name="checkout", clock=clock)
    budget.record(True, 998)
    budget.record(False, 2)
    snap = budget.snapshot()
    assert (snap.name, snap.target, snap.good, snap.bad) == ("checkout", 0.999, 998, 2)
    assert snap.error_rate == 0.002
    assert snap.remaining == pytest.approx(-1.0)
    assert [str(int(w)) for w, _ in snap.burn_rates] == ["2592000", "21600", "3600", "1800", "300"]
    assert all(rate == pytest.approx(2.0) for _, rate in snap.burn_rates)
    assert not snap.firing
    with pytest.raises(AttributeError):
        snap.bad = 0  # type: ignore[misc]


def test_as_a_policy_it_records_and_never_changes_the_call() -> None:
    budget = ErrorBudget(0.99, clock=FakeClock())
    assert budget.call(lambda: "ok") == "ok"
    not_found = Response(404)
    assert budget.call(lambda: not_found) is not_found  # an answer: good
    unavailable = Response(503)
    assert budget.call(lambda: unavailable) is unavailable  # returned, still bad
    with pytest.raises(ConnectionResetError):
        budget.call(fail, ConnectionResetError("reset"))
    with pytest.raises(ValueError, match="no"):
        budget.call(fail, ValueError("no"))  # an answer: good
    with pytest.raises(AttributeError):
        budget.call(fail, AttributeError("bug"))  # the caller's bug: nothing
    with pytest.raises(KeyboardInterrupt):
        budget.call(fail, KeyboardInterrupt())  # nothing
    assert budget.counts() == (3, 2)


def test_custom_matcher() -> None:
    budget = ErrorBudget(
        0.99, on=KeyError, on_result=lambda r: r == "bad", alerts=(), clock=FakeClock()
    )
    budget.call(lambda: "bad")
    budget.call(lambda: "fine")
    with pytest.raises(KeyError):
        budget.call(fail, KeyError("k"))
    with pytest.raises(ConnectionError):
        budget.call(fail, ConnectionError())  # not named: an answer
    assert budget.counts() == (2, 2)


def test_rejections_and_timeouts_inside_count_as_bad() -> None:
    clock = FakeClock()
    budget = ErrorBudget(0.99, alerts=(), clock=clock)
    breaker = CircuitBreaker(consecutive_failures=1, clock=clock)
    pipeline = Pipeline(budget, breaker)
    with pytest.raises(ConnectionError):
        pipeline.call(fail, ConnectionError())
    with pytest.raises(CircuitOpen):
        pipeline.call(lambda: "never")
    assert budget.counts() == (0, 2)

    timed = Pipeline(budget, Timeout(1.0, clock=clock))
    with pytest.raises(TimeoutExceeded):
        timed.call(clock.sleep, 2.0)
    assert budget.counts() == (0, 3)


async def test_async_pipeline_and_decorator() -> None:
    clock = FakeClock()
    budget = ErrorBudget(0.99, alerts=(), clock=clock)

    @budget
    async def fetch(status: int) -> Response:
        await tick()  # a real suspension point
        return Response(status)

    assert (await fetch(404)).status_code == 404
    assert (await fetch(500)).status_code == 500

    async def broken() -> None:
        raise ConnectionRefusedError

    pipeline = Pipeline(budget)
    with pytest.raises(ConnectionRefusedError):
        await pipeline.acall(broken)
    assert budget.counts() == (1, 2)


async def test_a_timeout_cancelling_the_call_is_bad_a_caller_cancelling_is_nothing() -> None:
    clock = FakeClock()
    budget = ErrorBudget(0.99, alerts=(), clock=clock)
    latency = LatencyBudget(10.0, window=60, clock=clock)
    pipeline = Pipeline(budget, latency, Timeout(1.0, clock=clock))
    with pytest.raises(TimeoutExceeded):
        await pipeline.acall(clock.asleep, 2.0)  # the fake clock fires the timeout
    assert budget.counts() == (0, 1)
    assert latency.counts() == (1, 0)
    inside = Pipeline(Timeout(1.0, clock=clock), budget, latency)  # sees the cancellation
    with pytest.raises(TimeoutExceeded):
        await inside.acall(clock.asleep, 2.0)
    assert budget.counts() == (0, 2)
    assert latency.counts() == (2, 0)
    hang = asyncio.Event()

    task = asyncio.ensure_future(Pipeline(budget, latency).acall(hang.wait))
    await tick()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert budget.counts() == (0, 2)
    assert latency.counts() == (2, 0)


def test_threads_lose_no_record() -> None:
    budget = ErrorBudget(0.99, window=60, buckets=6, alerts=[BurnAlert(30, 5, 2)])
    latency = LatencyBudget(0.5, window=60)
    start = threading.Barrier(8)

    def work(ok: bool) -> None:
        start.wait()
        for _ in range(2000):
            budget.record(ok)
            latency.record(0.1 if ok else 1.0)

    threads = [threading.Thread(target=work, args=(i % 2 == 0,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert budget.counts() == (8000, 8000)
    assert latency.counts() == (16000, 8000)


def test_live_lists_the_budgets_weakly() -> None:
    budget = ErrorBudget(0.99, name="weak")
    latency = LatencyBudget(1.0, name="weak-latency")
    assert budget in live()
    assert latency in live()
    assert budget in live_strategies()
    del budget, latency
    gc.collect()
    assert not [b for b in live() if b.name in {"weak", "weak-latency"}]


def test_exported_from_the_top() -> None:
    assert buttress.ErrorBudget is ErrorBudget
    assert buttress.LatencyBudget is LatencyBudget
    assert "ErrorBudget(0.99" in repr(ErrorBudget(0.99, name="r"))


# --------------------------------------------------------------------- latency budget


def test_latency_remaining_and_estimate() -> None:
    clock = FakeClock()
    budget = LatencyBudget(timedelta(milliseconds=300), percentile=0.9, name="p90", clock=clock)
    assert budget.estimate() is None
    assert budget.remaining() == 1.0
    for ms in range(1, 101):  # 1 ms .. 100 ms
        budget.record(ms / 1000)
    assert budget.remaining() == 1.0
    assert budget.estimate() == pytest.approx(0.090, rel=0.01)
    for _ in range(5):
        budget.record(0.5)  # 5 of 105 slow, 10 % allowed
    assert budget.counts() == (105, 5)
    assert budget.remaining() == pytest.approx(1 - (5 / 105) / 0.1)
    snap = budget.snapshot()
    assert (snap.name, snap.calls, snap.slow, snap.threshold) == ("p90", 105, 5, 0.3)
    assert snap.met
    assert snap.estimate == budget.estimate()
    for _ in range(20):
        budget.record(timedelta(seconds=1))
    assert not budget.snapshot().met
    assert budget.estimate() == pytest.approx(1.0, rel=0.01)
    with pytest.raises(ConfigError) as info:
        budget.record(-1)
    assert info.value.path == "seconds"
    budget.reset()
    assert budget.counts() == (0, 0)


def test_latency_as_a_policy_measures_on_its_clock() -> None:
    clock = FakeClock()
    budget = LatencyBudget(1.0, clock=clock)
    assert budget.call(clock.sleep, 0.5) is None
    assert budget.call(clock.sleep, 2.0) is None

    def slow_failure() -> None:
        clock.sleep(3.0)
        raise ConnectionError

    with pytest.raises(ConnectionError):
        budget.call(slow_failure)
    with pytest.raises(TypeError):
        budget.call(fail, TypeError("bug"))  # not measured
    assert budget.counts() == (3, 2)


async def test_latency_async() -> None:
    clock = FakeClock()
    budget = LatencyBudget(1.0, clock=clock)

    async def slow() -> str:
        await clock.asleep(1.5)
        return "done"

    assert await budget.acall(slow) == "done"
    assert budget.counts() == (1, 1)

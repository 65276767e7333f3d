"""HealthMonitor, Check and Composite: statuses, thresholds, composites, history,
callbacks, timeouts and background runs — on a fake clock, never sleeping."""

from __future__ import annotations

import asyncio
import gc
import logging
import threading
from datetime import timedelta

import pytest

from buttress.clock import FakeClock
from buttress.errors import ConfigError
from buttress.events import subscribe
from buttress.observe.health import (
    Check,
    CheckSnapshot,
    Composite,
    HealthMonitor,
    HealthReport,
    HealthStatus,
    HealthStatusChanged,
    Observation,
    live_monitors,
)

from tests.helpers import tick

PASS, WARN, FAIL = HealthStatus.PASS, HealthStatus.WARN, HealthStatus.FAIL


class Switch:
    """A check whose answer the test sets: ``ok`` True passes, False raises."""

    def __init__(self, ok: bool = True) -> None:
        self.ok = ok
        self.calls = 0

    def __call__(self) -> None:
        self.calls += 1
        if not self.ok:
            raise ConnectionError("down")


async def test_sync_and_async_checks_pass(clock: FakeClock) -> None:
    async def pong() -> None:
        return None

    monitor = HealthMonitor(clock=clock)
    monitor.add("sync", lambda: True)
    monitor.add("async", pong, component_type="datastore")
    report = await monitor.run()
    assert report.status is PASS
    assert report.ready
    assert [r.name for r in report.checks] == ["sync", "async"]
    result = report["async"]
    assert (result.status, result.outcome, result.output, result.timed_out) == (
        PASS,
        PASS,
        "",
        False,
    )
    assert result.component_type == "datastore"
    assert result.measurement == "responseTime"
    assert result.checked_at == clock.time()
    assert monitor.report() is report
    assert monitor.status is PASS
    with pytest.raises(KeyError):
        report["missing"]


@pytest.mark.parametrize(
    ("value", "status", "output"),
    [
        (None, PASS, ""),
        (True, PASS, ""),
        (False, FAIL, "the check returned False"),
        (HealthStatus.WARN, WARN, ""),
        (
            Observation(WARN, value=93, unit="percent", output="disk nearly full"),
            WARN,
            "disk nearly full",
        ),
        (42, FAIL, "the check returned int: return None, a bool, a HealthStatus or an Observation"),
    ],
)
async def test_what_a_check_returns_decides(
    clock: FakeClock, value: object, status: HealthStatus, output: str
) -> None:
    monitor = HealthMonitor(clock=clock)
    monitor.add("c", lambda: value)
    result = (await monitor.run())["c"]
    assert (result.status, result.output) == (status, output)
    if isinstance(value, Observation):
        assert (result.observed_value, result.observed_unit) == (93, "percent")


async def test_a_raising_check_fails_with_the_error_on_one_line(clock: FakeClock) -> None:
    async def broken() -> None:
        raise OSError("connection refused\n\tis the server running?")

    monitor = HealthMonitor(clock=clock)
    monitor.add("db", broken)
    result = (await monitor.run())["db"]
    assert result.status is FAIL
    assert result.output == "OSError: connection refused is the server running?"


async def test_a_sync_check_returning_a_coroutine_fails(clock: FakeClock) -> None:
    async def later() -> None:
        return None

    monitor = HealthMonitor(clock=clock)
    monitor.add("c", lambda: later())  # noqa: PLW0108 - a sync function returning a coroutine
    result = (await monitor.run())["c"]
    assert result.status is FAIL
    assert "use async def" in result.output


async def test_failure_threshold_holds_the_status_until_enough_failures(clock: FakeClock) -> None:
    switch = Switch()
    monitor = HealthMonitor(clock=clock)
    monitor.add("db", switch, failure_threshold=3, success_threshold=2)
    assert (await monitor.run())["db"].status is PASS
    switch.ok = False
    seen = [
        (r.outcome, r.status, r.consecutive_failures)
        for r in [(await monitor.run())["db"] for _ in range(3)]
    ]
    assert seen == [(FAIL, PASS, 1), (FAIL, PASS, 2), (FAIL, FAIL, 3)]
    switch.ok = True
    first = (await monitor.run())["db"]
    assert (first.outcome, first.status, first.consecutive_successes) == (PASS, FAIL, 1)
    assert (await monitor.run())["db"].status is PASS


async def test_a_success_resets_the_failure_count(clock: FakeClock) -> None:
    switch = Switch()
    monitor = HealthMonitor(clock=clock)
    monitor.add("db", switch, failure_threshold=2)
    await monitor.run()
    for ok in (False, True, False):
        switch.ok = ok
        assert (await monitor.run())["db"].status is PASS


async def test_the_first_run_decides_whatever_the_threshold(clock: FakeClock) -> None:
    monitor = HealthMonitor(clock=clock)
    monitor.add("db", Switch(ok=False), failure_threshold=5)
    report = await monitor.run()
    assert report["db"].status is FAIL
    assert not report.ready


async def test_critical_and_non_critical_checks(clock: FakeClock) -> None:
    cache, db = Switch(), Switch()
    monitor = HealthMonitor(clock=clock)
    monitor.add("cache", cache, critical=False)
    monitor.add("db", db)
    cache.ok = False
    report = await monitor.run()
    assert (report.status, report.ready, report["cache"].status) == (WARN, True, FAIL)
    db.ok = False
    report = await monitor.run()
    assert (report.status, report.ready) == (FAIL, False)


async def test_a_warning_check_makes_the_whole_warn(clock: FakeClock) -> None:
    monitor = HealthMonitor(clock=clock)
    monitor.add("disk", lambda: HealthStatus.WARN)
    assert (await monitor.run()).status is WARN


def _composite(mode: str, *members: tuple[str, Switch, bool]) -> Composite:
    return Composite(
        "db",
        [Check(name, switch, critical=critical) for name, switch, critical in members],
        mode=mode,  # type: ignore[arg-type]
    )


@pytest.mark.parametrize(
    ("mode", "primary", "replica", "expected"),
    [
        ("all", True, True, PASS),
        ("all", True, False, FAIL),
        ("all", False, True, FAIL),
        ("any", True, False, WARN),
        ("any", False, True, WARN),
        ("any", False, False, FAIL),
        ("any", True, True, PASS),
    ],
)
async def test_composite_modes(
    clock: FakeClock, mode: str, primary: bool, replica: bool, expected: HealthStatus
) -> None:
    group = _composite(mode, ("primary", Switch(primary), True), ("replica", Switch(replica), True))
    monitor = HealthMonitor([group], clock=clock)
    result = (await monitor.run())["db"]
    assert result.status is expected
    assert [m.name for m in result.members] == ["primary", "replica"]
    if expected is not PASS:
        assert "down" in result.output


async def test_a_non_critical_member_only_makes_its_group_warn(clock: FakeClock) -> None:
    group = _composite("all", ("primary", Switch(), True), ("replica", Switch(False), False))
    monitor = HealthMonitor([group], clock=clock)
    report = await monitor.run()
    assert (report["db"].status, report.status) == (WARN, WARN)


async def test_members_keep_their_own_thresholds(clock: FakeClock) -> None:
    replica = Switch()
    group = Composite(
        "db", [Check("primary", Switch()), Check("replica", replica, failure_threshold=2)]
    )
    monitor = HealthMonitor([group], clock=clock)
    await monitor.run()
    replica.ok = False
    assert (await monitor.run())["db"].status is PASS
    assert (await monitor.run())["db"].status is FAIL
    assert group.checks[1].status is FAIL


async def test_members_run_concurrently_each_with_its_own_timeout(manual_clock: FakeClock) -> None:
    never = asyncio.Event()

    async def stall() -> None:
        await never.wait()

    group = Composite("db", [Check("fast", stall, timeout=1), Check("slow", stall, timeout=5)])
    monitor = HealthMonitor([group], clock=manual_clock)
    running = asyncio.create_task(monitor.run())
    await tick(3)
    manual_clock.advance(1)
    await tick(3)
    assert not running.done()
    manual_clock.advance(4)
    result = (await running)["db"]
    assert [(m.output, m.timed_out) for m in result.members] == [
        ("timed out after 1 s", True),
        ("timed out after 5 s", True),
    ]
    assert result.timed_out
    assert group.timeout == 5


async def test_history_is_bounded_and_gives_the_success_rate(clock: FakeClock) -> None:
    switch = Switch()
    monitor = HealthMonitor(clock=clock)
    check = monitor.add("db", switch, history=4)
    assert (check.success_rate, check.history, check.last) == (None, (), None)
    for ok in (False, True, True, False, True):
        switch.ok = ok
        await monitor.run()
    assert [r.outcome for r in check.history] == [PASS, PASS, FAIL, PASS]
    assert check.success_rate == 0.75
    assert check.last is check.history[-1]


async def test_callbacks_and_events_on_every_change(clock: FakeClock) -> None:
    switch = Switch()
    sync_seen: list[HealthStatusChanged] = []
    async_seen: list[HealthStatusChanged] = []
    listened: list[HealthStatusChanged] = []
    globally: list[object] = []

    async def on_async(change: HealthStatusChanged) -> None:
        await tick()  # a callback that really suspends
        async_seen.append(change)

    monitor = HealthMonitor(name="api", on_change=sync_seen.append, clock=clock)
    monitor.on_change(on_async)
    monitor.subscribe(listened.append)
    unsubscribe = subscribe(globally.append, HealthStatusChanged)
    try:
        monitor.add("db", switch)
        await monitor.run()
        await monitor.run()  # nothing changes
        switch.ok = False
        await monitor.run()
    finally:
        unsubscribe()
    described = [(c.policy, c.check, c.old, c.new) for c in sync_seen]
    assert described == [
        ("api", "db", None, PASS),
        ("api", None, None, PASS),
        ("api", "db", PASS, FAIL),
        ("api", None, PASS, FAIL),
    ]
    assert async_seen == sync_seen == listened == globally
    assert sync_seen[2].result is not None
    assert sync_seen[2].result.output == "ConnectionError: down"


async def test_member_changes_are_reported_with_their_group(clock: FakeClock) -> None:
    replica = Switch()
    seen: list[HealthStatusChanged] = []
    group = Composite("db", [Check("primary", Switch()), Check("replica", replica, critical=False)])
    monitor = HealthMonitor([group], on_change=seen.append, clock=clock)
    await monitor.run()
    seen.clear()
    replica.ok = False
    await monitor.run()
    assert [(c.check, c.old, c.new) for c in seen] == [
        ("db.replica", PASS, FAIL),
        ("db", PASS, WARN),
        (None, PASS, WARN),
    ]


async def test_a_failing_callback_is_logged_and_the_others_still_run(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    seen: list[HealthStatusChanged] = []

    def broken(change: HealthStatusChanged) -> None:
        raise RuntimeError("bug in callback")

    monitor = HealthMonitor(on_change=broken, clock=clock)
    remove = monitor.on_change(seen.append)
    monitor.add("db", Switch())
    with caplog.at_level(logging.ERROR, logger="buttress.health"):
        await monitor.run()
    assert len(seen) == 2
    assert "on_change callback" in caplog.text
    assert "bug in callback" in caplog.text
    remove()
    monitor["db"]._fn.ok = False  # type: ignore[union-attr]
    await monitor.run()
    assert len(seen) == 2


async def test_a_stalled_async_check_times_out_on_the_clock(manual_clock: FakeClock) -> None:
    cancelled = asyncio.Event()

    async def stall() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    monitor = HealthMonitor(clock=manual_clock)
    monitor.add("db", stall, timeout=timedelta(seconds=2))
    monitor.add("ok", lambda: None)
    running = asyncio.create_task(monitor.run())
    await tick(3)
    manual_clock.advance(1.5)
    await tick(3)
    assert not running.done()
    manual_clock.advance(0.5)
    report = await running
    result = report["db"]
    assert (result.status, result.timed_out, result.output) == (FAIL, True, "timed out after 2 s")
    assert result.duration == 2.0
    assert report["ok"].status is PASS
    await tick(2)
    assert cancelled.is_set()


async def test_a_stalled_sync_check_times_out_and_is_not_started_twice(
    manual_clock: FakeClock,
) -> None:
    release = threading.Event()
    started: list[int] = []

    def stall() -> None:
        started.append(1)
        release.wait()

    monitor = HealthMonitor(clock=manual_clock)
    check = monitor.add("db", stall, timeout=1)
    running = asyncio.create_task(monitor.run())
    await tick(3)
    manual_clock.advance(1)
    result = (await running)["db"]
    assert (result.timed_out, result.output) == (True, "timed out after 1 s")
    # Still stuck: the next run fails at once and starts no second thread.
    again = (await monitor.run())["db"]
    assert (again.status, again.timed_out, again.output) == (
        FAIL,
        True,
        "the previous run is still in progress",
    )
    assert started == [1]
    release.set()
    assert check._inflight is not None
    await asyncio.shield(check._inflight)
    assert (await monitor.run())["db"].status is PASS
    assert started == [1, 1]


async def test_the_next_run_waits_for_a_cancelled_async_run_to_clean_up(
    manual_clock: FakeClock,
) -> None:
    cleaning = asyncio.Event()
    cleaned = asyncio.Event()
    stall = True

    async def check() -> None:
        if not stall:
            return
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cleaning.set()
            await cleaned.wait()  # closing a connection, say
            raise

    monitor = HealthMonitor(clock=manual_clock)
    monitor.add("db", check, timeout=1)
    first = asyncio.create_task(monitor.run())
    await tick(3)
    manual_clock.advance(1)
    assert (await first)["db"].output == "timed out after 1 s"
    await cleaning.wait()
    stall = False
    # Still cleaning up when its time is over: the run says so, and starts nothing.
    second = asyncio.create_task(monitor.run())
    await tick(3)
    manual_clock.advance(1)
    assert (await second)["db"].output == "the previous run is still in progress"
    # Done cleaning within the run's time: the run goes on and passes.
    third = asyncio.create_task(monitor.run())
    await tick(3)
    cleaned.set()
    assert (await third)["db"].status is PASS


async def test_concurrent_runs_share_one(manual_clock: FakeClock) -> None:
    calls = 0
    gate = asyncio.Event()

    async def slow() -> None:
        nonlocal calls
        calls += 1
        await gate.wait()

    monitor = HealthMonitor(clock=manual_clock)
    monitor.add("db", slow)
    first = asyncio.create_task(monitor.run())
    second = asyncio.create_task(monitor.run())
    await tick(3)
    gate.set()
    assert await first is await second
    assert calls == 1


async def test_a_caller_going_away_does_not_cancel_the_shared_run(manual_clock: FakeClock) -> None:
    gate = asyncio.Event()

    async def slow() -> None:
        await gate.wait()

    monitor = HealthMonitor(clock=manual_clock)
    monitor.add("db", slow)
    impatient = asyncio.create_task(monitor.run())
    await tick(2)
    patient = asyncio.create_task(monitor.run())
    await tick(2)
    impatient.cancel()
    await tick(2)
    gate.set()
    assert (await patient).status is PASS


def running(monitor: HealthMonitor) -> bool:
    # A function, not the property inline: the type checker would take the first
    # assert as settling it for the rest of the test.
    return monitor.running


async def test_background_runs_every_interval_and_stop_cleanly(manual_clock: FakeClock) -> None:
    switch = Switch()
    monitor = HealthMonitor(interval=10, clock=manual_clock)
    monitor.add("db", switch)
    async with monitor:
        assert running(monitor)
        await tick(5)
        assert switch.calls == 1
        report = monitor.report()
        assert await monitor.latest() is report  # answered from the latest run
        manual_clock.advance(9)
        await tick(5)
        assert switch.calls == 1
        manual_clock.advance(1)
        await tick(5)
        assert switch.calls == 2
        monitor.start()  # already started: nothing happens
    assert not running(monitor)
    assert manual_clock.pending_timers == 0
    manual_clock.advance(100)
    await tick(5)
    assert switch.calls == 2
    await monitor.stop()  # stopping a stopped monitor is fine


async def test_without_background_runs_latest_runs_the_checks(clock: FakeClock) -> None:
    switch = Switch()
    monitor = HealthMonitor(clock=clock)
    monitor.add("db", switch)
    await monitor.latest()
    await monitor.latest()
    assert switch.calls == 2


class FlakyMonitor(HealthMonitor):
    """A monitor whose first run breaks (a bug somewhere), to see the loop go on."""

    runs = 0

    async def _run_all(self) -> HealthReport:
        FlakyMonitor.runs += 1
        if FlakyMonitor.runs == 1:
            raise RuntimeError("bug")
        return await super()._run_all()


async def test_a_failing_background_run_is_logged_and_the_next_still_happens(
    manual_clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    monitor = FlakyMonitor(interval=1, clock=manual_clock)
    monitor.add("db", Switch())
    with caplog.at_level(logging.ERROR, logger="buttress.health"):
        async with monitor:
            await tick(5)
            assert monitor.report() is None
            manual_clock.advance(1)
            await tick(5)
            assert monitor.status is PASS
    assert FlakyMonitor.runs == 2
    assert "a run failed" in caplog.text
    assert "RuntimeError: bug" in caplog.text


def test_run_sync_from_plain_code() -> None:
    monitor = HealthMonitor()
    monitor.add("ok", lambda: None)
    assert monitor.run_sync().status is PASS


async def test_the_check_decorator(clock: FakeClock) -> None:
    monitor = HealthMonitor(clock=clock)

    @monitor.check(timeout=1, critical=False)
    async def queue() -> bool:
        return False

    assert monitor["queue"].critical is False
    assert (await monitor.run()).status is WARN
    assert monitor.checks == (monitor["queue"],)


async def test_snapshot_for_exporters(clock: FakeClock) -> None:
    group = Composite(
        "db", [Check("primary", Switch()), Check("replica", Switch(False), critical=False)]
    )
    monitor = HealthMonitor([group], name="svc", clock=clock)
    monitor.add("cache", Switch())
    before = monitor.snapshot()
    assert [s.check for s in before] == ["db", "db.primary", "db.replica", "cache"]
    assert before[0] == CheckSnapshot("svc", "db", None, False, None, None, True)
    await monitor.run()
    after = {s.check: s for s in monitor.snapshot()}
    assert after["db.replica"].up is False
    assert after["db.replica"].critical is False
    assert after["db"].up is True
    assert after["db"].status is WARN
    assert after["cache"].duration == 0.0
    assert after["cache"].checked_at == clock.time()


def test_live_monitors_holds_monitors_weakly() -> None:
    monitor = HealthMonitor(name="weakly-held")
    assert monitor in live_monitors()
    del monitor
    gc.collect()
    assert all(m.name != "weakly-held" for m in live_monitors())


@pytest.mark.parametrize(
    ("build", "path"),
    [
        (lambda: Check("db", lambda: None, timeout=0), "timeout"),
        (lambda: Check("db", lambda: None, timeout=-1), "timeout"),
        (lambda: Check("db", lambda: None, failure_threshold=0), "failure_threshold"),
        (lambda: Check("db", lambda: None, success_threshold=True), "success_threshold"),
        (lambda: Check("db:x", lambda: None), "name"),
        (lambda: Check(" db", lambda: None), "name"),
        (lambda: Check("db", "not callable"), "fn"),  # type: ignore[arg-type]
        (lambda: Check("db", lambda: None, critical=1), "critical"),  # type: ignore[arg-type]
        (lambda: Check("db", lambda: None, history=0), "history"),
        (lambda: Check("db", lambda: None, measurement="a:b"), "measurement"),
        (lambda: Check("db", lambda: None, component_type=""), "component_type"),
        (lambda: Composite("db", []), "checks"),
        (lambda: Composite("db", [Check("a", bool), Check("a", bool)]), "checks"),
        (lambda: Composite("db", [Check("a", bool)], mode="most"), "mode"),  # type: ignore[arg-type]
        (lambda: HealthMonitor(interval=0), "interval"),
        (lambda: HealthMonitor(clock=object()), "clock"),  # type: ignore[arg-type]
        (lambda: HealthMonitor(on_change=3), "on_change"),  # type: ignore[arg-type]
        (lambda: HealthMonitor([object()]), "checks"),  # type: ignore[list-item]
    ],
)
def test_bad_options_name_themselves(build: object, path: str) -> None:
    with pytest.raises(ConfigError) as caught:
        build()  # type: ignore[operator]
    assert caught.value.path == path


def test_names_are_unique_and_checks_have_one_owner() -> None:
    monitor = HealthMonitor()
    check = monitor.add("db", bool)
    with pytest.raises(ConfigError, match="already a check called 'db'"):
        monitor.add("db", bool)
    with pytest.raises(ConfigError, match="already belongs"):
        HealthMonitor([check])
    with pytest.raises(ConfigError, match="already belongs"):
        Composite("group", [check])

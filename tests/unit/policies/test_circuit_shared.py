"""Shared breakers without Redis: the engine's sync bookkeeping and the syncer, on a fake clock.

A scripted store stands in for Redis: it records every report and answers what the
test tells it to (or fails). What the Redis script decides is tested against a real
server in ``tests/integration/test_circuit_redis.py``.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
from collections.abc import Iterator, Sequence
from datetime import timedelta
from typing import Any

import pytest

from buttress.clock import FakeClock
from buttress.errors import CircuitOpen, ConfigError
from buttress.events import Event
from buttress.pipeline import Pipeline
from buttress.policies.circuit import (
    BreakerConfig,
    BreakerReply,
    BreakerReport,
    BreakerStore,
    BreakerSync,
    CircuitBreaker,
    CircuitMetrics,
    CircuitState,
    CircuitStateChanged,
)
from buttress.policies.circuit._shared import SharedCircuitEngine, breaker_config
from buttress.stores import StoreFellBack, StoreRecovered, StoreUnavailable

CLOSED = CircuitState.CLOSED
OPEN = CircuitState.OPEN
HALF_OPEN = CircuitState.HALF_OPEN
ISOLATED = CircuitState.ISOLATED

EPOCH = 1000


class Down(OSError):
    """The protected dependency failed."""


def ok() -> str:
    return "ok"


def fail() -> str:
    raise Down("down")


def reply(
    state: str = "closed",
    epoch: int = EPOCH,
    *,
    remaining: float = 0.0,
    open_for: float = 30.0,
    lease: bool = False,
    applied: bool = False,
    reason: str = "",
    window: tuple[int, int, int, int] = (0, 0, 0, 0),
) -> BreakerReply:
    return BreakerReply(state, epoch, remaining, open_for, lease, applied, reason, *window)


class ScriptedStore:
    """A BreakerStore that answers from a queue (or the last answer again), or fails."""

    name = "scripted"

    def __init__(self) -> None:
        self.reports: list[BreakerReport] = []
        self.owners: list[str] = []
        self.answers: list[BreakerReply | Exception] = []
        self.last: BreakerReply = reply()
        self.closed = 0

    def sync(
        self,
        owner: str,
        reports: Sequence[BreakerReport],
        lease: float,
        now: float | None = None,
    ) -> list[BreakerReply]:
        self.owners.append(owner)
        self.reports.extend(reports)
        answer = self.answers.pop(0) if self.answers else self.last
        if isinstance(answer, Exception):
            raise answer
        self.last = answer
        return [answer for _ in reports]

    def close(self) -> None:
        self.closed += 1


@pytest.fixture
def store() -> ScriptedStore:
    return ScriptedStore()


@pytest.fixture
def sync(store: ScriptedStore, clock: FakeClock) -> Iterator[BreakerSync]:
    breaker_sync = BreakerSync(store, background=False, clock=clock)
    yield breaker_sync
    breaker_sync.close()


def shared(sync: BreakerSync, clock: FakeClock, **options: Any) -> CircuitBreaker:
    options.setdefault("name", "pay")
    return CircuitBreaker(sync=sync, clock=clock, **options)


def engine_of(breaker: CircuitBreaker) -> SharedCircuitEngine:
    engine = breaker._engine
    assert isinstance(engine, SharedCircuitEngine)
    return engine


def recorder(target: CircuitBreaker | BreakerSync) -> list[Event]:
    events: list[Event] = []
    target.subscribe(events.append)
    return events


def transitions(events: list[Event]) -> list[tuple[str, str, str]]:
    return [
        (e.old.value, e.new.value, e.reason) for e in events if isinstance(e, CircuitStateChanged)
    ]


def failing(breaker: CircuitBreaker, times: int = 1) -> None:
    for _ in range(times):
        with pytest.raises(Down):
            breaker.call(fail)


# ------------------------------------------------------------------- building


def test_a_shared_breaker_is_a_circuit_breaker(sync: BreakerSync, clock: FakeClock) -> None:
    breaker = shared(sync, clock)
    assert isinstance(breaker, CircuitBreaker)
    assert breaker.sync is sync
    assert repr(breaker) == "CircuitBreaker(name='pay', state='closed', shared=True)"
    local = CircuitBreaker(clock=clock)
    assert type(local) is CircuitBreaker
    assert local.sync is None
    assert local.shared_metrics is None


def test_a_shared_breaker_needs_a_name(sync: BreakerSync) -> None:
    with pytest.raises(ConfigError) as info:
        CircuitBreaker(sync=sync)
    assert info.value.path == "name"


def test_sync_must_be_a_breaker_sync() -> None:
    with pytest.raises(ConfigError) as info:
        CircuitBreaker(name="pay", sync="redis://127.0.0.1:6379/0")  # type: ignore[arg-type]
    assert info.value.path == "sync"


def test_the_constructor_keeps_its_signature() -> None:
    import inspect

    parameters = inspect.signature(CircuitBreaker).parameters
    assert "sync" in parameters
    assert parameters["sync"].default is None
    assert "window" in parameters


def test_one_name_per_sync(sync: BreakerSync, clock: FakeClock) -> None:
    first = shared(sync, clock)
    with pytest.raises(ConfigError) as info:
        shared(sync, clock)
    assert info.value.path == "name"
    del first  # once the first breaker is gone, the name is free again
    assert shared(sync, clock).name == "pay"


def test_a_closed_sync_takes_no_breaker(store: ScriptedStore, clock: FakeClock) -> None:
    breaker_sync = BreakerSync(store, background=False, clock=clock)
    breaker_sync.close()
    assert breaker_sync.closed
    with pytest.raises(ConfigError) as info:
        shared(breaker_sync, clock)
    assert info.value.path == "sync"


@pytest.mark.parametrize(
    ("options", "path"),
    [
        ({"interval": 0}, "interval"),
        ({"interval": -1.0}, "interval"),
        ({"interval": math.inf}, "interval"),
        ({"interval": True}, "interval"),
        ({"interval": "0.1"}, "interval"),
        ({"lease": 0.0}, "lease"),
        ({"interval": 1.0, "lease": 0.5}, "lease"),
        ({"clock": object()}, "clock"),
    ],
)
def test_bad_options_name_the_option(
    store: ScriptedStore, options: dict[str, Any], path: str
) -> None:
    with pytest.raises(ConfigError) as info:
        BreakerSync(store, background=False, **options)
    assert info.value.path == path


def test_the_store_must_be_a_url_a_client_or_a_store() -> None:
    with pytest.raises(ConfigError) as info:
        BreakerSync(42, background=False)
    assert info.value.path == "store"
    with pytest.raises(ConfigError) as info:
        BreakerSync("memory://", background=False)
    assert info.value.path == "url"


def test_lease_defaults_to_five_intervals(store: ScriptedStore) -> None:
    assert BreakerSync(store, background=False, interval=0.2).lease == pytest.approx(1.0)
    assert BreakerSync(store, background=False, interval=0.05).lease == 0.5
    assert BreakerSync(store, background=False, lease=2.0).lease == 2.0


def test_breaker_config_carries_the_trip_rules() -> None:
    count = CircuitBreaker(
        window=20, min_calls=5, failure_ratio=0.25, consecutive_failures=3, open_duration=7.0
    )
    assert breaker_config(count.options) == BreakerConfig(
        window=20,
        bucket_width=0.0,
        buckets=0,
        min_calls=5,
        failure_ratio=0.25,
        slow_call_ratio=1.0,
        consecutive_failures=3,
        open_duration=7.0,
        open_duration_factor=1.0,
        max_open_duration=300.0,
    )
    timed = CircuitBreaker(window_seconds=60, slow_call_duration=1.0, slow_call_ratio=0.5)
    config = breaker_config(timed.options)
    assert (config.window, config.bucket_width, config.buckets) == (0, 1.0, 60)
    assert (config.consecutive_failures, config.slow_call_ratio) == (0, 0.5)
    short = breaker_config(CircuitBreaker(window_seconds=5).options)
    assert (short.bucket_width, short.buckets) == (0.5, 10)


# ---------------------------------------------------------------------- counts


def test_reports_count_every_outcome_including_lock_free_successes(
    sync: BreakerSync, store: ScriptedStore, clock: FakeClock
) -> None:
    breaker = shared(sync, clock, window=4, min_calls=4, failure_ratio=1.0)
    engine = engine_of(breaker)
    failing(breaker)
    for _ in range(4):
        breaker.call(ok)  # fills the window past the failure
    assert engine.fast  # clean: the next successes take the lock-free path
    for _ in range(10):
        breaker.call(ok)
    assert breaker.metrics == CircuitMetrics(4, 0, 0, 0)
    report = engine.report()
    assert (report.calls, report.failures, report.slow) == (15, 1, 0)
    assert (report.had_success, report.trailing) == (True, 0)
    assert (report.proposal, report.want_trial, report.epoch) == ("", False, 0)
    again = engine.report()
    assert (again.calls, again.failures, again.slow) == (0, 0, 0)
    assert again.had_success is False


def test_trailing_failures_and_slow_calls_are_reported(sync: BreakerSync, clock: FakeClock) -> None:
    breaker = shared(
        sync, clock, window=10, min_calls=10, slow_call_duration=2.0, failure_ratio=1.0
    )

    def slow() -> str:
        clock.advance(3.0)
        return "slow"

    breaker.call(slow)
    failing(breaker, 2)
    report = engine_of(breaker).report()
    assert (report.calls, report.failures, report.slow) == (3, 2, 1)
    assert (report.had_success, report.trailing) == (True, 2)


def test_every_entry_point_tallies_its_fast_successes(sync: BreakerSync, clock: FakeClock) -> None:
    breaker = shared(sync, clock, window=1, min_calls=1)
    engine = engine_of(breaker)
    breaker.call(ok)
    assert engine.fast
    assert engine.report().calls == 1

    decorated = breaker(ok)
    decorated()
    breaker.call(ok)
    with breaker:
        pass
    Pipeline(breaker).call(ok)

    async def aok() -> str:
        return "ok"

    async def main() -> None:
        await breaker.acall(aok)
        await breaker(aok)()
        await Pipeline(breaker).acall(aok)
        async with breaker:
            pass

    asyncio.run(main())
    assert engine.report().calls == 8
    assert breaker.metrics == CircuitMetrics(1, 0, 0, 0)


def test_timed_entry_points_tally_fast_successes_and_report_slow_ones(
    sync: BreakerSync, clock: FakeClock
) -> None:
    breaker = shared(sync, clock, window=1, min_calls=1, slow_call_duration=2.0)
    engine = engine_of(breaker)
    breaker.call(ok)
    engine.report()

    def slow() -> str:
        clock.advance(2.5)
        return "slow"

    async def aok() -> str:
        return "ok"

    async def aslow() -> str:
        clock.advance(2.5)
        return "slow"

    breaker(ok)()
    Pipeline(breaker).call(ok)
    breaker.call(ok)
    with breaker:
        pass

    async def main() -> None:
        await breaker.acall(aok)
        await breaker(aok)()
        await Pipeline(breaker).acall(aok)

    asyncio.run(main())
    report = engine.report()
    assert (report.calls, report.slow) == (7, 0)
    # A slow call on the fast path is recorded (it trips the 100% slow ratio).
    breaker(slow)()
    report = engine.report()
    assert (report.calls, report.slow) == (1, 1)
    assert breaker.state is OPEN


def test_counts_are_exact_under_threads(sync: BreakerSync, clock: FakeClock) -> None:
    breaker = shared(sync, clock, window=8, min_calls=8, failure_ratio=1.0)
    engine = engine_of(breaker)
    guarded = breaker(ok)
    threads, calls = 16, 5_000
    barrier = threading.Barrier(threads + 1)
    reported: list[int] = []

    def worker() -> None:
        barrier.wait()
        for _ in range(calls):
            guarded()

    workers = [threading.Thread(target=worker) for _ in range(threads)]
    for thread in workers:
        thread.start()
    barrier.wait()
    for _ in range(20):  # syncs read the counters while the calls run
        reported.append(engine.report().calls)
    for thread in workers:
        thread.join()
    reported.append(engine.report().calls)
    assert sum(reported) == threads * calls


# ------------------------------------------------------------------ proposals


def test_a_local_trip_is_proposed_and_wakes_the_syncer(
    sync: BreakerSync, store: ScriptedStore, clock: FakeClock
) -> None:
    breaker = shared(sync, clock, window=4, min_calls=2)
    assert sync.sync_once()
    sync._wake.clear()
    failing(breaker, 2)
    assert breaker.state is OPEN
    assert sync._wake.is_set()
    report = engine_of(breaker).report()
    assert (report.proposal_from, report.proposal, report.reason) == (
        "closed",
        "open",
        "failure_ratio",
    )
    assert report.forced is False
    assert (report.epoch, report.calls, report.failures) == (EPOCH, 2, 2)


def test_commands_are_forced_and_drop_the_counts(sync: BreakerSync, clock: FakeClock) -> None:
    breaker = shared(sync, clock, window=10, min_calls=10)
    engine = engine_of(breaker)
    failing(breaker, 3)
    breaker.isolate()
    breaker.reset()
    breaker.call(ok)
    report = engine.report()
    assert (report.proposal_from, report.proposal, report.reason, report.forced) == (
        "closed",
        "closed",
        "reset",
        True,
    )
    assert (report.calls, report.failures) == (1, 0)  # only the call after the reset


def test_a_trip_after_a_reset_stays_forced(sync: BreakerSync, clock: FakeClock) -> None:
    breaker = shared(sync, clock, window=2, min_calls=2)
    breaker.isolate()
    breaker.reset()
    failing(breaker, 2)
    report = engine_of(breaker).report()
    assert (report.proposal_from, report.proposal, report.reason, report.forced) == (
        "closed",
        "open",
        "failure_ratio",
        True,
    )


def test_a_proposal_is_cleared_once_the_store_has_it(
    sync: BreakerSync, store: ScriptedStore, clock: FakeClock
) -> None:
    breaker = shared(sync, clock, window=2, min_calls=2)
    sync.sync_once()
    failing(breaker, 2)
    store.answers.append(reply("open", EPOCH + 1, remaining=30.0, applied=True))
    sync.sync_once()
    assert store.reports[-1].proposal == "open"
    sync.sync_once()
    assert store.reports[-1].proposal == ""


# ------------------------------------------------------------------- adopting


def test_adopting_a_trip_opens_until_the_shared_time(
    sync: BreakerSync, store: ScriptedStore, clock: FakeClock
) -> None:
    breaker = shared(sync, clock, window=10, open_duration=30.0)
    events = recorder(breaker)
    sync.sync_once()
    clock.advance(1.0)
    store.last = reply("open", EPOCH + 1, remaining=12.5, open_for=30.0, reason="failure_ratio")
    sync.sync_once()
    assert breaker.state is OPEN
    assert breaker.until == 13.5
    with pytest.raises(CircuitOpen) as info:
        breaker.call(ok)
    assert info.value.retry_after == 12.5
    assert transitions(events) == [("closed", "open", "failure_ratio")]
    sync.sync_once()  # the same answer again: nothing new happens
    assert transitions(events) == [("closed", "open", "failure_ratio")]


def test_half_open_trials_wait_for_the_lease(
    sync: BreakerSync, store: ScriptedStore, clock: FakeClock
) -> None:
    breaker = shared(sync, clock, window=10, open_duration=5.0, half_open_calls=2)
    events = recorder(breaker)
    sync.sync_once()
    store.last = reply("open", EPOCH + 1, remaining=5.0, reason="failure_ratio")
    sync.sync_once()
    clock.advance(5.0)
    assert breaker.state is HALF_OPEN
    with pytest.raises(CircuitOpen):
        breaker.call(ok)  # no lease yet
    # The store has not reached the open-until time yet: the breaker stays half-open.
    store.last = reply("open", EPOCH + 1, remaining=0.001)
    sync.sync_once()
    assert store.reports[-1].want_trial is True
    assert breaker.state is HALF_OPEN
    store.last = reply("half_open", EPOCH + 1, lease=False, reason="open_duration_elapsed")
    sync.sync_once()
    assert store.reports[-1].want_trial is False  # nobody asked since
    with pytest.raises(CircuitOpen):
        breaker.call(ok)
    store.last = reply("half_open", EPOCH + 1, lease=True, reason="open_duration_elapsed")
    sync.sync_once()
    assert store.reports[-1].want_trial is True
    started = threading.Event()
    release = threading.Event()

    def trial() -> str:
        started.set()
        release.wait(5)
        return "ok"

    worker = threading.Thread(target=breaker.call, args=(trial,))
    worker.start()
    started.wait(5)
    assert engine_of(breaker).trials() == (1, 0)
    sync.sync_once()
    assert store.reports[-1].want_trial is True  # a trial in flight renews the lease
    release.set()
    worker.join()
    breaker.call(ok)  # the second trial closes it
    assert breaker.state is CLOSED
    assert transitions(events) == [
        ("closed", "open", "failure_ratio"),
        ("open", "half_open", "open_duration_elapsed"),
        ("half_open", "closed", "trials_succeeded"),
    ]
    sync.sync_once()
    report = store.reports[-1]
    assert (report.proposal_from, report.proposal, report.reason) == (
        "half_open",
        "closed",
        "trials_succeeded",
    )


def test_losing_the_lease_stops_new_trials(
    sync: BreakerSync, store: ScriptedStore, clock: FakeClock
) -> None:
    breaker = shared(sync, clock, window=10, half_open_calls=3)
    sync.sync_once()
    store.last = reply("half_open", EPOCH, lease=True, reason="open_duration_elapsed")
    sync.sync_once()
    assert breaker.state is HALF_OPEN
    assert engine_of(breaker)._trial_cap == 3
    store.last = reply("half_open", EPOCH, lease=False, reason="open_duration_elapsed")
    sync.sync_once()
    with pytest.raises(CircuitOpen):
        breaker.call(ok)


def test_a_close_elsewhere_starts_a_fresh_window(
    sync: BreakerSync, store: ScriptedStore, clock: FakeClock
) -> None:
    breaker = shared(sync, clock, window=10, min_calls=10)
    events = recorder(breaker)
    sync.sync_once()
    failing(breaker, 3)
    store.last = reply("closed", EPOCH + 2, reason="reset")
    sync.sync_once()  # reports the 3 failures; the answer is a newer window
    assert breaker.metrics == CircuitMetrics(0, 0, 0, 0)
    assert breaker.state is CLOSED
    assert transitions(events) == []  # closed to closed: a reset emits nothing
    sync.sync_once()
    assert store.reports[-1].calls == 0


def test_the_first_contact_keeps_the_local_window(
    sync: BreakerSync, store: ScriptedStore, clock: FakeClock
) -> None:
    breaker = shared(sync, clock, window=10, min_calls=10)
    failing(breaker, 3)
    sync.sync_once()
    assert store.reports[-1].failures == 3
    assert breaker.metrics.failures == 3


def test_isolation_elsewhere_isolates_here(
    sync: BreakerSync, store: ScriptedStore, clock: FakeClock
) -> None:
    breaker = shared(sync, clock)
    events = recorder(breaker)
    sync.sync_once()
    store.last = reply("isolated", EPOCH + 1, remaining=math.inf, reason="isolate")
    sync.sync_once()
    assert breaker.state is ISOLATED
    assert breaker.until == math.inf
    store.last = reply("closed", EPOCH + 2, reason="reset")
    sync.sync_once()
    assert transitions(events) == [
        ("closed", "isolated", "isolate"),
        ("isolated", "closed", "reset"),
    ]


def test_a_rejected_proposal_yields_to_the_shared_state(
    sync: BreakerSync, store: ScriptedStore, clock: FakeClock
) -> None:
    breaker = shared(sync, clock, window=2, min_calls=2)
    events = recorder(breaker)
    sync.sync_once()
    failing(breaker, 2)  # trips here, but someone reset the shared breaker first
    store.last = reply("closed", EPOCH + 1, reason="reset")
    sync.sync_once()
    assert breaker.state is CLOSED
    assert transitions(events) == [
        ("closed", "open", "failure_ratio"),
        ("open", "closed", "reset"),
    ]


def test_a_move_made_during_the_round_trip_waits_for_the_next_sync(
    clock: FakeClock,
) -> None:
    holder: dict[str, CircuitBreaker] = {}

    class Racing(ScriptedStore):
        def sync(
            self,
            owner: str,
            reports: Sequence[BreakerReport],
            lease: float,
            now: float | None = None,
        ) -> list[BreakerReply]:
            holder["breaker"].isolate()  # while the round trip is in flight
            return super().sync(owner, reports, lease, now)

    racing = Racing()
    with BreakerSync(racing, background=False, clock=clock) as breaker_sync:
        breaker = holder["breaker"] = shared(breaker_sync, clock)
        breaker_sync.sync_once()
        assert breaker.state is ISOLATED  # not reverted to the answer's "closed"
        racing.answers.append(reply("isolated", EPOCH + 1, remaining=math.inf, applied=True))
        holder["breaker"] = CircuitBreaker(name="other")  # no more isolating
        breaker_sync.sync_once()
        assert racing.reports[-1].proposal == "isolated"
        assert racing.reports[-1].forced is True
        assert breaker.state is ISOLATED


def test_shared_metrics_come_from_the_last_sync(
    sync: BreakerSync, store: ScriptedStore, clock: FakeClock
) -> None:
    breaker = shared(sync, clock)
    assert breaker.shared_metrics is None
    store.last = reply(window=(40, 10, 2, 3))
    sync.sync_once()
    assert breaker.shared_metrics == CircuitMetrics(40, 10, 2, 3)


# ------------------------------------------------------------- store failures


def test_a_failing_store_never_reaches_the_caller(
    sync: BreakerSync, store: ScriptedStore, clock: FakeClock
) -> None:
    breaker = shared(sync, clock, window=4, min_calls=2, open_duration=10.0)
    sync_events = recorder(sync)
    store.last = reply()
    assert sync.sync_once()
    store.answers[:] = [StoreUnavailable("scripted", "down"), RuntimeError("bug")]
    assert not sync.sync_once()
    assert not sync.sync_once()
    assert sync.degraded
    assert breaker.shared_metrics is None
    # Alone, it is a plain local breaker: trips, and runs its trials without a lease.
    failing(breaker, 2)
    assert breaker.state is OPEN
    clock.advance(10.0)
    assert breaker.call(ok) == "ok"
    assert breaker.state is CLOSED
    assert [type(e) for e in sync_events] == [StoreFellBack]
    fell = sync_events[0]
    assert isinstance(fell, StoreFellBack)
    assert fell.policy == "breaker-sync"
    assert isinstance(fell.error, StoreUnavailable)
    clock.advance(2.0)
    store.last = reply("closed", EPOCH)
    assert sync.sync_once()
    assert not sync.degraded
    recovered = sync_events[-1]
    assert isinstance(recovered, StoreRecovered)
    assert recovered.down_for == 12.0
    assert len(sync_events) == 2


def test_rejoining_reports_no_stale_counts_but_a_trip_made_alone(
    sync: BreakerSync, store: ScriptedStore, clock: FakeClock
) -> None:
    breaker = shared(sync, clock, window=4, min_calls=3)
    sync.sync_once()
    store.answers.append(StoreUnavailable("scripted", "down"))
    sync.sync_once()
    failing(breaker, 3)
    store.last = reply("open", EPOCH + 1, remaining=30.0, applied=True, reason="failure_ratio")
    sync.sync_once()
    report = store.reports[-1]
    assert (report.epoch, report.calls, report.failures) == (0, 0, 0)
    assert (report.proposal, report.reason) == ("open", "failure_ratio")


def test_a_half_open_breaker_left_alone_runs_its_own_trials(
    sync: BreakerSync, store: ScriptedStore, clock: FakeClock
) -> None:
    breaker = shared(sync, clock, open_duration=5.0)
    store.last = reply("open", EPOCH, remaining=5.0)
    sync.sync_once()
    clock.advance(5.0)
    with pytest.raises(CircuitOpen):
        breaker.call(ok)  # waiting for the lease
    store.answers.append(StoreUnavailable("scripted", "down"))
    sync.sync_once()
    assert breaker.call(ok) == "ok"
    assert breaker.state is CLOSED


def test_an_outage_logs_one_warning_and_one_recovery(
    sync: BreakerSync, store: ScriptedStore, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="buttress.circuit")
    breaker = shared(sync, clock)
    assert sync.sync_once()
    store.answers[:] = [StoreUnavailable("scripted", "connection refused")] * 50
    for _ in range(50):
        assert not sync.sync_once()
        clock.advance(0.1)
    records = [r for r in caplog.records if r.name == "buttress.circuit"]
    assert [r.levelno for r in records] == [logging.WARNING]
    message = records[0].getMessage()
    assert "'breaker-sync'" in message
    assert "'scripted'" in message
    assert "StoreUnavailable: store 'scripted': connection refused" in message
    assert records[0].exc_info is None  # the cause in one line, no traceback
    for _ in range(10):
        assert sync.sync_once()
    records = [r for r in caplog.records if r.name == "buttress.circuit"]
    assert [r.levelno for r in records] == [logging.WARNING, logging.INFO]
    assert "back after 5 s" in records[1].getMessage()
    assert breaker.call(ok) == "ok"


def test_durations_take_a_timedelta(store: ScriptedStore) -> None:
    breaker_sync = BreakerSync(
        store, background=False, interval=timedelta(milliseconds=200), lease=timedelta(seconds=2)
    )
    assert (breaker_sync.interval, breaker_sync.lease) == (0.2, 2.0)


def test_the_first_sync_failing_is_reported(store: ScriptedStore, clock: FakeClock) -> None:
    with BreakerSync(store, background=False, clock=clock, name="edge") as breaker_sync:
        events = recorder(breaker_sync)
        breaker = shared(breaker_sync, clock)
        store.answers.append(StoreUnavailable("scripted", "down"))
        assert not breaker_sync.sync_once()
        assert [(type(e), e.policy) for e in events] == [(StoreFellBack, "edge")]
        assert breaker.call(ok) == "ok"


def test_a_short_answer_counts_as_a_failure(clock: FakeClock) -> None:
    class Short(ScriptedStore):
        def sync(
            self,
            owner: str,
            reports: Sequence[BreakerReport],
            lease: float,
            now: float | None = None,
        ) -> list[BreakerReply]:
            return []

    with BreakerSync(Short(), background=False, clock=clock) as breaker_sync:
        breaker = shared(breaker_sync, clock)
        assert not breaker_sync.sync_once()
        assert breaker.state is CLOSED
        assert breaker_sync.degraded


# ------------------------------------------------------------------ the syncer


def test_one_store_call_per_sync_for_every_breaker(
    sync: BreakerSync, store: ScriptedStore, clock: FakeClock
) -> None:
    breakers = [shared(sync, clock, name=f"b{i}") for i in range(5)]
    assert sync.sync_once()
    assert len(store.owners) == 1
    assert [r.name for r in store.reports] == [b.name for b in breakers]
    assert store.owners == [sync.owner]


def test_a_sync_without_breakers_does_nothing(sync: BreakerSync, store: ScriptedStore) -> None:
    assert sync.sync_once()
    assert store.owners == []


def test_close_goes_local_and_closes_only_what_it_built(
    store: ScriptedStore, clock: FakeClock
) -> None:
    breaker_sync = BreakerSync(store, background=False, clock=clock)
    breaker = shared(breaker_sync, clock, open_duration=5.0)
    store.last = reply("open", EPOCH, remaining=5.0)
    breaker_sync.sync_once()
    clock.advance(5.0)
    breaker_sync.close()
    breaker_sync.close()
    assert not breaker_sync.sync_once()
    assert store.closed == 0  # the caller's store
    assert breaker.call(ok) == "ok"  # a local breaker now: trials need no lease
    assert "breakers=1" in repr(breaker_sync)


def test_a_listener_may_close_the_sync(store: ScriptedStore, clock: FakeClock) -> None:
    breaker_sync = BreakerSync(store, background=False, clock=clock)
    breaker = shared(breaker_sync, clock)
    breaker.subscribe(lambda event: breaker_sync.close(), CircuitStateChanged)
    store.last = reply("half_open", EPOCH, reason="open_duration_elapsed")
    assert not breaker_sync.sync_once()
    assert breaker_sync.closed
    assert breaker.call(ok) == "ok"  # alone: its own trial permit


def test_the_thread_syncs_at_once_on_a_trip(store: ScriptedStore) -> None:
    synced = threading.Event()

    class Signalling(ScriptedStore):
        def sync(
            self,
            owner: str,
            reports: Sequence[BreakerReport],
            lease: float,
            now: float | None = None,
        ) -> list[BreakerReply]:
            answer = super().sync(owner, reports, lease, now)
            if any(r.proposal for r in reports):
                synced.set()
            return answer

    # A long interval: only the wake-up can make the sync happen within the test.
    with BreakerSync(Signalling(), interval=3600.0) as breaker_sync:
        breaker = CircuitBreaker(name="pay", window=2, min_calls=2, sync=breaker_sync)
        failing(breaker, 2)
        assert synced.wait(10)
    assert breaker_sync._thread is not None
    assert not breaker_sync._thread.is_alive()


def test_the_thread_survives_a_bug(caplog: pytest.LogCaptureFixture) -> None:
    done = threading.Event()
    calls: list[int] = []

    class Buggy(ScriptedStore):
        def sync(
            self,
            owner: str,
            reports: Sequence[BreakerReport],
            lease: float,
            now: float | None = None,
        ) -> list[BreakerReply]:
            calls.append(1)
            if len(calls) == 1:
                return [reply("no such state")]  # adopting it raises
            done.set()
            return super().sync(owner, reports, lease, now)

    with BreakerSync(Buggy(), interval=0.01) as breaker_sync:
        breaker = CircuitBreaker(name="pay", sync=breaker_sync)
        assert done.wait(10)
        assert breaker.state is CLOSED
    assert "breaker sync 'breaker-sync' failed" in caplog.text


def test_a_breaker_store_is_a_protocol() -> None:
    assert isinstance(ScriptedStore(), BreakerStore)

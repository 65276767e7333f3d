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
    BreakerHub,
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


class Down(ConnectionError):
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

    def exchange(
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
def hub(store: ScriptedStore, clock: FakeClock) -> Iterator[BreakerHub]:
    hub = BreakerHub(store, background=False, clock=clock)
    yield hub
    hub.close()


def shared(hub: BreakerHub, clock: FakeClock, **options: Any) -> CircuitBreaker:
    options.setdefault("name", "pay")
    return CircuitBreaker(hub=hub, clock=clock, **options)


def engine_of(breaker: CircuitBreaker) -> SharedCircuitEngine:
    engine = breaker._engine
    assert isinstance(engine, SharedCircuitEngine)
    return engine


def recorder(target: CircuitBreaker | BreakerHub) -> list[Event]:
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


def test_a_shared_breaker_is_a_circuit_breaker(hub: BreakerHub, clock: FakeClock) -> None:
    breaker = shared(hub, clock)
    assert isinstance(breaker, CircuitBreaker)
    assert breaker.hub is hub
    assert repr(breaker) == "CircuitBreaker(name='pay', state='closed', shared=True)"
    local = CircuitBreaker(clock=clock)
    assert type(local) is CircuitBreaker
    assert local.hub is None
    assert local.shared_metrics is None


def test_a_shared_breaker_needs_a_name(hub: BreakerHub) -> None:
    with pytest.raises(ConfigError) as info:
        CircuitBreaker(hub=hub)
    assert info.value.path == "name"


def test_hub_must_be_a_breaker_hub() -> None:
    with pytest.raises(ConfigError) as info:
        CircuitBreaker(name="pay", hub="redis://127.0.0.1:6379/0")  # type: ignore[arg-type]
    assert info.value.path == "hub"


def test_one_name_per_hub(hub: BreakerHub, clock: FakeClock) -> None:
    first = shared(hub, clock)
    with pytest.raises(ConfigError) as info:
        shared(hub, clock)
    assert info.value.path == "name"
    del first  # once the first breaker is gone, the name is free again
    assert shared(hub, clock).name == "pay"


def test_a_closed_hub_takes_no_breaker(store: ScriptedStore, clock: FakeClock) -> None:
    hub = BreakerHub(store, background=False, clock=clock)
    hub.close()
    assert hub.closed
    with pytest.raises(ConfigError) as info:
        shared(hub, clock)
    assert info.value.path == "hub"


def test_the_hub_is_named_for_what_it_does(store: ScriptedStore, clock: FakeClock) -> None:
    with BreakerHub(store, background=False, clock=clock) as hub:
        assert hub.name == "breaker-hub"
        assert repr(hub).startswith("BreakerHub(name='breaker-hub'")


# ------------------------------------------------------------- former names


def test_the_former_names_import_without_a_warning() -> None:
    import subprocess
    import sys

    code = (
        "import warnings; warnings.simplefilter('error'); "
        "from buttress import BreakerSync; "
        "from buttress.policies.circuit import BreakerSync as Again; "
        "assert BreakerSync is Again"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_breaker_sync_is_a_deprecated_hub(store: ScriptedStore, clock: FakeClock) -> None:
    with pytest.warns(DeprecationWarning, match="BreakerSync is deprecated: use BreakerHub"):
        old = BreakerSync(store, background=False, clock=clock)
    assert isinstance(old, BreakerHub)
    assert old.name == "breaker-sync"  # the events' policy name it always had
    with pytest.warns(DeprecationWarning, match=r"CircuitBreaker\(sync=...\) is deprecated"):
        breaker = CircuitBreaker(name="pay", sync=old, clock=clock)
    assert breaker.hub is old
    with pytest.warns(DeprecationWarning, match="CircuitBreaker.sync is deprecated"):
        assert breaker.sync is old
    with pytest.warns(DeprecationWarning, match=r"sync_once\(\) is deprecated"):
        assert old.sync_once()
    assert breaker.shared_metrics is not None
    old.close()


def test_hub_and_its_former_name_are_exclusive(hub: BreakerHub) -> None:
    with pytest.warns(DeprecationWarning, match="sync"), pytest.raises(ConfigError) as info:
        CircuitBreaker(name="pay", hub=hub, sync=hub)
    assert info.value.path == "sync"


def test_a_deprecated_sync_still_needs_a_name(hub: BreakerHub) -> None:
    with pytest.warns(DeprecationWarning, match="sync"), pytest.raises(ConfigError) as info:
        CircuitBreaker(sync=hub)
    assert info.value.path == "name"


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
        ({"idle_interval": 0}, "idle_interval"),
        ({"interval": 1.0, "lease": 5.0, "idle_interval": 0.5}, "idle_interval"),
        ({"clock": object()}, "clock"),
    ],
)
def test_bad_options_name_the_option(
    store: ScriptedStore, options: dict[str, Any], path: str
) -> None:
    with pytest.raises(ConfigError) as info:
        BreakerHub(store, background=False, **options)
    assert info.value.path == path


def test_the_store_must_be_a_url_a_client_or_a_store() -> None:
    with pytest.raises(ConfigError) as info:
        BreakerHub(42, background=False)
    assert info.value.path == "store"
    with pytest.raises(ConfigError) as info:
        BreakerHub("memory://", background=False)
    assert info.value.path == "url"


def test_lease_defaults_to_five_intervals(store: ScriptedStore) -> None:
    assert BreakerHub(store, background=False, interval=0.2).lease == pytest.approx(1.0)
    assert BreakerHub(store, background=False, interval=0.05).lease == 0.5
    assert BreakerHub(store, background=False, lease=2.0).lease == 2.0


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
    hub: BreakerHub, store: ScriptedStore, clock: FakeClock
) -> None:
    breaker = shared(hub, clock, window=4, min_calls=4, failure_ratio=1.0)
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


def test_trailing_failures_and_slow_calls_are_reported(hub: BreakerHub, clock: FakeClock) -> None:
    breaker = shared(hub, clock, window=10, min_calls=10, slow_call_duration=2.0, failure_ratio=1.0)

    def slow() -> str:
        clock.advance(3.0)
        return "slow"

    breaker.call(slow)
    failing(breaker, 2)
    report = engine_of(breaker).report()
    assert (report.calls, report.failures, report.slow) == (3, 2, 1)
    assert (report.had_success, report.trailing) == (True, 2)


def test_every_entry_point_tallies_its_fast_successes(hub: BreakerHub, clock: FakeClock) -> None:
    breaker = shared(hub, clock, window=1, min_calls=1)
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
    hub: BreakerHub, clock: FakeClock
) -> None:
    breaker = shared(hub, clock, window=1, min_calls=1, slow_call_duration=2.0)
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


def test_counts_are_exact_under_threads(hub: BreakerHub, clock: FakeClock) -> None:
    breaker = shared(hub, clock, window=8, min_calls=8, failure_ratio=1.0)
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
    hub: BreakerHub, store: ScriptedStore, clock: FakeClock
) -> None:
    breaker = shared(hub, clock, window=4, min_calls=2)
    assert hub.exchange()
    hub._wake.clear()
    failing(breaker, 2)
    assert breaker.state is OPEN
    assert hub._wake.is_set()
    report = engine_of(breaker).report()
    assert (report.proposal_from, report.proposal, report.reason) == (
        "closed",
        "open",
        "failure_ratio",
    )
    assert report.forced is False
    assert (report.epoch, report.calls, report.failures) == (EPOCH, 2, 2)


def test_commands_are_forced_and_drop_the_counts(hub: BreakerHub, clock: FakeClock) -> None:
    breaker = shared(hub, clock, window=10, min_calls=10)
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


def test_a_trip_after_a_reset_stays_forced(hub: BreakerHub, clock: FakeClock) -> None:
    breaker = shared(hub, clock, window=2, min_calls=2)
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
    hub: BreakerHub, store: ScriptedStore, clock: FakeClock
) -> None:
    breaker = shared(hub, clock, window=2, min_calls=2)
    hub.exchange()
    failing(breaker, 2)
    store.answers.append(reply("open", EPOCH + 1, remaining=30.0, applied=True))
    hub.exchange()
    assert store.reports[-1].proposal == "open"
    hub.exchange()
    assert store.reports[-1].proposal == ""


# ------------------------------------------------------------------- adopting


def test_adopting_a_trip_opens_until_the_shared_time(
    hub: BreakerHub, store: ScriptedStore, clock: FakeClock
) -> None:
    breaker = shared(hub, clock, window=10, open_duration=30.0)
    events = recorder(breaker)
    hub.exchange()
    clock.advance(1.0)
    store.last = reply("open", EPOCH + 1, remaining=12.5, open_for=30.0, reason="failure_ratio")
    hub.exchange()
    assert breaker.state is OPEN
    assert breaker.until == 13.5
    with pytest.raises(CircuitOpen) as info:
        breaker.call(ok)
    assert info.value.retry_after == 12.5
    assert transitions(events) == [("closed", "open", "failure_ratio")]
    hub.exchange()  # the same answer again: nothing new happens
    assert transitions(events) == [("closed", "open", "failure_ratio")]


def test_half_open_trials_wait_for_the_lease(
    hub: BreakerHub, store: ScriptedStore, clock: FakeClock
) -> None:
    breaker = shared(hub, clock, window=10, open_duration=5.0, half_open_calls=2)
    events = recorder(breaker)
    hub.exchange()
    store.last = reply("open", EPOCH + 1, remaining=5.0, reason="failure_ratio")
    hub.exchange()
    clock.advance(5.0)
    assert breaker.state is HALF_OPEN
    with pytest.raises(CircuitOpen):
        breaker.call(ok)  # no lease yet
    # The store has not reached the open-until time yet: the breaker stays half-open.
    store.last = reply("open", EPOCH + 1, remaining=0.001)
    hub.exchange()
    assert store.reports[-1].want_trial is True
    assert breaker.state is HALF_OPEN
    store.last = reply("half_open", EPOCH + 1, lease=False, reason="open_duration_elapsed")
    hub.exchange()
    assert store.reports[-1].want_trial is False  # nobody asked since
    with pytest.raises(CircuitOpen):
        breaker.call(ok)
    store.last = reply("half_open", EPOCH + 1, lease=True, reason="open_duration_elapsed")
    hub.exchange()
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
    hub.exchange()
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
    hub.exchange()
    report = store.reports[-1]
    assert (report.proposal_from, report.proposal, report.reason) == (
        "half_open",
        "closed",
        "trials_succeeded",
    )


def test_losing_the_lease_stops_new_trials(
    hub: BreakerHub, store: ScriptedStore, clock: FakeClock
) -> None:
    breaker = shared(hub, clock, window=10, half_open_calls=3)
    hub.exchange()
    store.last = reply("half_open", EPOCH, lease=True, reason="open_duration_elapsed")
    hub.exchange()
    assert breaker.state is HALF_OPEN
    assert engine_of(breaker)._trial_cap == 3
    store.last = reply("half_open", EPOCH, lease=False, reason="open_duration_elapsed")
    hub.exchange()
    with pytest.raises(CircuitOpen):
        breaker.call(ok)


def test_a_close_elsewhere_starts_a_fresh_window(
    hub: BreakerHub, store: ScriptedStore, clock: FakeClock
) -> None:
    breaker = shared(hub, clock, window=10, min_calls=10)
    events = recorder(breaker)
    hub.exchange()
    failing(breaker, 3)
    store.last = reply("closed", EPOCH + 2, reason="reset")
    hub.exchange()  # reports the 3 failures; the answer is a newer window
    assert breaker.metrics == CircuitMetrics(0, 0, 0, 0)
    assert breaker.state is CLOSED
    assert transitions(events) == []  # closed to closed: a reset emits nothing
    hub.exchange()
    assert store.reports[-1].calls == 0


def test_the_first_contact_keeps_the_local_window(
    hub: BreakerHub, store: ScriptedStore, clock: FakeClock
) -> None:
    breaker = shared(hub, clock, window=10, min_calls=10)
    failing(breaker, 3)
    hub.exchange()
    assert store.reports[-1].failures == 3
    assert breaker.metrics.failures == 3


def test_isolation_elsewhere_isolates_here(
    hub: BreakerHub, store: ScriptedStore, clock: FakeClock
) -> None:
    breaker = shared(hub, clock)
    events = recorder(breaker)
    hub.exchange()
    store.last = reply("isolated", EPOCH + 1, remaining=math.inf, reason="isolate")
    hub.exchange()
    assert breaker.state is ISOLATED
    assert breaker.until == math.inf
    store.last = reply("closed", EPOCH + 2, reason="reset")
    hub.exchange()
    assert transitions(events) == [
        ("closed", "isolated", "isolate"),
        ("isolated", "closed", "reset"),
    ]


def test_a_rejected_proposal_yields_to_the_shared_state(
    hub: BreakerHub, store: ScriptedStore, clock: FakeClock
) -> None:
    breaker = shared(hub, clock, window=2, min_calls=2)
    events = recorder(breaker)
    hub.exchange()
    failing(breaker, 2)  # trips here, but someone reset the shared breaker first
    store.last = reply("closed", EPOCH + 1, reason="reset")
    hub.exchange()
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
        def exchange(
            self,
            owner: str,
            reports: Sequence[BreakerReport],
            lease: float,
            now: float | None = None,
        ) -> list[BreakerReply]:
            holder["breaker"].isolate()  # while the round trip is in flight
            return super().exchange(owner, reports, lease, now)

    racing = Racing()
    with BreakerHub(racing, background=False, clock=clock) as hub:
        breaker = holder["breaker"] = shared(hub, clock)
        hub.exchange()
        assert breaker.state is ISOLATED  # not reverted to the answer's "closed"
        racing.answers.append(reply("isolated", EPOCH + 1, remaining=math.inf, applied=True))
        holder["breaker"] = CircuitBreaker(name="other")  # no more isolating
        hub.exchange()
        assert racing.reports[-1].proposal == "isolated"
        assert racing.reports[-1].forced is True
        assert breaker.state is ISOLATED


def test_shared_metrics_come_from_the_last_sync(
    hub: BreakerHub, store: ScriptedStore, clock: FakeClock
) -> None:
    breaker = shared(hub, clock)
    assert breaker.shared_metrics is None
    store.last = reply(window=(40, 10, 2, 3))
    hub.exchange()
    assert breaker.shared_metrics == CircuitMetrics(40, 10, 2, 3)


# ------------------------------------------------------------- store failures


def test_a_failing_store_never_reaches_the_caller(
    hub: BreakerHub, store: ScriptedStore, clock: FakeClock
) -> None:
    breaker = shared(hub, clock, window=4, min_calls=2, open_duration=10.0)
    sync_events = recorder(hub)
    store.last = reply()
    assert hub.exchange()
    store.answers[:] = [StoreUnavailable("scripted", "down"), RuntimeError("bug")]
    assert not hub.exchange()
    assert not hub.exchange()
    assert hub.degraded
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
    assert fell.policy == "breaker-hub"
    assert isinstance(fell.error, StoreUnavailable)
    clock.advance(2.0)
    store.last = reply("closed", EPOCH)
    assert hub.exchange()
    assert not hub.degraded
    recovered = sync_events[-1]
    assert isinstance(recovered, StoreRecovered)
    assert recovered.down_for == 12.0
    assert len(sync_events) == 2


def test_rejoining_reports_no_stale_counts_but_a_trip_made_alone(
    hub: BreakerHub, store: ScriptedStore, clock: FakeClock
) -> None:
    breaker = shared(hub, clock, window=4, min_calls=3)
    hub.exchange()
    store.answers.append(StoreUnavailable("scripted", "down"))
    hub.exchange()
    failing(breaker, 3)
    store.last = reply("open", EPOCH + 1, remaining=30.0, applied=True, reason="failure_ratio")
    hub.exchange()
    report = store.reports[-1]
    assert (report.epoch, report.calls, report.failures) == (0, 0, 0)
    assert (report.proposal, report.reason) == ("open", "failure_ratio")


def test_a_half_open_breaker_left_alone_runs_its_own_trials(
    hub: BreakerHub, store: ScriptedStore, clock: FakeClock
) -> None:
    breaker = shared(hub, clock, open_duration=5.0)
    store.last = reply("open", EPOCH, remaining=5.0)
    hub.exchange()
    clock.advance(5.0)
    with pytest.raises(CircuitOpen):
        breaker.call(ok)  # waiting for the lease
    store.answers.append(StoreUnavailable("scripted", "down"))
    hub.exchange()
    assert breaker.call(ok) == "ok"
    assert breaker.state is CLOSED


def test_an_outage_logs_one_warning_and_one_recovery(
    hub: BreakerHub, store: ScriptedStore, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="buttress.circuit")
    breaker = shared(hub, clock)
    assert hub.exchange()
    store.answers[:] = [StoreUnavailable("scripted", "connection refused")] * 50
    for _ in range(50):
        assert not hub.exchange()
        clock.advance(0.1)
    records = [r for r in caplog.records if r.name == "buttress.circuit"]
    assert [r.levelno for r in records] == [logging.WARNING]
    message = records[0].getMessage()
    assert "'breaker-hub'" in message
    assert "'scripted'" in message
    assert "StoreUnavailable: store 'scripted': connection refused" in message
    assert records[0].exc_info is None  # the cause in one line, no traceback
    for _ in range(10):
        assert hub.exchange()
    records = [r for r in caplog.records if r.name == "buttress.circuit"]
    assert [r.levelno for r in records] == [logging.WARNING, logging.INFO]
    assert "back after 5 s" in records[1].getMessage()
    assert breaker.call(ok) == "ok"


def test_durations_take_a_timedelta(store: ScriptedStore) -> None:
    hub = BreakerHub(
        store, background=False, interval=timedelta(milliseconds=200), lease=timedelta(seconds=2)
    )
    assert (hub.interval, hub.lease) == (0.2, 2.0)


def test_the_first_sync_failing_is_reported(store: ScriptedStore, clock: FakeClock) -> None:
    with BreakerHub(store, background=False, clock=clock, name="edge") as hub:
        events = recorder(hub)
        breaker = shared(hub, clock)
        store.answers.append(StoreUnavailable("scripted", "down"))
        assert not hub.exchange()
        assert [(type(e), e.policy) for e in events] == [(StoreFellBack, "edge")]
        assert breaker.call(ok) == "ok"


def test_a_short_answer_counts_as_a_failure(clock: FakeClock) -> None:
    class Short(ScriptedStore):
        def exchange(
            self,
            owner: str,
            reports: Sequence[BreakerReport],
            lease: float,
            now: float | None = None,
        ) -> list[BreakerReply]:
            return []

    with BreakerHub(Short(), background=False, clock=clock) as hub:
        breaker = shared(hub, clock)
        assert not hub.exchange()
        assert breaker.state is CLOSED
        assert hub.degraded


# ------------------------------------------------------------------ the syncer


def test_one_store_call_per_sync_for_every_breaker(
    hub: BreakerHub, store: ScriptedStore, clock: FakeClock
) -> None:
    breakers = [shared(hub, clock, name=f"b{i}") for i in range(5)]
    assert hub.exchange()
    assert len(store.owners) == 1
    assert [r.name for r in store.reports] == [b.name for b in breakers]
    assert store.owners == [hub.owner]


def test_a_sync_without_breakers_does_nothing(hub: BreakerHub, store: ScriptedStore) -> None:
    assert hub.exchange()
    assert store.owners == []


def test_close_goes_local_and_closes_only_what_it_built(
    store: ScriptedStore, clock: FakeClock
) -> None:
    hub = BreakerHub(store, background=False, clock=clock)
    breaker = shared(hub, clock, open_duration=5.0)
    store.last = reply("open", EPOCH, remaining=5.0)
    hub.exchange()
    clock.advance(5.0)
    hub.close()
    hub.close()
    assert not hub.exchange()
    assert store.closed == 0  # the caller's store
    assert breaker.call(ok) == "ok"  # a local breaker now: trials need no lease
    assert "breakers=1" in repr(hub)


def test_a_listener_may_close_the_sync(store: ScriptedStore, clock: FakeClock) -> None:
    hub = BreakerHub(store, background=False, clock=clock)
    breaker = shared(hub, clock)
    breaker.subscribe(lambda event: hub.close(), CircuitStateChanged)
    store.last = reply("half_open", EPOCH, reason="open_duration_elapsed")
    assert not hub.exchange()
    assert hub.closed
    assert breaker.call(ok) == "ok"  # alone: its own trial permit


def test_the_thread_syncs_at_once_on_a_trip(store: ScriptedStore) -> None:
    synced = threading.Event()

    class Signalling(ScriptedStore):
        def exchange(
            self,
            owner: str,
            reports: Sequence[BreakerReport],
            lease: float,
            now: float | None = None,
        ) -> list[BreakerReply]:
            answer = super().exchange(owner, reports, lease, now)
            if any(r.proposal for r in reports):
                synced.set()
            return answer

    # A long interval: only the wake-up can make the sync happen within the test.
    with BreakerHub(Signalling(), interval=3600.0) as hub:
        breaker = CircuitBreaker(name="pay", window=2, min_calls=2, hub=hub)
        failing(breaker, 2)
        assert synced.wait(10)
    assert hub._thread is not None
    assert not hub._thread.is_alive()


def test_the_thread_survives_a_bug(caplog: pytest.LogCaptureFixture) -> None:
    done = threading.Event()
    calls: list[int] = []

    class Buggy(ScriptedStore):
        def exchange(
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
            return super().exchange(owner, reports, lease, now)

    with BreakerHub(Buggy(), interval=0.01) as hub:
        breaker = CircuitBreaker(name="pay", hub=hub)
        assert done.wait(10)
        assert breaker.state is CLOSED
    assert "breaker hub 'breaker-hub' failed" in caplog.text


def test_a_breaker_store_is_a_protocol() -> None:
    assert isinstance(ScriptedStore(), BreakerStore)


# ------------------------------------------------------------------- idle breakers


def thread_exchange(hub: BreakerHub) -> None:
    """One round of the hub's thread (which skips breakers with nothing to tell)."""
    hub._exchange(everyone=False)


def names_exchanged(store: ScriptedStore) -> list[str]:
    names = [report.name for report in store.reports]
    store.reports.clear()
    return names


def test_idle_interval_defaults_and_takes_a_timedelta(store: ScriptedStore) -> None:
    with BreakerHub(store, background=False) as hub:
        assert (hub.interval, hub.idle_interval) == (0.1, 1.0)
    with BreakerHub(store, background=False, interval=0.5, lease=5.0) as hub:
        assert hub.idle_interval == 5.0
    with BreakerHub(store, background=False, idle_interval=timedelta(seconds=3)) as hub:
        assert hub.idle_interval == 3.0


def test_an_idle_breaker_is_exchanged_every_idle_interval(
    store: ScriptedStore, clock: FakeClock
) -> None:
    with BreakerHub(store, background=False, clock=clock) as hub:
        busy = shared(hub, clock, name="busy", window=1, min_calls=1)
        quiet = shared(hub, clock, name="quiet", window=1, min_calls=1)
        thread_exchange(hub)  # both join
        assert sorted(names_exchanged(store)) == ["busy", "quiet"]
        for _ in range(9):
            clock.advance(0.1)
            busy.call(ok)
            thread_exchange(hub)
            assert names_exchanged(store) == ["busy"]  # the quiet one dozes
        clock.advance(0.2)
        thread_exchange(hub)  # a second has passed: the quiet one is due
        assert names_exchanged(store) == ["quiet"]
        assert quiet.shared_metrics is not None


def test_the_first_call_of_a_dozing_breaker_wakes_the_hub(
    store: ScriptedStore, clock: FakeClock
) -> None:
    with BreakerHub(store, background=False, clock=clock) as hub:
        breaker = shared(hub, clock, window=1, min_calls=1)
        breaker.call(ok)
        thread_exchange(hub)
        clock.advance(0.1)
        thread_exchange(hub)  # nothing to tell: it dozes
        assert engine_of(breaker).fast == 0  # the lock-free path is closed to one call
        names_exchanged(store)
        hub._wake.clear()
        breaker.call(ok)
        assert hub._wake.is_set()  # the hub hears from the first call at once
        thread_exchange(hub)
        assert [(r.name, r.calls) for r in store.reports] == [("pay", 1)]
        assert engine_of(breaker).fast  # and the lock-free path is open again


def test_a_dozing_breaker_wakes_even_before_its_call_ends(
    store: ScriptedStore, clock: FakeClock
) -> None:
    with BreakerHub(store, background=False, clock=clock) as hub:
        breaker = shared(hub, clock, window=1, min_calls=1)
        thread_exchange(hub)
        thread_exchange(hub)
        names_exchanged(store)
        with breaker:  # admitted; its outcome is not known yet
            thread_exchange(hub)  # woken by the admission: exchanged all the same
            assert names_exchanged(store) == ["pay"]


def test_tallied_successes_are_not_lost_by_dozing(store: ScriptedStore, clock: FakeClock) -> None:
    with BreakerHub(store, background=False, clock=clock) as hub:
        breaker = shared(hub, clock, window=1, min_calls=1)
        breaker.call(ok)
        thread_exchange(hub)
        names_exchanged(store)
        for _ in range(5):  # lock-free successes, tallied
            breaker.call(ok)
        assert not engine_of(breaker).doze()  # it has something to tell
        thread_exchange(hub)
        assert [r.calls for r in store.reports] == [5]


def test_a_transition_of_a_dozing_breaker_is_exchanged_at_once(
    store: ScriptedStore, clock: FakeClock
) -> None:
    with BreakerHub(store, background=False, clock=clock) as hub:
        breaker = shared(hub, clock)
        thread_exchange(hub)
        thread_exchange(hub)
        names_exchanged(store)
        breaker.isolate()
        thread_exchange(hub)
        assert [r.proposal for r in store.reports] == ["isolated"]


def test_while_the_store_is_down_every_breaker_is_retried_every_interval(
    store: ScriptedStore, clock: FakeClock
) -> None:
    with BreakerHub(store, background=False, clock=clock) as hub:
        breaker = shared(hub, clock)
        thread_exchange(hub)
        clock.advance(0.1)
        thread_exchange(hub)  # dozing: the store is not asked
        assert names_exchanged(store) == ["pay"]
        store.answers = [StoreUnavailable("scripted", "down")] * 2
        clock.advance(1.0)
        thread_exchange(hub)  # due: the store fails, the breaker goes on alone
        assert hub.degraded
        for _ in range(2):  # alone, it has to re-join: it does not doze
            clock.advance(0.1)
            thread_exchange(hub)
        assert names_exchanged(store) == ["pay", "pay", "pay"]
        assert not hub.degraded
        assert breaker.shared_metrics is not None

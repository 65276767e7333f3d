"""Degradation: levels, conditions, throttled evaluation, recovery, override, events."""

from __future__ import annotations

import enum
import gc
import itertools
import logging
import threading
from dataclasses import dataclass
from datetime import timedelta

import pytest

import buttress
from buttress import (
    Condition,
    ConfigError,
    Degradation,
    DegradationChanged,
    ErrorBudget,
    Event,
    FakeClock,
    LatencyBudget,
    subscribe,
)
from buttress.policies.budget import DegradationOptions, is_healthy, live

LEVELS = {
    "full": {"recommendations", "search", "checkout"},
    "reduced": {"search", "checkout"},
    "minimal": {"checkout"},
}


class Switch:
    """A condition the test turns on and off, counting how often it is asked."""

    def __init__(self) -> None:
        self.on = False
        self.asked = 0

    def __call__(self) -> bool:
        self.asked += 1
        return self.on


def test_options_are_checked() -> None:
    for levels, path in [
        ({}, "levels"),
        ({"full": "search"}, "levels.full"),
        ({"full": {""}}, "levels.full"),
        ({" full": {"a"}}, "levels"),
        ([("full", {"a"})], "levels"),
    ]:
        with pytest.raises(ConfigError) as info:
            Degradation(levels)  # type: ignore[arg-type]
        assert info.value.path == path, levels
    with pytest.raises(ConfigError) as info:
        Degradation(LEVELS, check_interval=-1)
    assert info.value.path == "check_interval"
    with pytest.raises(ConfigError) as info:
        Degradation(LEVELS, when={"partial": Switch()})
    assert info.value.path == "when.partial"
    with pytest.raises(ConfigError) as info:
        Degradation(LEVELS, when={"full": Switch()})
    assert info.value.path == "when.full"
    with pytest.raises(ConfigError) as info:
        Degradation(LEVELS, when={"reduced": [Switch(), 3]})  # type: ignore[list-item]
    assert info.value.path == "when.reduced[1]"

    async def check() -> bool:
        return True

    with pytest.raises(ConfigError, match="async"):
        Condition(check)
    with pytest.raises(ConfigError) as info:
        Degradation(LEVELS, when={"reduced": [check]})
    assert info.value.path == "when.reduced[0]"
    options = DegradationOptions(levels=LEVELS, recover_after=timedelta(seconds=30))
    assert options.recover_after == 30.0
    assert options.replace(check_interval=2).levels == options.levels
    assert Degradation.from_options(options).levels == ("full", "reduced", "minimal")


def test_allows_follows_the_lowest_level_whose_condition_holds() -> None:
    clock = FakeClock()
    busy, down = Switch(), Switch()
    degradation = Degradation(
        LEVELS, when={"reduced": busy, "minimal": [Switch(), down]}, clock=clock
    )
    assert degradation.allows("recommendations")
    assert degradation.level == "full"
    busy.on = True
    clock.advance(1)
    assert not degradation.allows("recommendations")
    assert degradation.allows("search")
    assert degradation.level == "reduced"
    down.on = True
    clock.advance(1)
    assert degradation.features == {"checkout"}
    busy.on = down.on = False
    clock.advance(1)
    assert degradation.level == "full"
    with pytest.raises(ConfigError) as info:
        degradation.allows("recomendations")  # a typo is an error, not a quiet False
    assert info.value.path == "feature"


def test_evaluation_is_throttled_on_the_clock() -> None:
    clock = FakeClock()
    busy = Switch()
    degradation = Degradation(LEVELS, when={"reduced": busy}, check_interval=5, clock=clock)
    for _ in range(100):
        degradation.allows("search")
    assert busy.asked == 1
    busy.on = True
    clock.advance(4.9)
    assert degradation.allows("recommendations")  # not evaluated yet
    clock.advance(0.1)
    assert not degradation.allows("recommendations")
    assert busy.asked == 2
    busy.on = False
    assert degradation.evaluate() == "full"  # at once
    assert busy.asked == 3


def test_recovery_waits_for_recover_after() -> None:
    clock = FakeClock()
    busy = Switch()
    degradation = Degradation(
        LEVELS, when={"reduced": busy}, check_interval=0, recover_after=30, clock=clock
    )
    busy.on = True
    assert degradation.level == "reduced"
    busy.on = False
    assert degradation.level == "reduced"
    clock.advance(20)
    busy.on = True  # flapping back restarts the wait
    assert degradation.level == "reduced"
    busy.on = False
    clock.advance(29)
    assert degradation.level == "reduced"  # the first evaluation to see it clear: t=49
    clock.advance(29)
    assert degradation.level == "reduced"
    clock.advance(1)
    assert degradation.level == "full"


def test_events_on_every_change_and_overrides() -> None:
    clock = FakeClock()
    busy = Switch()
    degradation = Degradation(
        LEVELS, when={"reduced": Condition(busy, name="busy")}, name="shop", clock=clock
    )
    seen: list[DegradationChanged] = []
    degradation.subscribe(seen.append, DegradationChanged)
    everywhere: list[Event] = []
    stop = subscribe(everywhere.append, DegradationChanged)
    try:
        busy.on = True
        assert degradation.evaluate() == "reduced"
        degradation.force("minimal")
        assert degradation.forced
        assert degradation.level == "minimal"
        busy.on = False
        clock.advance(5)
        assert degradation.level == "minimal"  # held
        degradation.release()
        degradation.release()  # nothing more
        assert degradation.level == "full"
        degradation.force("full")  # no change, no event
    finally:
        stop()
    assert [(e.policy, e.old, e.new, e.reason, e.condition) for e in seen] == [
        ("shop", "full", "reduced", "condition", "busy"),
        ("shop", "reduced", "minimal", "forced", ""),
        ("shop", "minimal", "full", "released", ""),
    ]
    assert everywhere == seen
    with pytest.raises(ConfigError) as info:
        degradation.force("none")
    assert info.value.path == "level"


def test_a_raising_condition_holds_and_is_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()

    def broken() -> bool:
        raise RuntimeError("probe exploded")

    degradation = Degradation(LEVELS, when={"minimal": broken}, check_interval=0, clock=clock)
    with caplog.at_level(logging.WARNING, logger="buttress.budget"):
        assert degradation.level == "minimal"
        assert degradation.level == "minimal"
    assert len([r for r in caplog.records if "raised" in r.getMessage()]) == 1


class Status(enum.Enum):
    PASS = "pass"
    FAIL = "fail"


@dataclass
class Result:
    status: object


@dataclass
class Check:
    name: str
    healthy: bool


def test_health_answers_are_read_every_way() -> None:
    assert is_healthy(True)
    assert not is_healthy(False)
    assert is_healthy("pass")
    assert is_healthy("UP")
    assert is_healthy("warn")
    assert not is_healthy("fail")
    assert not is_healthy(None)
    assert not is_healthy(object())
    assert is_healthy(Result(Status.PASS))
    assert not is_healthy(Result(Status.FAIL))
    assert is_healthy(Result("ok"))
    assert not is_healthy(Result(False))
    assert is_healthy(Check("db", True))

    clock = FakeClock()
    db = Check("db", True)
    answers = iter([True, False, Result("fail"), Result("pass")])
    cache = Condition.unhealthy(lambda: next(answers), name="cache")
    condition = Condition.unhealthy(db)
    assert condition.name == "unhealthy(db)"
    degradation = Degradation(
        LEVELS, when={"reduced": cache, "minimal": condition}, check_interval=0, clock=clock
    )
    assert degradation.level == "full"
    assert degradation.level == "reduced"
    assert degradation.level == "reduced"
    db.healthy = False
    assert degradation.level == "minimal"
    with pytest.raises(ConfigError) as info:
        Condition.unhealthy(3)
    assert info.value.path == "check"


def test_budget_conditions() -> None:
    clock = FakeClock()
    errors = ErrorBudget(0.999, name="checkout", clock=clock)
    latency = LatencyBudget(0.3, name="checkout-latency", clock=clock)
    degradation = Degradation(
        LEVELS,
        when={
            "reduced": [Condition.burning(errors), Condition.remaining_below(latency, 0.5)],
            "minimal": Condition.remaining_below(errors, 0.0),
        },
        check_interval=0,
        clock=clock,
    )
    assert degradation.level == "full"
    errors.record(True, 10_000)
    errors.record(False, 5)  # 0.05 % in the last hour: no alert; half the budget gone
    assert degradation.level == "full"
    for _ in range(100):
        latency.record(0.2)
    latency.record(1.0)  # 1 slow in 101: remaining 0.0099 of 1 %: below one half
    assert degradation.level == "reduced"
    errors.record(False, 200)  # a burst: both windows burn at ~20
    assert errors.alerting()
    assert degradation.level == "minimal"  # also overspent
    with pytest.raises(ConfigError):
        Condition.burning(latency)  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        Condition.remaining_below(errors, 2)
    with pytest.raises(ConfigError) as info:
        Condition.burning(errors, errors.options.burn_alerts[0].__class__(60, 30, 2))
    assert info.value.path == "alert"
    assert Condition.burning(errors, errors.options.burn_alerts[0]).name == "burning(checkout)"


def test_snapshot_live_and_exports() -> None:
    clock = FakeClock()
    busy = Switch()
    degradation = Degradation(LEVELS, when={"reduced": busy}, name="snap", clock=clock)
    busy.on = True
    degradation.evaluate()
    snap = degradation.snapshot()
    assert snap.name == "snap"
    assert snap.level == "reduced"
    assert not snap.forced
    assert snap.features == (("checkout", True), ("recommendations", False), ("search", True))
    assert snap.allowed == {"checkout", "search"}
    assert snap.levels == ("full", "reduced", "minimal")
    assert degradation in live()
    assert "snap" in repr(degradation)
    assert buttress.Degradation is Degradation
    assert buttress.DegradationChanged is DegradationChanged
    del degradation
    gc.collect()
    assert not [d for d in live() if d.name == "snap"]


def test_threads_ask_while_it_changes() -> None:
    clock = FakeClock()
    busy = Switch()
    degradation = Degradation(LEVELS, when={"reduced": busy}, check_interval=0, clock=clock)
    changes: list[DegradationChanged] = []
    degradation.subscribe(changes.append)
    errors: list[BaseException] = []

    def ask() -> None:
        try:
            for _ in range(2000):
                assert degradation.allows("search")
                degradation.allows("recommendations")
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=ask) for _ in range(4)]
    for thread in threads:
        thread.start()
    for _ in range(200):
        busy.on = not busy.on
    for thread in threads:
        thread.join()
    assert errors == []
    # Changes alternate: each starts where the previous one ended.
    for before, after in itertools.pairwise(changes):
        assert before.new == after.old

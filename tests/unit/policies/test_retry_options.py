"""Retry's options, its generated drivers and the names in its events.

``RetryOptions`` is frozen and validated with the shared checks: ``timedelta`` for
every duration, a ``ConfigError`` naming the option and what would be valid for
anything else. ``Retry.Options`` / ``Retry.from_options`` build a retry from one,
as the registry does from TOML.
"""

from __future__ import annotations

import dataclasses
import datetime
import math
import traceback
from typing import Any

import pytest

import buttress.policies.retry._policy as retry_policy
from buttress import CircuitOpen, Matcher, Pipeline, Retry, RetryRecovered
from buttress._events import call_name
from buttress._strategy import GeneratedDrivers, Strategy
from buttress.clock import FakeClock
from buttress.errors import ConfigError
from buttress.events import Event
from buttress.policies.backoff import Constant, Exponential, Linear
from buttress.policies.retry import RetryOptions

# ------------------------------------------------------------------------------ values


def test_durations_accept_timedelta() -> None:
    policy = Retry(
        delay=datetime.timedelta(milliseconds=250),
        max_delay=datetime.timedelta(seconds=5),
        max_elapsed=datetime.timedelta(minutes=1),
    )
    assert policy.options.delay == 0.25
    assert policy.backoff == Exponential(0.25)
    assert policy.max_delay == 5.0
    assert policy.max_elapsed == 60.0


def test_timedelta_waits_are_seconds(clock: FakeClock) -> None:
    policy = Retry(
        backoff="constant", delay=datetime.timedelta(seconds=2), jitter="none", clock=clock
    )
    failures = [ConnectionError()]

    def flaky() -> str:
        if failures:
            raise failures.pop()
        return "ok"

    assert policy.call(flaky) == "ok"
    assert clock.sleeps == [2.0]


@pytest.mark.parametrize(
    ("kwargs", "path", "says"),
    [
        ({"max_delay": 0}, "max_delay", "> 0"),
        ({"max_delay": 0.0}, "max_delay", "> 0"),
        ({"max_delay": datetime.timedelta(0)}, "max_delay", "> 0"),
        ({"max_delay": -1}, "max_delay", "> 0"),
        ({"max_delay": math.nan}, "max_delay", "number"),
        ({"max_delay": "30"}, "max_delay", "seconds"),
        ({"max_delay": False}, "max_delay", "seconds"),
        ({"max_elapsed": math.inf}, "max_elapsed", "finite"),
        ({"max_elapsed": -1.0}, "max_elapsed", "> 0"),
        ({"max_elapsed": 0}, "max_elapsed", "> 0"),
        ({"max_elapsed": math.nan}, "max_elapsed", "finite"),
        ({"max_elapsed": datetime.timedelta(seconds=-1)}, "max_elapsed", "> 0"),
        ({"delay": -0.5}, "delay", ">= 0"),
        ({"delay": math.inf}, "delay", "finite"),
        ({"delay": math.nan}, "delay", "finite"),
        ({"delay": datetime.timedelta(seconds=-1)}, "delay", ">= 0"),
        ({"max_attempts": 0}, "max_attempts", ">= 1"),
        ({"max_attempts": True}, "max_attempts", "integer"),
        ({"max_attempts": 2.0}, "max_attempts", "integer"),
        ({"max_attempts": None}, "max_attempts", "max_elapsed"),
        ({"jitter": "half"}, "jitter", "'full'"),
        ({"backoff": "quadratic"}, "backoff", "exponential"),
        ({"backoff": 3}, "backoff", "schedule"),
        ({"backoff": Constant(1.0), "delay": 1.0}, "delay", "schedule"),
        ({"retry_after": "yes"}, "retry_after", "function"),
        ({"retry_after": 1}, "retry_after", "function"),
        ({"reraise": "no"}, "reraise", "true or false"),
        ({"on": 42}, "on", "exception type"),
        ({"on": ()}, "on", "empty"),
        ({"on": KeyboardInterrupt}, "on", "propagate"),
        ({"on_result": "yes"}, "on_result", "predicate"),
        ({"random": 0.5}, "random", "function"),
        ({"clock": "monotonic"}, "clock", "Clock"),
        ({"name": " spaced "}, "name", "non-empty"),
    ],
)
def test_bad_values_name_the_option_and_what_is_valid(
    kwargs: dict[str, Any], path: str, says: str
) -> None:
    with pytest.raises(ConfigError) as info:
        Retry(**kwargs)
    assert info.value.path == path
    assert says in str(info.value)


def test_max_delay_zero_says_how_to_retry_without_waiting() -> None:
    with pytest.raises(ConfigError, match="backoff='constant', delay=0"):
        Retry(max_delay=0)


def test_infinite_max_delay_is_no_cap() -> None:
    assert Retry(max_delay=math.inf).max_delay == math.inf


# ----------------------------------------------------------------------------- objects


def test_options_are_frozen_and_kept() -> None:
    policy = Retry(5, backoff="linear", delay=0.5, on=KeyError)
    options = policy.options
    assert isinstance(options, RetryOptions)
    assert Retry.Options is RetryOptions
    assert options.kind == "retry"
    assert (options.max_attempts, options.backoff, options.delay) == (5, "linear", 0.5)
    assert options.schedule == Linear(0.5)
    assert options.matcher.names(KeyError())
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.max_attempts = 2  # type: ignore[misc]


def test_replace_validates_again() -> None:
    options = RetryOptions(max_attempts=2, backoff="constant", delay=1.0)
    assert options.replace(delay=2.0).schedule == Constant(2.0)
    with pytest.raises(ConfigError) as info:
        options.replace(max_delay=-1)
    assert info.value.path == "max_delay"


def test_from_options(clock: FakeClock) -> None:
    options = Retry.Options(max_attempts=4, backoff="constant", delay=0.5, jitter="none")
    policy = Retry.from_options(options, name="api", clock=clock)
    assert policy.name == "api"
    assert policy.options is options
    assert policy.max_attempts == 4
    outcomes: list[str | Exception] = [ConnectionError(), ConnectionError(), "ok"]

    def flaky() -> str:
        outcome = outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    assert policy.call(flaky) == "ok"
    assert clock.sleeps == [0.5, 0.5]


def test_from_options_refuses_anything_else() -> None:
    with pytest.raises(ConfigError) as info:
        Retry.from_options({"max_attempts": 3})  # type: ignore[arg-type]
    assert info.value.path == "options"


def test_from_a_configuration_table(clock: FakeClock) -> None:
    options = RetryOptions.from_mapping(
        {
            "max-attempts": 3,
            "delay": 0.2,
            "jitter": "none",
            "on": ["ConnectionError", "CircuitOpen"],
        },
        path="policies.api",
    )
    assert options.on == (ConnectionError, CircuitOpen)
    policy = Retry.from_options(options, name="api", clock=clock)
    outcomes: list[object] = [CircuitOpen("b", 1.0, 0.1), ConnectionError(), "ok"]

    def flaky() -> object:
        outcome = outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    assert policy.call(flaky) == "ok"  # CircuitOpen is named, so it is retried
    assert clock.sleeps == [0.2, 0.4]


@pytest.mark.parametrize(
    ("table", "path"),
    [
        ({"max_delay": 0}, "policies.api.max_delay"),
        ({"max_attempts": 0}, "policies.api.max_attempts"),
        ({"on_result": "x"}, "policies.api.on_result"),
        ({"maxattempts": 3}, "policies.api.maxattempts"),
        ({"on": "NoSuchError"}, "policies.api.on"),
    ],
)
def test_configuration_errors_carry_the_key_path(table: dict[str, Any], path: str) -> None:
    with pytest.raises(ConfigError) as info:
        RetryOptions.from_mapping(table, path="policies.api")
    assert info.value.path == path


def test_code_only_options_are_not_configuration_keys() -> None:
    keys = RetryOptions.toml_keys()
    assert "max_attempts" in keys
    assert "retry_after" in keys
    assert not {"on_result", "schedule", "matcher"} & set(keys)


def test_a_matcher_object_is_accepted() -> None:
    matcher = Matcher(KeyError)
    assert Retry(on=matcher).options.matcher is matcher


# ------------------------------------------------------------------------------ events


def fetch_user() -> str:
    raise ConnectionError


class Client:
    def __init__(self) -> None:
        self.calls = 0

    def get(self) -> str:
        self.calls += 1
        if self.calls == 1:
            raise ConnectionError
        return "ok"


async def test_events_name_the_call(clock: FakeClock) -> None:
    seen: list[Event] = []
    policy = Retry(2, clock=clock)
    policy.subscribe(seen.append)
    client = Client()
    assert policy.call(client.get) == "ok"
    assert Pipeline(policy)(Client().get)() == "ok"

    async def afetch() -> str:
        return client.get()

    client.calls = 0
    assert await policy.acall(afetch) == "ok"
    names = {e.call for e in seen}
    assert names == {
        f"{__name__}.Client.get",
        f"{__name__}.test_events_name_the_call.<locals>.afetch",
    }
    assert any(isinstance(e, RetryRecovered) for e in seen)


def test_the_call_name_is_worked_out_only_for_listeners(
    monkeypatch: pytest.MonkeyPatch, clock: FakeClock
) -> None:
    named: list[object] = []
    real = call_name

    def spy(fn: object) -> str:
        named.append(fn)
        return real(fn)

    monkeypatch.setattr(retry_policy, "call_name", spy)
    policy = Retry(2, clock=clock)
    policy.call(Client().get)
    assert named == []
    policy.subscribe(lambda event: None)
    policy.call(Client().get)
    assert len(named) == 2  # RetryScheduled, RetryRecovered


# ----------------------------------------------------------------------------- drivers


def test_drivers_are_generated_not_written_per_shape() -> None:
    assert issubclass(Retry, GeneratedDrivers)
    for method in ("_sync_runner", "_async_runner", "_decorate_sync", "_decorate_async"):
        assert getattr(Retry, method) is getattr(GeneratedDrivers, method), method
    for method in ("call", "acall", "__call__"):
        assert getattr(Retry, method) is getattr(Strategy, method), method


def test_a_traceback_through_a_driver_shows_its_lines(clock: FakeClock) -> None:
    def broken() -> None:
        raise ValueError("bad")

    try:
        Retry(clock=clock).call(broken)
    except ValueError as exc:
        text = "".join(traceback.format_exception(exc))
    assert "<buttress retry sync_direct" in text
    assert "result = fn(*args, **kwargs)" in text


def test_policy_holds_no_per_instance_dict() -> None:
    assert not hasattr(Retry(), "__dict__")

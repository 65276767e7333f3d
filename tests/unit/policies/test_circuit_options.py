"""The breaker's options: one frozen, validated object; durations as timedelta; from_options."""

from __future__ import annotations

import dataclasses
import math
from datetime import timedelta
from typing import Any

import pytest

from buttress._options import Options
from buttress.clock import FakeClock
from buttress.errors import ConfigError
from buttress.policies.circuit import BreakerHub, CircuitBreaker, CircuitOptions, CircuitState
from buttress.registry import Registry

from tests.unit.policies.test_circuit_shared import ScriptedStore

DURATIONS = ["window_seconds", "slow_call_duration", "open_duration", "max_open_duration"]


def test_the_options_class_is_the_breakers() -> None:
    assert CircuitBreaker.Options is CircuitOptions
    assert issubclass(CircuitOptions, Options)
    assert CircuitOptions.kind == "circuit_breaker"
    options = CircuitBreaker().options
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.failure_ratio = 0.9  # type: ignore[misc]


def test_every_option_has_one_sentence_of_doc() -> None:
    for field in CircuitOptions.fields():
        if field.init:
            assert field.metadata["doc"].endswith("."), field.name


def test_code_only_and_exception_options_say_so() -> None:
    toml = {field.name: field.metadata["toml"] for field in CircuitOptions.fields()}
    assert toml["on"] == toml["ignore"] == toml["failure_on"] == "exceptions"
    assert toml["on_result"] is False
    assert "on_result" not in CircuitOptions.toml_keys()
    assert "matcher" not in CircuitOptions.toml_keys()


@pytest.mark.parametrize("option", DURATIONS)
def test_every_duration_takes_a_timedelta(option: str) -> None:
    value = timedelta(minutes=2, milliseconds=500)
    extra: dict[str, Any] = {"window": None} if option == "window_seconds" else {}
    options = CircuitBreaker(**{option: value}, **extra).options
    assert getattr(options, option) == 120.5
    assert type(getattr(options, option)) is float


@pytest.mark.parametrize("option", DURATIONS)
@pytest.mark.parametrize("value", [timedelta(seconds=-1), math.nan, -0.5, "1s", True])
def test_bad_durations_name_their_option(option: str, value: Any) -> None:
    with pytest.raises(ConfigError) as info:
        CircuitBreaker(**{option: value})
    assert info.value.path == option


def test_from_options_builds_the_same_breaker(clock: FakeClock) -> None:
    options = CircuitOptions(window=4, min_calls=2, open_duration=timedelta(seconds=5))
    breaker = CircuitBreaker.from_options(options, name="pay", clock=clock)
    assert isinstance(breaker, CircuitBreaker)
    assert (breaker.name, breaker.options) == ("pay", options)
    for _ in range(2):
        with pytest.raises(ConnectionError):
            breaker.call(_fail)
    assert breaker.state is CircuitState.OPEN
    assert breaker.until == 5.0


def test_from_options_shares_through_a_hub(clock: FakeClock) -> None:
    with BreakerHub(ScriptedStore(), background=False, clock=clock) as hub:
        breaker = CircuitBreaker.from_options(CircuitOptions(), name="pay", clock=clock, hub=hub)
        assert breaker.hub is hub
        assert hub.exchange()
        assert breaker.shared_metrics is not None


def test_from_options_refuses_anything_else() -> None:
    with pytest.raises(ConfigError) as info:
        CircuitBreaker.from_options({"window": 4})  # type: ignore[arg-type]
    assert info.value.path == "options"


def test_from_options_still_needs_a_name_to_share(clock: FakeClock) -> None:
    with BreakerHub(ScriptedStore(), background=False, clock=clock) as hub:
        with pytest.raises(ConfigError) as info:
            CircuitBreaker.from_options(CircuitOptions(), hub=hub)
        assert info.value.path == "name"


def test_replace_validates_again_and_switches_the_window() -> None:
    options = CircuitOptions(window=20, min_calls=5)
    assert options.replace(failure_ratio=0.9).failure_ratio == 0.9
    timed = options.replace(window_seconds=60)
    assert (timed.window, timed.window_seconds) == (None, 60.0)
    assert timed.replace(window=8).window_seconds is None
    with pytest.raises(ConfigError) as info:
        options.replace(window=4)  # min_calls 5 no longer fits
    assert info.value.path == "min_calls"


def test_options_load_from_toml_through_the_registry(tmp_path: Any) -> None:
    path = tmp_path / "buttress.toml"
    path.write_text(
        "[policies.api]\n"
        'type = "circuit_breaker"\n'
        "window = 20\n"
        "min_calls = 5\n"
        'open_duration = "1m"\n'
        'on = ["ConnectionError", "TimeoutError"]\n'
        'ignore = "KeyError"\n'
    )
    breaker = Registry.from_toml(path).get("api")
    assert isinstance(breaker, CircuitBreaker)
    assert breaker.name == "api"
    options = breaker.options
    assert (options.window, options.min_calls, options.open_duration) == (20, 5, 60.0)
    assert options.on == (ConnectionError, TimeoutError)
    assert options.ignore is KeyError


def test_toml_errors_carry_the_key_path(tmp_path: Any) -> None:
    path = tmp_path / "buttress.toml"
    path.write_text('[policies.api]\ntype = "circuit_breaker"\nwindow = 5\nmin_calls = 10\n')
    with pytest.raises(ConfigError) as info:
        Registry.from_toml(path)
    assert info.value.path == "policies.api.min_calls"


def _fail() -> None:
    raise ConnectionError("down")

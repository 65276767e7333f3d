"""The shared option checks: one message shape, the option's path, timedelta accepted."""

from __future__ import annotations

import datetime
import math

import pytest

from buttress._validate import (
    check_choice,
    check_clock,
    check_count,
    check_name,
    check_number,
    check_ratio,
    check_seconds,
    optional_seconds,
)
from buttress.clock import MONOTONIC, FakeClock
from buttress.errors import ConfigError


def test_seconds_accepts_numbers_and_timedeltas() -> None:
    assert check_seconds(2, "x") == 2.0
    assert check_seconds(0.5, "x") == 0.5
    assert check_seconds(datetime.timedelta(milliseconds=250), "x") == 0.25
    assert check_seconds(0, "x") == 0.0
    assert check_seconds(math.inf, "x", infinite=True) == math.inf
    assert optional_seconds(None, "x") is None


@pytest.mark.parametrize(
    "value", [-1, -0.001, math.nan, math.inf, "1", True, None, datetime.timedelta(seconds=-1)]
)
def test_seconds_refuses_what_is_no_duration(value: object) -> None:
    with pytest.raises(ConfigError) as caught:
        check_seconds(value, "policies.x.delay")
    assert caught.value.path == "policies.x.delay"
    assert "seconds" in str(caught.value)


def test_positive_seconds_refuse_zero() -> None:
    with pytest.raises(ConfigError, match="> 0"):
        check_seconds(0, "x", positive=True)
    with pytest.raises(ConfigError, match="> 0"):
        check_seconds(datetime.timedelta(0), "x", positive=True)


def test_counts_ratios_numbers_choices() -> None:
    assert check_count(3, "n") == 3
    for bad in (0, -1, 1.5, True, "2"):
        with pytest.raises(ConfigError, match="integer"):
            check_count(bad, "n")
    with pytest.raises(ConfigError, match="between 1 and 5"):
        check_count(6, "n", maximum=5)
    assert check_ratio(1, "r") == 1.0
    for bad in (0, 1.01, math.nan, "0.5"):
        with pytest.raises(ConfigError, match=r"\(0, 1\]"):
            check_ratio(bad, "r")
    assert check_number(2, "f", minimum=1) == 2.0
    with pytest.raises(ConfigError, match=">= 1"):
        check_number(0.5, "f", minimum=1)
    with pytest.raises(ConfigError, match="finite"):
        check_number(math.inf, "f")
    assert check_choice("full", "jitter", ("none", "full")) == "full"
    with pytest.raises(ConfigError, match="'none', 'full'"):
        check_choice("ful", "jitter", ("none", "full"))


def test_clock_and_name() -> None:
    assert check_clock(MONOTONIC) is MONOTONIC
    fake = FakeClock()
    assert check_clock(fake) is fake
    with pytest.raises(ConfigError, match="Clock") as caught:
        check_clock("x")
    assert caught.value.path == "clock"
    assert check_name(None) is None
    assert check_name("api") == "api"
    for bad in ("", " api", 3):
        with pytest.raises(ConfigError, match="non-empty string"):
            check_name(bad)

"""Rate strings, the notation of limits and slowapi, wherever a limit is taken."""

from __future__ import annotations

import pytest

from buttress.errors import ConfigError
from buttress.ratelimit import (
    GCRA,
    FixedWindow,
    RateLimiter,
    SlidingWindow,
    TokenBucket,
    parse_rates,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("10/second", (FixedWindow(10, 1.0),)),
        ("10/seconds", (FixedWindow(10, 1.0),)),
        ("10/SECOND", (FixedWindow(10, 1.0),)),
        ("5 per minute", (FixedWindow(5, 60.0),)),
        ("100 per 2 hours", (FixedWindow(100, 7200.0),)),
        ("3 / 10 seconds", (FixedWindow(3, 10.0),)),
        ("1000/day", (FixedWindow(1000, 86400.0),)),
        ("1/month | 2/year", (FixedWindow(1, 30 * 86400.0), FixedWindow(2, 360 * 86400.0))),
        ("10/second; 1000/hour", (FixedWindow(10, 1.0), FixedWindow(1000, 3600.0))),
        ("10/second, 1000/hour;", (FixedWindow(10, 1.0), FixedWindow(1000, 3600.0))),
    ],
)
def test_the_notation_of_limits(text: str, expected: tuple[object, ...]) -> None:
    assert parse_rates(text) == expected


def test_algorithm_is_chosen_by_name() -> None:
    assert parse_rates("10/minute", algorithm="sliding_window") == (SlidingWindow(10, 60.0),)
    assert parse_rates("10/minute", algorithm="token_bucket") == (TokenBucket(10, 60.0, burst=10),)
    assert parse_rates("10/minute", algorithm="gcra") == (GCRA(10, 60.0, burst=10),)
    with pytest.raises(ConfigError, match="'fixed_window', 'sliding_window'") as caught:
        parse_rates("10/minute", algorithm="leaky")
    assert caught.value.path == "algorithm"


@pytest.mark.parametrize(
    "text", ["", "  ", "10", "10/sec", "x/second", "10persecond", "10/second; junk", "0/second"]
)
def test_what_is_not_a_rate_says_so(text: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_rates(text, path="policies.api.limits")
    assert caught.value.path == "policies.api.limits"
    assert "10/second" in str(caught.value) or "at least 1" in str(caught.value)


def test_not_a_string() -> None:
    with pytest.raises(ConfigError, match="rates like"):
        parse_rates(10)  # type: ignore[arg-type]


def test_rate_limiter_takes_rate_strings_beside_algorithms() -> None:
    limiter = RateLimiter("2/second; 100/hour", GCRA(5), name="strings")
    assert limiter.limits == (FixedWindow(2, 1.0), FixedWindow(100, 3600.0), GCRA(5))
    assert limiter.hit("k").allowed
    assert limiter.hit("k").allowed
    assert not limiter.hit("k").allowed


def test_rate_limiter_names_the_bad_rate_string() -> None:
    with pytest.raises(ConfigError) as caught:
        RateLimiter(GCRA(5), "10 per fortnight")
    assert caught.value.path == "limits[1]"


def test_algorithms_describe_their_quota() -> None:
    assert TokenBucket(10, 1.0).quota == (10, 1.0)
    assert TokenBucket(1, 2.0, burst=5).quota == (5, 10.0)
    assert GCRA(100, 60.0).quota == (100, 60.0)
    assert FixedWindow(7, 30.0).quota == (7, 30.0)
    assert SlidingWindow(3, 1.5).quota == (3, 1.5)

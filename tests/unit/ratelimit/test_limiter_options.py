"""RateLimiterOptions: the limiter's settings, validated once, frozen, loadable from a table."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from datetime import timedelta
from typing import Any

import pytest

from buttress.errors import ConfigError
from buttress.ratelimit import GCRA, FixedWindow, RateLimiter, TokenBucket
from buttress.ratelimit._options import RateLimiterOptions
from buttress.stores import MemoryStore


def test_the_constructor_builds_its_options() -> None:
    limiter = RateLimiter("2/second", TokenBucket(5), mode="wait", max_wait=timedelta(seconds=3))
    options = limiter.options
    assert isinstance(options, RateLimiter.Options)
    assert options.limits == (FixedWindow(2, 1.0), TokenBucket(5))
    assert options.max_wait == 3.0
    assert limiter.max_wait == 3.0
    assert limiter.limits == options.limits
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.cost = 2  # type: ignore[misc]


def test_from_options_builds_the_same_limiter() -> None:
    options = RateLimiter.Options(limits=("1/second",), key="k", cost=1)
    first = RateLimiter.from_options(options, name="from-options")
    assert first.name == "from-options"
    assert first.allow() is True
    assert first.allow() is False  # the key "k" is the default key
    assert first.options is options


def test_from_options_refuses_anything_else() -> None:
    with pytest.raises(ConfigError) as info:
        RateLimiter.from_options({"limits": "1/second"})  # type: ignore[arg-type]
    assert info.value.path == "options"


@pytest.mark.parametrize(
    ("kwargs", "path"),
    [
        ({"limits": ()}, "limits"),
        ({"limits": ("10 per fortnight",)}, "limits[0]"),
        ({"limits": (42,)}, "limits[0]"),
        ({"limits": "1/second", "store": 3}, "store"),
        ({"limits": "1/second", "key": 3}, "key"),
        ({"limits": "1/second", "cost": 0}, "cost"),
        ({"limits": "1/second", "mode": "block"}, "mode"),
        ({"limits": "1/second", "max_wait": -1}, "max_wait"),
        ({"limits": "1/second", "max_wait": float("nan")}, "max_wait"),
    ],
)
def test_every_option_is_checked_with_its_name(kwargs: dict[str, Any], path: str) -> None:
    with pytest.raises(ConfigError) as info:
        RateLimiterOptions(**kwargs)
    assert info.value.path == path


def test_a_store_object_or_url() -> None:
    store = MemoryStore()
    assert RateLimiterOptions(limits=(GCRA(1),), store=store).store is store
    # A URL is opened (and checked) by the limiter, with the option's name.
    with pytest.raises(ConfigError) as info:
        RateLimiter("1/second", store="redis://h:notaport/0", name="bad-url")
    assert info.value.path == "store"


def test_from_mapping_reads_rate_strings_without_the_registry() -> None:
    # A fresh interpreter: buttress.registry (which reads limit tables too) not imported.
    code = (
        "import sys\n"
        "from buttress.ratelimit import RateLimiter\n"
        "options = RateLimiter.Options.from_mapping("
        "{'limits': '5/second; 100/hour', 'max_wait': 2}, path='policies.api')\n"
        "assert 'buttress.registry' not in sys.modules\n"
        "print(options.limits)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert "FixedWindow(limit=5, period=1.0)" in out
    assert "FixedWindow(limit=100, period=3600.0)" in out


def test_from_mapping_names_the_key_path() -> None:
    with pytest.raises(ConfigError) as info:
        RateLimiterOptions.from_mapping({"limits": "1/second", "cots": 2}, path="policies.api")
    assert info.value.path == "policies.api.cots"
    with pytest.raises(ConfigError) as info:
        RateLimiterOptions.from_mapping({"limits": "1/second", "cost": 0}, path="policies.api")
    assert info.value.path == "policies.api.cost"


def test_the_registry_builds_limiters_through_the_options() -> None:
    from buttress.registry import Registry

    registry = Registry.from_mapping(
        {
            "policies": {
                "api": {
                    "type": "rate_limiter",
                    "limits": ["2/second", {"type": "gcra", "rate": 5}],
                    "max_wait": "250ms",
                    "mode": "wait",
                }
            }
        }
    )
    limiter = registry.get("api")
    assert isinstance(limiter, RateLimiter)
    assert limiter.options.limits == (FixedWindow(2, 1.0), GCRA(5))
    assert limiter.options.max_wait == 0.25
    assert limiter.name == "api"

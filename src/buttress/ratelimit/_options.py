"""The options of a :class:`~buttress.ratelimit.RateLimiter`: checked once, frozen."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Literal

from buttress._options import _CONVERSIONS, Options, option, register_conversion
from buttress._validate import check_callable, check_choice, check_count, check_seconds
from buttress.errors import ConfigError
from buttress.ratelimit._rates import parse_rates
from buttress.stores import Store
from buttress.stores.base import Algorithm

__all__ = ["RateLimiterOptions", "check_limits"]

_MODES = ("reject", "wait")


def check_limits(limits: object, path: str = "limits") -> tuple[Algorithm, ...]:
    """Algorithms and rate strings (or one of either) as a non-empty tuple of algorithms."""
    if isinstance(limits, str | Algorithm):
        limits = (limits,)
    if not isinstance(limits, Sequence) or not limits:
        raise ConfigError(
            "give at least one limit, e.g. '10/second' or TokenBucket(10, 1.0)", path=path
        )
    checked: list[Algorithm] = []
    for index, limit in enumerate(limits):
        if isinstance(limit, str):
            checked.extend(parse_rates(limit, path=f"{path}[{index}]"))
        elif isinstance(limit, Algorithm):
            checked.append(limit)
        else:
            raise ConfigError(
                f"expected a rate-limit algorithm or a rate string such as '10/second', "
                f"got {type(limit).__name__}",
                path=f"{path}[{index}]",
            )
    return tuple(checked)


def _convert_limits(value: object, path: str) -> tuple[Algorithm, ...]:
    # Rate strings, or a list of them, in a mapping given to from_mapping; the
    # registry replaces this with its own, which reads limit tables too.
    return check_limits(value, path)


if "limits" not in _CONVERSIONS:
    register_conversion("limits", _convert_limits)


@dataclass(frozen=True, slots=True, kw_only=True)
class RateLimiterOptions(Options):
    """The validated settings of one ``RateLimiter`` (``limiter.options``).

    ``limits`` takes algorithms and rate strings, and is stored as a tuple of
    algorithms; ``max_wait`` accepts a :class:`datetime.timedelta` and is stored as
    seconds. ``store`` is a URL (checked when the limiter opens it) or a
    :class:`~buttress.stores.Store`; ``key`` a string or, from code, a function of the
    call's arguments.
    """

    kind = "rate_limiter"

    limits: tuple[Algorithm, ...] = option(
        toml="limits",
        doc="The limits every key is held to, decided together: algorithms or rate strings.",
    )
    store: str | Store = option(
        "memory://",
        doc="Where the limits' state lives: a URL such as memory:// or redis://host:6379/0.",
    )
    key: str | Callable[..., str] = option(
        "global",
        doc="The key a call is limited under (from code, also a function of its arguments).",
    )
    cost: int = option(1, doc="What one call takes from every limit (>= 1).")
    mode: Literal["reject", "wait"] = option(
        "reject", doc="On a refusal: reject at once (RateLimited), or wait up to max_wait."
    )
    max_wait: float | timedelta = option(
        1.0, doc="The longest a call waits in mode wait, in seconds, before it is rejected."
    )

    def __post_init__(self) -> None:
        self._set("limits", check_limits(self.limits))
        if not isinstance(self.store, str | Store):
            raise ConfigError(
                f"expected a Store or a URL such as 'memory://', got {type(self.store).__name__}",
                path="store",
            )
        if not isinstance(self.key, str):
            check_callable(self.key, "key", "a string or a callable")
        self._set("cost", check_count(self.cost, "cost"))
        self._set("mode", check_choice(self.mode, "mode", _MODES))
        self._set("max_wait", check_seconds(self.max_wait, "max_wait"))

"""Option checks shared by every policy, store and the registry.

Each check takes a value and the path of the option it was given for, and returns the
value normalised (an ``int``, a ``float`` of seconds) or raises
:class:`~buttress.errors.ConfigError` whose ``path`` names the option and whose
message says what would have been valid. Policies run them once, when they are
built; the registry runs the very same checks on values read from TOML, so a bad
value reads the same wherever it came from.

Durations are seconds as ``int``/``float`` or a :class:`datetime.timedelta`,
everywhere. ``bool`` is never a number here: ``Retry(max_attempts=True)`` is a
mistake, not ``1``.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from buttress.errors import ConfigError

__all__ = [
    "check_callable",
    "check_choice",
    "check_clock",
    "check_count",
    "check_name",
    "check_number",
    "check_ratio",
    "check_seconds",
    "optional_seconds",
]

T = TypeVar("T")


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def check_seconds(
    value: object,
    path: str,
    *,
    positive: bool = False,
    infinite: bool = False,
) -> float:
    """A duration in seconds: a number or a ``timedelta``, never NaN or negative.

    ``positive`` also refuses zero; ``infinite`` allows ``math.inf`` (meaning "no
    limit").
    """
    datetime = sys.modules.get("datetime")  # not imported: no timedelta can exist
    if datetime is not None and isinstance(value, datetime.timedelta):
        seconds = float(value.total_seconds())
    elif _is_number(value):
        seconds = float(value)  # type: ignore[arg-type]  # a number, checked just above
    else:
        raise ConfigError(f"must be a number of seconds or a timedelta, got {value!r}", path=path)
    bound = "> 0" if positive else ">= 0"
    kind = "a number" if infinite else "a finite number"
    if math.isnan(seconds) or (not infinite and math.isinf(seconds)):
        raise ConfigError(f"must be {kind} of seconds {bound}, got {value!r}", path=path)
    if seconds < 0 or (positive and seconds == 0):
        raise ConfigError(f"must be {kind} of seconds {bound}, got {value!r}", path=path)
    return seconds


def optional_seconds(
    value: object, path: str, *, positive: bool = False, infinite: bool = False
) -> float | None:
    """:func:`check_seconds`, with ``None`` passed through (meaning "off")."""
    if value is None:
        return None
    return check_seconds(value, path, positive=positive, infinite=infinite)


def check_number(
    value: object,
    path: str,
    *,
    minimum: float | None = None,
    above: float | None = None,
    maximum: float | None = None,
) -> float:
    """A finite number, optionally ``>= minimum``, ``> above`` and ``<= maximum``."""
    if not _is_number(value) or not math.isfinite(value):  # type: ignore[arg-type]
        raise ConfigError(f"must be a finite number, got {value!r}", path=path)
    number = float(value)  # type: ignore[arg-type]
    if minimum is not None and number < minimum:
        raise ConfigError(f"must be >= {minimum:g}, got {value!r}", path=path)
    if above is not None and number <= above:
        raise ConfigError(f"must be > {above:g}, got {value!r}", path=path)
    if maximum is not None and number > maximum:
        raise ConfigError(f"must be <= {maximum:g}, got {value!r}", path=path)
    return number


def check_ratio(value: object, path: str) -> float:
    """A share of calls: a number in (0, 1]."""
    if not _is_number(value) or not 0.0 < value <= 1.0:  # type: ignore[operator]
        raise ConfigError(f"must be a number in (0, 1], got {value!r}", path=path)
    return float(value)  # type: ignore[arg-type]


def check_count(value: object, path: str, *, minimum: int = 1, maximum: int | None = None) -> int:
    """A whole number ``>= minimum`` (and ``<= maximum``)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"must be an integer >= {minimum}, got {value!r}", path=path)
    if value < minimum:
        raise ConfigError(f"must be an integer >= {minimum}, got {value!r}", path=path)
    if maximum is not None and value > maximum:
        raise ConfigError(
            f"must be an integer between {minimum} and {maximum}, got {value!r}", path=path
        )
    return value


def check_choice(value: object, path: str, choices: Iterable[T]) -> T:
    """One of ``choices`` (compared with ``==``)."""
    options = tuple(choices)
    for option in options:
        if value == option and type(value) is type(option):
            return option
    listed = ", ".join(repr(option) for option in options)
    raise ConfigError(f"must be one of {listed}, got {value!r}", path=path)


def check_callable(value: object, path: str, what: str = "a callable") -> Callable[..., Any]:
    """Something that can be called."""
    if not callable(value):
        raise ConfigError(f"must be {what}, got {value!r}", path=path)
    return value


def check_clock(value: object, path: str = "clock") -> Any:
    """A :class:`~buttress.clock.Clock`: something with the clock's methods.

    Checked by the methods a policy uses, so a hand-written clock that is not a
    subclass of anything still passes.
    """
    for method in ("monotonic", "time", "sleep", "asleep", "call_later", "wait"):
        if not callable(getattr(value, method, None)):
            raise ConfigError(
                f"must be a Clock (such as buttress.MONOTONIC or a FakeClock), got {value!r}: "
                f"it has no {method}() method",
                path=path,
            )
    return value


def check_name(value: object, path: str = "name") -> str | None:
    """A policy name: a non-empty string without surrounding whitespace, or ``None``."""
    if value is None:
        return None
    if not isinstance(value, str) or not value or value != value.strip():
        raise ConfigError(
            f"must be a non-empty string without surrounding spaces, got {value!r}", path=path
        )
    return value

"""Rate strings: ``"10/second; 1000/hour"``, the notation limits and slowapi use.

A rate is ``<count> / <unit>`` or ``<count> per <n> <unit>``: ``"10/second"``,
``"5 per minute"``, ``"100 per 2 hours"``, ``"1000/day"``. Units are ``second``,
``minute``, ``hour``, ``day``, ``month`` (30 days) and ``year`` (360 days, as limits
counts them), with or without a plural ``s``. Several rates are separated by ``;``,
``,`` or ``|``; each becomes one limit, and a request must pass them all.

Each rate becomes a fixed window by default, as in limits and slowapi: at most
*count* per *period*, windows aligned on the clock, so a refused caller waits at most
until the window ends (``"1/minute"`` answers ``Retry-After`` of at most 60 s).
``algorithm=`` picks another: ``"sliding_window"`` (no double burst across a window
boundary, but a refusal can last up to two periods), ``"token_bucket"`` or ``"gcra"``
(a burst of *count*, then a steady *count* per *period*).
"""

from __future__ import annotations

import re
from collections.abc import Callable

from buttress.errors import ConfigError
from buttress.ratelimit._algorithms import GCRA, FixedWindow, SlidingWindow, TokenBucket
from buttress.stores.base import Algorithm

__all__ = ["RATE_ALGORITHMS", "parse_rates"]

_UNITS = {
    "second": 1.0,
    "minute": 60.0,
    "hour": 3600.0,
    "day": 86_400.0,
    "month": 30 * 86_400.0,
    "year": 360 * 86_400.0,
}

_RATE = re.compile(
    r"\s*(?P<count>[0-9]+)\s*(?:/|\s+per\s+)\s*(?P<n>[0-9]+)?\s*(?P<unit>[a-z]+?)s?\s*",
    re.IGNORECASE,
)
_SEPARATORS = re.compile(r"[;,|]")

RATE_ALGORITHMS: dict[str, Callable[[int, float], Algorithm]] = {
    "fixed_window": FixedWindow,
    "sliding_window": SlidingWindow,
    "token_bucket": lambda count, period: TokenBucket(count, period, burst=count),
    "gcra": lambda count, period: GCRA(count, period, burst=count),
}
"""What ``algorithm=`` accepts: a name to a ``(count, period) -> limit`` factory."""

_EXPECTED = (
    "expected rates like '10/second', '5 per minute' or '100 per 2 hours', "
    "separated by ';' (units: second, minute, hour, day, month, year)"
)


def parse_rates(
    text: str, *, algorithm: str = "fixed_window", path: str = "limits"
) -> tuple[Algorithm, ...]:
    """The limits a rate string describes, one per rate, in order.

    ``parse_rates("10/second; 1000/hour")`` is
    ``(FixedWindow(10, 1.0), FixedWindow(1000, 3600.0))``. ``algorithm`` is one of
    :data:`RATE_ALGORITHMS` (``"fixed_window"``, ``"sliding_window"``,
    ``"token_bucket"``, ``"gcra"``; a bucket's burst is the count). A string that is
    not such a list raises :class:`~buttress.errors.ConfigError` at ``path``, quoting
    the part it could not read.
    """
    if not isinstance(text, str):
        raise ConfigError(f"{_EXPECTED}; got {text!r}", path=path)
    factory = RATE_ALGORITHMS.get(algorithm)
    if factory is None:
        names = ", ".join(repr(name) for name in RATE_ALGORITHMS)
        raise ConfigError(f"must be one of {names}, got {algorithm!r}", path="algorithm")
    parts = _SEPARATORS.split(text)
    if not text.strip():
        raise ConfigError(f"{_EXPECTED}; got an empty string", path=path)
    limits: list[Algorithm] = []
    for part in parts:
        if not part.strip() and len(parts) > 1:
            continue  # "10/second;" or "a; ; b": a stray separator
        match = _RATE.fullmatch(part)
        unit = match.group("unit").lower() if match else ""
        if match is None or unit not in _UNITS:
            raise ConfigError(f"{_EXPECTED}; cannot read {part.strip()!r}", path=path)
        count = int(match.group("count"))
        multiple = int(match.group("n") or 1)
        if count < 1 or multiple < 1:
            raise ConfigError(
                f"a rate needs a count and a period of at least 1, got {part.strip()!r}",
                path=path,
            )
        limits.append(factory(count, multiple * _UNITS[unit]))
    return tuple(limits)

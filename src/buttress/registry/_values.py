"""What a configuration file can say that Python code says otherwise: durations.

TOML has numbers and strings but no durations, so a duration option takes either a
number of seconds (``2.5``) or a string with units (``"250ms"``, ``"2s"``,
``"1m30s"``, ``"1h"``), the notation of Go, Envoy and systemd that people write in
configuration files without thinking. Both become a ``float`` of seconds, which
every policy accepts wherever it takes a ``timedelta``.
"""

from __future__ import annotations

import datetime
import re

from buttress.errors import ConfigError

__all__ = ["DURATION_UNITS", "convert_seconds", "parse_duration"]

DURATION_UNITS: dict[str, float] = {
    "ms": 0.001,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
    "d": 86_400.0,
}
"""The units a duration string may use, in seconds."""

# Compiled on first use (by re's cache): most programs never read a duration string.
_PART = r"\s*([0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*(ms|s|m|h|d)"

_EXPECTED = "expected seconds as a number, or a duration such as '250ms', '2s', '1m30s' or '1h'"


def parse_duration(text: str, path: str) -> float:
    """Seconds in a duration string: ``"250ms"`` is 0.25, ``"1m30s"`` is 90.0.

    A number followed by a unit (``ms``, ``s``, ``m``, ``h``, ``d``), one or more
    times, spaces allowed between. Anything else raises
    :class:`~buttress.errors.ConfigError` at ``path``.
    """
    part = re.compile(_PART, re.IGNORECASE)
    position = 0
    total = 0.0
    stripped = text.strip()
    while position < len(stripped):
        match = part.match(stripped, position)
        if match is None:
            raise ConfigError(f"{_EXPECTED}; got {text!r}", path=path)
        total += float(match.group(1)) * DURATION_UNITS[match.group(2).lower()]
        position = match.end()
    if position == 0:
        raise ConfigError(f"{_EXPECTED}; got {text!r}", path=path)
    return total


def convert_seconds(value: object, path: str) -> object:
    """A duration option's value from a file: a string with units becomes seconds.

    Numbers and ``timedelta`` pass through unchanged, for the option's own check to
    judge (it refuses negatives, NaN, booleans); only strings are read here.
    """
    if isinstance(value, str):
        return parse_duration(value, path)
    if isinstance(value, datetime.time):
        # TOML's local time (``delay = 00:00:02``) reads as a time of day; say what
        # was meant rather than let the check print a time object.
        raise ConfigError(f"{_EXPECTED}; got the time of day {value.isoformat()}", path=path)
    return value

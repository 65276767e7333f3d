"""Small helpers that write PromQL: durations and selectors."""

from __future__ import annotations

import math

from buttress.errors import ConfigError

__all__ = ["duration", "selector", "window_label"]

_UNITS = (("d", 86400), ("h", 3600), ("m", 60), ("s", 1))


def duration(seconds: float) -> str:
    """``seconds`` as a Prometheus duration: ``300`` → ``"5m"``, ``5400`` → ``"1h30m"``."""
    if not math.isfinite(seconds) or seconds <= 0:
        raise ConfigError(f"must be a positive number of seconds, got {seconds!r}")
    millis = round(seconds * 1000)
    if millis % 1000:
        return f"{millis}ms"
    left = millis // 1000
    parts = []
    for unit, size in _UNITS:
        count, left = divmod(left, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)


def window_label(seconds: float) -> str:
    """The ``window`` label the error budget exports for a window: whole seconds."""
    if not math.isfinite(seconds) or seconds <= 0 or seconds != int(seconds):
        raise ConfigError(f"a budget window is a whole number of seconds, got {seconds!r}")
    return str(int(seconds))


def selector(metric: str, *matchers: str, extra: str = "") -> str:
    """``metric{matchers, extra}``: ``extra`` (say ``job="api"``) is added to every selector."""
    inside = [m for m in (*matchers, extra) if m]
    return f"{metric}{{{', '.join(inside)}}}" if inside else metric

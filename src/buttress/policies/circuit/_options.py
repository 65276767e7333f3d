"""The circuit breaker's options: checked once, when the breaker is built, then frozen.

Every value is validated here, with the checks every policy uses
(:mod:`buttress._validate`), so a bad one fails at construction with the option's
name (``ConfigError(path="min_calls")``), never at the first call in production.
Durations are seconds or a :class:`~datetime.timedelta` and are kept as ``float``
seconds. What counts as a failure (``on``, ``on_result``, ``ignore``) is checked
by building the matcher it describes (:func:`buttress._outcome.as_matcher`); the
engine builds it again, once, from the same values.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from datetime import timedelta
from typing import Any, TypeAlias

from buttress._options import Options, option
from buttress._outcome import Matcher, OnErrors, as_matcher
from buttress._validate import (
    check_count,
    check_number,
    check_ratio,
    check_seconds,
    optional_seconds,
)
from buttress.errors import ConfigError

__all__ = ["DEFAULT_MIN_CALLS", "DEFAULT_WINDOW", "CircuitOptions", "ExceptionFilter"]

ExceptionFilter: TypeAlias = (
    type[Exception] | tuple[type[Exception], ...] | Callable[[Exception], object]
)
"""An exception type, a tuple of them, or a predicate taking the exception (``ignore=``)."""

DEFAULT_WINDOW = 100
"""Calls in the count window when neither ``window`` nor ``window_seconds`` is given."""

DEFAULT_MIN_CALLS = 10
"""Outcomes the window must hold before a ratio can trip, unless the window is smaller."""


def _optional_count(value: object, path: str) -> int | None:
    return None if value is None else check_count(value, path)


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class CircuitOptions(Options):
    """The validated settings of one :class:`~buttress.policies.circuit.CircuitBreaker`.

    The breaker keeps them as ``breaker.options``; ``CircuitBreaker.from_options``
    builds a breaker from them (the registry does so from TOML). Once built, defaults
    that depend on other options are resolved: ``window`` is ``None`` for a time
    window and the count otherwise (100 by default), ``min_calls`` and
    ``half_open_successes`` are numbers, durations are ``float`` seconds, and
    ``failure_on`` has been moved to ``on``.
    """

    kind = "circuit_breaker"

    failure_ratio: float = option(
        0.5, doc="Trip when this share of the calls in the window failed (0 < ratio <= 1)."
    )
    min_calls: int | None = option(
        None,
        doc="Outcomes the window must hold before a ratio can trip the breaker: 10, or "
        "the size of a smaller count window; at most window.",
    )
    window: int | None = option(
        None,
        doc="Count window: the last this many calls (100 unless window_seconds is given).",
    )
    window_seconds: float | timedelta | None = option(
        None,
        doc="Time window instead: the calls of the last this many seconds, in 10 to 600 buckets.",
    )
    consecutive_failures: int | None = option(
        None, doc="Also trip after this many failures in a row (off when unset)."
    )
    slow_call_duration: float | timedelta | None = option(
        None,
        doc="A call taking this long or longer is slow (off when unset: the clock is "
        "then never read).",
    )
    slow_call_ratio: float = option(
        1.0, doc="Trip when this share of the calls in the window was slow (0 < ratio <= 1)."
    )
    open_duration: float | timedelta = option(
        30.0, doc="How long the breaker stays open before it lets trial calls through."
    )
    open_duration_factor: float = option(
        1.0,
        doc="Each failed trial multiplies the next open duration by this (1 keeps it fixed).",
    )
    max_open_duration: float | timedelta = option(
        300.0, doc="The open duration never grows beyond this."
    )
    half_open_calls: int = option(1, doc="Trial calls allowed at once while half-open.")
    half_open_successes: int | None = option(
        None, doc="Successful trials that close the breaker (default: half_open_calls)."
    )
    on: OnErrors | None = option(
        None,
        toml="exceptions",
        doc="The errors that count as failures (replaces the default rule: transient "
        "errors and timeouts); other errors are answers and count as successes.",
    )
    on_result: Callable[[Any], object] | None = option(
        None,
        toml=False,
        doc="A predicate on returned values: true counts the call as a failure "
        "(default: an HTTP response with a transient status).",
    )
    ignore: ExceptionFilter | None = option(
        None, toml="exceptions", doc="Errors that count as nothing (checked first)."
    )
    failure_on: OnErrors | None = option(
        None, toml="exceptions", doc="The former name of on, still accepted."
    )
    matcher: Matcher = dataclasses.field(
        init=False, repr=False, compare=False, metadata={"doc": "", "toml": False}
    )
    """The outcome matcher ``on`` and ``on_result`` describe (built here, once)."""

    def __post_init__(self) -> None:
        self._set("failure_ratio", check_ratio(self.failure_ratio, "failure_ratio"))
        self._set("slow_call_ratio", check_ratio(self.slow_call_ratio, "slow_call_ratio"))
        window = _optional_count(self.window, "window")
        seconds = optional_seconds(self.window_seconds, "window_seconds", positive=True)
        if seconds is not None and window is not None:
            raise ConfigError(
                "give either window (a count of calls) or window_seconds, not both",
                path="window",
            )
        if seconds is None and window is None:
            window = DEFAULT_WINDOW
        self._set("window", window)
        self._set("window_seconds", seconds)
        min_calls = _optional_count(self.min_calls, "min_calls")
        if min_calls is None:
            min_calls = DEFAULT_MIN_CALLS if window is None else min(DEFAULT_MIN_CALLS, window)
        elif window is not None and min_calls > window:
            # A count window never holds more than ``window`` outcomes: the ratios
            # could never trip. Said now rather than silently capped.
            raise ConfigError(
                f"must be at most window ({window}): a count window never holds more "
                f"outcomes, so the ratios could never trip; got {min_calls!r}",
                path="min_calls",
            )
        self._set("min_calls", min_calls)
        self._set(
            "consecutive_failures",
            _optional_count(self.consecutive_failures, "consecutive_failures"),
        )
        self._set(
            "slow_call_duration",
            optional_seconds(self.slow_call_duration, "slow_call_duration", positive=True),
        )
        open_duration = check_seconds(self.open_duration, "open_duration")
        factor = check_number(self.open_duration_factor, "open_duration_factor", minimum=1.0)
        max_open = check_seconds(self.max_open_duration, "max_open_duration")
        if factor > 1.0 and max_open < open_duration:
            raise ConfigError(
                f"must be at least open_duration ({open_duration:g}) when it grows, "
                f"got {self.max_open_duration!r}",
                path="max_open_duration",
            )
        self._set("open_duration", open_duration)
        self._set("open_duration_factor", factor)
        self._set("max_open_duration", max(max_open, open_duration))
        half_open_calls = check_count(self.half_open_calls, "half_open_calls")
        successes = _optional_count(self.half_open_successes, "half_open_successes")
        self._set("half_open_calls", half_open_calls)
        self._set("half_open_successes", half_open_calls if successes is None else successes)
        if self.failure_on is not None:
            if self.on is not None:
                raise ConfigError(
                    "give on or its former name failure_on, not both", path="failure_on"
                )
            as_matcher(self.failure_on, path="failure_on")
            self._set("on", self.failure_on)
            self._set("failure_on", None)
        self._set("matcher", as_matcher(self.on, self.on_result))
        if self.ignore is not None:
            as_matcher(self.ignore, path="ignore")

    def replace(self, **changes: Any) -> CircuitOptions:
        """A copy with some options changed, validated again.

        Choosing one kind of window drops the other: ``replace(window_seconds=60)``
        on a count window gives a time window.
        """
        if changes.get("window_seconds") is not None and "window" not in changes:
            changes["window"] = None
        if changes.get("window") is not None and "window_seconds" not in changes:
            changes["window_seconds"] = None
        return Options.replace(self, **changes)

"""Retry's options: every setting checked once, when the policy is built.

:class:`RetryOptions` is frozen and valid by construction: a bad value raises
:class:`~buttress.errors.ConfigError` naming the option and what would be valid,
never at the first call in production. ``on=``/``on_result=`` are compiled here into
the one outcome matcher (:func:`buttress._outcome.as_matcher`) and a backoff given by
name into its schedule, so the engine never inspects their shape per call.
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Callable
from typing import Any, Literal, TypeAlias

from buttress._options import Options, option
from buttress._outcome import Matcher, Outcome, as_matcher
from buttress._validate import check_choice, check_count, check_seconds, optional_seconds
from buttress.errors import ConfigError
from buttress.policies.backoff import Backoff, backoff_from_name

__all__ = [
    "DEFAULT_DELAY",
    "JITTERS",
    "Jitter",
    "RetryAfter",
    "RetryOn",
    "RetryOptions",
    "Seconds",
]

Jitter: TypeAlias = Literal["none", "full", "equal"]
"""How a computed delay is randomised: not at all, uniformly in [0, d], or in [d/2, d]."""

RetryOn: TypeAlias = (
    Matcher | type[Exception] | tuple[type[Exception], ...] | Callable[[Exception], object]
)
"""What ``on=`` accepts: a :class:`~buttress.Matcher`, an exception type, a tuple of
them, or a predicate on the exception."""

RetryAfter: TypeAlias = bool | Callable[[Outcome[Any]], float | None]
"""What ``retry_after=`` accepts: honour the outcome's ``Retry-After`` (``True``),
ignore it (``False``), or a function reading the wait from the outcome."""

JITTERS: tuple[Jitter, ...] = ("none", "full", "equal")
DEFAULT_DELAY = 0.1

Seconds: TypeAlias = float | datetime.timedelta
"""A duration: seconds, or a ``timedelta``."""


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class RetryOptions(Options):
    """The validated settings of one :class:`~buttress.Retry` (``retry.options``).

    Durations are normalised to seconds (a ``timedelta`` is accepted); ``schedule``
    is the backoff schedule itself (``backoff`` given by name, resolved with
    ``delay``) and ``matcher`` the outcome matcher ``on``/``on_result`` describe.
    """

    kind = "retry"

    # option() makes a dataclasses.field: the RUF009 noqa marks below say so to ruff.
    max_attempts: int | None = option(
        3, doc="Attempts in all, the first included (None in code: bounded by max_elapsed only)."
    )
    backoff: Backoff | str = option(
        "exponential",
        doc="The schedule of waits, or its name: constant, linear, exponential, fibonacci, "
        "decorrelated_jitter.",
    )
    delay: Seconds | None = option(
        None, doc="The initial delay of a schedule given by name (0.1 s when left out)."
    )
    max_delay: Seconds = option(30.0, doc="The longest single wait, in seconds (> 0).")
    jitter: Jitter = option("full", doc="How each wait is randomised: full, equal or none.")
    max_elapsed: Seconds | None = option(
        None, doc="A time budget in seconds from the start of the first attempt."
    )
    on: RetryOn | None = option(
        None,
        toml="exceptions",
        doc="Which errors are retried (default: transient errors and timeouts).",
    )
    on_result: Callable[[Any], object] | None = option(
        None,
        toml=False,
        doc="A predicate on a returned value; true means retry (default: a response with a "
        "transient HTTP status).",
    )
    retry_after: RetryAfter = option(
        True,
        doc="Honour the Retry-After an error or a returned response carries (true) or ignore "
        "it (false); in code, also a function of the outcome returning seconds or None.",
    )
    reraise: bool = option(
        False,
        doc="When retries run out, raise the last error itself (or return the last result).",
    )
    schedule: Backoff = dataclasses.field(
        init=False, repr=False, compare=False, metadata={"doc": "", "toml": False}
    )
    matcher: Matcher = dataclasses.field(
        init=False, repr=False, compare=False, metadata={"doc": "", "toml": False}
    )

    def __post_init__(self) -> None:
        max_attempts = self.max_attempts
        if max_attempts is not None:
            max_attempts = check_count(max_attempts, "max_attempts")
        max_elapsed = optional_seconds(self.max_elapsed, "max_elapsed", positive=True)
        if max_attempts is None and max_elapsed is None:
            raise ConfigError(
                "must be an integer >= 1 unless max_elapsed is set: a retry must be bounded",
                path="max_attempts",
            )
        self._set("max_attempts", max_attempts)
        self._set("max_elapsed", max_elapsed)
        self._set("delay", self._schedule())
        if self.max_delay == 0 and not isinstance(self.max_delay, bool):
            raise ConfigError(
                "must be a number of seconds > 0 (math.inf for no cap), got 0: for retries "
                "without waiting, use backoff='constant', delay=0",
                path="max_delay",
            )
        self._set(
            "max_delay", check_seconds(self.max_delay, "max_delay", positive=True, infinite=True)
        )
        self._set("jitter", check_choice(self.jitter, "jitter", JITTERS))
        self._set("matcher", as_matcher(self.on, self.on_result))
        retry_after = self.retry_after
        if not isinstance(retry_after, bool) and not callable(retry_after):
            raise ConfigError(
                f"must be true, false or a function of the outcome returning seconds or None, "
                f"got {retry_after!r}",
                path="retry_after",
            )
        if not isinstance(self.reraise, bool):
            raise ConfigError(f"must be true or false, got {self.reraise!r}", path="reraise")

    def _schedule(self) -> float | None:
        """Resolve ``backoff`` into ``schedule``; return ``delay`` normalised."""
        backoff, delay = self.backoff, self.delay
        if isinstance(backoff, str):
            seconds = optional_seconds(delay, "delay")
            self._set(
                "schedule",
                backoff_from_name(backoff, DEFAULT_DELAY if seconds is None else seconds),
            )
            return seconds
        if isinstance(backoff, Backoff):
            if delay is not None:
                raise ConfigError(
                    "give the initial delay to the backoff schedule itself, not to Retry",
                    path="delay",
                )
            self._set("schedule", backoff)
            return None
        raise ConfigError(
            f"must be a backoff schedule or one of its names, got {backoff!r}", path="backoff"
        )

"""Backoff schedules: how long :class:`~buttress.policies.retry.Retry` waits between attempts.

A schedule is a small frozen object whose :meth:`~Backoff.compute` is a pure function
of the number of the attempt that just failed (1 for the first), so it can be tested
without a clock and shared by any number of concurrent calls. Only
:class:`DecorrelatedJitter` also looks at the previous delay and draws from the
injected ``random``; it is random by itself, so ``Retry`` applies no jitter on top of
it.

Schedules know nothing about caps: ``Retry`` clamps each delay to ``max_delay``,
then applies jitter. Write your own schedule by implementing the :class:`Backoff`
protocol.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar, Protocol, runtime_checkable

from buttress.errors import ConfigError

__all__ = [
    "BACKOFF_NAMES",
    "Backoff",
    "Constant",
    "DecorrelatedJitter",
    "Exponential",
    "Fibonacci",
    "Linear",
    "backoff_from_name",
]


@runtime_checkable
class Backoff(Protocol):
    """A schedule of delays between attempts.

    ``randomized`` is True for a schedule that draws its own randomness (then
    ``Retry`` applies no jitter on top of it).
    """

    @property
    def randomized(self) -> bool:
        """Whether the schedule is random by itself."""
        ...

    def compute(self, attempt: int, previous: float, random: Callable[[], float]) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1 for the first).

        ``previous`` is the delay this schedule gave for the previous attempt, after
        the ``max_delay`` cap and before jitter (0.0 before the first retry);
        ``random`` returns floats in [0, 1).
        """
        ...


def _check_seconds(value: object, path: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"must be a number of seconds, got {value!r}", path=path)
    if not math.isfinite(value) or value < 0:
        raise ConfigError(f"must be a finite number >= 0, got {value!r}", path=path)
    return float(value)


def _check_factor(value: object, path: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"must be a number, got {value!r}", path=path)
    if not math.isfinite(value) or value < 1:
        # A factor below 1 would make delays shrink: a retry storm, not a backoff.
        raise ConfigError(f"must be a finite number >= 1, got {value!r}", path=path)
    return float(value)


@dataclass(frozen=True, slots=True)
class Constant:
    """The same ``delay`` before every retry."""

    delay: float = 0.1
    randomized: ClassVar[bool] = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "delay", _check_seconds(self.delay, "delay"))

    def compute(self, attempt: int, previous: float, random: Callable[[], float]) -> float:
        """``delay``, whatever the attempt."""
        return self.delay


@dataclass(frozen=True, slots=True)
class Linear:
    """``initial``, then ``step`` more each time: initial, initial+step, initial+2*step...

    ``step`` defaults to ``initial``, giving 1x, 2x, 3x the initial delay.
    """

    initial: float = 0.1
    step: float | None = None
    randomized: ClassVar[bool] = False

    def __post_init__(self) -> None:
        initial = _check_seconds(self.initial, "initial")
        step = initial if self.step is None else _check_seconds(self.step, "step")
        object.__setattr__(self, "initial", initial)
        object.__setattr__(self, "step", step)

    def compute(self, attempt: int, previous: float, random: Callable[[], float]) -> float:
        """``initial + step * (attempt - 1)``."""
        step = self.initial if self.step is None else self.step
        return self.initial + step * (attempt - 1)


@dataclass(frozen=True, slots=True)
class Exponential:
    """``initial * factor ** (attempt - 1)``: 0.1, 0.2, 0.4, 0.8... by default."""

    initial: float = 0.1
    factor: float = 2.0
    randomized: ClassVar[bool] = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "initial", _check_seconds(self.initial, "initial"))
        object.__setattr__(self, "factor", _check_factor(self.factor, "factor"))

    def compute(self, attempt: int, previous: float, random: Callable[[], float]) -> float:
        """``initial * factor ** (attempt - 1)``; infinity once that overflows a float."""
        if self.initial == 0.0:
            return 0.0
        try:
            return self.initial * self.factor ** (attempt - 1)
        except OverflowError:
            # An unbounded (time-capped) retry can reach attempt numbers where the
            # power overflows; the max_delay cap brings infinity back down.
            return math.inf


@dataclass(frozen=True, slots=True)
class Fibonacci:
    """``initial`` times the Fibonacci numbers: 1x, 1x, 2x, 3x, 5x, 8x..."""

    initial: float = 0.1
    randomized: ClassVar[bool] = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "initial", _check_seconds(self.initial, "initial"))

    def compute(self, attempt: int, previous: float, random: Callable[[], float]) -> float:
        """``initial * fib(attempt)`` with fib(1) = fib(2) = 1."""
        a, b = 0.0, 1.0
        for _ in range(attempt - 1):
            a, b = b, a + b
            if b > 1e300:  # far past any sane cap; stop before floats overflow
                return math.inf if self.initial else 0.0
        return self.initial * b


@dataclass(frozen=True, slots=True)
class DecorrelatedJitter:
    """AWS "decorrelated jitter": a random delay between ``initial`` and ``factor`` times
    the previous one.

    ``delay = uniform(initial, factor * max(previous, initial))``. Each delay depends
    on the last, so waits spread out without marching in lockstep. It is random by
    itself: ``Retry`` applies no ``jitter`` on top of it, and the ``max_delay`` cap
    is applied before the delay is fed back as ``previous``, as in AWS's formula.
    """

    initial: float = 0.1
    factor: float = 3.0
    randomized: ClassVar[bool] = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "initial", _check_seconds(self.initial, "initial"))
        object.__setattr__(self, "factor", _check_factor(self.factor, "factor"))

    def compute(self, attempt: int, previous: float, random: Callable[[], float]) -> float:
        """``initial + random() * (factor * max(previous, initial) - initial)``."""
        low = self.initial
        high = self.factor * (previous if previous > low else low)
        return low + random() * (high - low)


_BY_NAME: dict[str, Callable[[float], Backoff]] = {
    "constant": Constant,
    "linear": Linear,
    "exponential": Exponential,
    "fibonacci": Fibonacci,
    "decorrelated_jitter": DecorrelatedJitter,
}

BACKOFF_NAMES: tuple[str, ...] = tuple(_BY_NAME)
"""The names ``backoff=`` accepts as a string."""


def backoff_from_name(name: str, delay: float) -> Backoff:
    """The schedule called ``name`` (see :data:`BACKOFF_NAMES`) with ``delay`` as its
    initial delay, other parameters at their defaults.

    Raises :class:`~buttress.errors.ConfigError` naming ``backoff`` for an unknown
    name and ``delay`` for a bad delay.
    """
    factory = _BY_NAME.get(name)
    if factory is None:
        raise ConfigError(
            f"unknown backoff {name!r}; expected one of {', '.join(BACKOFF_NAMES)}",
            path="backoff",
        )
    return factory(_check_seconds(delay, "delay"))

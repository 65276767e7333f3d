"""The circuit breaker's options: checked once, when the breaker is built.

Every number is validated here so that a bad value fails at construction with the
option's name (``ConfigError(path="min_calls")``), never at the first call in
production. The exception filters (``failure_on=``, ``ignore=``) are compiled here
into one plain predicate each, so the engine never inspects their shape per call.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeAlias

from buttress.errors import ConfigError

__all__ = ["CircuitOptions", "ExceptionFilter", "compile_filter"]

ExceptionFilter: TypeAlias = (
    type[BaseException] | tuple[type[BaseException], ...] | Callable[[BaseException], bool]
)
"""An exception type, a tuple of them, or a predicate taking the exception."""

DEFAULT_WINDOW = 100


def _real(value: object, path: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"expected a number, got {value!r}", path=path)
    number = float(value)
    if not math.isfinite(number):
        raise ConfigError(f"expected a finite number, got {value!r}", path=path)
    return number


def _ratio(value: object, path: str) -> float:
    number = _real(value, path)
    if not 0.0 < number <= 1.0:
        raise ConfigError(f"must be in (0, 1], got {value!r}", path=path)
    return number


def _count(value: object, path: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"expected an integer, got {value!r}", path=path)
    if value < 1:
        raise ConfigError(f"must be at least 1, got {value!r}", path=path)
    return value


def _positive(value: object, path: str) -> float:
    number = _real(value, path)
    if number <= 0.0:
        raise ConfigError(f"must be greater than 0, got {value!r}", path=path)
    return number


def compile_filter(spec: object, path: str) -> Callable[[BaseException], bool] | None:
    """Turn ``failure_on=``/``ignore=`` into one predicate (``None`` stays ``None``).

    Types must be :class:`Exception` subclasses: ``CancelledError``,
    ``KeyboardInterrupt`` and their kin never count, so naming one is a mistake
    better reported now than silently ignored.
    """
    if spec is None:
        return None
    if isinstance(spec, type | tuple):
        types = spec if isinstance(spec, tuple) else (spec,)
        if not types:
            raise ConfigError("an empty tuple matches nothing", path=path)
        for item in types:
            if not isinstance(item, type) or not issubclass(item, BaseException):
                raise ConfigError(f"expected exception types, got {item!r}", path=path)
            if not issubclass(item, Exception):
                raise ConfigError(
                    f"{item.__name__} is not an Exception; BaseExceptions never count",
                    path=path,
                )
        matched: tuple[type[BaseException], ...] = types

        def is_instance(exc: BaseException) -> bool:
            return isinstance(exc, matched)

        return is_instance
    if callable(spec):
        predicate: Callable[[BaseException], object] = spec

        def call_predicate(exc: BaseException) -> bool:
            return bool(predicate(exc))

        return call_predicate
    raise ConfigError(
        f"expected an exception type, a tuple of them or a predicate, got {spec!r}", path=path
    )


@dataclass(frozen=True, slots=True)
class CircuitOptions:
    """The validated settings of one :class:`~buttress.policies.circuit.CircuitBreaker`.

    Build it through the breaker's constructor, which documents each option; the
    breaker keeps it as ``breaker.options``. ``window`` is ``None`` for a time-based
    window and ``window_seconds`` is ``None`` for a count-based one; exactly one is
    set. ``half_open_successes`` is already resolved to its default, and for a count
    window ``min_calls`` is at most ``window``.
    """

    failure_ratio: float
    min_calls: int
    window: int | None
    window_seconds: float | None
    consecutive_failures: int | None
    slow_call_duration: float | None
    slow_call_ratio: float
    open_duration: float
    open_duration_factor: float
    max_open_duration: float
    half_open_calls: int
    half_open_successes: int
    failure_on: ExceptionFilter | None
    ignore: ExceptionFilter | None

    @classmethod
    def build(
        cls,
        *,
        failure_ratio: float,
        min_calls: int,
        window: int | None,
        window_seconds: float | None,
        consecutive_failures: int | None,
        slow_call_duration: float | None,
        slow_call_ratio: float,
        open_duration: float,
        open_duration_factor: float,
        max_open_duration: float,
        half_open_calls: int,
        half_open_successes: int | None,
        failure_on: ExceptionFilter | None,
        ignore: ExceptionFilter | None,
    ) -> CircuitOptions:
        """Validate and normalise; raise :class:`ConfigError` naming the bad option."""
        if window_seconds is not None:
            if window is not None:
                raise ConfigError(
                    "give either window (a count of calls) or window_seconds, not both",
                    path="window",
                )
            window_seconds = _positive(window_seconds, "window_seconds")
        else:
            window = _count(DEFAULT_WINDOW if window is None else window, "window")
        min_calls = _count(min_calls, "min_calls")
        if window is not None:
            # A count window never holds more than ``window`` outcomes: a larger
            # minimum would mean "never trip on a ratio", so it means the window.
            min_calls = min(min_calls, window)
        open_duration = _real(open_duration, "open_duration")
        if open_duration < 0.0:
            raise ConfigError(f"must not be negative, got {open_duration!r}", path="open_duration")
        factor = _real(open_duration_factor, "open_duration_factor")
        if factor < 1.0:
            raise ConfigError(
                f"must be at least 1 (1 keeps the duration fixed), got {factor!r}",
                path="open_duration_factor",
            )
        max_open = _real(max_open_duration, "max_open_duration")
        if factor > 1.0 and max_open < open_duration:
            raise ConfigError(
                f"must be at least open_duration ({open_duration:g}) when it grows",
                path="max_open_duration",
            )
        half_open_calls = _count(half_open_calls, "half_open_calls")
        compile_filter(failure_on, "failure_on")
        compile_filter(ignore, "ignore")
        return cls(
            failure_ratio=_ratio(failure_ratio, "failure_ratio"),
            min_calls=min_calls,
            window=window,
            window_seconds=window_seconds,
            consecutive_failures=(
                None
                if consecutive_failures is None
                else _count(consecutive_failures, "consecutive_failures")
            ),
            slow_call_duration=(
                None
                if slow_call_duration is None
                else _positive(slow_call_duration, "slow_call_duration")
            ),
            slow_call_ratio=_ratio(slow_call_ratio, "slow_call_ratio"),
            open_duration=open_duration,
            open_duration_factor=factor,
            max_open_duration=max(max_open, open_duration),
            half_open_calls=half_open_calls,
            half_open_successes=(
                half_open_calls
                if half_open_successes is None
                else _count(half_open_successes, "half_open_successes")
            ),
            failure_on=failure_on,
            ignore=ignore,
        )

"""The fallback's options: what answers, and which outcomes it answers for.

Checked once, when the fallback is built: every alternative must be callable, there
must be something to answer with, and ``on=``/``on_result=`` must make a matcher of
the one outcome model (:func:`buttress._outcome.as_matcher`). ``alternatives`` and
``value`` are code (functions, any object) and never come from a file; ``on`` comes
from TOML as exception class names.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Concatenate, Final, Generic, ParamSpec, TypeAlias, TypeVar

from buttress._options import Options, option
from buttress._outcome import OnErrors, as_matcher
from buttress.errors import ConfigError

__all__ = ["UNSET", "Alternative", "ErrorHandler", "FallbackOptions"]

P = ParamSpec("P")
R = TypeVar("R")


class _Unset(enum.Enum):
    UNSET = enum.auto()

    def __repr__(self) -> str:
        return "<unset>"


UNSET: Final = _Unset.UNSET
"""``value`` left out: when every alternative failed, the last failure propagates."""


class ErrorHandler(Generic[P, R]):
    """An alternative that is also given the error it answers for.

    Made by :meth:`Fallback.handler`: ``fn(error, *args, **kwargs)`` where ``args``
    and ``kwargs`` are those of the protected call.
    """

    __slots__ = ("fn",)

    def __init__(self, fn: Callable[Concatenate[Exception, P], R]) -> None:
        self.fn = fn

    def __call__(self, error: Exception, /, *args: P.args, **kwargs: P.kwargs) -> R:
        """Call the handler as the fallback would."""
        return self.fn(error, *args, **kwargs)

    def __repr__(self) -> str:
        return f"Fallback.handler({self.fn!r})"


Alternative: TypeAlias = Callable[..., Any] | ErrorHandler[..., Any]
"""A callable taking the protected call's arguments, or an :class:`ErrorHandler`."""


@dataclass(frozen=True, slots=True, kw_only=True)
class FallbackOptions(Options):
    """The validated settings of one :class:`~buttress.Fallback` (``fallback.options``).

    ``Fallback(*alternatives, value=..., on=..., on_result=...)`` builds one; so does
    ``FallbackOptions.from_mapping(table)`` for a configuration file, where ``value``
    (a constant) and ``on`` may be given: ``alternatives`` are code, added with
    ``options.replace(alternatives=...)``. Build the policy with
    ``Fallback.from_options(options, name=...)``, which requires at least one
    alternative or a value.
    """

    kind = "fallback"

    alternatives: tuple[Alternative, ...] = option(
        (),
        toml=False,
        doc="Callables tried in order with the protected call's arguments when it fails.",
    )
    value: object = option(
        UNSET,
        doc="The last answer, when every alternative failed (in a file: any TOML value); "
        "left out, the last failure propagates.",
    )
    on: OnErrors | None = option(
        None,
        toml="exceptions",
        doc="Which errors are answered for: exception types or a predicate; by default "
        "transient errors, timeouts and buttress's rejections.",
    )
    on_result: Callable[[Any], object] | None = option(
        None,
        toml=False,
        doc="A predicate making a returned value a failure; by default a response with a "
        "transient HTTP status.",
    )

    def __post_init__(self) -> None:
        alternatives: object = self.alternatives
        if isinstance(alternatives, list):
            alternatives = tuple(alternatives)
            self._set("alternatives", alternatives)
        if not isinstance(alternatives, tuple):
            raise ConfigError(
                f"must be a tuple of callables, got {type(alternatives).__name__}",
                path="alternatives",
            )
        for index, alternative in enumerate(alternatives):
            if not callable(alternative):
                raise ConfigError(
                    f"an alternative must be callable, got {type(alternative).__name__}",
                    path=f"alternatives[{index}]",
                )
        as_matcher(self.on, self.on_result)  # refuses what is not a matcher, naming the option

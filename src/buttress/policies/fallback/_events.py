"""What a fallback reports: the event of each answer, and the error of a rejected result."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from buttress.errors import ButtressError
from buttress.events import Event

__all__ = ["FallbackUsed", "UnacceptableResult"]


class UnacceptableResult(ButtressError):
    """A result that ``on_result`` (or the default rule for results) declared a failure.

    An :class:`ErrorHandler` triggered by such a result receives this as its error,
    and it is raised when the chain ends on an unacceptable result.
    """

    def __init__(self, name: str, result: Any) -> None:
        self.name = name
        self.result = result
        super().__init__(f"fallback {name!r}: result {result!r} rejected by on_result")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.name, self.result))


@dataclass(frozen=True, slots=True)
class FallbackUsed(Event):
    """The fallback is about to answer with alternative ``alternative_index``.

    ``alternative_index`` counts from 0 over the alternatives; it equals
    ``len(alternatives)`` when the answer is the constant ``value``. ``error`` is
    the failure being answered for (an :class:`UnacceptableResult` when a result
    was rejected); ``call`` names the protected function.
    """

    alternative_index: int
    error: Exception

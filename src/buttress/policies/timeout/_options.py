"""The options of a :class:`~buttress.policies.timeout.Timeout`: checked once, frozen."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from buttress._options import Options, option
from buttress._validate import check_choice, check_seconds

__all__ = ["MODES", "TimeoutMode", "TimeoutOptions"]

TimeoutMode = Literal["optimistic", "pessimistic"]
"""How a *sync* call is timed out; async calls are always cancelled."""

MODES: tuple[TimeoutMode, ...] = ("optimistic", "pessimistic")


@dataclass(frozen=True, slots=True, kw_only=True)
class TimeoutOptions(Options):
    """The validated settings of one ``Timeout`` (``timeout.options``).

    ``seconds`` accepts a :class:`datetime.timedelta` and is stored as a float.
    """

    kind = "timeout"

    seconds: float = option(doc="The time limit of one call, in seconds.")
    mode: TimeoutMode = option(
        "optimistic",
        doc="How a sync call is timed out: 'optimistic' (the deadline is published and "
        "a late result refused) or 'pessimistic' (the call runs on a worker thread and "
        "is abandoned at the deadline); async calls are always cancelled.",
    )

    def __post_init__(self) -> None:
        self._set("seconds", check_seconds(self.seconds, "seconds", positive=True))
        self._set("mode", check_choice(self.mode, "mode", MODES))

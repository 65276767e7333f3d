"""The options of a :class:`~buttress.policies.bulkhead.Bulkhead`: checked once, frozen."""

from __future__ import annotations

from dataclasses import dataclass

from buttress._options import Options, option
from buttress._validate import check_count, optional_seconds
from buttress.errors import ConfigError

__all__ = ["BulkheadOptions"]


@dataclass(frozen=True, slots=True, kw_only=True)
class BulkheadOptions(Options):
    """The validated settings of one ``Bulkhead`` (``bulkhead.options``).

    ``max_wait`` accepts a :class:`datetime.timedelta` and is stored as a float, or
    ``None``; it needs a queue (``max_queue > 0``).
    """

    kind = "bulkhead"

    max_concurrent: int = option(doc="How many calls may run at the same time.")
    max_queue: int = option(0, doc="How many more calls may wait for a free slot.")
    max_wait: float | None = option(
        None, doc="The longest a call waits in the queue, in seconds; none: as long as it takes."
    )

    def __post_init__(self) -> None:
        self._set("max_concurrent", check_count(self.max_concurrent, "max_concurrent"))
        self._set("max_queue", check_count(self.max_queue, "max_queue", minimum=0))
        max_wait = optional_seconds(self.max_wait, "max_wait", positive=True)
        if max_wait is not None and self.max_queue == 0:
            raise ConfigError(
                "has no effect without a queue; set max_queue > 0 (or leave max_wait unset)",
                path="max_wait",
            )
        self._set("max_wait", max_wait)

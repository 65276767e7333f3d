"""What a ``Timeout`` keeps between calls: the deadlines of its async calls, one timer.

Every call of one ``Timeout`` has the same duration, so on one event loop their
deadlines arrive in the order the calls started: an insertion-ordered
``task -> deadline`` dict is already sorted, and one loop timer, armed for the
oldest entry, serves them all. A call adds its entry and deletes it when done; the
timer only wakes when the oldest entry falls due, cancels the tasks past their
deadline and re-arms itself for the next. (Blocks, ``async with Timeout(...)``, are
entered once each and watch their task with a timer of their own instead.)
"""

from __future__ import annotations

import contextvars
import threading
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import asyncio

from buttress._deadline import DEADLINE, Published, mark_timeout_cancel
from buttress.clock import Clock, TimerHandle

__all__ = ["Registry", "publish_nested"]


class Registry:
    """The calls of one Timeout running on one event loop, and their shared timer.

    Only touched from the loop's thread: by calls entering and leaving, and by the
    timer callback. ``entries`` is ordered by deadline because every entry was added
    with the same duration on a clock that never goes backwards.
    """

    __slots__ = ("clock", "entries", "handle", "loop", "runs", "thread")

    def __init__(self, loop: asyncio.AbstractEventLoop, clock: Clock) -> None:
        self.loop = loop
        self.clock = clock
        self.entries: dict[asyncio.Task[Any], float] = {}
        self.handle: TimerHandle | None = None
        # The thread the registry was made in (and is cached for), and what tells
        # whether its loop still runs there: asyncio's loops note the thread they
        # run in (``_thread_id``); another loop vouches for itself.
        self.thread = threading.get_ident()
        self.runs: Any = loop if hasattr(loop, "_thread_id") else _Here(self.thread)

    def fire(self) -> None:
        """Cancel every call past its deadline; re-arm for the next one."""
        self.handle = None
        entries = self.entries
        if not entries:
            return
        now = self.clock.monotonic()
        while entries:
            task = next(iter(entries))
            deadline = entries[task]
            if deadline > now:
                self.handle = self.clock.call_later(deadline - now, self.fire)
                return
            # Its call sees the entry gone and knows the cancellation is ours; the
            # policies inside see the mark and count a timeout, not a cancellation.
            del entries[task]
            mark_timeout_cancel(task)
            task.cancel()


class _Here:
    """Stands in for a loop that does not say which thread it runs in."""

    __slots__ = ("_thread_id",)

    def __init__(self, thread: int) -> None:
        self._thread_id = thread


def publish_nested(
    entry: Published, seconds: float, current: Published
) -> contextvars.Token[Published | None] | None:
    """Publish ``entry`` (a deadline ``seconds`` away) under ``current`` only if earlier."""
    deadline, clock, _, _ = entry
    outer, outer_clock, _, _ = current
    if outer_clock is clock:
        earlier = deadline < outer
    else:
        earlier = seconds < outer - outer_clock.monotonic()
    return DEADLINE.set(entry) if earlier else None

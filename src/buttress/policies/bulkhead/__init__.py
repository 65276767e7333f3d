"""Bulkhead: bound how many calls run at once, and how many may wait for a turn.

``Bulkhead(10, max_queue=20, max_wait=0.5)`` lets ten calls run concurrently; up to
twenty more wait, first come first served, at most half a second each (or until the
deadline of an enclosing ``Timeout``, if that comes first); everyone else is turned
away at once with :class:`~buttress.errors.BulkheadFull`. One bulkhead can be shared
by threads and asyncio tasks (on any number of loops) at the same time: a slot freed
by a thread goes to the next waiter whether that is a thread or a task.

Files, as in every policy: ``_options`` (the frozen settings), ``_engine`` (slots,
the line of waiters and the hand-over between them, knowing nothing of threads or
loops), ``_policy`` (the drivers, generated from one template, and the sync and
async ways to wait). Its event is the shared :class:`~buttress.events.CallRejected`.
"""

from __future__ import annotations

from buttress.policies.bulkhead._options import BulkheadOptions
from buttress.policies.bulkhead._policy import Bulkhead

__all__ = ["Bulkhead", "BulkheadOptions"]

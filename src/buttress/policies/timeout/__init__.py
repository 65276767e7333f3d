"""Timeout: give a call (or a block) a time limit and stop waiting for it when it passes.

``Timeout(2.0)`` raises :class:`~buttress.errors.TimeoutExceeded` (also a
:class:`TimeoutError`) when the call has not finished within two seconds. It
decorates functions, runs calls (``call``/``acall``), sits in pipelines, and times
blocks: ``async with Timeout(2.0):`` and, in optimistic mode, ``with Timeout(2.0):``.

*Async calls* are cancelled when their time is up, the way :func:`asyncio.timeout`
does it (``Task.cancel`` at the deadline, ``Task.uncancel`` when the cancellation
turns out to be ours), so a cancellation from outside still arrives as
:class:`asyncio.CancelledError`. The cancellation is marked as a timeout's, so the
policies it passes through count a timeout failure (see
:func:`buttress._deadline.cancelled_by_timeout`). It is cheaper than
:func:`asyncio.timeout`: one loop timer per event loop serves every call of one
``Timeout`` (see :mod:`._engine`).

*Sync calls* cannot be interrupted from outside in Python, and buttress never starts a
thread per call. Two modes are offered:

- ``"optimistic"`` (default): the deadline is published in a context variable, read
  with :func:`remaining`, so cooperative code (and buttress's own waits) can give
  their sockets and queries the time that is left. A call that returns after its
  deadline raises ``TimeoutExceeded``; its result is discarded, but whatever it did
  (rows written, requests sent) has happened.
- ``"pessimistic"``: the call runs on a small pool of daemon worker threads and the
  caller waits at most ``seconds``. On timeout the caller gets ``TimeoutExceeded`` at
  once and the call is abandoned: it keeps running to its end on its worker (see
  :func:`set_pessimistic_workers`), and never keeps the interpreter from exiting.

:func:`remaining` also works inside async calls and nested timeouts: the earliest
deadline wins. Under :func:`buttress.testing.set_testing` every ``Timeout`` is a
pass-through.

Files, as in every policy: ``_options`` (the frozen settings), ``_engine`` (the
deadlines of async calls and their shared timer), ``_events``, ``_policy`` (the
drivers and blocks), and ``_workers`` (the pessimistic mode's threads).
"""

from __future__ import annotations

from buttress._deadline import remaining
from buttress.policies.timeout._events import TimeoutOccurred
from buttress.policies.timeout._options import TimeoutMode, TimeoutOptions
from buttress.policies.timeout._policy import Timeout
from buttress.policies.timeout._workers import set_pessimistic_workers

__all__ = [
    "Timeout",
    "TimeoutMode",
    "TimeoutOccurred",
    "TimeoutOptions",
    "remaining",
    "set_pessimistic_workers",
]

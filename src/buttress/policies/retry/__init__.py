"""Retry: run a call again when it fails transiently, waiting longer each time.

A folder in the same roles as every policy: ``_options`` (:class:`RetryOptions`,
validated settings), ``_engine`` (the sans-I/O decisions: what is retried, how long
to wait, when to give up), ``_events`` (:class:`RetryScheduled`,
:class:`RetryRecovered`, :class:`RetryGaveUp`) and ``_policy`` (:class:`Retry`: its
drivers generated from one template in every shape, and the loop form
:meth:`Retry.attempts`).
"""

from __future__ import annotations

from ._events import RetryGaveUp, RetryRecovered, RetryScheduled
from ._options import Jitter, RetryAfter, RetryOn, RetryOptions
from ._policy import Attempt, AttemptLoop, Retry

__all__ = [
    "Attempt",
    "AttemptLoop",
    "Jitter",
    "Retry",
    "RetryAfter",
    "RetryGaveUp",
    "RetryOn",
    "RetryOptions",
    "RetryRecovered",
    "RetryScheduled",
]

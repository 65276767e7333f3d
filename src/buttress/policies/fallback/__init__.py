"""Fallback: answer for a failed call with something else.

When the protected call fails, a :class:`Fallback` answers instead: with an ordered
chain of alternatives (secondary provider, replica, cache, ...) tried one after the
other, then optionally with a constant ``value``. What counts as a failure is the one
outcome model's (:mod:`buttress._outcome`): by default transient errors, timeouts,
buttress's rejections and responses with a transient HTTP status; ``on=`` and
``on_result=`` change it.

The chain behaves like the nested ``try``/``except`` one would write by hand: each
alternative runs while the failure that triggered it is being handled, so when
every answer fails, the *last* error propagates with the earlier ones reachable
through ``__context__`` (down to the primary's). Nothing is wrapped and no
exception of the user's is modified, so ``except`` clauses keep working.

A folder in the same roles as every policy: ``_options`` (:class:`FallbackOptions`,
the validated settings, and the alternatives' types), ``_plan`` (the sans-I/O
engine: which failures are answered for, what answers next), ``_events``
(:class:`FallbackUsed`, :class:`UnacceptableResult`) and ``_policy`` (the drivers,
generated from one template in every shape).
"""

from __future__ import annotations

from ._events import FallbackUsed, UnacceptableResult
from ._options import Alternative, ErrorHandler, FallbackOptions
from ._policy import Fallback

__all__ = [
    "Alternative",
    "ErrorHandler",
    "Fallback",
    "FallbackOptions",
    "FallbackUsed",
    "UnacceptableResult",
]

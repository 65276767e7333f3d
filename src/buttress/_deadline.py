"""One time budget: the deadline of the innermost :class:`~buttress.Timeout`.

A ``Timeout`` publishes its deadline in a context variable for the duration of its
call. Everything inside reads it:

- user code, through :func:`remaining` (``sock.settimeout(remaining())``);
- every wait buttress itself makes (retry backoff and ``Retry-After``, a limiter's
  wait, a bulkhead's queue): :func:`fit` refuses a wait that cannot end before the
  deadline — at once, with the :class:`~buttress.errors.TimeoutExceeded` the wait
  would have ended in anyway, saying what ran out of time — and :func:`cap` shortens
  a wait that may end early (a queue) to what is left;
- policies judging an outcome: :func:`cancelled_by_timeout` tells a cancellation
  caused by a buttress ``Timeout`` (a timeout failure) from one asked for by the
  caller (nothing happened).

The deadline travels with its clock (policies may run on different clocks, a
:class:`~buttress.clock.FakeClock` in tests) and with the ``Timeout`` that set it,
which builds the error and emits its event.
"""

from __future__ import annotations

import contextvars
import sys
import weakref
from typing import Any, Protocol

from buttress.clock import Clock
from buttress.errors import TimeoutExceeded

__all__ = [
    "DEADLINE",
    "Expiry",
    "cancelled_by_timeout",
    "cap",
    "fit",
    "mark_timeout_cancel",
    "remaining",
    "unmark_timeout_cancel",
]


class Expiry(Protocol):
    """The ``Timeout`` behind a deadline: it names the error a wait cut short ends in."""

    def expired(self, detail: str, fn: object = None) -> TimeoutExceeded:
        """The error for a wait that cannot fit, after emitting the timeout's event.

        ``fn``: the call that waits (a function, or a label), for the event.
        """
        ...


Published = tuple[float, Clock, Expiry, object]
"""``(deadline, clock, timeout, fn)``: ``fn`` is the call the timeout runs (``None``
for a block), named by the event of a wait inside that cannot fit."""

DEADLINE: contextvars.ContextVar[Published | None] = contextvars.ContextVar(
    "buttress_deadline", default=None
)
"""``(deadline, clock, timeout, fn)`` of the innermost active ``Timeout``, or ``None``."""


class _WithCall:
    """A timeout and the call it runs, handed to a waiter whose wait it shortened."""

    __slots__ = ("expiry", "fn")

    def __init__(self, expiry: Expiry, fn: object) -> None:
        self.expiry = expiry
        self.fn = fn

    def expired(self, detail: str, fn: object = None) -> TimeoutExceeded:
        return self.expiry.expired(detail, self.fn)


def remaining() -> float | None:
    """Seconds left before the earliest active :class:`~buttress.Timeout` expires, or ``None``.

    Call it from inside a call that runs under a ``Timeout`` (sync or async, at any
    depth, including threads started with a copied context) to bound your own waits:
    ``sock.settimeout(remaining())``. Never negative: ``0.0`` once the deadline passed.
    """
    current = DEADLINE.get()
    if current is None:
        return None
    deadline, clock, _, _ = current
    return max(0.0, deadline - clock.monotonic())


def fit(wait: float, what: str) -> None:
    """Refuse a wait of ``wait`` seconds that would not end before the deadline.

    ``what`` names the waiter for the error (``"retry 'api'"``). Raises the
    :class:`~buttress.errors.TimeoutExceeded` of the enclosing ``Timeout`` at once —
    the error the wait would have ended in, without spending the wait.
    """
    current = DEADLINE.get()
    if current is None:
        return
    deadline, clock, expiry, fn = current
    left = deadline - clock.monotonic()
    if left <= 0.0 or wait >= left:
        raise expiry.expired(f"{what} would wait {wait:.3f}s with {max(0.0, left):.3f}s left", fn)


def cap(wait: float | None) -> tuple[float | None, Expiry | None]:
    """``wait`` shortened to the time left; with the ``Timeout`` when it was shortened.

    ``wait`` ``None`` means "as long as it takes". When the second item is not
    ``None`` and the wait runs to its end, the waiter raises
    ``expiry.expired(detail)``: the deadline, not its own limit, ended the wait.
    """
    current = DEADLINE.get()
    if current is None:
        return wait, None
    deadline, clock, expiry, fn = current
    left = max(0.0, deadline - clock.monotonic())
    if wait is None or left < wait:
        return left, expiry if fn is None else _WithCall(expiry, fn)
    return wait, None


# ------------------------------------------------------------------------ cancellation

# Tasks a buttress Timeout cancelled and whose cancellation is still unwinding: the
# Timeout marks the task before it cancels it and unmarks it once the cancellation
# reached it. Weak, so a task that dies mid-way leaks nothing.
_cancelled: weakref.WeakKeyDictionary[Any, int] = weakref.WeakKeyDictionary()


def mark_timeout_cancel(task: Any) -> None:
    """Record that a buttress ``Timeout`` is cancelling ``task``."""
    _cancelled[task] = _cancelled.get(task, 0) + 1


def unmark_timeout_cancel(task: Any) -> None:
    """The ``Timeout`` that cancelled ``task`` has seen its cancellation arrive."""
    count = _cancelled.get(task, 0)
    if count <= 1:
        _cancelled.pop(task, None)
    else:
        _cancelled[task] = count - 1


def cancelled_by_timeout(exc: BaseException) -> bool:
    """Whether ``exc`` is the cancellation of a buttress ``Timeout``, on its way out.

    Policies inside the ``Timeout`` call it on a ``CancelledError``: true means the
    call timed out (a timeout failure); false, that the caller cancelled it
    (nothing happened). Only meaningful in the task being cancelled.

    A caller's cancellation racing with the timer (both asked before the task ran)
    is the caller's: the ``Timeout`` lets the ``CancelledError`` through, as
    :func:`asyncio.timeout` does, so it is false here too — the task has more
    cancellation requests pending than buttress timeouts made.
    """
    asyncio = sys.modules.get("asyncio")
    if asyncio is None or not _cancelled or not isinstance(exc, asyncio.CancelledError):
        return False
    try:
        task = asyncio.current_task()
    except RuntimeError:
        return False
    if task is None:
        return False
    ours = _cancelled.get(task, 0)
    return ours > 0 and task.cancelling() <= ours

"""The ``Bulkhead`` policy: drivers generated from one template, queue waits, blocks."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, ClassVar, NoReturn

from buttress._codegen import Shape, Target, factory, targets
from buttress._deadline import DEADLINE, Expiry, cap
from buttress._events import CallRejected, call_name
from buttress._options import built_from
from buttress._strategy import GeneratedDrivers
from buttress._validate import check_clock
from buttress.clock import MONOTONIC, Clock, TimerHandle
from buttress.errors import BulkheadFull
from buttress.policies.bulkhead._engine import (
    Slots,
    TaskWaiter,
    ThreadWaiter,
    resolve,
)
from buttress.policies.bulkhead._options import BulkheadOptions

__all__ = ["Bulkhead"]

_deadline = DEADLINE.get
# The factory of each shape, by the shape's name (a cheaper key than the shape).
_MADE: dict[str, Callable[..., Callable[..., Any]]] = {}

# Every shape's driver: take a free slot without a lock, or wait in line for one
# (``wait`` is the sync or the async wait); give it back whatever happens. The
# look before the pop spares a contended call (no token, every time) the cost of
# raising IndexError; the pop is still guarded, against another thread taking the
# last token in between.
_DRIVER = """
{DEF} bulkhead{SIG}:
    if tokens:
        try:
            pop()
        except IndexError:
            {AWAIT}wait(fn)
    else:
        {AWAIT}wait(fn)
    try:
        result = {AWAIT}{CALL}
        {CHECK}
    finally:
        release()
    return result
"""


class Bulkhead(GeneratedDrivers):
    """At most ``max_concurrent`` calls at once; up to ``max_queue`` more wait in line.

    A caller finding every slot taken joins the queue if it has room, waits up to
    ``max_wait`` seconds (``None``: until a slot frees) and otherwise is rejected
    with :class:`~buttress.errors.BulkheadFull` — ``reason`` ``"bulkhead_full"``
    (no slot, queue full) or ``"queue_timeout"`` (waited ``max_wait`` in vain) — and
    a :class:`~buttress.events.CallRejected` event with the same reason. Waiters are
    served first come, first served.

    Inside a :class:`~buttress.policies.timeout.Timeout` the wait in line is part of
    the time budget: it ends at the deadline if that comes before ``max_wait``, and
    then the caller gets the timeout's :class:`~buttress.errors.TimeoutExceeded`
    (its ``detail`` names this bulkhead); a caller with no time left fails at once.

    Works for sync and async calls on the same object, as a decorator, through
    ``call``/``acall``, and as ``with bulkhead:`` / ``async with bulkhead:``. A call
    cancelled or interrupted while running or while queued gives its slot (or its
    place) back, even if a slot was being handed to it at that very moment.
    """

    __slots__ = ("_slots", "clock", "max_concurrent", "max_queue", "max_wait", "options")

    Options: ClassVar[type[BulkheadOptions]] = BulkheadOptions

    options: BulkheadOptions
    max_concurrent: int
    max_queue: int
    max_wait: float | None
    clock: Clock

    def __init__(
        self,
        max_concurrent: int,
        *,
        max_queue: int = 0,
        max_wait: float | None = None,
        name: str | None = None,
        clock: Clock = MONOTONIC,
    ) -> None:
        options = BulkheadOptions(
            max_concurrent=max_concurrent, max_queue=max_queue, max_wait=max_wait
        )
        self._setup(options, name, clock)

    @classmethod
    def from_options(
        cls, options: BulkheadOptions, *, name: str | None = None, clock: Clock = MONOTONIC
    ) -> Bulkhead:
        """A ``Bulkhead`` from its options (as the registry builds it from TOML)."""
        return built_from(cls, options, name, clock)

    def _setup(self, options: BulkheadOptions, name: str | None, clock: Clock) -> None:
        self.options = options
        self.max_concurrent = options.max_concurrent
        self.max_queue = options.max_queue
        self.max_wait = options.max_wait
        self.clock = clock if clock is MONOTONIC else check_clock(clock)
        self._slots = Slots(options.max_concurrent, options.max_queue)
        self._init_strategy(name, "bulkhead")
        self._build()

    # ------------------------------------------------------------------ introspection

    @property
    def active(self) -> int:
        """Slots taken: calls running, plus slots just handed to a waiter."""
        return self.max_concurrent - len(self._slots.tokens)

    @property
    def available(self) -> int:
        """Free slots."""
        return len(self._slots.tokens)

    @property
    def queued(self) -> int:
        """Callers waiting for a slot."""
        return len(self._slots.waiters)

    # ------------------------------------------------------------------------ drivers

    def _driver(self, shape: Shape, target: Target) -> Callable[..., Any]:
        make = _MADE.get(shape.name)
        if make is None:
            params = ("tokens", "pop", "wait", "release")
            make = _MADE[shape.name] = factory(_DRIVER, shape, params, label="bulkhead")
        wait = self._wait_async if shape.is_async else self._wait
        slots = self._slots
        values = (slots.tokens, slots.tokens.pop, wait, slots.release)
        return make(*values, *targets(target))

    def _wait(self, fn: Callable[..., Any] | None) -> None:
        """No free slot: queue this thread for one, or reject."""
        if not self.max_queue:
            self._reject("bulkhead_full", fn)
        wait, expiry = (self.max_wait, None) if _deadline() is None else self._capped(fn)
        slots = self._slots
        waiter = ThreadWaiter()
        if not slots.enqueue(waiter):
            self._reject("bulkhead_full", fn)
        try:
            if wait is None:
                waiter.event.wait()
            else:
                self.clock.wait(waiter.event, wait)
        except BaseException:
            if slots.settle(waiter):
                slots.release()  # interrupted as the slot arrived: pass it on
            raise
        if not slots.settle(waiter):
            self._gave_up(fn, wait, expiry)

    async def _wait_async(self, fn: Callable[..., Any] | None) -> None:
        """No free slot: queue this task for one, or reject."""
        if not self.max_queue:
            self._reject("bulkhead_full", fn)
        wait, expiry = (self.max_wait, None) if _deadline() is None else self._capped(fn)
        slots = self._slots
        waiter = TaskWaiter()
        if not slots.enqueue(waiter):
            self._reject("bulkhead_full", fn)
        timer: TimerHandle | None = None
        if wait is not None:
            expire = functools.partial(self._expire, waiter)
            clock = self.clock
            # The real clock's timer straight on the waiter's loop: no second lookup.
            if clock is MONOTONIC:
                timer = waiter.loop.call_later(wait, expire)
            else:
                timer = clock.call_later(wait, expire)
        try:
            await waiter.future
        except BaseException:
            if timer is not None:
                timer.cancel()
            if slots.settle(waiter):
                slots.release()  # cancelled as the slot arrived: pass it on
            raise
        if timer is not None:
            timer.cancel()
        if waiter.granted:  # woken with a slot: claim it (Slots.settle's fast path)
            waiter.granted = False
        elif not slots.settle(waiter):
            self._gave_up(fn, wait, expiry)

    def _capped(self, fn: Callable[..., Any] | None) -> tuple[float | None, Expiry | None]:
        """Inside a ``Timeout``: the wait in line shortened to the time left, and the
        timeout when its deadline is what ends it. No time left: fail at once."""
        wait, expiry = cap(self.max_wait)
        if expiry is not None and not wait:
            raise expiry.expired(f"bulkhead {self.name!r} had no time left to wait for a slot")
        return wait, expiry

    def _expire(self, waiter: TaskWaiter) -> None:
        if self._slots.leave(waiter):
            resolve(waiter.future)
        # else the hand-over won the race; the task will claim the slot

    def _gave_up(
        self, fn: Callable[..., Any] | None, wait: float | None, expiry: Expiry | None
    ) -> NoReturn:
        if expiry is not None:
            raise expiry.expired(
                f"bulkhead {self.name!r} waited {wait or 0.0:.3f}s for a slot until the deadline"
            )
        self._reject("queue_timeout", fn)

    def _reject(self, reason: str, fn: Callable[..., Any] | None) -> NoReturn:
        events = self._events
        if events.enabled:
            call = "" if fn is None else call_name(fn)
            events.emit(CallRejected(self.name, reason, call=call))
        raise BulkheadFull(self.name, reason)

    # ------------------------------------------------------------- context managers

    def __enter__(self) -> Bulkhead:
        if not self._slots.try_acquire():
            self._wait(None)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._slots.release()

    async def __aenter__(self) -> Bulkhead:
        if not self._slots.try_acquire():
            await self._wait_async(None)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self._slots.release()

    def __repr__(self) -> str:
        return (
            f"Bulkhead({self.max_concurrent}, max_queue={self.max_queue}, "
            f"max_wait={self.max_wait!r}, name={self.name!r})"
        )

"""The circuit breaker's sans-I/O engine: one state machine for sync and async calls.

The engine decides, the drivers (``_policy.py``) only execute: ``acquire()``
admits a call or raises :class:`~buttress.errors.CircuitOpen`, and the driver
reports how the call ended — ``on_success``, ``on_failure`` (a returned value the
matcher calls a failure), ``on_error`` (it raised), ``on_timeout`` (it returned
after an enclosing ``Timeout``'s deadline). The engine owns no threads, timers or
event loop: time is read from the injected clock and the open-to-half-open move
happens lazily, when someone next looks.

What counts
-----------
One :class:`~buttress._outcome.Matcher` (``on=``, ``on_result=``) judges every
outcome, as for every policy. On top of it, the breaker's own rules: an error
``ignore=`` matches, a programming error the matcher does not name and a
buttress :class:`~buttress.errors.Rejected` from an inner policy it does not name
count as *nothing* (the dependency was not at fault, or not even called); any other
error the matcher does not call a failure is an *answer*, a success. A
cancellation counts as nothing, unless a buttress ``Timeout`` caused it
(:func:`~buttress._deadline.cancelled_by_timeout`): then the call timed out, a
failure and, with slow-call detection on, a slow call.

Tickets and generations
-----------------------
Every state change (and every reset) starts a new *generation*. ``acquire``
returns the current generation as the call's ticket; an outcome whose ticket is
not the current generation belongs to an era that is over and is dropped. That one
integer answers every late-outcome question: a trial is a call whose ticket is the
current half-open generation (so only trials give back trial permits), a failure
of a call admitted before the breaker tripped cannot reopen a later half-open
breaker, and calls admitted before a ``reset()`` do not pollute the fresh window.

The lock-free success path
--------------------------
``fast`` is the current generation when a fast success would change nothing, and
0 otherwise. It is non-zero exactly when the breaker is closed with a count window
full of fast successes: then one more fast success evicts a fast success and adds
one (the totals are unchanged), and the consecutive-failure count is already 0.
The drivers read ``fast`` once, without the lock, when a call starts; if it is
non-zero and the call ends in a fast success they record nothing at all.

Why that is linearizable: every write to ``fast`` happens under the lock,
together with the state it summarises, and reading one attribute is atomic. A
call that read a non-zero ``fast`` is linearized at that read: at that instant
the breaker was closed and clean, so admitting it was right and a fast success
applied there is a no-op, whatever other calls recorded while it ran. Outcomes
that are not fast successes (failures, slow calls, ignored exceptions,
cancellation) always take the locked path with the ticket they read, so they are
linearized at their recording like every other outcome. A time window is never
"clean" (each success adds to its current bucket), so it always takes the lock.

Events
------
A transition (or a rejection) queues its event under the lock; the events are
delivered after the lock is released, so a slow listener never holds up other
calls' admission or recording. They are delivered in the order the transitions
happened: one thread at a time drains the queue — the thread that queued an event,
or, when another thread is delivering at that moment, that thread (a listener may
thus run on another thread than the call that caused its event). A listener may
read or drive the breaker; the events its own actions cause are delivered after it
returns.
"""

from __future__ import annotations

import math
import threading
from collections import deque
from collections.abc import Callable
from typing import Any, cast

from buttress._deadline import DEADLINE, cancelled_by_timeout
from buttress._events import call_name
from buttress._outcome import _PROGRAMMING, as_matcher, result_is_failure
from buttress.clock import Clock
from buttress.errors import CircuitOpen, Rejected
from buttress.events import CallRejected, Emitter

from ._events import CircuitState, CircuitStateChanged
from ._options import CircuitOptions
from ._window import CircuitMetrics, CountWindow, TimeWindow

__all__ = ["CircuitEngine", "past_deadline"]

_CLOSED = CircuitState.CLOSED
_OPEN = CircuitState.OPEN
_HALF_OPEN = CircuitState.HALF_OPEN
_ISOLATED = CircuitState.ISOLATED

# A queued event: (old, new, reason, fn); ``old`` is None for a rejection.
_Pending = tuple[CircuitState | None, CircuitState | None, str, Callable[..., Any] | None]


def past_deadline() -> bool:
    """Whether the innermost enclosing ``Timeout``'s deadline has passed (False if none).

    A sync call that returns now, under an optimistic ``Timeout``, is refused by it
    with :class:`~buttress.errors.TimeoutExceeded`: the call timed out.
    """
    current = DEADLINE.get()
    return current is not None and current[1].monotonic() >= current[0]


class CircuitEngine:
    """The state machine and window of one breaker, guarded by one lock."""

    __slots__ = (
        "_consecutive",
        "_delivering",
        "_error_rule",
        "_events",
        "_gen",
        "_is_ignored",
        "_lock",
        "_max_open",
        "_min_calls",
        "_name",
        "_names",
        "_needed",
        "_now",
        "_open_duration",
        "_open_for",
        "_options",
        "_pending",
        "_result_rule",
        "_starved",
        "_state",
        "_successes",
        "_trial_cap",
        "_trials",
        "_until",
        "_window",
        "checks_results",
        "default_results",
        "fast",
        "slow_after",
        "timed",
    )

    def __init__(self, options: CircuitOptions, clock: Clock, name: str, events: Emitter) -> None:
        self._options = options
        assert options.min_calls is not None  # resolved by the options
        assert options.half_open_successes is not None
        self._min_calls = options.min_calls
        self._needed = options.half_open_successes
        # Durations are float seconds once validated (a timedelta was converted).
        self._open_duration = cast(float, options.open_duration)
        self._max_open = cast(float, options.max_open_duration)
        self._now = clock.monotonic
        self._name = name
        self._events = events
        self._lock = threading.RLock()
        self._pending: deque[_Pending] = deque()
        self._delivering = threading.Lock()
        self._window: CountWindow | TimeWindow
        if options.window_seconds is not None:
            self._window = TimeWindow(cast(float, options.window_seconds), self._now)
        else:
            assert options.window is not None
            self._window = CountWindow(options.window)
        matcher = options.matcher
        self._error_rule = matcher.error_rule
        self._names = matcher.names
        self._result_rule = matcher.result_rule
        self.checks_results = matcher.checks_results
        """Whether a returned value can be a failure (False: results are not looked at)."""
        self.default_results = matcher.result_rule is result_is_failure
        """Whether results are judged by the default rule, which passes plain values
        (``None``, numbers, strings, containers) without a call."""
        self._is_ignored = (
            None if options.ignore is None else as_matcher(options.ignore, path="ignore").error_rule
        )
        self.slow_after = (
            math.inf
            if options.slow_call_duration is None
            else cast(float, options.slow_call_duration)
        )
        """Seconds from which a call is slow; infinite when slow-call detection is off."""
        self.timed = options.slow_call_duration is not None
        """Whether calls must be timed (slow-call detection is on)."""
        self._state = _CLOSED
        self._gen = 1
        self.fast = 0
        """The generation while a fast success changes nothing, else 0 (read lock-free)."""
        self._until = 0.0
        self._open_for = self._open_duration
        self._trials = 0
        self._trial_cap = options.half_open_calls
        self._starved = False
        self._successes = 0
        self._consecutive = 0

    # ------------------------------------------------------------------ admission

    def acquire(self, fn: Callable[..., Any] | None = None) -> int:
        """Admit a call of ``fn`` and return its ticket, or raise :class:`CircuitOpen`."""
        with self._lock:
            if self._state is _CLOSED:
                return self._gen
            ticket, until, now = self._admit(fn)
        if self._pending:
            self._deliver()
        if ticket:
            return ticket
        raise CircuitOpen(self._name, until, max(0.0, until - now))

    def _admit(self, fn: Callable[..., Any] | None) -> tuple[int, float, float]:
        """Under the lock, not closed: ``(ticket, 0.0, now)`` or ``(0, until, now)``."""
        now = self._now()
        state = self._state
        if state is _OPEN and now >= self._until:
            self._enter(_HALF_OPEN, "open_duration_elapsed", now, fn)
            state = self._state
        if state is _CLOSED:
            return self._gen, 0.0, now
        if state is _HALF_OPEN:
            if self._trials < self._trial_cap:
                self._trials += 1
                return self._gen, 0.0, now
            # Remembered for a shared breaker, whose hub then asks for the trials.
            self._starved = True
            reason = "half_open_full"
            # Nothing to wait for on the breaker's side: a running trial decides.
            until = now
        else:
            reason = "circuit_open"
            until = self._until
        if self._events.enabled:
            self._pending.append((None, None, reason, fn))
        return 0, until, now

    # ------------------------------------------------------------------- outcomes

    def on_success(self, ticket: int, elapsed: float, fn: Callable[..., Any] | None = None) -> None:
        """The call admitted with ``ticket`` returned a success after ``elapsed`` seconds."""
        self._record(ticket, False, elapsed >= self.slow_after, fn)

    def on_late_success(
        self, ticket: int, elapsed: float, fn: Callable[..., Any] | None = None
    ) -> None:
        """A sync call returned a success, not on the lock-free path: a slow one that
        returned past the deadline of an enclosing ``Timeout`` (which refuses its
        result) is a timeout; any other, a success."""
        if elapsed >= self.slow_after and past_deadline():
            self.on_timeout(ticket, fn)
        else:
            self._record(ticket, False, elapsed >= self.slow_after, fn)

    def on_failure(self, ticket: int, elapsed: float, fn: Callable[..., Any] | None = None) -> None:
        """The call returned a value the matcher calls a failure (a 503 response)."""
        self._record(ticket, True, elapsed >= self.slow_after, fn)

    def on_timeout(self, ticket: int, fn: Callable[..., Any] | None = None) -> None:
        """A buttress ``Timeout`` ended the call: a failure, and a slow call if timed."""
        self._record(ticket, True, self.timed, fn)

    def on_error(
        self,
        ticket: int,
        exc: BaseException,
        elapsed: float,
        fn: Callable[..., Any] | None = None,
    ) -> None:
        """The call admitted with ``ticket`` raised ``exc`` after ``elapsed`` seconds.

        See the module's docstring for what counts: a failure, a success (the
        dependency answered), or nothing (only a trial permit is given back).
        """
        if not isinstance(exc, Exception):
            if cancelled_by_timeout(exc):
                self.on_timeout(ticket, fn)
            else:
                self.release(ticket)
            return
        try:
            if self._is_ignored is not None and self._is_ignored(exc):
                self.release(ticket)
                return
            if isinstance(exc, Rejected) and not self._names(exc):
                self.release(ticket)  # an inner policy refused: the dependency was not called
                return
            failed = self._error_rule(exc)
        except BaseException:
            self.release(ticket)  # a faulty predicate must not leak a trial permit
            raise
        if not failed and isinstance(exc, _PROGRAMMING):
            self.release(ticket)  # the caller's bug says nothing about the dependency
            return
        self._record(ticket, failed, elapsed >= self.slow_after, fn)

    def judge(
        self,
        ticket: int,
        result: object,
        elapsed: float,
        fn: Callable[..., Any] | None = None,
    ) -> bool:
        """Whether the returned ``result`` is a failure; if so, it is recorded.

        A result rule of the user's that raises gives the trial permit back and
        propagates. The default rule never raises: a result it cannot make sense of
        is no HTTP response, a success.
        """
        if self.default_results:
            try:
                failed = result_is_failure(result)
            except Exception:  # an object that resists inspection is no response
                failed = False
        else:
            try:
                failed = bool(self._result_rule(result))
            except BaseException:
                self.release(ticket)
                raise
        if failed:
            self._record(ticket, True, elapsed >= self.slow_after, fn)
        return failed

    def finish(self, fast: int, ticket: int, elapsed: float, late: bool) -> None:
        """A ``with breaker:`` block ran to its end (``late``: past a sync deadline)."""
        if late:
            self.on_timeout(ticket)
        elif not fast or elapsed >= self.slow_after:
            self.on_success(ticket, elapsed)

    def release(self, ticket: int) -> None:
        """Give back the trial permit ``ticket`` holds, if any, counting no outcome."""
        with self._lock:
            if ticket == self._gen and self._state is _HALF_OPEN:
                self._trials -= 1

    def _record(self, ticket: int, failed: bool, slow: bool, fn: Callable[..., Any] | None) -> None:
        with self._lock:
            if ticket != self._gen:
                return  # admitted in an era that is over
            state = self._state
            if state is _CLOSED:
                window = self._window
                window.add(failed, slow)
                self._consecutive = self._consecutive + 1 if failed else 0
                reason = self._trip_reason()
                if reason is not None:
                    self._enter(_OPEN, reason, self._now(), fn)
                else:
                    self.fast = ticket if window.clean else 0
            elif state is _HALF_OPEN:
                self._trials -= 1
                if failed or slow:
                    self._enter(_OPEN, "trial_failed" if failed else "trial_slow", self._now(), fn)
                else:
                    self._successes += 1
                    if self._successes >= self._needed:
                        self._enter(_CLOSED, "trials_succeeded", 0.0, fn)
        if self._pending:
            self._deliver()

    def _trip_reason(self) -> str | None:
        options = self._options
        threshold = options.consecutive_failures
        if threshold is not None and self._consecutive >= threshold:
            return "consecutive_failures"
        window = self._window
        calls = window.calls
        if calls >= self._min_calls:
            if window.failures / calls >= options.failure_ratio:
                return "failure_ratio"
            if window.slow / calls >= options.slow_call_ratio:
                return "slow_call_ratio"
        return None

    # ---------------------------------------------------------------- transitions

    def _enter(
        self,
        new: CircuitState,
        reason: str,
        now: float,
        fn: Callable[..., Any] | None = None,
    ) -> None:
        """Move to ``new`` (under the lock); its event is queued, delivered after it."""
        old = self._state
        self._state = new
        self._gen += 1
        self.fast = 0
        if new is _OPEN:
            if old is _HALF_OPEN:
                self._open_for = min(
                    self._open_for * self._options.open_duration_factor, self._max_open
                )
            else:
                self._open_for = self._open_duration
            self._until = now + self._open_for
        elif new is _HALF_OPEN:
            self._trials = 0
            self._successes = 0
            self._trial_cap = self._trial_permits()
        elif new is _CLOSED:
            self._window.clear()
            self._consecutive = 0
        else:
            self._until = math.inf
        if old is not new and self._events.enabled:
            self._pending.append((old, new, reason, fn))

    def _deliver(self) -> None:
        """Deliver the queued events in order, one thread at a time, outside the lock."""
        pending = self._pending
        delivering = self._delivering
        events = self._events
        name = self._name
        while pending:
            if not delivering.acquire(blocking=False):
                # Another thread delivers (or this one, from a listener further up
                # the stack): it re-checks the queue after releasing, so it sees ours.
                return
            try:
                while pending:
                    old, new, reason, fn = pending.popleft()
                    call = "" if fn is None else call_name(fn)
                    if old is None or new is None:
                        events.emit(CallRejected(name, reason, call=call))
                    else:
                        events.emit(CircuitStateChanged(name, old, new, reason, call=call))
            finally:
                delivering.release()

    def _trial_permits(self) -> int:
        """How many trials may run at once in the half-open period being entered."""
        return self._options.half_open_calls

    def _poll(self) -> None:
        """Under the lock: make the due open-to-half-open move."""
        if self._state is _OPEN and self._now() >= self._until:
            self._enter(_HALF_OPEN, "open_duration_elapsed", 0.0)

    def isolate(self) -> None:
        """Hold the breaker open, rejecting every call, until :meth:`reset`."""
        with self._lock:
            self._enter(_ISOLATED, "isolate", 0.0)
        self._deliver()

    def reset(self) -> None:
        """Close the breaker and forget the window (also ends an isolation)."""
        with self._lock:
            self._enter(_CLOSED, "reset", 0.0)
        self._deliver()

    # -------------------------------------------------------------- introspection

    @property
    def state(self) -> CircuitState:
        """The current state (an open breaker whose time is up turns half-open)."""
        with self._lock:
            self._poll()
            state = self._state
        if self._pending:
            self._deliver()
        return state

    @property
    def until(self) -> float | None:
        """When open, the monotonic time of the next trial (``inf`` when isolated)."""
        with self._lock:
            self._poll()
            until = self._until if self._state is _OPEN or self._state is _ISOLATED else None
        if self._pending:
            self._deliver()
        return until

    def metrics(self) -> CircuitMetrics:
        """A snapshot of the window."""
        with self._lock:
            calls, failures, slow = self._window.totals()
            return CircuitMetrics(calls, failures, slow, self._consecutive)

    def trials(self) -> tuple[int, int]:
        """``(trial calls in flight, successful trials)`` of the current half-open period."""
        with self._lock:
            if self._state is _HALF_OPEN:
                return self._trials, self._successes
            return 0, 0

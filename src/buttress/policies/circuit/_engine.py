"""The circuit breaker's sans-I/O engine: one state machine for sync and async calls.

The engine decides, the drivers (``_policy.py``) only execute: ``acquire()``
admits a call or raises :class:`~buttress.errors.CircuitOpen`, and the driver
reports the call's outcome with ``on_success``/``on_error``. The engine owns no
threads, timers or event loop: time is read from the injected clock and the
open-to-half-open move happens lazily, when someone next looks.

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

Events are emitted while the lock is held, as the last step of a transition, so
listeners see transitions in the order they happened. The lock is re-entrant so
that a listener may read the breaker (or even reset it); listeners should be quick.
"""

from __future__ import annotations

import math
import threading

from buttress._outcome import _PROGRAMMING
from buttress.clock import Clock
from buttress.errors import CircuitOpen, Rejected
from buttress.events import CallRejected, Emitter

from ._events import CircuitState, CircuitStateChanged
from ._options import CircuitOptions, compile_filter
from ._window import CircuitMetrics, CountWindow, TimeWindow

__all__ = ["CircuitEngine"]

# By default the breaker counts neither buttress's own rejections (the dependency was
# never called) nor programming errors (the caller's bug, not the dependency's).
_NOT_COUNTED = (Rejected, *_PROGRAMMING)

_CLOSED = CircuitState.CLOSED
_OPEN = CircuitState.OPEN
_HALF_OPEN = CircuitState.HALF_OPEN
_ISOLATED = CircuitState.ISOLATED


class CircuitEngine:
    """The state machine and window of one breaker, guarded by one lock."""

    __slots__ = (
        "_consecutive",
        "_events",
        "_gen",
        "_is_failure",
        "_is_ignored",
        "_lock",
        "_name",
        "_now",
        "_open_for",
        "_options",
        "_starved",
        "_state",
        "_successes",
        "_trial_cap",
        "_trials",
        "_until",
        "_window",
        "fast",
        "slow_after",
        "timed",
    )

    def __init__(self, options: CircuitOptions, clock: Clock, name: str, events: Emitter) -> None:
        self._options = options
        self._now = clock.monotonic
        self._name = name
        self._events = events
        self._lock = threading.RLock()
        self._window: CountWindow | TimeWindow
        if options.window_seconds is not None:
            self._window = TimeWindow(options.window_seconds, self._now)
        else:
            assert options.window is not None
            self._window = CountWindow(options.window)
        self._is_failure = compile_filter(options.failure_on, "failure_on")
        self._is_ignored = compile_filter(options.ignore, "ignore")
        self.slow_after = (
            math.inf if options.slow_call_duration is None else options.slow_call_duration
        )
        """Seconds from which a call is slow; infinite when slow-call detection is off."""
        self.timed = options.slow_call_duration is not None
        """Whether calls must be timed (slow-call detection is on)."""
        self._state = _CLOSED
        self._gen = 1
        self.fast = 0
        """The generation while a fast success changes nothing, else 0 (read lock-free)."""
        self._until = 0.0
        self._open_for = options.open_duration
        self._trials = 0
        self._trial_cap = options.half_open_calls
        self._starved = False
        self._successes = 0
        self._consecutive = 0

    # ------------------------------------------------------------------ admission

    def acquire(self) -> int:
        """Admit a call and return its ticket, or raise :class:`CircuitOpen`."""
        with self._lock:
            state = self._state
            if state is _CLOSED:
                return self._gen
            now = self._now()
            if state is _OPEN and now >= self._until:
                self._enter(_HALF_OPEN, "open_duration_elapsed", now)
                state = self._state  # a listener may have moved it again
                if state is _CLOSED:
                    return self._gen
            if state is _HALF_OPEN:
                if self._trials < self._trial_cap:
                    self._trials += 1
                    return self._gen
                # Remembered for a shared breaker, whose syncer then asks for the trials.
                self._starved = True
                reason = "half_open_full"
                # Nothing to wait for on the breaker's side: a running trial decides.
                until = now
            else:
                reason = "circuit_open"
                until = self._until
        if self._events.enabled:
            self._events.emit(CallRejected(self._name, reason))
        raise CircuitOpen(self._name, until, max(0.0, until - now))

    # ------------------------------------------------------------------- outcomes

    def on_success(self, ticket: int, elapsed: float) -> None:
        """The call admitted with ``ticket`` returned after ``elapsed`` seconds."""
        self._record(ticket, False, elapsed >= self.slow_after)

    def on_error(self, ticket: int, exc: BaseException, elapsed: float) -> None:
        """The call admitted with ``ticket`` raised ``exc`` after ``elapsed`` seconds.

        BaseExceptions that are not Exceptions (cancellation, interrupts) and
        ignored exceptions count as nothing; they only give back a trial permit.
        An exception that ``failure_on`` does not match counts as a success: the
        protected service answered, the answer was just not what the caller liked.

        With the default ``failure_on``, a buttress :class:`~buttress.errors.Rejected`
        (an inner bulkhead, rate limiter or breaker turning the call away) counts as
        nothing too: the protected service was never called, so its health is
        unknown. Name such an error in ``failure_on`` to count it anyway.
        """
        if not isinstance(exc, Exception) or (
            self._is_failure is None and isinstance(exc, _NOT_COUNTED)
        ):
            self.release(ticket)
            return
        try:
            if self._is_ignored is not None and self._is_ignored(exc):
                self.release(ticket)
                return
            failed = True if self._is_failure is None else self._is_failure(exc)
        except BaseException:
            self.release(ticket)  # a faulty predicate must not leak a trial permit
            raise
        self._record(ticket, failed, elapsed >= self.slow_after)

    def release(self, ticket: int) -> None:
        """Give back the trial permit ``ticket`` holds, if any, counting no outcome."""
        with self._lock:
            if ticket == self._gen and self._state is _HALF_OPEN:
                self._trials -= 1

    def _record(self, ticket: int, failed: bool, slow: bool) -> None:
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
                    self._enter(_OPEN, reason, self._now())
                else:
                    self.fast = ticket if window.clean else 0
            elif state is _HALF_OPEN:
                self._trials -= 1
                if failed or slow:
                    self._enter(_OPEN, "trial_failed" if failed else "trial_slow", self._now())
                else:
                    self._successes += 1
                    if self._successes >= self._options.half_open_successes:
                        self._enter(_CLOSED, "trials_succeeded", 0.0)

    def _trip_reason(self) -> str | None:
        options = self._options
        threshold = options.consecutive_failures
        if threshold is not None and self._consecutive >= threshold:
            return "consecutive_failures"
        window = self._window
        calls = window.calls
        if calls >= options.min_calls:
            if window.failures / calls >= options.failure_ratio:
                return "failure_ratio"
            if window.slow / calls >= options.slow_call_ratio:
                return "slow_call_ratio"
        return None

    # ---------------------------------------------------------------- transitions

    def _enter(self, new: CircuitState, reason: str, now: float) -> None:
        """Move to ``new`` (under the lock); emitting is the last thing it does."""
        old = self._state
        self._state = new
        self._gen += 1
        self.fast = 0
        if new is _OPEN:
            options = self._options
            if old is _HALF_OPEN:
                self._open_for = min(
                    self._open_for * options.open_duration_factor, options.max_open_duration
                )
            else:
                self._open_for = options.open_duration
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
            self._events.emit(CircuitStateChanged(self._name, old, new, reason))

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

    def reset(self) -> None:
        """Close the breaker and forget the window (also ends an isolation)."""
        with self._lock:
            self._enter(_CLOSED, "reset", 0.0)

    # -------------------------------------------------------------- introspection

    @property
    def state(self) -> CircuitState:
        """The current state (an open breaker whose time is up turns half-open)."""
        with self._lock:
            self._poll()
            return self._state

    @property
    def until(self) -> float | None:
        """When open, the monotonic time of the next trial (``inf`` when isolated)."""
        with self._lock:
            self._poll()
            return self._until if self._state is _OPEN or self._state is _ISOLATED else None

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

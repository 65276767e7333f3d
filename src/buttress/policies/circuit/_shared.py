"""The engine of a shared breaker: the local engine plus what a sync reads and applies.

Still sans-I/O. Calls are decided exactly as by :class:`~._engine.CircuitEngine`,
locally, with no round trip; on top of that the engine keeps what the next sync
reports and applies what the sync brings back:

- **Counts.** The window counts the outcomes it records since the last sync (three
  ints, under the engine's lock), and the drivers count the lock-free fast
  successes on :attr:`SharedCircuitEngine.tally` (an ``itertools.count``, whose
  ``next`` is atomic): the sync reads the counter, so nothing is reset on the hot
  path and no increment is lost.
- **Proposals.** A transition this process makes on its own (a trip, a trial's
  verdict, :meth:`isolate`, :meth:`reset`) is remembered as a proposal for the
  store, which applies it if nobody moved first, and wakes the syncer so the
  others hear of it without waiting for the next interval.
- **Trials.** While synchronised, a half-open period starts with no trial permit:
  the syncer asks the store for the trial lease when a caller found none, and the
  process holding the lease gets ``half_open_calls`` permits. So, across all
  connected processes, at most ``half_open_calls`` trials run at once.
- **Adopting.** :meth:`SharedCircuitEngine.adopt` moves the local engine into the
  shared state (open until the shared time, closed with a fresh window after a
  close or reset elsewhere, half-open with or without the lease, isolated), emitting
  the usual :class:`~._events.CircuitStateChanged` with the shared transition's reason.
- **Alone.** When the store cannot be reached, :meth:`SharedCircuitEngine.go_local`
  turns it into a plain local breaker (trials without a lease) until a sync succeeds.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable
from typing import NamedTuple

from buttress.clock import Clock
from buttress.events import Emitter

from ._engine import CircuitEngine
from ._events import CircuitState
from ._options import CircuitOptions
from ._store import BreakerConfig, BreakerReply, BreakerReport
from ._window import CountWindow, TimeWindow, bucket_count

__all__ = ["SharedCircuitEngine", "breaker_config"]

_CLOSED = CircuitState.CLOSED
_OPEN = CircuitState.OPEN
_HALF_OPEN = CircuitState.HALF_OPEN
_ISOLATED = CircuitState.ISOLATED

# Manual commands: they apply to the shared state whatever happened meanwhile.
_COMMANDS = frozenset({"isolate", "reset"})


class _CountingCountWindow(CountWindow):
    """A count window that also counts what it records since the last sync."""

    __slots__ = ("d_calls", "d_failures", "d_slow")

    def __init__(self, size: int) -> None:
        super().__init__(size)
        self.d_calls = self.d_failures = self.d_slow = 0

    def add(self, failed: bool, slow: bool) -> None:
        self.d_calls += 1
        self.d_failures += failed
        self.d_slow += slow
        CountWindow.add(self, failed, slow)


class _CountingTimeWindow(TimeWindow):
    """A time window that also counts what it records since the last sync."""

    __slots__ = ("d_calls", "d_failures", "d_slow")

    def __init__(self, seconds: float, now: Callable[[], float]) -> None:
        super().__init__(seconds, now)
        self.d_calls = self.d_failures = self.d_slow = 0

    def add(self, failed: bool, slow: bool) -> None:
        self.d_calls += 1
        self.d_failures += failed
        self.d_slow += slow
        TimeWindow.add(self, failed, slow)


class _Proposal(NamedTuple):
    """The transitions made here since the last sync: from the first ``frm`` to ``to``."""

    frm: CircuitState
    to: CircuitState
    reason: str
    forced: bool


def breaker_config(options: CircuitOptions) -> BreakerConfig:
    """The trip rules of ``options`` as the store applies them to the shared window."""
    if options.window_seconds is not None:
        buckets = bucket_count(options.window_seconds)
        window, width = 0, options.window_seconds / buckets
    else:
        assert options.window is not None
        buckets, window, width = 0, options.window, 0.0
    return BreakerConfig(
        window=window,
        bucket_width=width,
        buckets=buckets,
        min_calls=options.min_calls,
        failure_ratio=options.failure_ratio,
        slow_call_ratio=options.slow_call_ratio,
        consecutive_failures=options.consecutive_failures or 0,
        open_duration=options.open_duration,
        open_duration_factor=options.open_duration_factor,
        max_open_duration=options.max_open_duration,
    )


class SharedCircuitEngine(CircuitEngine):
    """A :class:`CircuitEngine` whose state is synchronised with other processes.

    ``wake`` is called (under the engine's lock, so it must be quick) when this
    process makes a transition the others should hear about soon.
    """

    __slots__ = (
        "__weakref__",
        "_adopting",
        "_connected",
        "_epoch",
        "_proposal",
        "_rejoin",
        "_sent",
        "_tally_seen",
        "_wake",
        "config",
        "shared_metrics",
        "tally",
    )

    _window: _CountingCountWindow | _CountingTimeWindow

    def __init__(
        self,
        options: CircuitOptions,
        clock: Clock,
        name: str,
        events: Emitter,
        wake: Callable[[], object],
    ) -> None:
        super().__init__(options, clock, name, events)
        if options.window_seconds is not None:
            self._window = _CountingTimeWindow(options.window_seconds, self._now)
        else:
            assert options.window is not None
            self._window = _CountingCountWindow(options.window)
        self.config = breaker_config(options)
        self.tally: Callable[[], int] = itertools.count().__next__
        """Called by the drivers for each fast success they do not report (lock-free)."""
        self._tally_seen = self.tally()
        self._wake = wake
        self._connected = False
        self._epoch = 0
        self._rejoin = False
        self._adopting = False
        self._proposal: _Proposal | None = None
        self._sent: _Proposal | None = None
        self.shared_metrics: tuple[int, int, int, int] | None = None
        """``(calls, failures, slow, consecutive)`` of the shared window at the last sync."""

    # ------------------------------------------------------------- local changes

    def _enter(self, new: CircuitState, reason: str, now: float) -> None:
        if self._adopting:
            # Consumed here, so a listener's own transition during the move counts.
            self._adopting = False
        elif reason != "open_duration_elapsed":  # time moves alike everywhere
            self._propose(new, reason)
        super()._enter(new, reason, now)

    def _propose(self, new: CircuitState, reason: str) -> None:
        previous = self._proposal
        command = reason in _COMMANDS
        self._proposal = _Proposal(
            self._state if previous is None else previous.frm,
            new,
            reason,
            command or (previous is not None and previous.forced),
        )
        if new is _CLOSED or command:
            self._drop_counts()  # they belong to a window that is over
        if self._connected:
            self._wake()

    def _trial_permits(self) -> int:
        # While synchronised, trials wait for the lease (see adopt).
        return 0 if self._connected else self._options.half_open_calls

    def _drop_counts(self) -> None:
        window = self._window
        window.d_calls = window.d_failures = window.d_slow = 0
        self._tally_seen = self.tally()

    # ------------------------------------------------------------------ syncing

    def report(self) -> BreakerReport:
        """What the next sync tells the store; the counts start again from zero."""
        with self._lock:
            self._poll()
            window = self._window
            mark = self.tally()
            calls = window.d_calls + mark - self._tally_seen - 1
            failures, slow = window.d_failures, window.d_slow
            self._tally_seen = mark
            window.d_calls = window.d_failures = window.d_slow = 0
            if self._rejoin:
                # Counted while the store was away: stale by now, and the local
                # state already reflects them.
                calls = failures = slow = 0
            proposal = self._sent = self._proposal
            state = self._state
            want = state is _HALF_OPEN and (self._starved or self._trials > 0)
            self._starved = False
            return BreakerReport(
                name=self._name,
                config=self.config,
                epoch=self._epoch,
                calls=calls,
                failures=failures,
                slow=slow,
                had_success=calls > failures,
                trailing=self._consecutive,
                proposal="" if proposal is None else proposal.to.value,
                proposal_from="" if proposal is None else proposal.frm.value,
                reason="" if proposal is None else proposal.reason,
                forced=proposal is not None and proposal.forced,
                want_trial=want,
            )

    def adopt(self, reply: BreakerReply) -> None:
        """Apply the shared state the sync brought back for the last :meth:`report`."""
        with self._lock:
            sent = self._sent
            self._sent = None
            pending = None if self._proposal is sent else self._proposal
            if pending is None:
                self._proposal = None
            known = self._epoch
            changed = reply.epoch != known
            self._epoch = reply.epoch
            self._connected = True
            self._rejoin = False
            self.shared_metrics = (reply.calls, reply.failures, reply.slow, reply.consecutive)
            if changed and known and not reply.applied:
                self._drop_counts()
            if pending is not None:
                if pending.forced or not changed:
                    return  # this process moved again meanwhile: the next sync says so
                self._proposal = None  # made in an era that is over
            self._follow(reply, changed, changed and bool(known) and not reply.applied)

    def _follow(self, reply: BreakerReply, changed: bool, new_era: bool) -> None:
        # ``new_era``: the shared state moved on without this process (not a first
        # contact, not its own proposal), so local counts and trials are stale.
        target = CircuitState(reply.state)
        state = self._state
        now = self._now()
        if target is _CLOSED:
            # A close or reset elsewhere starts a new window here too.
            if state is not _CLOSED or new_era:
                self._adopt_enter(_CLOSED, reply.reason, now)
        elif target is _OPEN:
            if state is _HALF_OPEN and not changed and self._trials == 0:
                # This clock reached the open-until time first; the store follows soon.
                self._trial_cap = 0
                return
            if state is not _OPEN:
                self._adopt_enter(_OPEN, reply.reason, now)
            self._until = now + reply.remaining
            self._open_for = reply.open_for
        elif target is _HALF_OPEN:
            if state is not _HALF_OPEN or new_era:
                self._adopt_enter(_HALF_OPEN, reply.reason or "open_duration_elapsed", now)
            self._trial_cap = self._options.half_open_calls if reply.trial_lease else 0
        elif state is not _ISOLATED:
            self._adopt_enter(_ISOLATED, reply.reason, now)

    def _adopt_enter(self, new: CircuitState, reason: str, now: float) -> None:
        self._adopting = True
        try:
            self._enter(new, reason, now)
        finally:
            self._adopting = False

    def go_local(self) -> None:
        """The store is unreachable: decide alone, and re-join at the next good sync."""
        with self._lock:
            self._connected = False
            self._epoch = 0
            self._rejoin = True
            self._sent = None  # the proposal stays: it is pushed when the store is back
            self.shared_metrics = None
            if self._state is _HALF_OPEN:
                self._trial_cap = self._options.half_open_calls

    def after_fork(self, wake: Callable[[], object]) -> None:
        """In a forked child: a fresh lock (the parent's syncer may have held it), the
        child's syncer to wake, and alone until the child's first sync."""
        self._lock = threading.RLock()
        self._wake = wake
        self.go_local()

    @property
    def unsynced(self) -> bool:
        """Whether this process made a transition the store has not applied yet."""
        return self._proposal is not None

    @property
    def connected(self) -> bool:
        """Whether the last sync reached the store."""
        return self._connected

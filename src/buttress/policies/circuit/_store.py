"""The contract between shared circuit breakers and the store that keeps their state.

A shared breaker (``CircuitBreaker(hub=...)``) decides every call locally and
synchronises in the background: each exchange sends one :class:`BreakerReport` per
breaker (the outcomes counted since the last exchange, the transition this process
made, whether it wants to run trial calls) and gets back one :class:`BreakerReply`
(the state every process should be in). The store merges the report into the
shared window, evaluates the trip rules over it, performs at most one transition
atomically, and answers — for all breakers of one process in one round trip.

The contract knows breaker *states* only as their stable string values
(``"closed"``, ``"open"``, ``"half_open"``, ``"isolated"``), so a store can be
written without the breaker's engine. The Redis implementation is
:class:`~buttress.policies.circuit.RedisBreakerStore` (``_redis_store``); a store of
your own implements :class:`BreakerStore`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple, Protocol, runtime_checkable

__all__ = ["BreakerConfig", "BreakerReply", "BreakerReport", "BreakerStore"]


class BreakerConfig(NamedTuple):
    """A breaker's trip rules as the store needs them; the same in every process.

    ``window`` is the size of a count window (0 for a time window); a time window
    has ``buckets`` buckets of ``bucket_width`` seconds (both 0 for a count
    window). ``consecutive_failures`` is 0 when that rule is off.
    """

    window: int
    bucket_width: float
    buckets: int
    min_calls: int
    failure_ratio: float
    slow_call_ratio: float
    consecutive_failures: int
    open_duration: float
    open_duration_factor: float
    max_open_duration: float


class BreakerReport(NamedTuple):
    """What one process tells the store about one breaker at an exchange.

    - ``epoch``: the shared epoch the process last adopted, 0 when it has none
      (first contact, or re-joining after the store was unreachable).
    - ``calls``, ``failures``, ``slow``: outcomes recorded in the closed state of
      ``epoch`` since the last exchange; ``had_success`` whether one of them was not a
      failure, and ``trailing`` the failures since this process's last success.
    - ``proposal``: the state this process moved to since the last exchange (``""``:
      none), from the state ``proposal_from``, for ``reason``. ``forced`` when
      the moves include :meth:`isolate` or :meth:`reset`: commands apply whatever
      the shared state; other proposals only if the shared state is still
      ``proposal_from`` in ``epoch``.
    - ``want_trial``: the process is half-open and has callers waiting for a trial
      permit (or trials in flight): it asks for, or renews, the trial lease.
    """

    name: str
    config: BreakerConfig
    epoch: int
    calls: int
    failures: int
    slow: int
    had_success: bool
    trailing: int
    proposal: str
    proposal_from: str
    reason: str
    forced: bool
    want_trial: bool


class BreakerReply(NamedTuple):
    """The shared state of one breaker after an exchange.

    ``remaining`` is the seconds until an open breaker allows trials (``inf`` while
    isolated, 0.0 otherwise) and ``open_for`` the open duration that applies;
    ``trial_lease`` whether this process holds the right to run the half-open
    trials; ``applied`` whether the report's proposal was applied; ``reason`` the
    reason of the last shared transition. ``calls`` … ``consecutive`` describe the
    shared window.
    """

    state: str
    epoch: int
    remaining: float
    open_for: float
    trial_lease: bool
    applied: bool
    reason: str
    calls: int
    failures: int
    slow: int
    consecutive: int


@runtime_checkable
class BreakerStore(Protocol):
    """Where shared breaker state lives: one atomic merge per breaker, all in one round trip.

    ``owner`` identifies the reporting process (the trial lease is held by an
    owner); ``lease`` is how many seconds a granted lease lasts unless renewed.
    ``now`` (wall-clock seconds) is for tests and for stores told to use the
    client's clock; by default the store uses its server's time. Errors surface
    as :class:`~buttress.stores.StoreError` (never a driver's exception); the
    breakers then decide alone until an exchange gets through.
    """

    @property
    def name(self) -> str:
        """The store's name, used in events."""
        ...

    def exchange(
        self, owner: str, reports: Sequence[BreakerReport], lease: float, now: float | None = None
    ) -> list[BreakerReply]:
        """Merge every report and return the shared states, in order."""
        ...

    def close(self) -> None:
        """Release what the store opened itself."""
        ...

"""The dispatcher's sans-I/O engine: what each attempt's outcome means.

The engine reads nothing and writes nothing. The driver claims deliveries, tries each
one (or finds it cannot be tried now), and hands the ``(delivery, outcome)`` pairs to
:meth:`Engine.decide`, which returns a :class:`Decision`: the deliveries to mark
delivered, to try again at a given time, to release untried, or to dead-letter; the
attempt log rows; and the endpoints whose health changed (failing since, recovered,
disabled). The driver writes the decision back in one transaction.

Rules, for an attempt that got an answer or an error:

* 2xx: delivered;
* 410 Gone: dead-lettered, and the endpoint is disabled;
* another 4xx but 408, 409, 425 and 429, or an address the SSRF guard refuses:
  dead-lettered at once (retrying cannot help);
* anything else (no answer, a timeout, a reset, 3xx, 408, 409, 425, 429, 5xx): failed,
  tried again after the schedule's next wait (at least the ``Retry-After`` asked for),
  or dead-lettered when the schedule is used up.

An endpoint that has failed every attempt for ``disable_after`` seconds is disabled.
A delivery that was not tried (open breaker, rate limit, full bulkhead) is released
until it may be tried, without using up an attempt.
"""

from __future__ import annotations

import random as _random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final, TypeAlias

from buttress.webhooks.dispatcher._options import Endpoint, RetrySchedule

__all__ = [
    "MAX_ERROR_CHARS",
    "AttemptRow",
    "Claimed",
    "Decision",
    "Deferred",
    "EndpointDisabled",
    "Engine",
    "Exhausted",
    "Outcome",
    "Refused",
    "Response",
]

MAX_ERROR_CHARS: Final = 2000
"""``last_error`` and an attempt's ``error`` are cut to this many characters."""

RETRYABLE_4XX: Final = frozenset({408, 409, 425, 429})
"""Client errors that may go away: these are retried, other 4xx are not."""

HOOK_NONE: Final = 0
HOOK_PENDING: Final = 1
HOOK_DONE: Final = 2


STORE_STREAK_AFTER: Final = 10.0
"""Seconds an endpoint must have failed continuously before its streak is stored."""


@dataclass(frozen=True, slots=True)
class Claimed:
    """One delivery (a message to an endpoint) claimed by a dispatcher.

    ``attempts`` counts the attempts made before this one.
    """

    seq: int
    message_id: str
    endpoint_id: str
    event_type: str
    body: bytes
    attempts: int


@dataclass(frozen=True, slots=True)
class Response:
    """What one HTTP attempt ended with: an answer (``status``) or an ``error``.

    ``headers`` (JSON text) and ``body`` are the capped response headers and excerpt;
    ``at`` the wall time the attempt started, ``latency`` its duration in seconds.
    ``permanent``: an error no retry can cure (the SSRF guard refused the address).
    """

    at: float
    latency: float
    status: int | None = None
    error: str | None = None
    headers: str | None = None
    body: str | None = None
    retry_after: float | None = None
    permanent: bool = False


@dataclass(frozen=True, slots=True)
class Deferred:
    """The delivery could not be tried now; it may be from ``until`` (wall time)."""

    until: float
    reason: str


@dataclass(frozen=True, slots=True)
class Refused:
    """The delivery will not be tried at all (disabled endpoint): dead-letter it."""

    reason: str


Outcome: TypeAlias = Response | Deferred | Refused


@dataclass(frozen=True, slots=True)
class Exhausted:
    """A delivery given up on, as handed to its endpoint's ``on_exhausted`` hook.

    Attributes:
        delivery_id: The dead letter's id (see ``Dispatcher.dead_letters``).
        endpoint_id: The endpoint it was for.
        message_id: The message (its ``webhook-id``).
        event_type: The message's type.
        body: The payload.
        attempts: Attempts made.
        reason: The last error, or why it was not tried.
    """

    delivery_id: str
    endpoint_id: str
    message_id: str
    event_type: str
    body: bytes
    attempts: int
    reason: str


@dataclass(frozen=True, slots=True)
class EndpointDisabled:
    """An endpoint was disabled: it answered 410 Gone, or failed for too long."""

    endpoint_id: str
    reason: str
    at: float


AttemptRow: TypeAlias = tuple[
    int, int, float, int | None, float, str | None, str | None, str | None
]
"""``(seq, attempt, at, status, latency, headers, body, error)``."""


@dataclass(slots=True)
class Decision:
    """What to write back after a round of attempts."""

    delivered: list[tuple[int, int]] = field(default_factory=list)
    """``(seq, status)``."""
    retry: list[tuple[int, float, str, int | None]] = field(default_factory=list)
    """``(seq, next_attempt_at, error, status)``: an attempt failed; pending again."""
    released: list[tuple[int, float]] = field(default_factory=list)
    """``(seq, next_attempt_at)``: not tried; pending again, no attempt counted."""
    dead: list[tuple[int, int, str, int | None, int]] = field(default_factory=list)
    """``(seq, attempts_added, error, status, hook_state)``: dead-lettered."""
    attempts: list[AttemptRow] = field(default_factory=list)
    failing: list[tuple[str, float]] = field(default_factory=list)
    """``(endpoint_id, since)``: failing from then on (kept if already set)."""
    recovered: list[str] = field(default_factory=list)
    disabled: list[EndpointDisabled] = field(default_factory=list)
    hooks_done: list[int] = field(default_factory=list)
    exhausted: list[Exhausted] = field(default_factory=list)
    """The dead letters whose endpoint has an ``on_exhausted`` hook (to run after
    the decision is written)."""

    def __bool__(self) -> bool:
        return bool(
            self.delivered or self.retry or self.released or self.dead or self.attempts
            or self.failing or self.recovered or self.disabled or self.hooks_done
        )  # fmt: skip


def cut(text: str) -> str:
    """``text`` cut to :data:`MAX_ERROR_CHARS`."""
    return text if len(text) <= MAX_ERROR_CHARS else text[: MAX_ERROR_CHARS - 1] + "…"


def describe(exc: BaseException) -> str:
    """``"TypeName: message"``, cut to :data:`MAX_ERROR_CHARS`."""
    return cut(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)


class Engine:
    """Decides what the outcomes of a round of deliveries mean (see the module).

    Args:
        endpoints: The endpoints by id (for their hooks).
        schedule: The waits between attempts.
        disable_after: Seconds of uninterrupted failure after which an endpoint is
            disabled; ``None``: never.
        random: Floats in [0, 1) for the jitter.

    The engine keeps each endpoint's health: :attr:`failing_since` (wall time of the
    first failure since its last success) and :attr:`disabled` (id to reason). The
    driver loads both from storage when it starts.
    """

    __slots__ = (
        "disable_after",
        "disabled",
        "endpoints",
        "failing_since",
        "random",
        "schedule",
        "stored",
    )

    def __init__(
        self,
        endpoints: Mapping[str, Endpoint],
        schedule: RetrySchedule,
        *,
        disable_after: float | None,
        random: Callable[[], float] | None = None,
    ) -> None:
        self.endpoints = endpoints
        self.schedule = schedule
        self.disable_after = disable_after
        self.random = random if random is not None else _random.random
        self.failing_since: dict[str, float] = {}
        # Endpoints whose failing streak is in storage (written by this engine, or
        # read from it): only those need a "recovered" write on their next success.
        self.stored: set[str] = set()
        self.disabled: dict[str, str] = {}

    def _dead(
        self,
        decision: Decision,
        row: Claimed,
        added: int,
        error: str,
        status: int | None,
    ) -> None:
        endpoint = self.endpoints.get(row.endpoint_id)
        hooked = endpoint is not None and endpoint.on_exhausted is not None
        decision.dead.append((row.seq, added, error, status, HOOK_PENDING if hooked else HOOK_NONE))
        if hooked:
            decision.exhausted.append(
                Exhausted(
                    str(row.seq),
                    row.endpoint_id,
                    row.message_id,
                    row.event_type,
                    row.body,
                    row.attempts + added,
                    error,
                )
            )

    def _disable(self, decision: Decision, endpoint_id: str, reason: str, now: float) -> None:
        if endpoint_id in self.disabled:
            return
        self.disabled[endpoint_id] = reason
        self.failing_since.pop(endpoint_id, None)
        self.stored.discard(endpoint_id)
        decision.disabled.append(EndpointDisabled(endpoint_id, reason, now))

    def _health(self, decision: Decision, endpoint_id: str, ok: bool, now: float) -> None:
        # A failing streak is written to storage only once it has lasted
        # STORE_STREAK_AFTER seconds: an endpoint that fails one request in ten
        # would otherwise cost two writes per failure (failing, then recovered).
        # A crash forgets at most that much of a streak measured in days.
        if ok:
            self.failing_since.pop(endpoint_id, None)
            if endpoint_id in self.stored:
                self.stored.discard(endpoint_id)
                decision.recovered.append(endpoint_id)
            return
        since = self.failing_since.get(endpoint_id)
        if since is None:
            self.failing_since[endpoint_id] = since = now
        if endpoint_id not in self.stored and now - since >= STORE_STREAK_AFTER:
            self.stored.add(endpoint_id)
            decision.failing.append((endpoint_id, since))
        if self.disable_after is not None and now - since >= self.disable_after:
            self._disable(
                decision,
                endpoint_id,
                f"failing continuously for {now - since:.0f}s (since {since:.0f})",
                now,
            )

    def decide(self, results: Sequence[tuple[Claimed, Outcome]], now: float) -> Decision:
        """The :class:`Decision` for a round of ``(delivery, outcome)`` at ``now``."""
        decision = Decision()
        schedule = self.schedule
        for row, outcome in results:
            if type(outcome) is Deferred:
                decision.released.append((row.seq, outcome.until))
                continue
            if type(outcome) is Refused:
                self._dead(decision, row, 0, cut(outcome.reason), None)
                continue
            assert type(outcome) is Response
            status = outcome.status
            attempt = row.attempts + 1
            decision.attempts.append(
                (row.seq, attempt, outcome.at, status, outcome.latency, outcome.headers,
                 outcome.body, outcome.error)
            )  # fmt: skip
            if status is not None and 200 <= status < 300:
                decision.delivered.append((row.seq, status))
                self._health(decision, row.endpoint_id, True, now)
                continue
            self._health(decision, row.endpoint_id, False, now)
            error = f"HTTP {status}" if status is not None else (outcome.error or "no response")
            if status == 410:
                self._dead(decision, row, 1, error, status)
                self._disable(decision, row.endpoint_id, "410 Gone", now)
                continue
            if outcome.permanent:
                self._dead(decision, row, 1, f"{error} (not retried)", status)
                continue
            if status is not None and 400 <= status < 500 and status not in RETRYABLE_4XX:
                self._dead(decision, row, 1, f"{error} (not retried)", status)
                continue
            wait = schedule.wait(attempt, self.random)
            if wait is None:
                self._dead(
                    decision, row, 1, cut(f"{attempt} attempts failed; last: {error}"), status
                )
                continue
            if outcome.retry_after is not None:
                wait = max(wait, min(outcome.retry_after, schedule.retry_after_cap))
            decision.retry.append((row.seq, now + wait, error, status))
        return decision

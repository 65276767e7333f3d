"""The relay's sans-I/O engine: what a publish outcome means for each claimed row.

The engine reads nothing and writes nothing. The driver claims rows (see
:mod:`buttress.messaging.relay._store` for the claim rule that keeps per-key order),
publishes them, and hands the rows and the outcome (``None`` or the exception) to
:meth:`Engine.decide`, which returns a :class:`Decision`: the rows to mark
published, the rows to try again at a given time with their error, and the rows to
dead-letter with their last error. The driver then applies it in one transaction.
"""

from __future__ import annotations

import math
import random as _random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Final

from buttress.errors import ConfigError, Rejected
from buttress.messaging.brokers import PublishError
from buttress.policies.backoff import Backoff, Exponential

__all__ = ["ClaimedRow", "Decision", "Engine", "describe"]

MAX_ERROR_CHARS: Final = 2000
"""``last_error`` is cut to this many characters."""


@dataclass(frozen=True, slots=True)
class ClaimedRow:
    """One outbox row claimed by a relay.

    ``attempts`` counts the attempts before this one: the claims that ended in a
    failed publish, or in no outcome at all (the relay stopped or crashed while
    publishing). Stores count an attempt when they claim a row, not when its
    publish fails, so an event that kills the relay every time still uses them up.
    """

    seq: int
    event_id: str
    subject: str | None
    envelope: str
    attempts: int


@dataclass(slots=True)
class Decision:
    """What to write back after a publish: lists of ``seq`` (with times and errors)."""

    published: list[int] = field(default_factory=list)
    retry: list[tuple[int, float, str]] = field(default_factory=list)
    """``(seq, next_attempt_at, error)``: pending again, not before that (Unix) time."""
    released: list[tuple[int, float]] = field(default_factory=list)
    """``(seq, next_attempt_at)``: pending again from then, no attempt counted (the
    publish was never tried)."""
    dead: list[tuple[int, str]] = field(default_factory=list)
    """``(seq, last_error)``: dead-lettered."""


def describe(exc: BaseException) -> str:
    """``"TypeName: message"``, cut to :data:`MAX_ERROR_CHARS`."""
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return text if len(text) <= MAX_ERROR_CHARS else text[: MAX_ERROR_CHARS - 1] + "…"


def _check_positive(value: object, path: str, *, integer: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"must be a number > 0, got {value!r}", path=path)
    if integer and not isinstance(value, int):
        raise ConfigError(f"must be an integer >= 1, got {value!r}", path=path)
    if not math.isfinite(value) or value <= 0:
        raise ConfigError(f"must be > 0 and finite, got {value!r}", path=path)
    return value


class Engine:
    """Decides, from a batch's outcome, what to mark published, retry or dead-letter.

    Args:
        max_attempts: Failed publishes after which a row is dead-lettered (>= 1).
        backoff: The schedule of delays between attempts of one row (default:
            exponential from ``1 s``, doubling), capped at ``max_delay`` and
            jittered ("equal" jitter: between half the delay and the delay).
        max_delay: The longest wait between two attempts of one row, in seconds.
        random: Floats in [0, 1) for the jitter (inject a fixed one in tests).

    Rules:

    * no error: every row is published;
    * a :class:`~buttress.messaging.brokers.PublishError`: the rows it names as
      unconfirmed failed (each with its own cause when the broker gave one), the
      others were confirmed and are published;
    * a :class:`~buttress.errors.Rejected` (an open circuit breaker, a full
      bulkhead): the publish was never tried, so the rows are released, due again
      after the rejection's ``retry_after``, without counting an attempt;
    * any other exception: every row failed.

    A failed row is retried after a backoff delay, or dead-lettered with its error
    when it has now failed ``max_attempts`` times. A row whose envelope does not
    parse is dead-lettered by the driver at once (see :meth:`unreadable`), and so
    is a row claimed ``max_attempts`` times already without an outcome (see
    :meth:`abandoned`).
    """

    __slots__ = ("backoff", "max_attempts", "max_delay", "random")

    def __init__(
        self,
        *,
        max_attempts: int = 10,
        backoff: Backoff | None = None,
        max_delay: float = 300.0,
        random: Callable[[], float] | None = None,
    ) -> None:
        self.max_attempts = int(_check_positive(max_attempts, "max_attempts", integer=True))
        self.max_delay = float(_check_positive(max_delay, "max_delay"))
        if backoff is not None and not isinstance(backoff, Backoff):
            raise ConfigError(f"expected a Backoff schedule, got {backoff!r}", path="backoff")
        self.backoff: Backoff = backoff if backoff is not None else Exponential(1.0, 2.0)
        self.random = random if random is not None else _random.random

    def delay(self, attempt: int) -> float:
        """Seconds before retrying a row that has failed ``attempt`` times (>= 1)."""
        raw = min(self.backoff.compute(attempt, 0.0, self.random), self.max_delay)
        if self.backoff.randomized:
            return raw
        return raw / 2 + self.random() * raw / 2

    def _failed(self, decision: Decision, row: ClaimedRow, error: str, now: float) -> None:
        attempts = row.attempts + 1
        if attempts >= self.max_attempts:
            decision.dead.append((row.seq, error))
        else:
            decision.retry.append((row.seq, now + self.delay(attempts), error))

    def decide(
        self, rows: Sequence[ClaimedRow], error: BaseException | None, now: float
    ) -> Decision:
        """The :class:`Decision` for ``rows`` published with outcome ``error`` at ``now``.

        Args:
            rows: The rows of the batch, as claimed.
            error: ``None`` when the publisher confirmed every event, else what it
                (or the pipeline around it) raised.
            now: The current Unix time (``next_attempt_at`` is computed from it).
        """
        decision = Decision()
        if error is None:
            decision.published.extend(row.seq for row in rows)
            return decision
        if isinstance(error, Rejected):
            wait = error.retry_after if error.retry_after is not None else self.delay(1)
            decision.released.extend((row.seq, now + wait) for row in rows)
            return decision
        if isinstance(error, PublishError):
            unconfirmed = set(error.unconfirmed)
            general = describe(error)
            for row in rows:
                if row.event_id not in unconfirmed:
                    decision.published.append(row.seq)
                    continue
                cause = error.causes.get(row.event_id)
                text = f"{general} ({describe(cause)})" if cause is not None else general
                self._failed(decision, row, text[:MAX_ERROR_CHARS], now)
            return decision
        text = describe(error)
        for row in rows:
            self._failed(decision, row, text, now)
        return decision

    def abandoned(self, row: ClaimedRow) -> tuple[int, str] | None:
        """The dead letter for a row whose attempts ran out before this claim, or
        ``None``. Only a row whose earlier claims ended without an outcome gets
        here (a failed publish dead-letters at its last attempt): an event that
        stops the relay each time it is published (a crash in an encoder, an
        out-of-memory kill) must not be tried for ever, blocking its key."""
        if row.attempts < self.max_attempts:
            return None
        return row.seq, (
            f"abandoned: claimed {row.attempts} time(s) without an outcome (the relay "
            "stopped or crashed while publishing it); not published again"
        )

    @staticmethod
    def unreadable(row: ClaimedRow, exc: BaseException) -> tuple[int, str]:
        """The dead letter for a row whose stored envelope cannot be read back."""
        return row.seq, describe(exc)[:MAX_ERROR_CHARS]

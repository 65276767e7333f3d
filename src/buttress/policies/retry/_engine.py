"""Retry's sans-I/O engine: after a failed attempt, wait how long, or give up why.

The engine never sleeps and never reads a clock: the drivers pass in the times it
needs (read only when a setting needs them) and execute its answer. It holds the
rules that are the retry's own:

- which errors are retried (:func:`retryable`): the outcome matcher's rule, except
  that buttress's rejections from policies inside the retry (an open circuit, a full
  bulkhead, any :class:`~buttress.errors.Rejected` but
  :class:`~buttress.errors.RateLimited`) and an inner retry's
  :class:`~buttress.errors.RetryExhausted` exist to fail fast: they are retried only
  when the matcher *names* them;
- how long to wait: the schedule capped at ``max_delay``, jittered, then raised to
  the ``Retry-After`` the outcome asked for — and if that is more than ``max_delay``,
  give up (``reason="retry_after"``) rather than wait too little or too long; a
  ``RateLimited`` always has its own ``retry_after`` honoured (retrying sooner could
  only be refused again);
- when to stop: ``max_attempts``, and ``max_elapsed`` (a wait that would end past it
  is not begun).

The time budget of an enclosing :class:`~buttress.Timeout` is checked by the
drivers (:func:`buttress._deadline.fit`), since only they know a wait is about to
begin.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from buttress._outcome import DEFAULT, PROGRAMMING_ERRORS, Matcher, Outcome, default_retry_after
from buttress._switches import SWITCHES
from buttress.errors import (
    ConfigError,
    RateLimited,
    Rejected,
    RetryExhausted,
    is_transient,
    retry_after_of,
)
from buttress.policies.backoff import Backoff
from buttress.policies.retry._options import Jitter, RetryAfter

__all__ = ["Attempts", "Engine", "retryable"]

_FAIL_FAST = (Rejected, RetryExhausted)
_NEVER_BY_DEFAULT = (*_FAIL_FAST, *PROGRAMMING_ERRORS, ConfigError)


def retryable(matcher: Matcher) -> Callable[[BaseException], bool]:
    """The retry's rule for errors: ``matcher``'s, but fast failures only when named."""
    if matcher is DEFAULT:
        # The default rule in one frame (it runs on every failure a retry sees): no
        # type is named, so rejections but a limiter's, exhausted retries and
        # programming errors are not retried; the rest is what is_transient says.

        def default_rule(exc: BaseException) -> bool:
            if isinstance(exc, _NEVER_BY_DEFAULT):
                return isinstance(exc, RateLimited) and is_transient(exc)
            return is_transient(exc)

        return default_rule
    error_rule = matcher.error_rule
    names = matcher.names

    def rule(exc: BaseException) -> bool:
        if isinstance(exc, _FAIL_FAST) and not isinstance(exc, RateLimited):
            # Only a type of their own names them: on=Exception means "any failure",
            # not "wait out my own open circuits".
            return names(exc, _FAIL_FAST)
        return error_rule(exc)

    return rule


def _seconds_or_none(value: object) -> float | None:
    """A user hook's answer as a wait: negative reads as 0, NaN or junk as no answer."""
    if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
        return None
    return max(0.0, float(value))


def _fmt(seconds: float) -> str:
    return f"{seconds:.3g} s"


class Attempts:
    """One call's retry state; created at its first failure, never on the happy path.

    ``attempt`` is the number of the attempt that ran last (1 for the first);
    ``reason`` and ``detail`` say why the engine gave up, once it has.
    """

    __slots__ = ("attempt", "deadline", "detail", "previous", "reason")

    def __init__(self, deadline: float) -> None:
        self.attempt = 1
        self.deadline = deadline
        self.previous = 0.0
        self.reason = ""
        self.detail: str | None = None


class Engine:
    """Sans-I/O retry decisions, shared by every driver (generated and loop form).

    :meth:`decide` takes the failed attempt's state and outcome and the times the
    driver read, and returns the delay before the next attempt, or ``None`` to give
    up with ``state.reason`` (and ``state.detail``) set.
    """

    __slots__ = (
        "backoff",
        "hook",
        "jitter",
        "max_attempts",
        "max_delay",
        "max_elapsed",
        "random",
        "reads_wall",
        "timed",
    )

    def __init__(
        self,
        *,
        max_attempts: int | None,
        backoff: Backoff,
        max_delay: float,
        jitter: Jitter,
        max_elapsed: float | None,
        retry_after: RetryAfter,
        random: Callable[[], float],
    ) -> None:
        self.max_attempts = max_attempts
        self.backoff = backoff
        self.max_delay = max_delay
        # A schedule that is random by itself (decorrelated jitter) gets no extra jitter:
        # full jitter on top would pull its delays back towards zero.
        self.jitter: Jitter = "none" if backoff.randomized else jitter
        self.max_elapsed = max_elapsed
        self.timed = max_elapsed is not None
        # True: the default reading (needs the wall clock for HTTP dates); False:
        # ignored; a function: the user's own reading of the outcome.
        self.hook: RetryAfter = retry_after
        self.reads_wall = retry_after is True
        self.random = random

    def begin(self, started: float) -> Attempts:
        """State for a call whose first attempt started at ``started`` and just failed."""
        max_elapsed = self.max_elapsed
        return Attempts(math.inf if max_elapsed is None else started + max_elapsed)

    def asked(self, error: BaseException | None, result: Any, wall: float) -> float | None:
        """The wait the outcome asked for (``Retry-After``), as the settings read it.

        A limiter's refusal is read whatever the settings: it says when the call will
        pass (infinity: never), and trying sooner would only be refused again.
        """
        hook = self.hook
        if isinstance(error, RateLimited):
            own = _seconds_or_none(error.retry_after)
            if isinstance(hook, bool):
                return own
            asked = _seconds_or_none(hook(Outcome(None, error)))
            return own if asked is None else asked
        if hook is True:
            if error is not None:
                return retry_after_of(error, now=wall)
            return default_retry_after(Outcome(result), wall)
        if hook is False:
            return None
        return _seconds_or_none(hook(Outcome(result, error)))

    def decide(
        self, state: Attempts, error: BaseException | None, result: Any, now: float, wall: float
    ) -> float | None:
        """Seconds to wait before the next attempt, or ``None`` to give up.

        ``now`` is the monotonic time (read only when ``max_elapsed`` is set), ``wall``
        the wall-clock time an HTTP-date ``Retry-After`` is measured from (read only
        when the default reading is on).
        """
        attempt = state.attempt
        max_attempts = self.max_attempts
        if max_attempts is not None and attempt >= max_attempts:
            state.reason = "max_attempts"
            return None
        delay = self.backoff.compute(attempt, state.previous, self.random)
        max_delay = self.max_delay
        if not delay > 0.0:  # also catches NaN from a custom schedule
            delay = 0.0
        elif delay > max_delay:
            delay = max_delay
        state.previous = delay
        jitter = self.jitter
        if delay and jitter != "none":
            draw = self.random()
            delay *= draw if jitter == "full" else 0.5 * (1.0 + draw)
        hook = self.hook
        if hook is True and error is not None and not isinstance(error, RateLimited):
            asked = retry_after_of(error, now=wall)  # the common case, without a detour
        elif hook is not False or isinstance(error, RateLimited):
            asked = self.asked(error, result, wall)
        else:
            asked = None
        if asked is not None:
            if asked > max_delay or asked == math.inf:
                # Waiting less would disobey the server; waiting more would break
                # the cap the user set. Neither is ours to choose: stop.
                state.reason = "retry_after"
                state.detail = f"Retry-After {_fmt(asked)} exceeds max_delay {_fmt(max_delay)}"
                return None
            delay = max(delay, asked)
        if SWITCHES.zero_backoff:
            delay = 0.0
        if now + delay > state.deadline:
            # Sleeping only to find the time budget spent would waste the wait.
            state.reason = "max_elapsed"
            budget = _fmt(self.max_elapsed or 0.0)
            state.detail = f"a wait of {_fmt(delay)} would end past max_elapsed {budget}"
            return None
        return delay

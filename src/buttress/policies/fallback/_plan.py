"""The fallback's sans-I/O engine: which outcomes are answered for, and what answers next.

The drivers (:mod:`._policy`) only execute these decisions; they are the same for
sync and async calls, for runners and decorators.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from buttress._outcome import as_matcher, result_is_failure
from buttress._strategy import is_async_callable
from buttress.errors import ConfigError

from ._options import UNSET, Alternative, ErrorHandler, FallbackOptions

__all__ = ["Plan", "Step"]


class Step:
    """One answer of the chain: an alternative to call, or the constant value."""

    __slots__ = ("fn", "is_async", "pass_error", "value")

    def __init__(self, alternative: Alternative | None, value: object = None) -> None:
        self.pass_error = isinstance(alternative, ErrorHandler)
        fn = alternative.fn if isinstance(alternative, ErrorHandler) else alternative
        self.fn: Callable[..., Any] | None = fn
        self.is_async = fn is not None and is_async_callable(fn)
        self.value = value


class Plan:
    """The decisions of one fallback, shared by every driver.

    ``answers(error)`` and ``rejects(result)`` are the outcome model's rules (bound
    once, called on the hot path): whether the protected call (or an alternative)
    failed. A programming error is never answered for unless ``on=`` names its type,
    and a ``CancelledError`` never is: it is not an ``Exception``, and the drivers
    catch nothing else.
    """

    __slots__ = ("answers", "count", "flags", "rejects", "steps")

    def __init__(self, options: FallbackOptions) -> None:
        matcher = as_matcher(options.on, options.on_result)
        self.answers: Callable[[BaseException], bool] = matcher.error_rule
        """Whether an error is a failure to answer for."""
        self.rejects: Callable[[Any], object] = matcher.result_rule
        """Whether a returned value is a failure to answer for."""
        steps = [Step(alternative) for alternative in options.alternatives]
        if options.value is not UNSET:
            steps.append(Step(None, options.value))
        self.steps: tuple[Step, ...] = tuple(steps)
        self.count = len(self.steps)
        # How the drivers test a result: not at all when no result can fail; with the
        # default rule, a plain built-in value first returns at once; else with the
        # user's rule.
        default = self.rejects is result_is_failure
        self.flags: dict[str, bool] = {
            "plain": default,
            "checked": matcher.checks_results,
        }

    def has_step(self, index: int) -> bool:
        """Whether there is an answer left at ``index``."""
        return index < self.count

    def goes_on(self, index: int, error: BaseException) -> bool:
        """Whether the failure ``error`` of step ``index`` moves on to the next step."""
        return index + 1 < self.count and self.answers(error)

    def check_sync(self, fn: object) -> None:
        """Refuse, when decorating the sync ``fn``, an alternative that is async."""
        for index, step in enumerate(self.steps):
            if step.is_async:
                raise ConfigError(
                    f"cannot fall back on an async alternative for the sync {fn!r}",
                    path=f"alternatives[{index}]",
                )

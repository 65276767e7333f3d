"""The built-in kinds: ``retry``, ``circuit_breaker``, ``timeout``, ``bulkhead``,
``fallback`` and ``rate_limiter``.

Each is registered with its policy class. The hints given here (which keys are
durations or exception names, which are for code only) serve only while a policy
has no options class; once it has one, its fields say all of this themselves and
the hints are not read.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

from buttress.policies.bulkhead import Bulkhead
from buttress.policies.circuit import CircuitBreaker
from buttress.policies.fallback import Fallback
from buttress.policies.retry import Retry
from buttress.policies.timeout import Timeout
from buttress.ratelimit import RateLimiter
from buttress.registry._kinds import Kind, add, norm, options_of
from buttress.registry._limits import convert_limits  # noqa: F401 - registers "limits"
from buttress.stores.base import Algorithm

__all__ = ["BUILTIN_KINDS"]


def _rate_limiter(
    *,
    limits: tuple[Algorithm, ...],
    store: str = "memory://",
    key: str = "global",
    cost: int = 1,
    mode: Literal["reject", "wait"] = "reject",
    max_wait: float = 1.0,
    name: str,
) -> RateLimiter:
    return RateLimiter(
        *limits, store=store, key=key, cost=cost, mode=mode, max_wait=max_wait, name=name
    )


def _builtin(name: str, target: Callable[..., Any], **hints: Any) -> None:
    aliases = list(hints.pop("aliases", ()))
    options = options_of(target)
    if options is not None and options.kind and norm(options.kind) not in (name, *aliases):
        aliases.append(norm(options.kind))  # the name its options class gives
    add(Kind(name, target, aliases=aliases, **hints), replace=False)


_S = "seconds"
_builtin(
    "retry",
    Retry,
    conversions={"delay": _S, "max_delay": _S, "max_elapsed": _S, "on": "exceptions"},
    code_only=("on_result",),
)
_builtin(
    "circuit_breaker",
    CircuitBreaker,
    aliases=("breaker",),
    conversions={
        "window_seconds": _S,
        "slow_call_duration": _S,
        "open_duration": _S,
        "max_open_duration": _S,
        "failure_on": "exceptions",
        "ignore": "exceptions",
    },
    code_only=("sync",),
)
_builtin("timeout", Timeout, conversions={"seconds": _S})
_builtin("bulkhead", Bulkhead, conversions={"max_wait": _S})
_builtin("fallback", Fallback, conversions={"on": "exceptions"}, code_only=("on_result",))
_builtin(
    "rate_limiter",
    RateLimiter,
    fallback=_rate_limiter,
    conversions={"limits": "limits", "max_wait": _S},
)
BUILTIN_KINDS = ("retry", "circuit_breaker", "timeout", "bulkhead", "fallback", "rate_limiter")
"""The kinds buttress registers, in the order of the reference page."""

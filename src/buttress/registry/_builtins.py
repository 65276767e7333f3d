"""The built-in kinds: ``retry``, ``circuit_breaker``, ``timeout``, ``bulkhead``,
``fallback`` and ``rate_limiter``.

Each is registered with its policy class; its options class (``Retry.Options``,
...) says which keys a table may give, which are exception names, and which only
code can give. A duration is known by its type (``Seconds``, a ``timedelta``), or
named here where a field is typed plain ``float``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from buttress.policies.bulkhead import Bulkhead
from buttress.policies.circuit import CircuitBreaker
from buttress.policies.fallback import Fallback
from buttress.policies.retry import Retry
from buttress.policies.timeout import Timeout
from buttress.ratelimit import RateLimiter
from buttress.registry._kinds import Kind, add, norm, options_of
from buttress.registry._limits import convert_limits  # noqa: F401 - registers "limits"

__all__ = ["BUILTIN_KINDS"]


def _builtin(name: str, target: Callable[..., Any], **hints: Any) -> None:
    aliases = list(hints.pop("aliases", ()))
    options = options_of(target)
    if options is not None and options.kind and norm(options.kind) not in (name, *aliases):
        aliases.append(norm(options.kind))  # the name its options class gives
    add(Kind(name, target, aliases=aliases, **hints), replace=False)


_builtin("retry", Retry)
_builtin("circuit_breaker", CircuitBreaker, aliases=("breaker",))
# Fields typed plain ``float`` that are durations all the same ("250ms" in a file).
_builtin("timeout", Timeout, conversions={"seconds": "seconds"})
_builtin("bulkhead", Bulkhead, conversions={"max_wait": "seconds"})
_builtin("fallback", Fallback)
_builtin("rate_limiter", RateLimiter)
BUILTIN_KINDS = ("retry", "circuit_breaker", "timeout", "bulkhead", "fallback", "rate_limiter")
"""The kinds buttress registers, in the order of the reference page."""

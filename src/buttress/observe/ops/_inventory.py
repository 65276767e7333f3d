"""Which protections each named pipeline has: the data behind ``buttress report``.

:func:`inventory` walks a :class:`~buttress.Registry`: every pipeline (nested
pipelines walked into), and every policy registered alone that no pipeline uses
(it runs as a one-policy pipeline through ``registry.pipeline(name)``). For each it
lists the policies outermost first, the protections they give and those missing.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from buttress._strategy import Strategy
from buttress.errors import ConfigError
from buttress.pipeline import Pipeline
from buttress.policies.bulkhead import Bulkhead
from buttress.policies.circuit import CircuitBreaker
from buttress.policies.fallback import Fallback
from buttress.policies.fallback._options import UNSET
from buttress.policies.retry import Retry
from buttress.policies.timeout import Timeout
from buttress.ratelimit import RateLimiter
from buttress.registry import Registry

__all__ = ["PROTECTIONS", "Entry", "Step", "inventory", "protection_names"]

PROTECTIONS = ("timeout", "retry", "circuit_breaker", "bulkhead", "rate_limit", "fallback")
"""The protections a report looks for, in the order it shows them."""

_ALIASES = {
    "breaker": "circuit_breaker",
    "circuit": "circuit_breaker",
    "rate_limiter": "rate_limit",
    "ratelimit": "rate_limit",
    "limiter": "rate_limit",
}


def protection_names(names: Iterable[str]) -> tuple[str, ...]:
    """Normalise protection names (``breaker`` → ``circuit_breaker``, ``-`` as ``_``).

    An unknown name raises :class:`~buttress.errors.ConfigError` listing the valid ones.
    """
    found: list[str] = []
    for raw in names:
        name = raw.strip().lower().replace("-", "_")
        if not name:
            continue
        name = _ALIASES.get(name, name)
        if name not in PROTECTIONS:
            raise ConfigError(
                f"unknown protection {raw.strip()!r}; one of: {', '.join(PROTECTIONS)}"
            )
        if name not in found:
            found.append(name)
    return tuple(found)


@dataclass(frozen=True, slots=True)
class Step:
    """One policy of a pipeline: its name, its type, the protection it gives, a summary."""

    name: str
    type: str
    protection: str | None
    detail: str


@dataclass(slots=True)
class Entry:
    """A named pipeline (or lone policy) and what protects it."""

    name: str
    kind: str
    """``"pipeline"``, or ``"policy"`` for a policy registered alone."""
    steps: list[Step] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def protections(self) -> dict[str, list[str]]:
        """Protection → the names of the policies that give it (only those present)."""
        found: dict[str, list[str]] = {}
        for step in self.steps:
            if step.protection is not None:
                found.setdefault(step.protection, []).append(step.name)
        return {name: found[name] for name in PROTECTIONS if name in found}

    @property
    def missing(self) -> tuple[str, ...]:
        """The protections no policy of this entry gives."""
        present = self.protections
        return tuple(name for name in PROTECTIONS if name not in present)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form of the entry."""
        return {
            "name": self.name,
            "kind": self.kind,
            "policies": [
                {"name": s.name, "type": s.type, "protection": s.protection, "detail": s.detail}
                for s in self.steps
            ],
            "protections": self.protections,
            "missing": list(self.missing),
            "notes": list(self.notes),
        }


def _seconds(value: float | timedelta) -> str:
    # Options hold seconds once checked; a timedelta is accepted for the type's sake.
    seconds = value.total_seconds() if isinstance(value, timedelta) else value
    return f"{seconds:g}s"


def _walk(
    strategy: Strategy, outer: tuple[Strategy, ...]
) -> Iterator[tuple[Strategy, tuple[Strategy, ...]]]:
    """Every policy, outermost first, with the policies around it."""
    if isinstance(strategy, Pipeline):
        around = outer
        for inner in strategy.strategies:
            yield from _walk(inner, around)
            around = (*around, *_flatten(inner))
        return
    yield strategy, outer


def _flatten(strategy: Strategy) -> tuple[Strategy, ...]:
    return tuple(p for p, _ in _walk(strategy, ()))


def _no_backoff(retry: Retry) -> bool:
    return (
        retry.backoff.compute(1, 0.0, lambda: 0.5) <= 0
        and retry.backoff.compute(2, 0.0, lambda: 0.5) <= 0
    )


def _step(policy: Strategy, outer: tuple[Strategy, ...]) -> Step:
    if isinstance(policy, Timeout):
        scope = " per attempt" if any(isinstance(p, Retry) for p in outer) else ""
        return Step(policy.name, "timeout", "timeout", _seconds(policy.options.seconds) + scope)
    if isinstance(policy, Retry):
        attempts = policy.max_attempts
        bound = f"{attempts} attempts" if attempts is not None else "unbounded attempts"
        if policy.max_elapsed is not None:
            bound += f" within {_seconds(policy.max_elapsed)}"
        if attempts == 1:
            return Step(policy.name, "retry", None, "1 attempt: never retries")
        if _no_backoff(policy):
            return Step(policy.name, "retry", None, f"{bound}, no backoff")
        backoff = type(policy.backoff).__name__.lower()
        return Step(policy.name, "retry", "retry", f"{bound}, {backoff} backoff")
    if isinstance(policy, CircuitBreaker):
        c = policy.options
        if c.window is not None:
            window = f"{c.window} calls"
        else:
            window = f"{_seconds(c.window_seconds or 0.0)}"
        detail = f"opens at {c.failure_ratio:.0%} failures of {window}"
        if c.consecutive_failures is not None:
            detail += f" or {c.consecutive_failures} in a row"
        return Step(policy.name, "circuit_breaker", "circuit_breaker", detail)
    if isinstance(policy, Bulkhead):
        b = policy.options
        detail = f"{b.max_concurrent} at once"
        if b.max_queue:
            detail += f", {b.max_queue} queued"
        return Step(policy.name, "bulkhead", "bulkhead", detail)
    if isinstance(policy, RateLimiter):
        r = policy.options
        limits = ", ".join(str(limit) for limit in r.limits)
        return Step(policy.name, "rate_limiter", "rate_limit", f"{limits} ({r.mode})")
    if isinstance(policy, Fallback):
        o = policy.options
        alternatives = len(o.alternatives)
        detail = f"{alternatives} alternative{'s' * (alternatives != 1)}" if alternatives else ""
        if o.value is not UNSET:
            detail = f"{detail}, then a value" if detail else "a value"
        return Step(policy.name, "fallback", "fallback", detail)
    return Step(policy.name, type(policy).__name__, None, "")


def _notes(entry: Entry, steps: list[tuple[Strategy, tuple[Strategy, ...]]]) -> None:
    policies = [p for p, _ in steps]
    for policy, outer in steps:
        if isinstance(policy, Retry) and entry.steps[policies.index(policy)].protection is None:
            entry.notes.append(
                f"retry {policy.name!r} does not count as a retry with backoff: "
                + entry.steps[policies.index(policy)].detail
            )
        if isinstance(policy, Timeout) and any(isinstance(p, Retry) for p in outer):
            outer_timeout = any(isinstance(p, Timeout) for p in outer)
            retries = [p for p in outer if isinstance(p, Retry)]
            if not outer_timeout and all(r.max_elapsed is None for r in retries):
                entry.notes.append(
                    f"timeout {policy.name!r} bounds each attempt; nothing bounds the whole "
                    "call (add a timeout outside the retry, or max_elapsed)"
                )
        if isinstance(policy, Fallback) and outer:
            names = ", ".join(repr(p.name) for p in outer)
            entry.notes.append(
                f"fallback {policy.name!r} is inside {names}: their rejections and "
                "timeouts are not answered by it (a fallback usually goes outermost)"
            )


def inventory(registry: Registry) -> list[Entry]:
    """One :class:`Entry` per pipeline and per lone policy in ``registry``, by name."""
    entries: list[Entry] = []
    used: set[int] = set()
    items = [(name, registry.get(name)) for name in registry]
    for _, item in items:
        if isinstance(item, Pipeline):
            used.update(id(p) for p in _flatten(item))
    for name, item in sorted(items, key=lambda pair: pair[0]):
        if isinstance(item, Pipeline):
            entry = Entry(name, "pipeline")
        elif id(item) in used:
            continue
        else:
            entry = Entry(name, "policy")
        steps = list(_walk(item, ()))
        entry.steps = [_step(policy, outer) for policy, outer in steps]
        _notes(entry, steps)
        entries.append(entry)
    return entries

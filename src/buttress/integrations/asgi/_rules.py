"""Rules, how several of them decide one request, and the headers that report it.

A :class:`Rule` says which requests a :class:`~buttress.ratelimit.RateLimiter`
limits and per what key. :class:`RuleSet` is the engine the middleware and the
route decorator share: every rule that matches the request and yields a key is
decided, in order; the first refusal ends the walk (later rules are not charged);
the request passes only if every decided rule allowed it. It also keeps the
store-outage log to one line per transition. :func:`rate_limit_headers` and
:func:`refusal` turn the decided rules into response headers and a 429.
"""

from __future__ import annotations

import logging
import math
import re
import threading
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, NamedTuple

from buttress.errors import ConfigError
from buttress.integrations.asgi._identity import AsyncKeyFunc, KeyFunc, client_ip, is_async_key
from buttress.integrations.asgi._paths import PathPattern
from buttress.integrations.asgi._types import Headers, Scope, problem, whole_seconds
from buttress.stores import StoreError

if TYPE_CHECKING:
    from buttress.ratelimit import RateLimiter, RateLimitResult

__all__ = [
    "QUOTA_EXCEEDED",
    "Decided",
    "Rule",
    "RuleSet",
    "rate_limit_headers",
    "refusal",
]

_log = logging.getLogger("buttress.integrations.asgi")

QUOTA_EXCEEDED = "https://iana.org/assignments/http-problem-types#quota-exceeded"
"""The problem type of 429 bodies, as the RateLimit header fields draft defines it."""

_INF = math.inf
_SF_STRING = re.compile(r"[\x20-\x7e]+")


def _sf_string(text: str) -> str:
    """``text`` as a structured-field String (RFC 9651): quoted, ``\\`` and ``"`` escaped."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _policy_item(name: str, limit: object, path: str) -> bytes | None:
    """The ``RateLimit-Policy`` item of one limit, from its ``quota``; ``None`` without one.

    ``quota`` is ``(requests, seconds)``: ``q`` is the requests, ``w`` the seconds
    in whole seconds, rounded up, at least 1.
    """
    quota = getattr(limit, "quota", None)
    if quota is None:
        return None
    try:
        requests, seconds = quota
        valid = (
            isinstance(requests, int)
            and not isinstance(requests, bool)
            and requests >= 0
            and isinstance(seconds, int | float)
            and 0 < seconds < _INF
        )
    except (TypeError, ValueError):
        valid = False
    if not valid:
        raise ConfigError(
            f"must be (requests: int, seconds: finite number > 0), got {quota!r}", path=path
        )
    window = max(1, whole_seconds(seconds))
    return f"{name};q={requests};w={window}".encode("ascii")


class Rule:
    """Which requests a :class:`~buttress.ratelimit.RateLimiter` limits, and per what key.

    - ``path``: a pattern over ``scope["path"]`` — ``*`` matches within one segment,
      ``**`` across segments, ``{name}`` one non-empty segment, ``{name:path}`` the
      rest — or a compiled regex (full match); ``None`` matches every path.
      Patterns match in time linear in the path.
    - ``methods``: HTTP methods (``"GET"`` or ``("POST", "PUT")``); ``None``: all.
    - ``key``: a :data:`KeyFunc` (or an ``async`` one); default :func:`client_ip`
      with no trusted proxy. ``None`` from it means the rule does not apply.
    - ``cost``: what one request takes from the limits.
    - ``policies``: the names the limits get in the ``RateLimit-Policy`` and
      ``RateLimit`` fields, one per limit; default the limiter's name, suffixed
      ``-1``, ``-2``, ... when it has several limits.
    """

    __slots__ = (
        "_async_key",
        "_items",
        "_match",
        "_methods",
        "_policy_header",
        "cost",
        "key",
        "limiter",
        "methods",
        "path",
        "policies",
    )

    limiter: RateLimiter
    path: str | re.Pattern[str] | None
    methods: frozenset[str] | None
    key: KeyFunc | AsyncKeyFunc
    cost: int
    policies: tuple[str, ...]

    def __init__(
        self,
        limiter: RateLimiter,
        *,
        path: str | re.Pattern[str] | None = None,
        methods: str | Iterable[str] | None = None,
        key: KeyFunc | AsyncKeyFunc | None = None,
        cost: int = 1,
        policies: Sequence[str] | None = None,
    ) -> None:
        if not callable(getattr(limiter, "ahit", None)):
            raise ConfigError(
                f"must be a RateLimiter, got {type(limiter).__name__}", path="limiter"
            )
        limits = tuple(limiter.limits)
        match: Callable[[str], object] | None
        if path is None:
            match = None
        elif isinstance(path, re.Pattern):
            match = path.fullmatch
        else:
            match = PathPattern(path).match
        if methods is None:
            method_set = None
        else:
            names = [methods] if isinstance(methods, str) else list(methods)
            if not names or not all(isinstance(m, str) and m for m in names):
                raise ConfigError(f"must be HTTP method names, got {methods!r}", path="methods")
            method_set = frozenset(m.upper() for m in names)
        if key is None:
            key = client_ip()
        elif not callable(key):
            raise ConfigError(f"must be callable, got {type(key).__name__}", path="key")
        if isinstance(cost, bool) or not isinstance(cost, int) or cost < 1:
            raise ConfigError(f"must be an int >= 1, got {cost!r}", path="cost")
        if policies is None:
            base = str(limiter.name)
            names = (
                [base] if len(limits) == 1 else [f"{base}-{i}" for i in range(1, len(limits) + 1)]
            )
        else:
            names = [policies] if isinstance(policies, str) else list(policies)
            if len(names) != len(limits):
                raise ConfigError(
                    f"needs one name per limit ({len(limits)}), got {len(names)}", path="policies"
                )
        for index, name in enumerate(names):
            if not isinstance(name, str) or not _SF_STRING.fullmatch(name):
                raise ConfigError(
                    f"must be printable ASCII, got {name!r}", path=f"policies[{index}]"
                )
        if len(set(names)) != len(names):
            raise ConfigError(f"names must be distinct, got {names!r}", path="policies")

        items = [_sf_string(name) for name in names]
        self.limiter = limiter
        self.path = path
        self.methods = method_set
        self.key = key
        self.cost = cost
        self.policies = tuple(names)
        self._match = match
        self._methods = method_set
        self._async_key = is_async_key(key)
        self._items = tuple(item.encode("ascii") for item in items)
        policy = [
            item
            for index, (name, limit) in enumerate(zip(items, limits, strict=True))
            if (item := _policy_item(name, limit, f"limiter.limits[{index}].quota")) is not None
        ]
        self._policy_header = b", ".join(policy) if policy else None

    def matches(self, method: str, path: str) -> bool:
        """Whether a request of ``method`` to ``path`` falls under this rule."""
        if self._methods is not None and method not in self._methods:
            return False
        return self._match is None or bool(self._match(path))

    def headers(self, result: RateLimitResult) -> Headers:
        """The response headers that report ``result`` of this rule alone."""
        return rate_limit_headers(((self, result),))

    def violated(self, result: RateLimitResult) -> list[str]:
        """The names of this rule's limits that refused ``result``."""
        return [
            name
            for name, decision in zip(self.policies, result.decisions, strict=False)
            if not decision.allowed
        ]

    def __repr__(self) -> str:
        methods = sorted(self.methods) if self.methods is not None else None
        return (
            f"Rule({self.limiter!r}, path={self.path!r}, methods={methods!r}, "
            f"key={self.key!r}, cost={self.cost!r})"
        )


class Decided(NamedTuple):
    """What the rules said about one request: each decided rule's result, in order.

    ``allowed`` is false when the last of them refused (no rule after a refusal is
    decided). Empty ``results``: no rule applied (or its store could not answer).
    """

    allowed: bool
    results: tuple[tuple[Rule, RateLimitResult], ...]


_NOTHING = Decided(allowed=True, results=())
# Building the tuple directly skips NamedTuple's Python-level __new__.
_new = tuple.__new__


class RuleSet:
    """Rules applied together to each request: the engine of the middleware and decorator.

    Every rule that matches and yields a key is decided, in order, and the first
    refusal ends the walk: the rules after it take nothing (the rules before it
    have been charged — undoing that would take a second round trip, and could
    not be atomic across limiters). ``default`` applies only when no rule yielded
    a key. With ``fail_open``, a rule whose store fails is skipped: the outage is
    logged once when it starts (WARNING) and once when it ends (INFO).
    """

    __slots__ = ("_failing", "_lock", "_rules", "default", "fail_open", "rules")

    def __init__(
        self, rules: Sequence[Rule], default: Rule | None = None, *, fail_open: bool = True
    ) -> None:
        self.rules = tuple(rules)
        self.default = default
        self.fail_open = fail_open
        self._rules = self.rules if default is None else (*self.rules, default)
        # Limiters whose store is failing (by id), with the requests let through since.
        self._failing: dict[int, int] = {}
        self._lock = threading.Lock()

    @property
    def has_async_keys(self) -> bool:
        """Whether some key function must be awaited (so :meth:`decide` cannot be used)."""
        return any(rule._async_key for rule in self._rules)

    async def adecide(self, scope: Scope, *, sync: bool = False) -> Decided:
        """Decide ``scope``'s request under every applicable rule.

        ``sync`` asks limiters with ``hit`` instead of ``ahit``: :meth:`decide` uses
        it to run this very walk without an event loop.
        """
        method = scope["method"]
        path = scope["path"]
        default = self.default
        results: list[tuple[Rule, RateLimitResult]] = []
        applied = False
        for rule in self._rules:
            if rule is default and applied:
                break
            if not rule.matches(method, path):
                continue
            key = rule.key(scope)
            if rule._async_key:
                key = await key  # type: ignore[misc]
            if key is None:
                continue
            applied = True
            limiter = rule.limiter
            try:
                if sync:
                    result = limiter.hit(key, rule.cost)  # type: ignore[arg-type]
                else:
                    result = await limiter.ahit(key, rule.cost)  # type: ignore[arg-type]
            except StoreError as exc:
                if not self.fail_open:
                    raise
                self._failed(limiter, exc)
                continue
            if self._failing:
                self._recovered(limiter)
            results.append((rule, result))
            if not result[0]:
                return _new(Decided, (False, tuple(results)))
        return _new(Decided, (True, tuple(results))) if results else _NOTHING

    def decide(self, scope: Scope) -> Decided:
        """:meth:`adecide` for synchronous code: ``limiter.hit``, key functions not awaited.

        The walk is the same coroutine; with ``sync`` it never suspends, so one
        ``send`` runs it to the end.
        """
        walk = self.adecide(scope, sync=True)
        try:
            walk.send(None)
        except StopIteration as done:
            decided: Decided = done.value
            return decided
        walk.close()
        raise RuntimeError("an async key function cannot be used from synchronous code")

    # --------------------------------------------------------------------- outages

    def _failed(self, limiter: RateLimiter, exc: StoreError) -> None:
        with self._lock:
            count = self._failing.get(id(limiter))
            self._failing[id(limiter)] = 1 if count is None else count + 1
        if count is None:
            # Once per outage, without traceback: the cause is what the reader needs.
            # The key stays out of the log: it may identify a person.
            _log.warning(
                "rate limiter %r cannot decide: store %r failed (%s); requests it limits "
                "are let through until the store answers again",
                limiter.name,
                exc.store,
                _cause(exc),
            )

    def _recovered(self, limiter: RateLimiter) -> None:
        with self._lock:
            count = self._failing.pop(id(limiter), None)
        if count is not None:
            _log.info(
                "rate limiter %r decides again: its store answers (%d request%s let through "
                "unlimited meanwhile)",
                limiter.name,
                count,
                "" if count == 1 else "s",
            )


def _cause(exc: StoreError) -> str:
    """``exc`` and the driver error behind it, in one line."""
    text = f"{type(exc).__name__}: {exc}"
    cause = exc.__cause__
    if cause is not None:
        text += f"; caused by {type(cause).__name__}: {cause}"
    return text


# ---------------------------------------------------------------------------- headers


def rate_limit_headers(results: Sequence[tuple[Rule, RateLimitResult]]) -> Headers:
    """The response headers that report the decided rules (see ``docs/asgi.md``).

    ``X-RateLimit-Limit`` and ``-Remaining`` describe the binding limit: the one
    that refused, else the one with the fewest remaining (the first on a tie);
    ``X-RateLimit-Reset`` is when every decided limit is full again.
    ``RateLimit-Policy`` and ``RateLimit`` list one item per decided limit, in
    rule order.
    """
    binding = results[0][1]
    reset = 0.0
    policy: list[bytes] = []
    parts: list[bytes] = []
    for rule, result in results:
        if result[2] < binding[2]:  # the fewest remaining, the first on a tie
            binding = result
        if result[3] > reset:  # noqa: PLR1730
            reset = result[3]
        if rule._policy_header is not None:
            policy.append(rule._policy_header)
        items = rule._items
        # Indexing, not zip(strict=...): keyword parsing costs more than the loop.
        for index, decision in enumerate(result[5]):
            # A refused limit's window is its wait: within it, nothing more fits.
            window = decision[3]
            if not decision[0] and decision[4] != _INF:
                window = decision[4]
            parts.append(b"%s;r=%d;t=%d" % (items[index], decision[2], whole_seconds(window)))
    if not result[0]:
        # Only the last decided rule can have refused (a refusal ends the walk).
        binding = result
    headers = [
        (b"x-ratelimit-limit", str(binding[1]).encode()),
        (b"x-ratelimit-remaining", str(binding[2]).encode()),
        (b"x-ratelimit-reset", str(whole_seconds(reset)).encode()),
    ]
    if policy:
        headers.append((b"ratelimit-policy", policy[0] if len(policy) == 1 else b", ".join(policy)))
    headers.append((b"ratelimit", b", ".join(parts)))
    return headers


def refusal(instance: str, decided: Decided) -> tuple[bytes, Headers]:
    """The problem document and headers of a 429 for a refused request.

    ``Retry-After`` is the longest wait of the refusing limits, in whole seconds
    rounded up (at least 1); it is left out when the request costs more than a
    limit can ever grant. ``violated-policies`` names the refusing limits.
    """
    retry_after = 0.0
    violated: list[str] = []
    for rule, result in decided.results:
        if not result[0]:
            violated.extend(rule.violated(result))
            retry_after = max(retry_after, result[4])
    headers: Headers = []
    if retry_after == _INF:
        detail = "This request costs more than the rate limit allows; it cannot succeed."
    else:
        wait = max(1, whole_seconds(retry_after))
        headers.append((b"retry-after", str(wait).encode("ascii")))
        detail = f"Rate limit exceeded; retry in {wait} second{'s' if wait != 1 else ''}."
    body = problem(
        429,
        "Quota exceeded",
        detail,
        instance=instance,
        type=QUOTA_EXCEEDED,
        **{"violated-policies": violated},
    )
    headers.extend(rate_limit_headers(decided.results))
    return body, headers

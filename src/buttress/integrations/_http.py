"""Per-host policies for HTTP clients: what the httpx and aiohttp integrations share.

The client integrations (:mod:`buttress.integrations.httpx`,
:mod:`buttress.integrations.aiohttp`) know how to send one attempt with their
client and how to drain a response; everything else lives here, written once:

- :class:`HostOptions`: the settings of the default per-host pipeline (timeouts,
  retry, breaker, bulkhead, rate limit), frozen and validated when built;
- :class:`HostPolicies`: which pipeline guards which origin (``scheme://host:port``)
  — configured in code (a pipeline, options, or the name of a pipeline in a
  :class:`~buttress.Registry`) or built on first use by a default factory, kept in
  a bounded LRU table;
- :class:`Host`: the pipelines of one origin, and the rule that decides whether a
  request may be retried at all (idempotent method, ``Idempotency-Key``, or the
  caller's opt-in; and a body that can be sent again).

Nothing here imports an HTTP client.
"""

from __future__ import annotations

import dataclasses
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, TypeAlias
from urllib.parse import urlsplit

from buttress._options import Options, option
from buttress._outcome import response_status
from buttress._strategy import Strategy
from buttress._validate import check_count, check_ratio, check_seconds, optional_seconds
from buttress.clock import MONOTONIC, Clock
from buttress.errors import ConfigError
from buttress.pipeline import Pipeline
from buttress.policies.bulkhead import Bulkhead
from buttress.policies.circuit import CircuitBreaker
from buttress.policies.retry import Retry
from buttress.policies.timeout import Timeout
from buttress.ratelimit import RateLimiter

if TYPE_CHECKING:
    from buttress.registry import Registry

__all__ = [
    "DEFAULT_MAX_HOSTS",
    "IDEMPOTENCY_KEY",
    "IDEMPOTENT_METHODS",
    "Host",
    "HostFactory",
    "HostOptions",
    "HostPolicies",
    "HostSpec",
    "as_policies",
    "drains",
    "origin",
    "server_error",
]

IDEMPOTENT_METHODS: frozenset[str] = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})
"""Methods retried by default (RFC 9110 §9.2.2); any other is sent once unless the
request carries an ``Idempotency-Key`` or the caller opts in."""

IDEMPOTENCY_KEY = "Idempotency-Key"
"""The request header that makes any method safe to retry (the IETF draft's name)."""

DEFAULT_MAX_HOSTS = 1024
"""How many origins get pipelines of their own before the least recently used is dropped."""

_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}


def origin(scheme: str, host: str, port: int | None) -> str:
    """``scheme://host:port``, lower case, the port always written (80/443 by default).

    The name every per-host policy carries, so a metric label never holds a path,
    a query or credentials.
    """
    scheme = scheme.lower()
    if port is None:
        port = _DEFAULT_PORTS.get(scheme, 0)
    host = host.lower()
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"  # an IPv6 literal
    return f"{scheme}://{host}:{port}"


def server_error(response: object) -> bool:
    """The per-host breaker's rule for results: a 5xx response other than 501 and 505.

    4xx responses — 429 included — are answers: the host is up and said no. (A
    retry still retries 408/425/429; only the breaker ignores them.)
    """
    status = response_status(response)
    return status is not None and status >= 500 and status not in (501, 505)


def drains(status: int) -> bool:
    """Whether a response with ``status`` is read to its end and released at once.

    These are the responses a retry may throw away (408, 425, 429 and every 5xx):
    their body is read into memory before the next attempt, so the connection goes
    back to the pool instead of leaking. The response a caller finally gets still
    has its body.
    """
    return status >= 500 or status in (408, 425, 429)


# ------------------------------------------------------------------------ options


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class HostOptions(Options):
    """The settings of the default per-host pipeline, validated when built.

    For each origin it builds, outermost first: ``Timeout(total_timeout)``,
    ``Retry(max_attempts)`` (idempotent requests only; the last response or error
    is returned or raised as is when attempts run out), a ``CircuitBreaker``
    counting 5xx responses, network errors and timeouts as failures and 4xx as
    answers, a ``RateLimiter`` (when ``rate`` is set; waiting up to
    ``rate_max_wait`` for a slot), a ``Bulkhead`` (when ``max_concurrent`` is set)
    and ``Timeout(attempt_timeout)``. A setting of ``None`` leaves its policy out.
    """

    kind = "http_host"

    attempt_timeout: float | None = option(10.0, doc="The limit of one attempt, in seconds.")
    total_timeout: float | None = option(
        30.0, doc="The limit of a request with all its attempts and waits, in seconds."
    )
    max_attempts: int = option(3, doc="Attempts in all, the first included (1: no retry).")
    delay: float = option(0.1, doc="The first backoff wait, in seconds (exponential, jittered).")
    max_delay: float = option(
        10.0,
        doc="The longest wait between attempts, in seconds; a Retry-After beyond it ends "
        "the retries at once.",
    )
    failure_ratio: float = option(0.5, doc="The share of failures that opens the breaker.")
    min_calls: int = option(10, doc="Calls in the window before the breaker may open.")
    window: int = option(20, doc="How many recent calls the breaker's window holds.")
    consecutive_failures: int | None = option(
        None, doc="Also open the breaker after this many failures in a row."
    )
    open_duration: float = option(
        30.0, doc="How long the breaker stays open before a trial call, in seconds."
    )
    max_concurrent: int | None = option(
        100, doc="How many requests to the host may run at once (the bulkhead)."
    )
    max_queue: int = option(100, doc="How many more requests may wait for a slot.")
    rate: str | None = option(
        None, doc="A client-side rate limit, e.g. '50/second; 1000/minute' (none: unlimited)."
    )
    rate_max_wait: float = option(
        1.0, doc="The longest a request waits for the rate limit, in seconds."
    )
    retry_non_idempotent: bool = option(
        False,
        doc="Retry POST, PATCH and other non-idempotent methods too (default: only with an "
        "Idempotency-Key header).",
    )

    def __post_init__(self) -> None:
        self._set(
            "attempt_timeout",
            optional_seconds(self.attempt_timeout, "attempt_timeout", positive=True),
        )
        self._set(
            "total_timeout", optional_seconds(self.total_timeout, "total_timeout", positive=True)
        )
        self._set("max_attempts", check_count(self.max_attempts, "max_attempts"))
        self._set("delay", check_seconds(self.delay, "delay"))
        self._set("max_delay", check_seconds(self.max_delay, "max_delay", positive=True))
        self._set("failure_ratio", check_ratio(self.failure_ratio, "failure_ratio"))
        self._set("window", check_count(self.window, "window"))
        self._set("min_calls", check_count(self.min_calls, "min_calls", maximum=self.window))
        if self.consecutive_failures is not None:
            self._set(
                "consecutive_failures",
                check_count(self.consecutive_failures, "consecutive_failures"),
            )
        self._set(
            "open_duration", check_seconds(self.open_duration, "open_duration", positive=True)
        )
        if self.max_concurrent is not None:
            self._set("max_concurrent", check_count(self.max_concurrent, "max_concurrent"))
        self._set("max_queue", check_count(self.max_queue, "max_queue", minimum=0))
        if self.rate is not None and (not isinstance(self.rate, str) or not self.rate.strip()):
            raise ConfigError(
                f"must be a rate string such as '50/second', got {self.rate!r}", path="rate"
            )
        self._set("rate_max_wait", check_seconds(self.rate_max_wait, "rate_max_wait"))
        if not isinstance(self.retry_non_idempotent, bool):
            raise ConfigError(
                f"must be true or false, got {self.retry_non_idempotent!r}",
                path="retry_non_idempotent",
            )

    def build(self, name: str, *, clock: Clock = MONOTONIC) -> Pipeline:
        """The pipeline these options describe, its policies named ``"<name> <role>"``.

        Roles: ``total timeout``, ``retry``, ``breaker``, ``rate limit``,
        ``bulkhead``, ``attempt timeout``.
        """
        strategies: list[Strategy] = []
        if self.total_timeout is not None:
            strategies.append(
                Timeout(self.total_timeout, name=f"{name} total timeout", clock=clock)
            )
        if self.max_attempts > 1:
            strategies.append(
                Retry(
                    self.max_attempts,
                    backoff="exponential",
                    delay=self.delay,
                    max_delay=self.max_delay,
                    reraise=True,
                    name=f"{name} retry",
                    clock=clock,
                )
            )
        strategies.append(
            CircuitBreaker(
                failure_ratio=self.failure_ratio,
                min_calls=self.min_calls,
                window=self.window,
                consecutive_failures=self.consecutive_failures,
                open_duration=self.open_duration,
                on_result=server_error,
                name=f"{name} breaker",
                clock=clock,
            )
        )
        if self.rate is not None:
            strategies.append(
                RateLimiter(
                    self.rate,
                    mode="wait",
                    max_wait=self.rate_max_wait,
                    key=name,
                    name=f"{name} rate limit",
                    clock=clock,
                )
            )
        if self.max_concurrent is not None:
            strategies.append(
                Bulkhead(
                    self.max_concurrent,
                    max_queue=self.max_queue,
                    name=f"{name} bulkhead",
                    clock=clock,
                )
            )
        if self.attempt_timeout is not None:
            strategies.append(
                Timeout(self.attempt_timeout, name=f"{name} attempt timeout", clock=clock)
            )
        return Pipeline(*strategies, name=name)


HostSpec: TypeAlias = "Strategy | HostOptions | str"
"""What a host is given in ``hosts=``: a pipeline (or any policy) shared by every
origin the key matches, :class:`HostOptions` (a pipeline of its own per origin), or
the name of a pipeline in the ``registry=``."""

HostFactory: TypeAlias = Callable[[str], Strategy]
"""A default factory: ``factory(origin) -> pipeline`` for an origin no key names."""


# -------------------------------------------------------------------------- hosts


def _without_retries(strategy: Strategy) -> Strategy | None:
    """``strategy`` with every :class:`~buttress.Retry` left out (the same objects
    otherwise, so breakers, bulkheads and limiters keep their state); ``None`` when
    nothing is left."""
    if isinstance(strategy, Retry):
        return None
    if not isinstance(strategy, Pipeline):
        return strategy
    kept = [s for s in (_without_retries(inner) for inner in strategy) if s is not None]
    if not kept:
        return None
    if len(kept) == len(strategy.strategies) and all(
        a is b for a, b in zip(kept, strategy.strategies, strict=True)
    ):
        return strategy
    return Pipeline(*kept, name=f"{strategy.name} (no retry)")


class Host:
    """The policies of one origin: ``pipeline`` for requests that may be retried,
    ``once`` (the same policies without any ``Retry``) for those that may not.

    ``once`` is ``None`` when nothing but retries guards the origin: such a request
    is sent as is.
    """

    __slots__ = ("once", "origin", "pipeline", "retry_non_idempotent")

    def __init__(self, origin: str, pipeline: Strategy, *, retry_non_idempotent: bool) -> None:
        self.origin = origin
        self.pipeline = pipeline
        self.once = _without_retries(pipeline)
        self.retry_non_idempotent = retry_non_idempotent

    def retries(self, method: str, has_key: bool) -> bool:
        """Whether a request with this method (``has_key``: it carries an
        ``Idempotency-Key``) may be sent more than once."""
        return method in IDEMPOTENT_METHODS or has_key or self.retry_non_idempotent

    def strategy(self, method: str, has_key: bool, replayable: bool) -> Strategy | None:
        """The pipeline to send a request through: ``pipeline`` if it may be retried
        (:meth:`retries`, and its body can be sent again), else ``once``."""
        if replayable and (method in IDEMPOTENT_METHODS or has_key or self.retry_non_idempotent):
            return self.pipeline
        return self.once

    def __repr__(self) -> str:
        return f"Host({self.origin!r}, {self.pipeline!r})"


def _parse_key(key: object, path: str) -> tuple[str, str | None]:
    """A ``hosts=`` key as ``("origin", origin)`` or ``("host", hostname)``."""
    if not isinstance(key, str) or not key.strip():
        raise ConfigError(
            f"expected 'scheme://host[:port]' or a bare host name, got {key!r}", path=path
        )
    text = key.strip()
    if "://" not in text:
        if any(c in text for c in "/?#@:") and not text.startswith("["):
            raise ConfigError(
                f"a bare host name has no port, path or credentials, got {key!r}; "
                "write 'scheme://host:port' for one port",
                path=path,
            )
        return "host", text.lower().strip("[]")
    parts = urlsplit(text)
    if parts.scheme.lower() not in _DEFAULT_PORTS or not parts.hostname:
        raise ConfigError(f"expected 'http(s)://host[:port]', got {key!r}", path=path)
    if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username:
        raise ConfigError(
            f"policies are per origin: give 'scheme://host[:port]' without a path, query "
            f"or credentials, got {key!r}",
            path=path,
        )
    try:
        port = parts.port
    except ValueError as exc:
        raise ConfigError(f"bad port in {key!r}", path=path) from exc
    return "origin", origin(parts.scheme, parts.hostname, port)


class HostPolicies:
    """Which pipeline guards which origin (``scheme://host:port``): shared by the
    httpx transports and the aiohttp middleware.

    ``hosts`` maps a key to a :data:`HostSpec`. A key is an origin
    (``"https://api.example.com"``, the port defaulting to 80/443) or a bare host
    name (``"api.example.com"``: every scheme and port). The value is a pipeline
    (or any policy) used as is — shared, with its state, by every origin the key
    matches —, :class:`HostOptions` (each origin gets its own pipeline built from
    them), or the name of a pipeline in ``registry`` (declared in TOML, say).

    An origin no key matches gets a pipeline of its own from ``default``:
    :class:`HostOptions` (default: ``HostOptions()``) or a factory called with the
    origin. Those per-origin pipelines live in an LRU table of at most
    ``max_hosts`` entries: hosts are user input, so the least recently used
    origin's pipeline is dropped (its breaker forgotten) when a new one would
    exceed it. Pipelines given as objects or named in the registry are not
    counted and never dropped.

    ``retry_non_idempotent=True`` retries every method (as if each request carried
    an ``Idempotency-Key``); :class:`HostOptions` can also set it per host.
    """

    __slots__ = (
        "_by_host",
        "_by_origin",
        "_cache",
        "_clock",
        "_default",
        "_lock",
        "_retry_all",
        "max_hosts",
    )

    def __init__(
        self,
        hosts: Mapping[str, HostSpec] | None = None,
        *,
        default: HostOptions | HostFactory | None = None,
        registry: Registry | None = None,
        max_hosts: int = DEFAULT_MAX_HOSTS,
        retry_non_idempotent: bool = False,
        clock: Clock = MONOTONIC,
    ) -> None:
        self.max_hosts = check_count(max_hosts, "max_hosts")
        if not isinstance(retry_non_idempotent, bool):
            raise ConfigError(
                f"must be true or false, got {retry_non_idempotent!r}",
                path="retry_non_idempotent",
            )
        self._retry_all = retry_non_idempotent
        self._clock = clock
        if default is None:
            default = HostOptions()
        elif not isinstance(default, HostOptions) and not callable(default):
            raise ConfigError(
                f"expected HostOptions or a function of the origin returning a pipeline, "
                f"got {default!r}",
                path="default",
            )
        self._default: HostOptions | HostFactory = default
        self._by_origin: dict[str, Strategy | HostOptions] = {}
        self._by_host: dict[str, Strategy | HostOptions] = {}
        for key, spec in (hosts or {}).items():
            path = f"hosts[{key!r}]"
            kind, name = _parse_key(key, path)
            assert name is not None
            table = self._by_origin if kind == "origin" else self._by_host
            table[name] = self._resolve(spec, registry, path)
        self._cache: OrderedDict[tuple[str, str, int], Host] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def _resolve(spec: object, registry: Registry | None, path: str) -> Strategy | HostOptions:
        if isinstance(spec, Strategy | HostOptions):
            return spec
        if isinstance(spec, str):
            if registry is None:
                raise ConfigError(
                    f"names the pipeline {spec!r}: pass registry= to look it up", path=path
                )
            try:
                return registry.pipeline(spec)
            except KeyError as exc:
                raise ConfigError(str(exc.args[0]), path=path) from None
        raise ConfigError(
            f"expected a pipeline, HostOptions or a pipeline's name, got {spec!r}", path=path
        )

    def lookup(self, scheme: str, host: str, port: int | None) -> Host:
        """The :class:`Host` for this origin (built on first use)."""
        if port is None:
            port = _DEFAULT_PORTS.get(scheme, 0)
        key = (scheme, host, port)
        found = self._cache.get(key)
        if found is not None:
            try:
                self._cache.move_to_end(key)
            except KeyError:  # dropped by another thread meanwhile: still valid
                pass
            return found
        return self._miss(key)

    def for_url(self, url: str) -> Host:
        """The :class:`Host` for the origin of ``url`` (``"https://api.example.com/x"``)."""
        parts = urlsplit(url)
        if not parts.scheme or not parts.hostname:
            raise ConfigError(f"expected an absolute http(s) URL, got {url!r}", path="url")
        return self.lookup(parts.scheme, parts.hostname, parts.port)

    def _miss(self, key: tuple[str, str, int]) -> Host:
        name = origin(*key)
        host = key[1]
        spec = self._by_origin.get(name)
        if spec is None:
            spec = self._by_host.get(host.lower().strip("[]"))
        with self._lock:
            found = self._cache.get(key)
            if found is not None:
                return found
            built = self._build(name, spec)
            self._cache[key] = built
            self._evict()
            return built

    def _evict(self) -> None:
        while len(self._cache) > self.max_hosts:
            self._cache.popitem(last=False)

    def _build(self, name: str, given: Strategy | HostOptions | None) -> Host:
        retry_all = self._retry_all
        spec = self._default if given is None else given
        if isinstance(spec, HostOptions):
            pipeline: Strategy = spec.build(name, clock=self._clock)
            retry_all = retry_all or spec.retry_non_idempotent
        elif isinstance(spec, Strategy):
            pipeline = spec
        else:
            pipeline = spec(name)
            if not isinstance(pipeline, Strategy):
                raise ConfigError(
                    f"the default factory returned {pipeline!r} for {name!r}, not a pipeline",
                    path="default",
                )
        return Host(name, pipeline, retry_non_idempotent=retry_all)

    def __len__(self) -> int:
        """How many origins have a pipeline now."""
        return len(self._cache)

    def origins(self) -> list[str]:
        """The origins that have a pipeline now, least recently used first."""
        return [host.origin for host in self._cache.values()]

    def __repr__(self) -> str:
        return f"HostPolicies(hosts={len(self)}, max_hosts={self.max_hosts})"


def as_policies(
    policies: HostPolicies | None,
    *,
    hosts: Mapping[str, HostSpec] | None,
    default: HostOptions | HostFactory | None,
    registry: Registry | None,
    max_hosts: int,
    retry_non_idempotent: bool,
    clock: Clock,
) -> HostPolicies:
    """The :class:`HostPolicies` an integration's arguments describe (one or the other)."""
    if policies is not None:
        if not isinstance(policies, HostPolicies):
            raise ConfigError(f"expected HostPolicies, got {policies!r}", path="policies")
        if hosts is not None or default is not None or registry is not None:
            raise ConfigError(
                "give either policies= or hosts=/default=/registry=, not both", path="policies"
            )
        return policies
    return HostPolicies(
        hosts,
        default=default,
        registry=registry,
        max_hosts=max_hosts,
        retry_non_idempotent=retry_non_idempotent,
        clock=clock,
    )

"""RateLimiter: one or more rate limits per key, as a policy and as a direct API.

``RateLimiter(TokenBucket(10, 1.0), FixedWindow(1000, 3600))`` allows a key ten
requests a second *and* a thousand an hour. Every request is one atomic decision
over all of its key's limits, all or nothing: a request refused by the hourly limit
takes nothing from the per-second one. State lives in a store
(:mod:`buttress.stores`): this process's memory by default, or Redis, shared by
every process that uses it.

The module has the roles every policy module has:

- options — :class:`RateLimiter`'s arguments, validated when it is built;
- the sans-I/O engine — :func:`_combine` folds the limits' decisions into one
  :class:`RateLimitResult`, and :func:`_plan` decides, after a refusal, whether to
  wait (how long) or to reject; neither sleeps nor reads a clock;
- the events — :class:`~buttress.events.CallRejected` with reason
  ``"rate_limited"``, once per refused request;
- the drivers — :meth:`RateLimiter.acquire` / :meth:`RateLimiter.aacquire` and the
  pipeline runners, which execute the engine's answers with ``clock.sleep`` /
  ``await clock.asleep``.

The hot paths run on deciders that a :class:`~buttress.stores.LocalStore` (the
memory store) bound to the limits once, at construction. :attr:`RateLimiter.allow`
— and the policy, which needs no result unless it refuses — *is* such a decider: a
function compiled with the algorithm's boolean twin inside, so one decision is one
Python call (a clock read, the lock, one dict lookup, a few float operations) that
builds nothing. :meth:`RateLimiter.hit` adds the :class:`~buttress.stores.Decision`
and the :class:`RateLimitResult` that headers need.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Generator, Sequence
from datetime import timedelta
from typing import Any, ClassVar, Literal, NamedTuple, cast

from buttress._deadline import DEADLINE, fit
from buttress._options import built_from
from buttress._strategy import AsyncRunner, Strategy, SyncRunner
from buttress._validate import (
    check_clock,
    check_name,
)
from buttress.clock import MONOTONIC, Clock
from buttress.errors import ConfigError, RateLimited, TimeoutExceeded
from buttress.events import CallRejected
from buttress.ratelimit._options import RateLimiterOptions
from buttress.stores import Store, store_from_url
from buttress.stores._local import (
    Allow,
    AsyncAllow,
    Decider,
    LocalStore,
    MultiDecider,
    is_local,
)
from buttress.stores.base import Algorithm, Decision, validate_cost

__all__ = ["RateLimitResult", "RateLimiter"]

# Building the tuple directly skips NamedTuple's Python-level __new__.
_new = tuple.__new__


class RateLimitResult(NamedTuple):
    """The answer to one request over all of a key's limits; immutable.

    The summary fields describe the most restrictive limit: ``allowed`` is True
    only if every limit allowed (and then the cost was taken from each);
    ``remaining`` is the least any limit has left; ``retry_after`` is the longest
    wait any refusing limit asks for (``0.0`` when allowed, ``math.inf`` when the
    cost exceeds a limit and never fits); ``reset_after`` is the longest time until
    a limit is back to full. ``limit`` belongs to the binding limit: the refusing
    one with the longest wait, else the one with the fewest remaining.

    ``decisions`` holds each limit's own :class:`~buttress.ratelimit.Decision` and
    ``limits`` the limits, both in the order the limiter was given them (one
    ``RateLimit-Policy`` item per limit, say). When the request was refused, the
    limits that would have allowed it report their standing, untouched.
    """

    allowed: bool
    limit: int
    remaining: int
    reset_after: float
    retry_after: float
    decisions: tuple[Decision, ...]
    limits: tuple[Algorithm, ...]


# ------------------------------------------------------------------------------ engine


def _combine(decisions: tuple[Decision, ...], limits: tuple[Algorithm, ...]) -> RateLimitResult:
    """Fold each limit's decision into one result (see :class:`RateLimitResult`)."""
    binding = decisions[0]
    allowed = True
    remaining = binding[2]
    reset_after = 0.0
    retry_after = 0.0
    for decision in decisions:
        # Compares, not min()/max(): this runs for every limit of every request.
        if decision[2] < remaining:  # noqa: PLR1730
            remaining = decision[2]
        if decision[3] > reset_after:  # noqa: PLR1730
            reset_after = decision[3]
        if decision[0]:
            if allowed and decision[2] < binding[2]:
                binding = decision
        else:
            if allowed or decision[4] > binding[4]:
                binding = decision
            allowed = False
            if decision[4] > retry_after:  # noqa: PLR1730
                retry_after = decision[4]
    return _new(
        RateLimitResult,
        (allowed, binding[1], remaining, reset_after, retry_after, decisions, limits),
    )


def _single(decision: Decision, limits: tuple[Algorithm, ...]) -> RateLimitResult:
    """The result of a limiter with one limit: that limit's decision, as it is."""
    # Concatenation is faster than unpacking into a new tuple (RUF005).
    return _new(RateLimitResult, decision + ((decision,), limits))  # noqa: RUF005


def _plan(waits: bool, retry_after: float, left: float) -> float | None:
    """After a refusal: seconds to wait before asking again, or ``None`` to reject.

    ``waits`` is whether the limiter is in wait mode, ``left`` how much of its
    ``max_wait`` the request has not spent yet. A wait that would end past that is
    not begun: the caller learns at once that it would not be served in time.
    """
    if not waits or not retry_after <= left:
        return None
    return retry_after


# ------------------------------------------------------------------------------ policy


class RateLimiter(Strategy):
    """Rate limits per key: ``allow`` or ``hit`` to ask, ``acquire`` or the policy to enforce.

    ``limits`` are one or more algorithms (:class:`~buttress.ratelimit.TokenBucket`,
    :class:`~buttress.ratelimit.GCRA`, :class:`~buttress.ratelimit.SlidingWindow`,
    :class:`~buttress.ratelimit.FixedWindow`) or rate strings (``"10/second; 1000/hour"``,
    read by :func:`~buttress.ratelimit.parse_rates` as fixed windows), all applied
    to every key and decided together, all or nothing. ``store`` is a
    :class:`~buttress.stores.Store` or a URL for :func:`~buttress.stores.store_from_url`
    (``"memory://"``, the default, or ``"redis://host:6379/0"``). Keys are stored as
    ``"<name>:<key>"``, so two limiters never share state unless they share a name.
    A limiter whose state goes to a shared store (anything but a
    :class:`~buttress.stores.LocalStore`, such as Redis) must be given its ``name``:
    a default name depends on the order limiters are built in, and two processes
    could swap buckets.

    - :attr:`allow` decides a request of ``cost`` for a key and answers ``True``
      or ``False``; the fastest way to ask.
    - :meth:`hit` decides the same and returns a :class:`RateLimitResult`
      (remaining, reset, retry-after: what headers need); it never raises for a
      refusal.
    - :meth:`acquire` enforces: in ``mode="reject"`` a refusal raises
      :class:`~buttress.errors.RateLimited` (with ``retry_after``); in
      ``mode="wait"`` the caller sleeps until the request fits, up to ``max_wait``
      seconds (or a :class:`~datetime.timedelta`) in all, then is rejected the same
      way.
    - As a policy (decorator, ``call``/``acall``, inside a
      :class:`~buttress.Pipeline`) every call is admitted by ``allow`` first, and
      only a refusal goes on to :meth:`acquire` (to wait, or to raise). Its key is
      ``key``: a constant, or a callable given the call's ``(*args, **kwargs)``.

    Async twins: :attr:`aallow`, :meth:`ahit`, :meth:`aacquire`, :meth:`areset`,
    :meth:`ahit_many`. Each refused request emits
    :class:`~buttress.events.CallRejected` with reason ``"rate_limited"``.
    """

    __slots__ = (
        "_aadmit",
        "_admit",
        "_all",
        "_const_key",
        "_key_fn",
        "_local",
        "_one",
        "_owned",
        "_prefix",
        "_waits",
        "aallow",
        "allow",
        "clock",
        "cost",
        "key",
        "limits",
        "max_wait",
        "mode",
        "options",
        "store",
    )

    Options: ClassVar[type[RateLimiterOptions]] = RateLimiterOptions
    """The options class (``RateLimiter.Options(limits=...)``, see :meth:`from_options`)."""

    options: RateLimiterOptions
    """The validated settings."""

    allow: Allow
    """``allow(key=None, cost=None) -> bool``: decide one request, answer whether it may go.

    The same atomic decision as :meth:`hit` — the cost is taken from every limit if
    all allow — without building a result. A refusal emits
    :class:`~buttress.events.CallRejected`. It is an attribute holding a function
    made for this limiter when it was built (on the memory store, compiled with the
    algorithm's boolean twin), so a decision is a single call.
    """

    aallow: AsyncAllow
    """The async twin of :attr:`allow`: ``await limiter.aallow(key)``."""

    def __init__(
        self,
        *limits: Algorithm | str,
        store: Store | str = "memory://",
        key: str | Callable[..., str] = "global",
        cost: int = 1,
        mode: Literal["reject", "wait"] = "reject",
        max_wait: float | timedelta = 1.0,
        name: str | None = None,
        clock: Clock = MONOTONIC,
    ) -> None:
        options = RateLimiterOptions(
            limits=limits,  # type: ignore[arg-type]  # strings too: checked and converted
            store=store,
            key=key,
            cost=cost,
            mode=mode,
            max_wait=max_wait,
        )
        self._setup(options, name, clock)

    @classmethod
    def from_options(
        cls, options: RateLimiterOptions, *, name: str | None = None, clock: Clock = MONOTONIC
    ) -> RateLimiter:
        """A ``RateLimiter`` from its options (as the registry builds it from TOML)."""
        return built_from(cls, options, name, clock)

    def _setup(self, options: RateLimiterOptions, name: str | None, clock: Clock) -> None:
        checked = options.limits
        key = options.key
        key_fn = None if isinstance(key, str) else key
        cost = options.cost
        mode = options.mode
        wait = cast(float, options.max_wait)  # normalised to seconds
        name = check_name(name)
        clock = check_clock(clock)
        store = options.store
        owned = isinstance(store, str)
        if isinstance(store, str):
            try:
                store = store_from_url(store, clock=clock)
            except ConfigError as exc:
                raise ConfigError(str(exc), path="store") from exc
        local = is_local(store)
        if name is None and not local:
            raise ConfigError(
                f"a limiter whose state goes to a shared store ({store.name!r}) needs an "
                "explicit name, the same in every process that shares its limits, e.g. "
                "name='api': a default name depends on the order limiters are built in",
                path="name",
            )
        self.options = options
        self.limits: tuple[Algorithm, ...] = checked
        self.store: Store = store
        self.key = key
        self.cost = cost
        self.mode: Literal["reject", "wait"] = mode
        self.max_wait = wait
        self.clock = clock
        self._key_fn = key_fn
        self._owned = owned
        self._waits = mode == "wait"
        self._init_strategy(name, "ratelimiter")
        self._prefix = prefix = f"{self.name}:"
        self._const_key = const_key = f"{self.name}:{key if isinstance(key, str) else 'global'}"
        # A local store decides without I/O: its bound deciders serve sync and async
        # callers alike (a MemoryStore subclass that overrides decide() binds
        # deciders that call it).
        self._local = local
        self._one: Decider | None = None
        self._all: MultiDecider | None = None
        if local and isinstance(store, LocalStore):
            if len(checked) == 1:
                self._one = store.bind(checked[0])
            else:
                self._all = store.bind_all(checked)
            binding: dict[str, Any] = {
                "prefix": prefix,
                "default_key": const_key,
                "default_cost": cost,
            }
            self.allow = store.bind_allow(checked, on_refused=self._refused, **binding)
            self.aallow = store.bind_async_allow(checked, on_refused=self._refused, **binding)
            # The policy's own: a refusal is decided again by acquire(), which emits.
            self._admit = store.bind_allow(checked, **binding)
            self._aadmit = store.bind_async_allow(checked, **binding)
        else:
            self.allow, self.aallow, self._admit, self._aadmit = self._remote_allows()
        self._build()

    def _remote_allows(self) -> tuple[Allow, AsyncAllow, Allow, AsyncAllow]:
        """``allow`` and the policy's admission for a store that is not local."""
        hit = self.hit
        ahit = self.ahit
        acquire = self.acquire
        aacquire = self.aacquire

        def allow(key: str | None = None, cost: int | None = None) -> bool:
            return hit(key, cost)[0]

        async def aallow(key: str | None = None, cost: int | None = None) -> bool:
            return (await ahit(key, cost))[0]

        # A remote refusal costs a round trip: the policy asks once, through acquire.
        def admit(key: str | None = None, cost: int | None = None) -> bool:
            acquire(key, cost)
            return True

        async def aadmit(key: str | None = None, cost: int | None = None) -> bool:
            await aacquire(key, cost)
            return True

        return allow, aallow, admit, aadmit

    # ---------------------------------------------------------------------- decisions

    def _decide(self, skey: str, cost: int) -> RateLimitResult:
        """One decision over every limit of the stored key ``skey``; no events."""
        one = self._one
        if one is not None:
            return _single(one(skey, cost, None), self.limits)
        multi = self._all
        if multi is not None:
            return _combine(multi(skey, cost, None), self.limits)
        limits = self.limits
        if len(limits) == 1:
            return _single(self.store.decide(skey, limits[0], cost), limits)
        return _combine(self.store.decide_all(skey, limits, cost), limits)

    async def _adecide(self, skey: str, cost: int) -> RateLimitResult:
        """The async twin of :meth:`_decide`."""
        if self._local:
            return self._decide(skey, cost)
        limits = self.limits
        if len(limits) == 1:
            return _single(await self.store.adecide(skey, limits[0], cost), limits)
        return _combine(await self.store.adecide_all(skey, limits, cost), limits)

    def _refused(self) -> None:
        if self._events.enabled:
            self._events.emit(CallRejected(self.name, "rate_limited"))

    def _error(self, key: str | None, result: RateLimitResult) -> RateLimited:
        """The error for a refused request; emits the rejection event."""
        self._refused()
        shown = key if key is not None else self.key if isinstance(self.key, str) else None
        error = RateLimited(self.name, result[4], key=shown, limit=result[1], remaining=result[2])
        if result[4] == math.inf:
            # A cost above a limit never fits: no retry can help (is_transient reads this).
            error.transient = False  # type: ignore[attr-defined]
        return error

    def hit(self, key: str | None = None, cost: int | None = None) -> RateLimitResult:
        """Decide one request of ``cost`` (default: the limiter's) for ``key``.

        One atomic decision over every limit, all or nothing. Never raises for a
        refusal: look at ``allowed`` and ``retry_after``. ``key=None`` is the
        limiter's constant key. A ``cost`` of 0 takes nothing and reports the
        key's standing.
        """
        if cost is None:
            cost = self.cost
        elif type(cost) is not int or cost < 0:
            cost = validate_cost(cost)
        skey = self._const_key if key is None else self._prefix + key
        one = self._one
        if one is not None:
            decision = one(skey, cost, None)
            # _single, inlined: one frame less on the hot path.
            result: RateLimitResult = _new(
                RateLimitResult,
                decision + ((decision,), self.limits),  # noqa: RUF005
            )
        else:
            multi = self._all
            if multi is not None:
                result = _combine(multi(skey, cost, None), self.limits)
            else:
                result = self._decide(skey, cost)
        if not result[0] and self._events.enabled:
            self._events.emit(CallRejected(self.name, "rate_limited"))
        return result

    async def ahit(self, key: str | None = None, cost: int | None = None) -> RateLimitResult:
        """The async twin of :meth:`hit`."""
        if self._local:
            return self.hit(key, cost)
        if cost is None:
            cost = self.cost
        elif type(cost) is not int or cost < 0:
            cost = validate_cost(cost)
        result = await self._adecide(self._const_key if key is None else self._prefix + key, cost)
        if not result[0]:
            self._refused()
        return result

    def acquire(self, key: str | None = None, cost: int | None = None) -> RateLimitResult:
        """Take ``cost`` for ``key`` or raise :class:`~buttress.errors.RateLimited`.

        In wait mode, sleep (``clock.sleep``) until the request fits, as long as
        the waits add up to at most ``max_wait`` seconds; a wait that would end
        later is not begun, and the request is rejected at once. Inside a
        :class:`~buttress.Timeout` a wait must also end before its deadline: one
        that cannot raises the timeout's
        :class:`~buttress.errors.TimeoutExceeded` at once.
        """
        if cost is None:
            cost = self.cost
        elif type(cost) is not int or cost < 0:
            cost = validate_cost(cost)
        skey = self._const_key if key is None else self._prefix + key
        result = self._decide(skey, cost)
        if result[0]:
            return result
        waits = self._waits_for(key, result)
        try:
            delay = next(waits)
            while True:
                self.clock.sleep(delay)
                delay = waits.send(self._decide(skey, cost))
        except StopIteration as granted:
            done: RateLimitResult = granted.value
            return done

    async def aacquire(self, key: str | None = None, cost: int | None = None) -> RateLimitResult:
        """The async twin of :meth:`acquire`; it waits with ``await clock.asleep``."""
        if cost is None:
            cost = self.cost
        elif type(cost) is not int or cost < 0:
            cost = validate_cost(cost)
        skey = self._const_key if key is None else self._prefix + key
        result = await self._adecide(skey, cost)
        if result[0]:
            return result
        waits = self._waits_for(key, result)
        try:
            delay = next(waits)
            while True:
                await self.clock.asleep(delay)
                delay = waits.send(await self._adecide(skey, cost))
        except StopIteration as granted:
            done: RateLimitResult = granted.value
            return done

    def _waits_for(
        self, key: str | None, result: RateLimitResult
    ) -> Generator[float, RateLimitResult, RateLimitResult]:
        """The waits after a refusal, decided without I/O: the drivers sleep and ask.

        Yields each wait; is sent the decision taken after it; returns the
        decision that admitted the request, or raises the refusal (or the enclosing
        timeout's error) when no more waiting can help.
        """
        clock = self.clock
        waits = self._waits
        now = clock.monotonic() if waits else 0.0
        deadline = now + self.max_wait
        while True:
            delay = _plan(waits, result[4], deadline - now)
            if delay is None:
                raise self._error(key, result)
            self._fit(delay, key, result)
            result = yield delay
            if result[0]:
                return result
            now = clock.monotonic()

    def _fit(self, delay: float, key: str | None, result: RateLimitResult) -> None:
        """A wait inside a :class:`~buttress.Timeout` must end before its deadline.

        One that cannot raises the timeout's ``TimeoutExceeded`` at once, chained
        from the refusal (which emits its event as any refusal does).
        """
        if DEADLINE.get() is None:
            return
        try:
            fit(delay, f"rate limiter {self.name!r}")
        except TimeoutExceeded as exc:
            raise exc from self._error(key, result)

    def hit_many(self, keys: Sequence[str], cost: int | None = None) -> list[RateLimitResult]:
        """:meth:`hit` for each of ``keys``, in order; on Redis in one round trip."""
        cost = self.cost if cost is None else validate_cost(cost)
        prefix = self._prefix
        limits = self.limits
        store = self.store
        if len(limits) == 1:
            decisions = store.decide_many([(prefix + key, limits[0], cost) for key in keys])
            results = [_single(decision, limits) for decision in decisions]
        else:
            many = store.decide_all_many([(prefix + key, limits, cost) for key in keys])
            results = [_combine(decisions, limits) for decisions in many]
        self._count_refusals(results)
        return results

    async def ahit_many(
        self, keys: Sequence[str], cost: int | None = None
    ) -> list[RateLimitResult]:
        """The async twin of :meth:`hit_many`."""
        cost = self.cost if cost is None else validate_cost(cost)
        prefix = self._prefix
        limits = self.limits
        store = self.store
        if len(limits) == 1:
            decisions = await store.adecide_many([(prefix + key, limits[0], cost) for key in keys])
            results = [_single(decision, limits) for decision in decisions]
        else:
            many = await store.adecide_all_many([(prefix + key, limits, cost) for key in keys])
            results = [_combine(decisions, limits) for decisions in many]
        self._count_refusals(results)
        return results

    def _count_refusals(self, results: list[RateLimitResult]) -> None:
        if self._events.enabled:
            for result in results:
                if not result[0]:
                    self._events.emit(CallRejected(self.name, "rate_limited"))

    def reset(self, key: str | None = None) -> None:
        """Forget ``key``'s state under every limit: its next request finds full quotas."""
        skey = self._const_key if key is None else self._prefix + key
        if len(self.limits) == 1:
            self.store.reset(skey, self.limits[0])
        else:
            self.store.reset_all(skey, self.limits)

    async def areset(self, key: str | None = None) -> None:
        """The async twin of :meth:`reset`."""
        skey = self._const_key if key is None else self._prefix + key
        if len(self.limits) == 1:
            await self.store.areset(skey, self.limits[0])
        else:
            await self.store.areset_all(skey, self.limits)

    def close(self) -> None:
        """Close the store if this limiter built it from a URL."""
        if self._owned:
            self.store.close()

    async def aclose(self) -> None:
        """The async twin of :meth:`close`."""
        if self._owned:
            await self.store.aclose()

    # ------------------------------------------------------------------- the policy

    def _sync_runner(self, inner: SyncRunner) -> SyncRunner:
        # Admission builds nothing; only a refusal asks acquire() (which decides
        # again, and then waits or raises with the full result).
        admit = self._admit
        acquire = self.acquire
        key_fn = self._key_fn
        if key_fn is None:

            def run(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
                if not admit():
                    acquire()
                return inner(fn, args, kwargs)

            return run

        def run_keyed(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
            key = key_fn(*args, **kwargs)
            if not admit(key):
                acquire(key)
            return inner(fn, args, kwargs)

        return run_keyed

    def _async_runner(self, inner: AsyncRunner) -> AsyncRunner:
        aadmit = self._aadmit
        aacquire = self.aacquire
        key_fn = self._key_fn
        if key_fn is None:

            async def run(
                fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
            ) -> Any:
                if not await aadmit():
                    await aacquire()
                return await inner(fn, args, kwargs)

            return run

        async def run_keyed(
            fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
        ) -> Any:
            key = key_fn(*args, **kwargs)
            if not await aadmit(key):
                await aacquire(key)
            return await inner(fn, args, kwargs)

        return run_keyed

    def __repr__(self) -> str:
        limits = ", ".join(repr(limit) for limit in self.limits)
        return (
            f"RateLimiter({limits}, store={self.store!r}, mode={self.mode!r}, name={self.name!r})"
        )

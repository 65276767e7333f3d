"""``Degradation``: named feature levels, switched by conditions, asked with ``allows()``.

A degradation has levels, best first (``full`` > ``reduced`` > ``minimal``), each
allowing a set of features, and conditions per lower level: health checks,
error-budget burn alerts, budgets running low, any predicate. The current level is
the lowest whose conditions hold (the best one when none does). ``allows(feature)``
is a set lookup; the conditions are evaluated on the calling thread at most once per
``check_interval``, and never by two threads at once (the other callers read the
level as it stands).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping
from datetime import timedelta
from typing import Any, TypeAlias, cast

from buttress._events import Emitter, Event, Listener, call_name, logger
from buttress._options import built_from
from buttress._strategy import is_async_callable
from buttress._validate import check_clock, check_name, check_number
from buttress.clock import MONOTONIC, Clock
from buttress.errors import ConfigError
from buttress.policies.budget._events import DegradationChanged
from buttress.policies.budget._options import BurnAlert, DegradationOptions
from buttress.policies.budget._policy import ErrorBudget, LatencyBudget
from buttress.policies.budget._snapshot import DegradationSnapshot, register

__all__ = ["HEALTHY_STATUSES", "Condition", "Degradation", "is_healthy"]

_log = "buttress.budget"

HEALTHY_STATUSES = frozenset({"pass", "ok", "up", "healthy", "warn"})
"""Status words read as healthy (compared lower-cased); any other word is unhealthy.

``"warn"`` is healthy, as in the IETF health-check draft: working, with a concern.
"""


def is_healthy(value: object) -> bool:
    """Read a health answer: a bool, a status word, or an object with a status.

    An object is read through its ``healthy`` attribute (a bool) or its ``status``
    (a bool, a word such as ``"pass"``/``"fail"``, or an enum whose value is one);
    ``None`` and anything unreadable are unhealthy.
    """
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        return value.lower() in HEALTHY_STATUSES
    if value is None:
        return False
    healthy = getattr(value, "healthy", None)
    if isinstance(healthy, bool):
        return healthy
    if hasattr(value, "status"):
        status = value.status
        if isinstance(status, bool | str):
            return is_healthy(status)
        inner = getattr(status, "value", None)  # an enum
        if isinstance(inner, bool | str):
            return is_healthy(inner)
    return False


def _check_sync(check: object, path: str) -> None:
    if not callable(check):
        raise ConfigError(f"must be a zero-argument callable, got {check!r}", path=path)
    if is_async_callable(check):
        raise ConfigError(
            f"{call_name(check)} is async, and allows() is a sync call that must not wait: "
            "give the object holding the check's latest result (anything with a status) "
            "and run the check in the background",
            path=path,
        )


class Condition:
    """Something that, while it holds, moves a :class:`Degradation` down to a level.

    ``Condition(predicate)`` holds while ``predicate()`` is true; the factories build
    the usual ones: :meth:`unhealthy` (a health check fails), :meth:`burning` (an
    error budget's burn-rate alert fires), :meth:`remaining_below` (a budget runs
    low). ``name`` identifies it in events (default: the predicate's qualified name).
    A condition that raises counts as holding (degrading is the safe side) and is
    logged on the ``buttress.budget`` logger when it starts raising.
    """

    __slots__ = ("_predicate", "name")

    def __init__(self, predicate: Callable[[], object], *, name: str | None = None) -> None:
        _check_sync(predicate, "predicate")
        checked = check_name(name)
        self.name = checked if checked is not None else call_name(predicate)
        self._predicate = predicate

    def __call__(self) -> bool:
        """Whether the condition holds now."""
        return bool(self._predicate())

    @classmethod
    def unhealthy(cls, check: object, *, name: str | None = None) -> Condition:
        """Holds while ``check`` is unhealthy.

        ``check`` is an object with a status (``healthy`` or ``status``: read at
        every evaluation, no I/O — such as a health monitor's latest result), or a
        zero-argument callable returning a bool or such an object (called at every
        evaluation: keep it quick). See :func:`is_healthy` for how answers are read.
        """
        if hasattr(check, "healthy") or hasattr(check, "status"):

            def read() -> bool:
                return not is_healthy(check)

        else:
            _check_sync(check, "check")

            def read() -> bool:
                return not is_healthy(check())  # type: ignore[operator]

        label = getattr(check, "name", None)
        if not isinstance(label, str) or not label:
            label = call_name(check) if callable(check) else type(check).__name__
        return cls(read, name=name or f"unhealthy({label})")

    @classmethod
    def burning(
        cls, budget: ErrorBudget, alert: BurnAlert | None = None, *, name: str | None = None
    ) -> Condition:
        """Holds while ``budget`` burns too fast: ``alert`` fires (default: any of its alerts)."""
        if not isinstance(budget, ErrorBudget):
            raise ConfigError(f"must be an ErrorBudget, got {budget!r}", path="budget")
        if alert is not None and alert not in budget.options.burn_alerts:
            raise ConfigError(
                f"{alert!r} is not one of {budget.name!r}'s alerts "
                f"{list(budget.options.burn_alerts)!r}",
                path="alert",
            )

        def read() -> bool:
            return budget.alerting(alert)

        return cls(read, name=name or f"burning({budget.name})")

    @classmethod
    def remaining_below(
        cls, budget: ErrorBudget | LatencyBudget, fraction: float, *, name: str | None = None
    ) -> Condition:
        """Holds while ``budget.remaining()`` is below ``fraction`` (0 means overspent)."""
        if not isinstance(budget, ErrorBudget | LatencyBudget):
            raise ConfigError(
                f"must be an ErrorBudget or a LatencyBudget, got {budget!r}", path="budget"
            )
        below = check_number(fraction, "fraction", maximum=1.0)

        def read() -> bool:
            return budget.remaining() < below

        return cls(read, name=name or f"remaining_below({budget.name}, {below:g})")

    def __repr__(self) -> str:
        return f"Condition(name={self.name!r})"


Check: TypeAlias = "Condition | Callable[[], object]"
Conditions: TypeAlias = "Mapping[str, Check | Iterable[Check]]"
"""What ``when=`` takes: level names to a condition, or several (any of them moves it)."""


class Degradation:
    """Named feature levels, best first, switched by conditions; ask with :meth:`allows`.

    ::

        degradation = Degradation(
            {
                "full": {"recommendations", "search", "checkout"},
                "reduced": {"search", "checkout"},
                "minimal": {"checkout"},
            },
            when={
                "reduced": Condition.burning(errors),
                "minimal": [Condition.unhealthy(db_check), Condition.remaining_below(errors, 0)],
            },
        )
        if degradation.allows("recommendations"): ...

    The level is the lowest one any of whose conditions holds; the best level when
    none does. Moving down happens at the first evaluation that sees a condition
    hold; moving back up waits until the lower level's conditions have been clear
    for ``recover_after`` seconds. Conditions are evaluated by ``allows``,
    :attr:`level` and :attr:`features` at most once per ``check_interval`` seconds
    (0: every time), or at once with :meth:`evaluate`. :meth:`force` holds a level
    whatever the conditions say, :meth:`release` lets them decide again.

    Every change emits :class:`DegradationChanged` (to this object's listeners and
    the global ones, in order, while the change is being made: keep listeners quick).
    Thread-safe; the conditions are plain sync calls, fine to use from async code.
    """

    __slots__ = (
        "__weakref__",
        "_allowed",
        "_clear_since",
        "_conditions",
        "_due",
        "_events",
        "_features",
        "_forced",
        "_interval",
        "_level",
        "_levels",
        "_lock",
        "_raising",
        "_recover",
        "clock",
        "name",
        "options",
    )

    Options = DegradationOptions

    options: DegradationOptions
    clock: Clock
    name: str

    def __init__(
        self,
        levels: Mapping[str, Iterable[str]],
        *,
        when: Conditions | None = None,
        check_interval: float | timedelta = 1.0,
        recover_after: float | timedelta = 0.0,
        name: str | None = None,
        clock: Clock = MONOTONIC,
    ) -> None:
        options = DegradationOptions(
            levels=levels, check_interval=check_interval, recover_after=recover_after
        )
        self._setup(options, when, name, clock)

    @classmethod
    def from_options(
        cls,
        options: DegradationOptions,
        *,
        when: Conditions | None = None,
        name: str | None = None,
        clock: Clock = MONOTONIC,
    ) -> Degradation:
        """A ``Degradation`` from its options, with its conditions."""
        return built_from(cls, options, when, name, clock)

    def _setup(
        self,
        options: DegradationOptions,
        when: Conditions | None,
        name: str | None,
        clock: Clock,
    ) -> None:
        self.options = options
        self.clock = clock if clock is MONOTONIC else check_clock(clock)
        checked = check_name(name)
        self.name = checked if checked is not None else _default_name()
        self._levels = options.level_sets
        self._interval = cast(float, options.check_interval)
        self._recover = cast(float, options.recover_after)
        names = [level for level, _ in self._levels]
        self._conditions = _check_conditions(when, names)
        self._features = frozenset().union(*(features for _, features in self._levels))
        self._lock = threading.Lock()
        self._events = Emitter()
        self._level = 0
        self._allowed = self._levels[0][1]
        self._forced = False
        self._due = float("-inf")
        self._clear_since: float | None = None
        self._raising: set[str] = set()
        register(self)

    # -------------------------------------------------------------------- asking

    def allows(self, feature: str) -> bool:
        """Whether the current level allows ``feature`` (a set lookup, between evaluations).

        A feature no level names raises :class:`~buttress.errors.ConfigError`: a typo
        must not switch a feature off silently.
        """
        if self.clock.monotonic() >= self._due:
            self._evaluate_if_free()
        if feature in self._allowed:
            return True
        if feature not in self._features:
            raise ConfigError(
                f"no level of degradation {self.name!r} names feature {feature!r}; "
                f"known features: {', '.join(sorted(self._features))}",
                path="feature",
            )
        return False

    @property
    def level(self) -> str:
        """The current level's name (conditions evaluated first if due)."""
        if self.clock.monotonic() >= self._due:
            self._evaluate_if_free()
        return self._levels[self._level][0]

    @property
    def features(self) -> frozenset[str]:
        """The features the current level allows (conditions evaluated first if due)."""
        if self.clock.monotonic() >= self._due:
            self._evaluate_if_free()
        return self._allowed

    @property
    def levels(self) -> tuple[str, ...]:
        """Every level's name, best first."""
        return tuple(level for level, _ in self._levels)

    @property
    def forced(self) -> bool:
        """Whether :meth:`force` holds the level."""
        return self._forced

    # ------------------------------------------------------------------- changing

    def evaluate(self) -> str:
        """Evaluate the conditions now (waiting for an evaluation under way); the level."""
        with self._lock:
            self._evaluate_locked(self.clock.monotonic())
            return self._levels[self._level][0]

    def force(self, level: str) -> None:
        """Hold ``level`` until :meth:`release`, whatever the conditions say."""
        index = self._index(level)
        with self._lock:
            self._forced = True
            self._move(index, "forced", "")

    def release(self) -> None:
        """Let the conditions decide the level again (evaluated at once)."""
        with self._lock:
            if not self._forced:
                return
            self._forced = False
            self._clear_since = None
            now = self.clock.monotonic()
            target, condition = self._target()
            self._move(target, "released", condition)
            self._due = now + self._interval

    def subscribe(self, listener: Listener, *types: type[Event]) -> Callable[[], None]:
        """Send this degradation's events to ``listener``; returns the unsubscribe function."""
        return self._events.subscribe(listener, *types)

    def snapshot(self) -> DegradationSnapshot:
        """The level and what it allows, read together (for exporters and health pages).

        Reads the state as it stands; evaluates nothing.
        """
        with self._lock:
            level, allowed, forced = self._level, self._allowed, self._forced
        return DegradationSnapshot(
            name=self.name,
            level=self._levels[level][0],
            levels=self.levels,
            forced=forced,
            features=tuple((feature, feature in allowed) for feature in sorted(self._features)),
        )

    # ------------------------------------------------------------------- internals

    def _index(self, level: object) -> int:
        for index, (name, _) in enumerate(self._levels):
            if name == level:
                return index
        raise ConfigError(
            f"no such level {level!r}; the levels are {', '.join(self.levels)}", path="level"
        )

    def _evaluate_if_free(self) -> None:
        # One evaluator at a time; the others go on with the level as it stands.
        if self._lock.acquire(blocking=False):
            try:
                now = self.clock.monotonic()
                if now >= self._due:
                    self._evaluate_locked(now)
            finally:
                self._lock.release()

    def _evaluate_locked(self, now: float) -> None:
        self._due = now + self._interval
        if self._forced:
            return
        target, condition = self._target()
        current = self._level
        if target > current:
            self._clear_since = None
            self._move(target, "condition", condition)
        elif target < current:
            since = self._clear_since
            if since is None:
                since = self._clear_since = now
            if now - since >= self._recover:
                self._clear_since = None
                self._move(target, "recovered", condition)
        else:
            self._clear_since = None

    def _target(self) -> tuple[int, str]:
        """The lowest level one of whose conditions holds, and that condition's name."""
        for index in range(len(self._levels) - 1, 0, -1):
            for condition in self._conditions.get(index, ()):
                if self._holds(condition):
                    return index, condition.name
        return 0, ""

    def _holds(self, condition: Condition) -> bool:
        try:
            holds = condition()
        except Exception:
            if condition.name not in self._raising:
                self._raising.add(condition.name)
                logger(_log).warning(
                    "degradation %r: condition %r raised; counted as holding",
                    self.name,
                    condition.name,
                    exc_info=True,
                )
            return True
        self._raising.discard(condition.name)
        return holds

    def _move(self, index: int, reason: str, condition: str) -> None:
        old = self._level
        if index == old:
            return
        self._level = index
        self._allowed = self._levels[index][1]
        events = self._events
        if events.enabled:
            events.emit(
                DegradationChanged(
                    self.name,
                    self._levels[old][0],
                    self._levels[index][0],
                    reason,
                    condition,
                )
            )

    def __repr__(self) -> str:
        return (
            f"Degradation(levels={list(self.levels)!r}, level={self._levels[self._level][0]!r}, "
            f"name={self.name!r})"
        )


_counter_lock = threading.Lock()
_counter = [0]


def _default_name() -> str:
    with _counter_lock:
        _counter[0] += 1
        return f"degradation-{_counter[0]}"


def _check_conditions(
    when: Conditions | None, names: list[str]
) -> dict[int, tuple[Condition, ...]]:
    if when is None:
        return {}
    if not isinstance(when, Mapping):
        raise ConfigError(f"must map level names to conditions, got {when!r}", path="when")
    found: dict[int, tuple[Condition, ...]] = {}
    for level, given in when.items():
        path = f"when.{level}"
        if level not in names:
            raise ConfigError(f"no such level; the levels are {', '.join(names)}", path=path)
        index = names.index(level)
        if index == 0:
            raise ConfigError(
                f"{level!r} is the best level, where no condition holds: conditions move "
                "the degradation down to the levels after it",
                path=path,
            )
        if isinstance(given, Condition) or callable(given):
            items: list[Any] = [given]
        elif isinstance(given, Iterable) and not isinstance(given, str | bytes):  # type: ignore[unreachable]
            items = list(given)
        else:
            raise ConfigError(
                f"must be a Condition, a zero-argument callable or a list of them, got {given!r}",
                path=path,
            )
        conditions: list[Condition] = []
        for i, item in enumerate(items):
            if isinstance(item, Condition):
                conditions.append(item)
            elif callable(item):
                try:
                    conditions.append(Condition(item))
                except ConfigError as exc:
                    raise ConfigError(str(exc).partition(": ")[2], path=f"{path}[{i}]") from None
            else:
                raise ConfigError(
                    f"must be a Condition or a zero-argument callable, got {item!r}",
                    path=f"{path}[{i}]",
                )
        found[index] = tuple(conditions)
    return found

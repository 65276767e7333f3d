"""The budgets' and the degradation's options: checked once, when built, then frozen.

Every value is validated here with the checks every policy uses
(:mod:`buttress._validate`), so a bad one fails at construction with the option's
name (``ConfigError(path="alerts[0].factor")``). Durations are seconds or a
:class:`~datetime.timedelta` and are kept as ``float`` seconds.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping
from datetime import timedelta
from typing import Any, cast

from buttress._options import Options, option, register_conversion
from buttress._outcome import Matcher, OnErrors, as_matcher
from buttress._validate import check_count, check_number, check_seconds
from buttress.errors import ConfigError

__all__ = [
    "DEFAULT_ALERTS",
    "BurnAlert",
    "DegradationOptions",
    "ErrorBudgetOptions",
    "LatencyBudgetOptions",
]

_DAY = 86_400.0
_MAX_BUCKETS = 100_000


def _check_target(value: object, path: str) -> float:
    target = check_number(value, path, above=0.0)
    if target >= 1.0:
        raise ConfigError(
            f"must be a share of calls in (0, 1), such as 0.999, got {value!r}", path=path
        )
    return target


def _complement(share: float) -> float:
    # 1 - 0.999 is 0.0010000000000000009 in binary floating point; a target given in
    # decimal means its decimal complement, so a 0.2 % error rate burns at 2, not 1.998.
    return float(f"{1.0 - share:.12g}")


def _repath(exc: ConfigError, prefix: str) -> ConfigError:
    text = str(exc)
    message = text[len(exc.path) + 2 :] if exc.path and text.startswith(f"{exc.path}: ") else text
    return ConfigError(message, path=f"{prefix}.{exc.path}" if exc.path else prefix)


class BurnAlert:
    """A multi-window burn-rate alert: both windows burn faster than ``factor``.

    ``BurnAlert(long=3600, short=300, factor=14.4)`` fires while the error budget
    burns more than 14.4 times as fast as it may, over both the last hour and the
    last five minutes (Google's SRE workbook: 2 % of a 30-day budget gone in an
    hour; the short window makes the alert stop soon after the burning does).
    Windows are seconds or :class:`~datetime.timedelta`, kept as ``float`` seconds.
    Immutable; compares and hashes by value.
    """

    __slots__ = ("factor", "long", "short")

    long: float
    """The long window, in seconds: how much budget must have burnt."""
    short: float
    """The short window, in seconds (shorter than ``long``): is it still burning?"""
    factor: float
    """The burn rate both windows must exceed (1 spends the budget exactly over the SLO window)."""

    def __init__(self, long: float | timedelta, short: float | timedelta, factor: float) -> None:
        long_s = check_seconds(long, "long", positive=True)
        short_s = check_seconds(short, "short", positive=True)
        if short_s >= long_s:
            raise ConfigError(
                f"must be shorter than long ({long_s:g} s), got {short!r}", path="short"
            )
        object.__setattr__(self, "long", long_s)
        object.__setattr__(self, "short", short_s)
        object.__setattr__(self, "factor", check_number(factor, "factor", above=0.0))

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"BurnAlert is immutable: cannot set {name!r}")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, BurnAlert):
            return NotImplemented
        return (self.long, self.short, self.factor) == (other.long, other.short, other.factor)

    def __hash__(self) -> int:
        return hash((self.long, self.short, self.factor))

    def __repr__(self) -> str:
        return f"BurnAlert(long={self.long:g}, short={self.short:g}, factor={self.factor:g})"


DEFAULT_ALERTS = (
    BurnAlert(long=3600.0, short=300.0, factor=14.4),
    BurnAlert(long=21_600.0, short=1800.0, factor=6.0),
)
"""The SRE workbook's two paging alerts for a 30-day SLO: 1 h and 5 min above 14.4,
6 h and 30 min above 6 (2 % and 5 % of the budget spent)."""


def _alert_from(value: object, path: str) -> BurnAlert:
    if isinstance(value, BurnAlert):
        return value
    try:
        if isinstance(value, Mapping):
            unknown = set(value) - {"long", "short", "factor"}
            if unknown:
                raise ConfigError(
                    f"unknown keys {sorted(unknown)}; valid keys: long, short, factor", path=""
                )
            missing = {"long", "short", "factor"} - set(value)
            if missing:
                raise ConfigError(f"missing {', '.join(sorted(missing))}", path="")
            return BurnAlert(value["long"], value["short"], value["factor"])
        if isinstance(value, tuple | list) and len(value) == 3:
            return BurnAlert(*value)
    except ConfigError as exc:
        raise _repath(exc, path) from None
    raise ConfigError(
        f"must be a BurnAlert, a (long, short, factor) tuple or a table with those keys, "
        f"got {value!r}",
        path=path,
    )


def convert_alerts(value: Any, path: str) -> Any:
    """TOML: a list of tables ``{long = 3600, short = 300, factor = 14.4}`` to alerts."""
    if not isinstance(value, list):
        raise ConfigError(f"must be a list of alert tables, got {value!r}", path=path)
    return tuple(_alert_from(item, f"{path}[{i}]") for i, item in enumerate(value))


register_conversion("burn_alerts", convert_alerts)


def _check_buckets(value: object, path: str) -> int:
    return check_count(value, path, minimum=1, maximum=_MAX_BUCKETS)


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class ErrorBudgetOptions(Options):
    """The validated settings of one :class:`~buttress.policies.budget.ErrorBudget`.

    ``alerts`` is a tuple of :class:`BurnAlert` once built (given as ``None``: the
    :data:`DEFAULT_ALERTS`); every alert window is at most ``window`` and every
    factor reachable (below ``1 / (1 - target)``, the burn rate when every call fails).
    """

    kind = "error_budget"

    target: float = option(
        doc="The share of calls that must succeed over the window (0 < target < 1), e.g. 0.999."
    )
    window: float | timedelta = option(
        30 * _DAY, doc="The SLO window the budget is spent over, in seconds (30 days)."
    )
    buckets: int = option(
        720, doc="Buckets of the SLO window (720: one hour each for 30 days); at most 100000."
    )
    alerts: tuple[BurnAlert, ...] | None = option(
        None,
        toml="burn_alerts",
        doc="Burn-rate alerts (long window, short window, factor); default: 1 h and "
        "5 min above 14.4, 6 h and 30 min above 6.",
    )
    alert_buckets: int = option(
        60, doc="Buckets of each alert window (60: five seconds each for five minutes)."
    )
    on: OnErrors | None = option(
        None,
        toml="exceptions",
        doc="The errors that count as bad calls (replaces the default rule: transient "
        "errors, timeouts and rejections); other errors are answers and count as good.",
    )
    on_result: Callable[[Any], object] | None = option(
        None,
        toml=False,
        doc="A predicate on returned values: true counts the call as bad "
        "(default: an HTTP response with a transient status).",
    )
    matcher: Matcher = dataclasses.field(
        init=False, repr=False, compare=False, metadata={"doc": "", "toml": False}
    )
    """The outcome matcher ``on`` and ``on_result`` describe (built here, once)."""

    def __post_init__(self) -> None:
        target = _check_target(self.target, "target")
        window = check_seconds(self.window, "window", positive=True)
        self._set("target", target)
        self._set("window", window)
        self._set("buckets", _check_buckets(self.buckets, "buckets"))
        self._set("alert_buckets", _check_buckets(self.alert_buckets, "alert_buckets"))
        given = DEFAULT_ALERTS if self.alerts is None else self.alerts
        if isinstance(given, BurnAlert | Mapping | str) or not isinstance(given, Iterable):
            raise ConfigError(f"must be a sequence of BurnAlert, got {given!r}", path="alerts")
        alerts = tuple(_alert_from(item, f"alerts[{i}]") for i, item in enumerate(given))
        most = 1.0 / (1.0 - target)
        for i, alert in enumerate(alerts):
            if alert.long > window:
                raise ConfigError(
                    f"must be at most the SLO window ({window:g} s), got {alert.long:g} s",
                    path=f"alerts[{i}].long",
                )
            if alert.factor >= most:
                hint = " (the default alerts suit targets of 0.95 and above)"
                raise ConfigError(
                    f"can never be exceeded: with target {target:g} the burn rate is at most "
                    f"{most:g} (every call failing); got {alert.factor:g}"
                    + (hint if self.alerts is None else ""),
                    path=f"alerts[{i}].factor",
                )
        self._set("alerts", alerts)
        self._set("matcher", as_matcher(self.on, self.on_result))

    @property
    def allowed(self) -> float:
        """The share of calls that may fail: ``1 - target`` (``0.999`` allows ``0.001``)."""
        return _complement(self.target)

    @property
    def windows(self) -> tuple[float, ...]:
        """Every window the budget counts over, in seconds: the SLO window, then the
        alerts' windows (each once), longest first."""
        found = {cast(float, self.window)}
        for alert in self.burn_alerts:
            found.update((alert.long, alert.short))
        return tuple(sorted(found, reverse=True))

    @property
    def burn_alerts(self) -> tuple[BurnAlert, ...]:
        """``alerts``, typed as what it is once built."""
        return cast("tuple[BurnAlert, ...]", self.alerts)


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class LatencyBudgetOptions(Options):
    """The validated settings of one :class:`~buttress.policies.budget.LatencyBudget`."""

    kind = "latency_budget"

    threshold: float | timedelta = option(
        doc="The duration the percentile must not exceed, in seconds (e.g. 0.3)."
    )
    percentile: float = option(0.99, doc="Which percentile, as a share in (0, 1): 0.99 is p99.")
    window: float | timedelta = option(
        30 * _DAY, doc="The window the percentile is taken over, in seconds (30 days)."
    )
    buckets: int = option(
        60, doc="Buckets of the window (60: twelve hours each for 30 days); at most 100000."
    )

    def __post_init__(self) -> None:
        self._set("threshold", check_seconds(self.threshold, "threshold", positive=True))
        self._set("percentile", _check_target(self.percentile, "percentile"))
        self._set("window", check_seconds(self.window, "window", positive=True))
        self._set("buckets", _check_buckets(self.buckets, "buckets"))

    @property
    def allowed(self) -> float:
        """The share of calls that may be slower than ``threshold``: ``1 - percentile``."""
        return _complement(self.percentile)


def _check_levels(value: object) -> tuple[tuple[str, frozenset[str]], ...]:
    if not isinstance(value, Mapping) or not value:
        raise ConfigError(
            "must be a mapping of level names to the features each allows, best first, "
            f"e.g. {{'full': {{'search', 'recommendations'}}, 'reduced': {{'search'}}}}; "
            f"got {value!r}",
            path="levels",
        )
    levels: list[tuple[str, frozenset[str]]] = []
    for name, features in value.items():
        if not isinstance(name, str) or not name or name != name.strip():
            raise ConfigError(
                f"a level name must be a non-empty string without surrounding spaces, got {name!r}",
                path="levels",
            )
        path = f"levels.{name}"
        if isinstance(features, str) or not isinstance(features, Iterable):
            raise ConfigError(f"must be a collection of feature names, got {features!r}", path=path)
        items = list(features)
        for feature in items:
            if not isinstance(feature, str) or not feature:
                raise ConfigError(
                    f"a feature name must be a non-empty string, got {feature!r}", path=path
                )
        levels.append((name, frozenset(items)))
    return tuple(levels)


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class DegradationOptions(Options):
    """The validated settings of one :class:`~buttress.policies.budget.Degradation`.

    ``levels`` becomes a tuple of ``(name, frozenset of features)``, best level
    first. The conditions are given to the ``Degradation`` itself (they are code).
    """

    kind = "degradation"

    levels: Mapping[str, Iterable[str]] | tuple[tuple[str, frozenset[str]], ...] = option(
        doc="Level names to the features each allows, best (normal) level first."
    )
    check_interval: float | timedelta = option(
        1.0,
        doc="Conditions are evaluated at most this often, in seconds; allows() in "
        "between is a set lookup (0: at every call).",
    )
    recover_after: float | timedelta = option(
        0.0,
        doc="How long a level's conditions must stay clear before moving back up, in seconds.",
    )

    def __post_init__(self) -> None:
        levels = self.levels
        if isinstance(levels, tuple) and all(
            isinstance(item, tuple) and len(item) == 2 for item in levels
        ):
            levels = dict(levels)  # a replace() of built options: checked again
        self._set("levels", _check_levels(levels))
        self._set("check_interval", check_seconds(self.check_interval, "check_interval"))
        self._set("recover_after", check_seconds(self.recover_after, "recover_after"))

    @property
    def names(self) -> tuple[str, ...]:
        """The level names, best first."""
        return tuple(name for name, _ in self.level_sets)

    @property
    def level_sets(self) -> tuple[tuple[str, frozenset[str]], ...]:
        """``levels``, typed as what it is once built: ``(name, features)``, best first."""
        return cast("tuple[tuple[str, frozenset[str]], ...]", self.levels)

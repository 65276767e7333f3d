"""Prometheus alert rules over buttress's metrics, built from Python data.

:func:`alert_rules` returns a rule file (``{"groups": [...]}``) as plain data;
:func:`render_rules` writes it as YAML for Prometheus (``rule_files:``). Every
threshold is an :class:`AlertThresholds` field, so ``buttress observe export``
exposes each as an option.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any

from buttress.errors import ConfigError
from buttress.observe.ops import _names as m
from buttress.observe.ops._promql import duration, selector, window_label

__all__ = ["ALERTS", "AlertThresholds", "alert_rules", "render_rules"]

ALERTS = (
    "ButtressCircuitOpen",
    "ButtressHighFailureRate",
    "ButtressErrorBudgetFastBurn",
    "ButtressErrorBudgetSlowBurn",
    "ButtressErrorBudgetExhausted",
    "ButtressHealthCheckFailing",
    "ButtressStoreDegraded",
    "ButtressBulkheadSaturated",
    "ButtressRateLimitDenialsHigh",
)
"""The names of the alerts :func:`alert_rules` writes, in order."""


@dataclass(frozen=True, slots=True, kw_only=True)
class AlertThresholds:
    """The thresholds of the exported alerts; durations in seconds.

    The defaults follow common practice: a breaker open for five minutes, more than
    10 % of calls failing for ten, and the multi-window burn-rate alerts of the
    Google SRE workbook (14.4× over 1 h and 5 min pages, 6× over 6 h and 30 min
    opens a ticket). The budget windows must be windows your
    error budget exports (its ``window`` label, in whole seconds).
    """

    breaker_open_for: float = field(
        default=300.0,
        metadata={"help": "How long a breaker stays open (or isolated) before it alerts."},
    )
    failure_ratio: float = field(
        default=0.1,
        metadata={
            "help": "Share of a policy's executed calls that failed, above which it alerts (0–1)."
        },
    )
    failure_window: float = field(
        default=300.0, metadata={"help": "The rate window of the failure ratio."}
    )
    failure_for: float = field(
        default=600.0, metadata={"help": "How long the failure ratio stays high before it alerts."}
    )
    fast_burn_factor: float = field(
        default=14.4,
        metadata={"help": "Burn rate that pages: the budget gone in 1/14.4 of the SLO period."},
    )
    fast_burn_windows: tuple[float, float] = field(
        default=(3600.0, 300.0),
        metadata={"help": "The long and short windows the fast burn must exceed the factor over."},
    )
    fast_burn_for: float = field(
        default=120.0, metadata={"help": "How long the fast burn lasts before it alerts."}
    )
    slow_burn_factor: float = field(
        default=6.0, metadata={"help": "Burn rate that opens a ticket."}
    )
    slow_burn_windows: tuple[float, float] = field(
        default=(21600.0, 1800.0),
        metadata={"help": "The long and short windows the slow burn must exceed the factor over."},
    )
    slow_burn_for: float = field(
        default=900.0, metadata={"help": "How long the slow burn lasts before it alerts."}
    )
    budget_exhausted_for: float = field(
        default=300.0, metadata={"help": "How long an error budget stays spent before it alerts."}
    )
    health_check_for: float = field(
        default=120.0, metadata={"help": "How long a health check reports down before it alerts."}
    )
    store_degraded_for: float = field(
        default=60.0,
        metadata={"help": "How long a fallback store serves from memory before it alerts."},
    )
    bulkhead_saturation: float = field(
        default=1.0,
        metadata={"help": "Share of a bulkhead's slots in use above which it is saturated (0–1)."},
    )
    bulkhead_for: float = field(
        default=300.0, metadata={"help": "How long a bulkhead stays saturated before it alerts."}
    )
    ratelimit_denials: float = field(
        default=1.0,
        metadata={"help": "Denials per second by one rate limiter, above which it alerts."},
    )
    ratelimit_window: float = field(
        default=300.0, metadata={"help": "The rate window of the denials per second."}
    )
    ratelimit_for: float = field(
        default=600.0, metadata={"help": "How long the denials stay high before it alerts."}
    )
    selector: str = field(
        default="",
        metadata={
            "help": 'Label matchers added to every selector, e.g. ``job="api"`` (no braces).'
        },
    )
    runbook_url: str = field(
        default="",
        metadata={
            "help": "When given, each alert gets ``runbook_url: <this>#<alert name, lower case>``."
        },
    )

    def __post_init__(self) -> None:
        for item in fields(self):
            name, value = item.name, getattr(self, item.name)
            if name in ("selector", "runbook_url"):
                if not isinstance(value, str):
                    raise ConfigError(f"must be a string, got {value!r}", path=name)
            elif name.endswith("_windows"):
                if not (isinstance(value, tuple) and len(value) == 2):
                    raise ConfigError(
                        f"must be two windows (long, short), got {value!r}", path=name
                    )
                long, short = (_seconds(v, name) for v in value)
                for v in value:
                    try:
                        window_label(v)
                    except ConfigError as exc:
                        raise ConfigError(str(exc), path=name) from None
                if short >= long:
                    raise ConfigError(
                        f"the short window must be shorter than the long one, got {value!r}",
                        path=name,
                    )
            elif name.endswith(("_ratio", "_saturation")):
                ratio = _number(value, name)
                if not 0 < ratio <= 1:
                    raise ConfigError(f"must be a ratio in (0, 1], got {value!r}", path=name)
            elif name.endswith("_factor"):
                if _number(value, name) <= 0:
                    raise ConfigError(f"must be a number > 0, got {value!r}", path=name)
            else:
                _seconds(value, name)
        if "{" in self.selector or "}" in self.selector:
            raise ConfigError(
                f'label matchers without braces, e.g. job="api", got {self.selector!r}',
                path="selector",
            )


def _number(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ConfigError(f"must be a finite number, got {value!r}", path=name)
    return float(value)


def _seconds(value: object, name: str) -> float:
    seconds = _number(value, name)
    if seconds <= 0:
        raise ConfigError(f"must be a duration > 0 seconds, got {value!r}", path=name)
    try:
        duration(seconds)
    except ConfigError as exc:  # pragma: no cover - checked above
        raise ConfigError(str(exc), path=name) from None
    return seconds


def _rule(  # noqa: PLR0917 - one call per alert, read as a table
    alert: str,
    expr: str,
    for_: float,
    severity: str,
    summary: str,
    description: str,
    t: AlertThresholds,
) -> dict[str, Any]:
    annotations = {"summary": summary, "description": description}
    if t.runbook_url:
        annotations["runbook_url"] = f"{t.runbook_url}#{alert.lower()}"
    return {
        "alert": alert,
        "expr": expr,
        "for": duration(for_),
        "labels": {"severity": severity, "source": "buttress"},
        "annotations": annotations,
    }


def _burn(t: AlertThresholds, factor: float, windows: tuple[float, float]) -> str:
    long, short = (
        selector(m.ERROR_BUDGET_BURN_RATE, f'window="{window_label(w)}"', extra=t.selector)
        for w in windows
    )
    # The two series differ only in their window label: match on everything else, and
    # drop the label from the alert (its value is the long window's burn rate).
    return (
        f"min without (window) (\n  ({long} > {factor:g})\n  and ignoring (window)\n"
        f"  ({short} > {factor:g})\n)"
    )


def alert_rules(thresholds: AlertThresholds | None = None) -> dict[str, Any]:
    """The alert rules, as the data of a Prometheus rule file (``{"groups": [...]}``)."""
    t = AlertThresholds() if thresholds is None else thresholds
    s = t.selector

    def sel(metric: str, *matchers: str) -> str:
        return selector(metric, *matchers, extra=s)

    fw, rw = duration(t.failure_window), duration(t.ratelimit_window)
    open_ = sel(m.BREAKER_STATE, 'state=~"open|isolated"')
    executed = sel(m.CALLS, 'outcome=~"success|failure"')
    failed = sel(m.CALLS, 'outcome="failure"')
    denied = sel(m.REJECTIONS, 'kind="rate_limiter"')
    fast_long, fast_short = (duration(w) for w in t.fast_burn_windows)
    slow_long, slow_short = (duration(w) for w in t.slow_burn_windows)

    breakers = [
        _rule(
            "ButtressCircuitOpen",
            f"max without (state) ({open_}) == 1",
            t.breaker_open_for,
            "critical",
            "Circuit breaker {{ $labels.policy }} is open",
            "The circuit breaker {{ $labels.policy }} has been open or isolated for more "
            f"than {duration(t.breaker_open_for)}: calls through it are rejected without "
            "reaching the dependency.",
            t,
        ),
        _rule(
            "ButtressHighFailureRate",
            f"sum by (policy, kind) (rate({failed}[{fw}]))\n"
            f"/\nsum by (policy, kind) (rate({executed}[{fw}]))\n> {t.failure_ratio:g}",
            t.failure_for,
            "warning",
            "{{ $labels.policy }} fails {{ $value | humanizePercentage }} of its calls",
            f"More than {t.failure_ratio:.0%} of the calls the {{{{ $labels.kind }}}} "
            f"{{{{ $labels.policy }}}} ran over the last {fw} failed.",
            t,
        ),
    ]
    budgets = [
        _rule(
            "ButtressErrorBudgetFastBurn",
            _burn(t, t.fast_burn_factor, t.fast_burn_windows),
            t.fast_burn_for,
            "critical",
            "Error budget {{ $labels.budget }} is burning fast",
            f"The error budget {{{{ $labels.budget }}}} burns more than {t.fast_burn_factor:g}× "
            f"its sustainable rate over both {fast_long} and {fast_short}; at this rate it "
            "is spent long before the SLO period ends.",
            t,
        ),
        _rule(
            "ButtressErrorBudgetSlowBurn",
            _burn(t, t.slow_burn_factor, t.slow_burn_windows),
            t.slow_burn_for,
            "warning",
            "Error budget {{ $labels.budget }} is burning",
            f"The error budget {{{{ $labels.budget }}}} burns more than {t.slow_burn_factor:g}× "
            f"its sustainable rate over both {slow_long} and {slow_short}.",
            t,
        ),
        _rule(
            "ButtressErrorBudgetExhausted",
            f"{sel(m.ERROR_BUDGET_REMAINING)} <= 0",
            t.budget_exhausted_for,
            "warning",
            "Error budget {{ $labels.budget }} is spent",
            "The error budget {{ $labels.budget }} has no budget left in its window.",
            t,
        ),
    ]
    health = [
        _rule(
            "ButtressHealthCheckFailing",
            f"{sel(m.HEALTH_CHECK_UP)} == 0",
            t.health_check_for,
            "critical",
            "Health check {{ $labels.check }} is failing",
            f"The health check {{{{ $labels.check }}}} has reported down for more than "
            f"{duration(t.health_check_for)}.",
            t,
        ),
        _rule(
            "ButtressStoreDegraded",
            f"{sel(m.STORE_DEGRADED)} == 1",
            t.store_degraded_for,
            "warning",
            "Store {{ $labels.store }} serves from memory",
            "The fallback store {{ $labels.store }} lost its shared backend (Redis) "
            f"more than {duration(t.store_degraded_for)} ago: limits and breaker state are "
            "kept per process until it recovers.",
            t,
        ),
    ]
    capacity = [
        _rule(
            "ButtressBulkheadSaturated",
            f"{sel(m.BULKHEAD_IN_FLIGHT)}\n/\n{sel(m.BULKHEAD_LIMIT)}\n"
            f">= {t.bulkhead_saturation:g}",
            t.bulkhead_for,
            "warning",
            "Bulkhead {{ $labels.policy }} is saturated",
            f"The bulkhead {{{{ $labels.policy }}}} has had {t.bulkhead_saturation:.0%} or "
            f"more of its slots in use for {duration(t.bulkhead_for)}; further calls queue "
            "or are rejected.",
            t,
        ),
        _rule(
            "ButtressRateLimitDenialsHigh",
            f"sum by (policy) (rate({denied}[{rw}]))\n> {t.ratelimit_denials:g}",
            t.ratelimit_for,
            "warning",
            "Rate limiter {{ $labels.policy }} denies {{ $value | humanize }} requests/s",
            f"The rate limiter {{{{ $labels.policy }}}} denied more than "
            f"{t.ratelimit_denials:g} requests per second over the last {rw}.",
            t,
        ),
    ]
    return {
        "groups": [
            {"name": "buttress-circuit-breakers", "rules": breakers},
            {"name": "buttress-error-budgets", "rules": budgets},
            {"name": "buttress-health", "rules": health},
            {"name": "buttress-capacity", "rules": capacity},
        ]
    }


def render_rules(thresholds: AlertThresholds | None = None) -> str:
    """The alert rules as a Prometheus rule file (YAML); needs PyYAML (``cli`` extra)."""
    try:
        import yaml  # noqa: PLC0415 - optional, part of the cli extra
    except ImportError as exc:  # pragma: no cover - the cli extra is installed in tests
        raise ImportError(
            "writing the alert rules needs PyYAML: pip install 'buttress[cli]'"
        ) from exc

    header = (
        "# Prometheus alert rules for buttress, written by `buttress observe export`.\n"
        "# Load with `rule_files:` in prometheus.yml; check with `promtool check rules`.\n"
    )

    class Dumper(yaml.SafeDumper):
        pass

    def text(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
        # Multi-line expressions as literal blocks, as people write them.
        style = "|" if "\n" in value else None
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)

    Dumper.add_representer(str, text)
    body: str = yaml.dump(
        alert_rules(thresholds), Dumper=Dumper, sort_keys=False, allow_unicode=True, width=100
    )
    return header + body

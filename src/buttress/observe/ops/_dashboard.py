"""A Grafana dashboard for buttress's metrics, built from Python data.

:func:`dashboard` returns the dashboard model (the JSON Grafana imports and
provisions, ``schemaVersion`` :data:`SCHEMA_VERSION`); :func:`render_dashboard`
serialises it. The dashboard has a ``datasource`` variable (any Prometheus data
source) and a ``policy`` variable (every policy name buttress exports, several or
all at once); each row covers one kind of protection.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from buttress.observe.ops import _names as m
from buttress.observe.ops._promql import selector

__all__ = ["DASHBOARD_UID", "SCHEMA_VERSION", "dashboard", "render_dashboard"]

SCHEMA_VERSION = 41
"""The dashboard JSON model's version (Grafana 11.6 and later read it as is)."""

DASHBOARD_UID = "buttress-overview"
"""The dashboard's default ``uid`` (stable, so a re-import replaces it)."""

_DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
_POLICY = 'policy=~"$policy"'
_RATE = "[$__rate_interval]"
_WIDTH = 24  # Grafana's grid is 24 columns wide


@dataclass(frozen=True, slots=True)
class _Panel:
    title: str
    description: str
    queries: tuple[tuple[str, str], ...]  # (expr, legend)
    unit: str = "short"
    kind: str = "timeseries"
    width: int = 12
    height: int = 8
    stack: bool = False
    mappings: tuple[tuple[int, str, str], ...] = ()  # (value, text, colour)


@dataclass(frozen=True, slots=True)
class _Row:
    title: str
    panels: tuple[_Panel, ...] = field(default_factory=tuple)


def _p(metric: str, *matchers: str) -> str:
    return selector(metric, _POLICY, *matchers)


def _rows() -> tuple[_Row, ...]:
    limited = _p(m.REJECTIONS, 'kind="rate_limiter"')
    open_breakers = selector(m.BREAKER_STATE, _POLICY, 'state=~"open|isolated"')
    # 0 closed, 1 half-open, 2 open, 3 isolated: exactly one state series is 1.
    codes = (("half_open", 1), ("open", 2), ("isolated", 3), ("closed", 0))
    states = (_p(m.BREAKER_STATE, f'state="{state}"') for state, _ in codes)
    state_code = "max by (policy) ({})".format(
        " or ".join(f"{series} * {code}" for series, (_, code) in zip(states, codes, strict=True))
    )
    quantiles = tuple(
        (
            f"histogram_quantile({q}, sum by (policy, le) "
            f"(rate({_p(m.CALL_DURATION + '_bucket')}{_RATE})))",
            f"{{{{policy}}}} p{round(q * 100)}",
        )
        for q in (0.5, 0.9, 0.99)
    )
    return (
        _Row(
            "Calls",
            (
                _Panel(
                    "Calls by outcome",
                    "Calls per second through each policy: success, failure (the "
                    "dependency failed) and rejected (a policy refused the call).",
                    (
                        (
                            f"sum by (policy, outcome) (rate({_p(m.CALLS)}{_RATE}))",
                            "{{policy}} {{outcome}}",
                        ),
                    ),
                    unit="reqps",
                    stack=True,
                ),
                _Panel(
                    "Rejections by reason",
                    "Calls refused without running: open or full breakers, full "
                    "bulkheads, rate limits, timeouts.",
                    (
                        (
                            f"sum by (policy, reason) (rate({_p(m.REJECTIONS)}{_RATE}))",
                            "{{policy}} {{reason}}",
                        ),
                    ),
                    unit="reqps",
                    stack=True,
                ),
            ),
        ),
        _Row(
            "Circuit breakers",
            (
                _Panel(
                    "Open breakers",
                    "Breakers open or isolated now.",
                    (
                        (
                            f"count({open_breakers} == 1) or vector(0)",
                            "open",
                        ),
                    ),
                    kind="stat",
                    width=6,
                ),
                _Panel(
                    "Breaker state",
                    "Each breaker's state over time.",
                    ((state_code, "{{policy}}"),),
                    kind="state-timeline",
                    width=18,
                    mappings=(
                        (0, "closed", "green"),
                        (1, "half-open", "yellow"),
                        (2, "open", "red"),
                        (3, "isolated", "purple"),
                    ),
                ),
                _Panel(
                    "Breaker failure rate",
                    "The share of failures in each breaker's window.",
                    (
                        (
                            f"max by (policy) ({_p(m.BREAKER_FAILURE_RATE)})",
                            "{{policy}}",
                        ),
                    ),
                    unit="percentunit",
                ),
                _Panel(
                    "Breaker transitions",
                    "Transitions per second, by the state entered.",
                    (
                        (
                            f"sum by (policy, state) (rate({_p(m.BREAKER_TRANSITIONS)}{_RATE}))",
                            "{{policy}} → {{state}}",
                        ),
                    ),
                    unit="ops",
                ),
            ),
        ),
        _Row(
            "Bulkheads and rate limiters",
            (
                _Panel(
                    "Bulkhead in flight and queued",
                    "Calls running and waiting in each bulkhead, against its limit.",
                    (
                        (f"sum by (policy) ({_p(m.BULKHEAD_IN_FLIGHT)})", "{{policy}} in flight"),
                        (f"sum by (policy) ({_p(m.BULKHEAD_QUEUED)})", "{{policy}} queued"),
                        (f"sum by (policy) ({_p(m.BULKHEAD_LIMIT)})", "{{policy}} limit"),
                    ),
                ),
                _Panel(
                    "Rate limiter denials",
                    "Requests each rate limiter denied, per second (admissions are not "
                    "counted: they are the hot path; a Measure counts calls).",
                    (
                        (
                            f"sum by (policy, reason) (rate({limited}{_RATE}))",
                            "{{policy}} {{reason}}",
                        ),
                    ),
                    unit="reqps",
                    stack=True,
                ),
            ),
        ),
        _Row(
            "Retries, timeouts and fallbacks",
            (
                _Panel(
                    "Retries and give-ups",
                    "Retries scheduled, and calls a retry gave up on (by reason).",
                    (
                        (
                            f"sum by (policy) (rate({_p(m.RETRIES)}{_RATE}))",
                            "{{policy}} retries",
                        ),
                        (
                            f"sum by (policy, reason) (rate({_p(m.RETRY_GAVE_UP)}{_RATE}))",
                            "{{policy}} gave up ({{reason}})",
                        ),
                    ),
                    unit="ops",
                ),
                _Panel(
                    "Timeouts and fallbacks",
                    "Calls that ran out of time, and failed calls a fallback answered.",
                    (
                        (
                            f"sum by (policy) (rate({_p(m.TIMEOUTS)}{_RATE}))",
                            "{{policy}} timeouts",
                        ),
                        (
                            f"sum by (policy) (rate({_p(m.FALLBACKS)}{_RATE}))",
                            "{{policy}} fallbacks",
                        ),
                    ),
                    unit="ops",
                ),
            ),
        ),
        _Row(
            "Latency",
            (
                _Panel(
                    "Call duration quantiles",
                    "p50, p90 and p99 of the calls a Measure strategy times.",
                    quantiles,
                    unit="s",
                    width=24,
                ),
            ),
        ),
        _Row(
            "Budgets and degradation",
            (
                _Panel(
                    "Error budget remaining",
                    "The share of each error budget left in its window.",
                    ((f"{selector(m.ERROR_BUDGET_REMAINING)}", "{{budget}}"),),
                    unit="percentunit",
                    width=8,
                ),
                _Panel(
                    "Error budget burn rate",
                    "How many times faster than sustainable each budget burns, per "
                    "window (seconds); 1 spends it exactly over the SLO period.",
                    ((f"{selector(m.ERROR_BUDGET_BURN_RATE)}", "{{budget}} {{window}}s"),),
                    width=8,
                ),
                _Panel(
                    "Latency budget remaining",
                    "The share of each latency budget left in its window.",
                    ((f"{selector(m.LATENCY_BUDGET_REMAINING)}", "{{budget}}"),),
                    unit="percentunit",
                    width=8,
                ),
                _Panel(
                    "Degradation",
                    "Features each degradation allows (1) or switched off (0).",
                    ((f"{selector(m.DEGRADATION_ALLOWED)}", "{{degradation}} {{feature}}"),),
                    kind="state-timeline",
                    width=24,
                    mappings=((1, "on", "green"), (0, "off", "orange")),
                ),
            ),
        ),
        _Row(
            "Health and stores",
            (
                _Panel(
                    "Health checks",
                    "Each health check: up (1) or down (0).",
                    ((f"{selector(m.HEALTH_CHECK_UP)}", "{{check}}"),),
                    kind="state-timeline",
                    mappings=((1, "up", "green"), (0, "down", "red")),
                ),
                _Panel(
                    "Health check duration",
                    "How long each health check took at its last run.",
                    ((f"{selector(m.HEALTH_CHECK_DURATION)}", "{{check}}"),),
                    unit="s",
                ),
                _Panel(
                    "Store degradation",
                    "Fallback stores serving from memory (1) because their shared "
                    "backend is unreachable.",
                    ((f"{selector(m.STORE_DEGRADED)}", "{{store}}"),),
                    kind="state-timeline",
                    mappings=((0, "shared", "green"), (1, "memory", "orange")),
                ),
                _Panel(
                    "Store transitions",
                    "Fallbacks to memory and recoveries, per hour.",
                    (
                        (
                            f"sum by (store, state) "
                            f"(increase({selector(m.STORE_TRANSITIONS)}[1h]))",
                            "{{store}} {{state}}",
                        ),
                    ),
                ),
            ),
        ),
    )


def _target(index: int, expr: str, legend: str) -> dict[str, Any]:
    return {
        "refId": chr(ord("A") + index),
        "datasource": dict(_DATASOURCE),
        "editorMode": "code",
        "expr": expr,
        "legendFormat": legend,
        "range": True,
    }


def _field_config(panel: _Panel) -> dict[str, Any]:
    defaults: dict[str, Any] = {"unit": panel.unit}
    if panel.kind == "timeseries":
        defaults["custom"] = {
            "drawStyle": "line",
            "lineWidth": 1,
            "fillOpacity": 10 if panel.stack else 0,
            "showPoints": "never",
            "stacking": {"mode": "normal" if panel.stack else "none", "group": "A"},
        }
    if panel.mappings:
        defaults["mappings"] = [
            {
                "type": "value",
                "options": {
                    str(value): {"text": text, "color": colour, "index": index}
                    for index, (value, text, colour) in enumerate(panel.mappings)
                },
            }
        ]
        defaults["color"] = {"mode": "thresholds"}
        defaults["thresholds"] = {"mode": "absolute", "steps": [{"color": "green", "value": None}]}
    elif panel.kind == "stat":
        defaults["color"] = {"mode": "thresholds"}
        defaults["thresholds"] = {
            "mode": "absolute",
            "steps": [{"color": "green", "value": None}, {"color": "red", "value": 1}],
        }
    return {"defaults": defaults, "overrides": []}


def _options(panel: _Panel) -> dict[str, Any]:
    legend = {"displayMode": "list", "placement": "bottom", "showLegend": True, "calcs": []}
    if panel.kind == "stat":
        return {
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "colorMode": "background",
            "graphMode": "none",
            "justifyMode": "auto",
            "orientation": "auto",
            "textMode": "auto",
        }
    if panel.kind == "state-timeline":
        return {
            "legend": legend,
            "tooltip": {"mode": "single", "sort": "none"},
            "mergeValues": True,
            "showValue": "auto",
            "alignValue": "left",
            "rowHeight": 0.9,
        }
    return {"legend": legend, "tooltip": {"mode": "multi", "sort": "desc"}}


def _layout(rows: tuple[_Row, ...]) -> list[dict[str, Any]]:
    panels: list[dict[str, Any]] = []
    ids = iter(range(1, 1000))
    y = 0
    for row in rows:
        panels.append(
            {
                "type": "row",
                "id": next(ids),
                "title": row.title,
                "collapsed": False,
                "gridPos": {"h": 1, "w": _WIDTH, "x": 0, "y": y},
                "panels": [],
            }
        )
        y += 1
        x, line = 0, 0
        for panel in row.panels:
            if x + panel.width > _WIDTH:
                x, y = 0, y + line
                line = 0
            panels.append(
                {
                    "type": panel.kind,
                    "id": next(ids),
                    "title": panel.title,
                    "description": panel.description,
                    "datasource": dict(_DATASOURCE),
                    "gridPos": {"h": panel.height, "w": panel.width, "x": x, "y": y},
                    "targets": [_target(i, *query) for i, query in enumerate(panel.queries)],
                    "fieldConfig": _field_config(panel),
                    "options": _options(panel),
                }
            )
            x += panel.width
            line = max(line, panel.height)
        y += line
    return panels


def _variables() -> list[dict[str, Any]]:
    policies = 'label_values({__name__=~"buttress_.+"}, policy)'
    return [
        {
            "name": "datasource",
            "label": "Data source",
            "type": "datasource",
            "query": "prometheus",
            "refresh": 1,
            "regex": "",
            "hide": 0,
            "current": {},
            "options": [],
        },
        {
            "name": "policy",
            "label": "Policy",
            "type": "query",
            "datasource": dict(_DATASOURCE),
            "query": policies,
            "refresh": 2,
            "regex": "",
            "sort": 1,
            "hide": 0,
            "multi": True,
            "includeAll": True,
            "allValue": ".*",
            "current": {"text": ["All"], "value": ["$__all"]},
            "options": [],
        },
    ]


def dashboard(*, title: str = "buttress", uid: str = DASHBOARD_UID) -> dict[str, Any]:
    """The Grafana dashboard, as the JSON model (a ``dict``) Grafana imports.

    ``title`` and ``uid`` name it (keep the ``uid`` to replace an earlier import).
    """
    return {
        "uid": uid,
        "title": title,
        "description": "Resilience policies, budgets and health checks exported by buttress.",
        "tags": ["buttress", "resilience"],
        "timezone": "browser",
        "editable": True,
        "graphTooltip": 1,
        "schemaVersion": SCHEMA_VERSION,
        "time": {"from": "now-6h", "to": "now"},
        "refresh": "30s",
        "fiscalYearStartMonth": 0,
        "liveNow": False,
        "annotations": {
            "list": [
                {
                    "builtIn": 1,
                    "datasource": {"type": "grafana", "uid": "-- Grafana --"},
                    "enable": True,
                    "hide": True,
                    "iconColor": "rgba(0, 211, 255, 1)",
                    "name": "Annotations & Alerts",
                    "type": "dashboard",
                }
            ]
        },
        "templating": {"list": _variables()},
        "links": [],
        "panels": _layout(_rows()),
    }


def render_dashboard(*, title: str = "buttress", uid: str = DASHBOARD_UID) -> str:
    """The dashboard as JSON text, ready for import or provisioning."""
    return json.dumps(dashboard(title=title, uid=uid), indent=2, ensure_ascii=False) + "\n"

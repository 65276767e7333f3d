"""The operations kit: Prometheus alert rules and a Grafana dashboard for buttress.

Both are built from Python data over the metric names in
:mod:`buttress.observe.ops._names` (:data:`METRICS`), and written by
``buttress observe export``::

    from buttress.observe.ops import AlertThresholds, dashboard, render_rules

    rules_yaml = render_rules(AlertThresholds(breaker_open_for=600))
    board = dashboard()  # a dict: json.dumps it for Grafana

:func:`render_rules` needs PyYAML (the ``cli`` extra); the rest needs nothing.
"""

from __future__ import annotations

from buttress.observe.ops._dashboard import (
    DASHBOARD_UID,
    SCHEMA_VERSION,
    dashboard,
    render_dashboard,
)
from buttress.observe.ops._inventory import (
    PROTECTIONS,
    Entry,
    Step,
    inventory,
    protection_names,
)
from buttress.observe.ops._names import METRICS
from buttress.observe.ops._rules import ALERTS, AlertThresholds, alert_rules, render_rules

__all__ = [
    "ALERTS",
    "DASHBOARD_UID",
    "METRICS",
    "PROTECTIONS",
    "SCHEMA_VERSION",
    "AlertThresholds",
    "Entry",
    "Step",
    "alert_rules",
    "dashboard",
    "inventory",
    "protection_names",
    "render_dashboard",
    "render_rules",
]

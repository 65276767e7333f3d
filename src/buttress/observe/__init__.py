"""Observability: metrics, structured logs, health, budgets.

Each exporter lives in its own module and imports its optional package only there
(``buttress.observe.prometheus`` needs the ``prometheus`` extra, ``.otel`` the
``otel`` extra); importing this package imports none of them.
"""

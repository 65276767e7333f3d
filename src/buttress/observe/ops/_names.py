"""The metric names the exported rules and dashboard query, in one place.

They are the names :mod:`buttress.observe.metrics` exports (see
``docs/observability.md``); the alert rules and the dashboard refer to them only
through these constants, so a rename is one edit here.
"""

from __future__ import annotations

__all__ = [
    "BREAKER_FAILURE_RATE",
    "BREAKER_STATE",
    "BREAKER_TRANSITIONS",
    "BULKHEAD_IN_FLIGHT",
    "BULKHEAD_LIMIT",
    "BULKHEAD_QUEUED",
    "CALLS",
    "CALL_DURATION",
    "DEGRADATION_ALLOWED",
    "ERROR_BUDGET_BURN_RATE",
    "ERROR_BUDGET_REMAINING",
    "FALLBACKS",
    "HEALTH_CHECK_DURATION",
    "HEALTH_CHECK_UP",
    "LATENCY_BUDGET_REMAINING",
    "METRICS",
    "REJECTIONS",
    "RETRIES",
    "RETRY_GAVE_UP",
    "STORE_DEGRADED",
    "STORE_TRANSITIONS",
    "TIMEOUTS",
]

CALLS = "buttress_calls_total"
REJECTIONS = "buttress_rejections_total"
RETRIES = "buttress_retries_total"
RETRY_GAVE_UP = "buttress_retry_gave_up_total"
TIMEOUTS = "buttress_timeouts_total"
FALLBACKS = "buttress_fallbacks_total"
BREAKER_STATE = "buttress_circuit_state"
BREAKER_FAILURE_RATE = "buttress_circuit_failure_rate"
BREAKER_TRANSITIONS = "buttress_circuit_transitions_total"
BULKHEAD_IN_FLIGHT = "buttress_bulkhead_in_flight"
BULKHEAD_QUEUED = "buttress_bulkhead_queued"
BULKHEAD_LIMIT = "buttress_bulkhead_limit"
STORE_DEGRADED = "buttress_store_degraded"
STORE_TRANSITIONS = "buttress_store_transitions_total"
CALL_DURATION = "buttress_call_duration_seconds"
ERROR_BUDGET_REMAINING = "buttress_error_budget_remaining_ratio"
ERROR_BUDGET_BURN_RATE = "buttress_error_budget_burn_rate"
LATENCY_BUDGET_REMAINING = "buttress_latency_budget_remaining_ratio"
DEGRADATION_ALLOWED = "buttress_degradation_allowed"
HEALTH_CHECK_UP = "buttress_health_check_up"
HEALTH_CHECK_DURATION = "buttress_health_check_duration_seconds"

METRICS: tuple[str, ...] = (
    CALLS,
    REJECTIONS,
    RETRIES,
    RETRY_GAVE_UP,
    TIMEOUTS,
    FALLBACKS,
    BREAKER_STATE,
    BREAKER_FAILURE_RATE,
    BREAKER_TRANSITIONS,
    BULKHEAD_IN_FLIGHT,
    BULKHEAD_QUEUED,
    BULKHEAD_LIMIT,
    STORE_DEGRADED,
    STORE_TRANSITIONS,
    CALL_DURATION,
    ERROR_BUDGET_REMAINING,
    ERROR_BUDGET_BURN_RATE,
    LATENCY_BUDGET_REMAINING,
    DEGRADATION_ALLOWED,
    HEALTH_CHECK_UP,
    HEALTH_CHECK_DURATION,
)
"""Every metric name the rules and the dashboard use."""

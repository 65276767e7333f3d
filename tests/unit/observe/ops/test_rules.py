"""The exported alert rules: promtool accepts them, and they fire on the right series."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from buttress.errors import ConfigError
from buttress.observe.ops import (
    ALERTS,
    METRICS,
    AlertThresholds,
    alert_rules,
    dashboard,
    render_rules,
)
from buttress.observe.ops._promql import duration, selector

from .promtool import run


def _rules(data: dict[str, Any]) -> list[dict[str, Any]]:
    return [rule for group in data["groups"] for rule in group["rules"]]


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


# ------------------------------------------------------------------- promtool check


def test_the_default_rules_pass_promtool_check(tmp_path: Path) -> None:
    rules = _write(tmp_path / "rules.yml", render_rules())
    result = run("check", "rules", rules)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(ALERTS)} rules found" in result.stdout


def test_rules_with_every_threshold_changed_pass_promtool_check(tmp_path: Path) -> None:
    thresholds = AlertThresholds(
        breaker_open_for=90,
        failure_ratio=0.25,
        failure_window=120,
        failure_for=30,
        fast_burn_factor=10,
        fast_burn_windows=(7200, 600),
        slow_burn_windows=(86400, 7200),
        selector='job="api", env=~"prod|staging"',
        runbook_url="https://runbooks.example/buttress",
    )
    text = render_rules(thresholds)
    result = run("check", "rules", _write(tmp_path / "rules.yml", text))
    assert result.returncode == 0, result.stdout + result.stderr
    data = yaml.safe_load(text)
    by_name = {rule["alert"]: rule for rule in _rules(data)}
    assert by_name["ButtressCircuitOpen"]["for"] == "1m30s"
    assert 'window="7200"' in by_name["ButtressErrorBudgetFastBurn"]["expr"]
    assert 'window="600"' in by_name["ButtressErrorBudgetFastBurn"]["expr"]
    assert "> 10" in by_name["ButtressErrorBudgetFastBurn"]["expr"]
    assert "> 0.25" in by_name["ButtressHighFailureRate"]["expr"]
    for rule in by_name.values():
        assert 'job="api"' in rule["expr"], rule["alert"]
        assert rule["annotations"]["runbook_url"] == (
            f"https://runbooks.example/buttress#{rule['alert'].lower()}"
        )


def test_promtool_rejects_a_broken_rule_file(tmp_path: Path) -> None:
    # The check above can fail: a rule with a bad expression is refused.
    data = alert_rules()
    data["groups"][0]["rules"][0]["expr"] = "max without (state) (buttress_circuit_state{ == 1"
    result = run("check", "rules", _write(tmp_path / "bad.yml", yaml.safe_dump(data)))
    assert result.returncode != 0


def test_every_rule_has_severity_summary_and_description() -> None:
    rules = _rules(alert_rules())
    assert [rule["alert"] for rule in rules] == list(ALERTS)
    for rule in rules:
        assert rule["labels"]["severity"] in {"critical", "warning"}
        assert rule["annotations"]["summary"]
        assert rule["annotations"]["description"]
        assert "runbook_url" not in rule["annotations"]


def test_the_rules_and_dashboard_use_only_the_known_metric_names() -> None:
    texts = [rule["expr"] for rule in _rules(alert_rules())]
    texts += [t["expr"] for p in dashboard()["panels"] for t in p.get("targets", [])]
    used = {
        re.sub(r"_bucket$", "", name)
        for text in texts
        for name in re.findall(r"buttress_\w+", text)
    }
    assert used <= set(METRICS), used - set(METRICS)


# -------------------------------------------------------------------- promtool test

FIRING = "firing"


def _alert_case(at: str, name: str, alerts: list[dict[str, Any]]) -> dict[str, Any]:
    return {"eval_time": at, "alertname": name, "exp_alerts": alerts}


def _unit_test(tmp_path: Path, series: dict[str, str], cases: list[dict[str, Any]]) -> None:
    rules = _write(tmp_path / "buttress-alerts.yml", render_rules())
    spec = {
        "rule_files": [rules.name],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [{"series": s, "values": v} for s, v in series.items()],
                "alert_rule_test": cases,
            }
        ],
    }
    test_file = _write(tmp_path / "test.yml", yaml.safe_dump(spec, sort_keys=False))
    result = run("test", "rules", test_file)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_breaker_open_alert_fires_after_five_minutes_open(tmp_path: Path) -> None:
    series = {
        'buttress_circuit_state{policy="payments", state="open", instance="a"}': "1x15",
        'buttress_circuit_state{policy="payments", state="closed", instance="a"}': "0x15",
        # Open only briefly: never alerts.
        'buttress_circuit_state{policy="search", state="open", instance="a"}': "1 1 0x13",
        'buttress_circuit_state{policy="ledger", state="isolated", instance="a"}': "1x15",
    }
    labels = {"severity": "critical", "source": "buttress", "instance": "a"}
    _unit_test(
        tmp_path,
        series,
        [
            _alert_case("4m", "ButtressCircuitOpen", []),
            _alert_case(
                "6m",
                "ButtressCircuitOpen",
                [
                    {
                        "exp_labels": {**labels, "policy": "ledger"},
                        "exp_annotations": {
                            "summary": "Circuit breaker ledger is open",
                            "description": "The circuit breaker ledger has been open or "
                            "isolated for more than 5m: calls through it are rejected "
                            "without reaching the dependency.",
                        },
                    },
                    {
                        "exp_labels": {**labels, "policy": "payments"},
                        "exp_annotations": {
                            "summary": "Circuit breaker payments is open",
                            "description": "The circuit breaker payments has been open or "
                            "isolated for more than 5m: calls through it are rejected "
                            "without reaching the dependency.",
                        },
                    },
                ],
            ),
        ],
    )


def _fast_burn(budget: str) -> dict[str, Any]:
    return {
        "exp_labels": {"severity": "critical", "source": "buttress", "budget": budget},
        "exp_annotations": {
            "summary": f"Error budget {budget} is burning fast",
            "description": f"The error budget {budget} burns more than 14.4× its "
            "sustainable rate over both 1h and 5m; at this rate it is spent long "
            "before the SLO period ends.",
        },
    }


def test_the_fast_burn_alert_needs_both_windows_above_the_factor(tmp_path: Path) -> None:
    series = {
        # Both windows burn at 20x: pages after the 2m hold.
        'buttress_error_budget_burn_rate{budget="checkout", window="3600"}': "20x15",
        'buttress_error_budget_burn_rate{budget="checkout", window="300"}': "20x15",
        # The long window is high but the short one has recovered: no page.
        'buttress_error_budget_burn_rate{budget="search", window="3600"}': "20x15",
        'buttress_error_budget_burn_rate{budget="search", window="300"}': "2x15",
        # A short spike alone: no page either.
        'buttress_error_budget_burn_rate{budget="login", window="3600"}': "3x15",
        'buttress_error_budget_burn_rate{budget="login", window="300"}': "50x15",
        # Below the factor on both: nothing.
        'buttress_error_budget_burn_rate{budget="feed", window="3600"}': "10x15",
        'buttress_error_budget_burn_rate{budget="feed", window="300"}': "10x15",
    }
    _unit_test(
        tmp_path,
        series,
        [
            _alert_case("1m", "ButtressErrorBudgetFastBurn", []),
            _alert_case("3m", "ButtressErrorBudgetFastBurn", [_fast_burn("checkout")]),
            _alert_case("3m", "ButtressErrorBudgetSlowBurn", []),
        ],
    )


def test_the_slow_burn_failure_rate_health_and_store_alerts_fire(tmp_path: Path) -> None:
    common = {"source": "buttress"}
    series = {
        'buttress_error_budget_burn_rate{budget="checkout", window="21600"}': "7x30",
        'buttress_error_budget_burn_rate{budget="checkout", window="1800"}': "7x30",
        # 25 % of executed calls fail; rejections do not count.
        'buttress_calls_total{policy="api", kind="retry", outcome="success"}': "0+60x30",
        'buttress_calls_total{policy="api", kind="retry", outcome="failure"}': "0+20x30",
        'buttress_calls_total{policy="api", kind="retry", outcome="rejected"}': "0+1000x30",
        # 2 % fail: under the threshold.
        'buttress_calls_total{policy="ok", kind="retry", outcome="success"}': "0+98x30",
        'buttress_calls_total{policy="ok", kind="retry", outcome="failure"}': "0+2x30",
        'buttress_health_check_up{check="postgres"}': "0x30",
        'buttress_health_check_up{check="redis"}': "1x30",
        'buttress_store_degraded{store="limits"}': "1x30",
        'buttress_store_degraded{store="breakers"}': "0x30",
    }
    _unit_test(
        tmp_path,
        series,
        [
            _alert_case(
                "20m",
                "ButtressErrorBudgetSlowBurn",
                [
                    {
                        "exp_labels": {**common, "severity": "warning", "budget": "checkout"},
                        "exp_annotations": {
                            "summary": "Error budget checkout is burning",
                            "description": "The error budget checkout burns more than 6× its "
                            "sustainable rate over both 6h and 30m.",
                        },
                    }
                ],
            ),
            _alert_case(
                "20m",
                "ButtressHighFailureRate",
                [
                    {
                        "exp_labels": {
                            **common,
                            "severity": "warning",
                            "policy": "api",
                            "kind": "retry",
                        },
                        "exp_annotations": {
                            "summary": "api fails 25% of its calls",
                            "description": "More than 10% of the calls the retry api ran over "
                            "the last 5m failed.",
                        },
                    }
                ],
            ),
            _alert_case(
                "5m",
                "ButtressHealthCheckFailing",
                [
                    {
                        "exp_labels": {**common, "severity": "critical", "check": "postgres"},
                        "exp_annotations": {
                            "summary": "Health check postgres is failing",
                            "description": "The health check postgres has reported down for "
                            "more than 2m.",
                        },
                    }
                ],
            ),
            _alert_case(
                "5m",
                "ButtressStoreDegraded",
                [
                    {
                        "exp_labels": {**common, "severity": "warning", "store": "limits"},
                        "exp_annotations": {
                            "summary": "Store limits serves from memory",
                            "description": "The fallback store limits lost its shared backend "
                            "(Redis) more than 1m ago: limits and breaker state are kept per "
                            "process until it recovers.",
                        },
                    }
                ],
            ),
        ],
    )


def test_the_capacity_alerts_fire(tmp_path: Path) -> None:
    common = {"source": "buttress", "severity": "warning"}
    series = {
        'buttress_bulkhead_in_flight{policy="db"}': "10x30",
        'buttress_bulkhead_limit{policy="db"}': "10x30",
        'buttress_bulkhead_in_flight{policy="cache"}': "3x30",
        'buttress_bulkhead_limit{policy="cache"}': "10x30",
        'buttress_rejections_total{policy="api", kind="rate_limiter", reason="rate_limited"}': (
            "0+600x30"
        ),
        'buttress_rejections_total{policy="db", kind="bulkhead", reason="bulkhead_full"}': (
            "0+600x30"
        ),
    }
    _unit_test(
        tmp_path,
        series,
        [
            _alert_case(
                "10m",
                "ButtressBulkheadSaturated",
                [
                    {
                        "exp_labels": {**common, "policy": "db"},
                        "exp_annotations": {
                            "summary": "Bulkhead db is saturated",
                            "description": "The bulkhead db has had 100% or more of its slots "
                            "in use for 5m; further calls queue or are rejected.",
                        },
                    }
                ],
            ),
            _alert_case(
                "20m",
                "ButtressRateLimitDenialsHigh",
                [
                    {
                        "exp_labels": {**common, "policy": "api"},
                        "exp_annotations": {
                            "summary": "Rate limiter api denies 10 requests/s",
                            "description": "The rate limiter api denied more than 1 requests "
                            "per second over the last 5m.",
                        },
                    }
                ],
            ),
        ],
    )


def test_a_wrong_expectation_fails_promtool_test(tmp_path: Path) -> None:
    # The unit tests above can fail: expecting a page from a budget that is fine.
    with pytest.raises(AssertionError):
        _unit_test(
            tmp_path,
            {
                'buttress_error_budget_burn_rate{budget="feed", window="3600"}': "1x10",
                'buttress_error_budget_burn_rate{budget="feed", window="300"}': "1x10",
            },
            [_alert_case("5m", "ButtressErrorBudgetFastBurn", [_fast_burn("feed")])],
        )


def test_the_dashboard_queries_are_valid_promql(tmp_path: Path) -> None:
    # promtool has no "check expression": each query becomes a recording rule.
    rules = []
    for index, panel in enumerate(p for p in dashboard()["panels"] if p["type"] != "row"):
        for target in panel["targets"]:
            expr = target["expr"].replace("$__rate_interval", "5m").replace("$policy", ".*")
            rules.append({"record": f"buttress:panel_{index}:{target['refId']}", "expr": expr})
    spec = {"groups": [{"name": "dashboard", "rules": rules}]}
    result = run("check", "rules", _write(tmp_path / "panels.yml", yaml.safe_dump(spec)))
    assert result.returncode == 0, result.stdout + result.stderr


# ------------------------------------------------------------------------ thresholds


@pytest.mark.parametrize(
    ("options", "path", "message"),
    [
        ({"breaker_open_for": 0}, "breaker_open_for", "duration > 0"),
        ({"failure_ratio": 1.5}, "failure_ratio", "ratio in (0, 1]"),
        ({"failure_ratio": True}, "failure_ratio", "finite number"),
        ({"fast_burn_factor": -1}, "fast_burn_factor", "> 0"),
        ({"fast_burn_windows": (300, 3600)}, "fast_burn_windows", "shorter than the long"),
        ({"slow_burn_windows": (3600,)}, "slow_burn_windows", "two windows"),
        ({"slow_burn_windows": (3600, 0.5)}, "slow_burn_windows", "whole number"),
        ({"selector": '{job="api"}'}, "selector", "without braces"),
        ({"runbook_url": 3}, "runbook_url", "string"),
    ],
)
def test_bad_thresholds_raise_config_error_naming_the_option(
    options: dict[str, Any], path: str, message: str
) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)) as caught:
        AlertThresholds(**options)
    assert caught.value.path == path


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(300, "5m"), (5400, "1h30m"), (86400, "1d"), (90, "1m30s"), (0.5, "500ms"), (1, "1s")],
)
def test_durations_are_written_as_prometheus_durations(seconds: float, text: str) -> None:
    assert duration(seconds) == text


def test_a_non_positive_duration_is_refused() -> None:
    with pytest.raises(ConfigError, match="positive"):
        duration(0)


def test_selector_adds_the_extra_matchers() -> None:
    assert selector("m") == "m"
    assert selector("m", 'a="1"') == 'm{a="1"}'
    assert selector("m", 'a="1"', extra='job="x"') == 'm{a="1", job="x"}'

"""The ``buttress`` command through click's CliRunner: every command and error path."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner, Result

from buttress.cli import EXIT_CONFIG, EXIT_MISSING, EXIT_USAGE, main
from buttress.cli._app import app
from buttress.observe.ops import ALERTS, SCHEMA_VERSION

CONFIG = """
[policies.api-retry]
type = "retry"
max_attempts = 4
delay = "200ms"

[policies.api-limit]
type = "rate_limiter"
limits = "10/second"

[policies.lonely]
type = "bulkhead"
max_concurrent = 3

[pipelines.api]
policies = [
  { type = "timeout", seconds = 2 }, "api-limit", "api-retry", { type = "circuit_breaker" },
]

[pipelines.db]
policies = [
  { type = "retry", backoff = "constant", delay = 0 },
  { type = "timeout", seconds = 1 },
  { type = "fallback", value = 0 },
]
"""


def invoke(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(app, list(args), env=env, catch_exceptions=False)


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "buttress.toml"
    path.write_text(CONFIG)
    return path


# ---------------------------------------------------------------------- the group


def test_help_lists_the_commands() -> None:
    result = invoke("--help")
    assert result.exit_code == 0
    assert "observe" in result.output
    assert "report" in result.output


def test_an_unknown_command_is_a_usage_error() -> None:
    result = CliRunner().invoke(app, ["frobnicate"])
    assert result.exit_code == 2
    assert "No such command 'frobnicate'" in result.output


def test_main_returns_the_exit_status(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert "buttress, version" in capsys.readouterr().out
    assert main(["observe", "export", "--rules-only", "--dashboard-only"]) == EXIT_USAGE


def test_python_dash_m_buttress_runs_the_command() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "buttress", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "observe" in done.stdout


def test_a_missing_cli_extra_names_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delitem(sys.modules, "buttress.cli._app")
    monkeypatch.setitem(sys.modules, "click", None)  # import click raises ImportError
    assert main(["--help"]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "'cli' extra" in err
    assert "missing: click" in err
    assert "pip install 'buttress[cli]'" in err


# ------------------------------------------------------------------ observe export


def test_export_writes_the_rules_and_the_dashboard(tmp_path: Path) -> None:
    out = tmp_path / "ops" / "new"
    result = invoke("observe", "export", "--out", str(out))
    assert result.exit_code == 0, result.output
    rules = yaml.safe_load((out / "buttress-alerts.yml").read_text())
    board = json.loads((out / "buttress-dashboard.json").read_text())
    assert [r["alert"] for g in rules["groups"] for r in g["rules"]] == list(ALERTS)
    assert board["schemaVersion"] == SCHEMA_VERSION
    assert f"wrote {out / 'buttress-alerts.yml'}" in result.output


@pytest.mark.parametrize(
    ("flag", "present", "absent"),
    [
        ("--rules-only", "buttress-alerts.yml", "buttress-dashboard.json"),
        ("--dashboard-only", "buttress-dashboard.json", "buttress-alerts.yml"),
    ],
)
def test_export_writes_one_file_when_asked(
    tmp_path: Path, flag: str, present: str, absent: str
) -> None:
    result = invoke("observe", "export", "--out", str(tmp_path), flag)
    assert result.exit_code == 0, result.output
    assert (tmp_path / present).exists()
    assert not (tmp_path / absent).exists()


def test_export_to_standard_output() -> None:
    result = invoke("observe", "export", "--out", "-", "--rules-only")
    assert result.exit_code == 0
    assert yaml.safe_load(result.output)["groups"]
    board = invoke("observe", "export", "--out", "-", "--dashboard-only", "--title", "Ops")
    assert json.loads(board.output)["title"] == "Ops"


def test_export_to_standard_output_needs_one_file() -> None:
    result = CliRunner().invoke(app, ["observe", "export", "--out", "-"])
    assert result.exit_code == 2
    assert "--out - needs --rules-only or --dashboard-only" in result.output


def test_rules_only_and_dashboard_only_exclude_each_other() -> None:
    result = CliRunner().invoke(app, ["observe", "export", "--rules-only", "--dashboard-only"])
    assert result.exit_code == 2
    assert "exclude each other" in result.output


def test_export_thresholds_come_from_options() -> None:
    result = invoke(
        "observe",
        "export",
        "--out",
        "-",
        "--rules-only",
        "--breaker-open-for",
        "10m",
        "--failure-ratio",
        "0.2",
        "--fast-burn-windows",
        "2h,10m",
        "--fast-burn-factor",
        "10",
        "--selector",
        'job="api"',
        "--runbook-url",
        "https://runbooks.example/buttress",
    )
    assert result.exit_code == 0, result.output
    rules = {r["alert"]: r for g in yaml.safe_load(result.output)["groups"] for r in g["rules"]}
    assert rules["ButtressCircuitOpen"]["for"] == "10m"
    assert "> 0.2" in rules["ButtressHighFailureRate"]["expr"]
    fast = rules["ButtressErrorBudgetFastBurn"]["expr"]
    assert 'window="7200"' in fast
    assert 'window="600"' in fast
    assert "> 10" in fast
    assert 'job="api"' in rules["ButtressStoreDegraded"]["expr"]
    assert rules["ButtressStoreDegraded"]["annotations"]["runbook_url"].endswith(
        "#buttressstoredegraded"
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--failure-ratio", "2"], "--failure-ratio"),
        (["--breaker-open-for", "soon"], "--breaker-open-for"),
        (["--fast-burn-windows", "5m,1h"], "shorter than the long"),
        (["--slow-burn-windows", "6h"], "two durations"),
        (["--selector", "{job='x'}"], "without braces"),
        (["--failure-ratio", "many"], "--failure-ratio"),
    ],
)
def test_bad_thresholds_are_usage_errors_naming_the_option(args: list[str], message: str) -> None:
    result = CliRunner().invoke(app, ["observe", "export", "--out", "-", "--rules-only", *args])
    assert result.exit_code == 2
    assert message in result.output


def test_export_help_lists_every_threshold_with_its_default() -> None:
    result = invoke("observe", "export", "--help")
    assert "--breaker-open-for DURATION" in result.output
    assert "[default: 300]" in result.output
    assert "--fast-burn-windows LONG,SHORT" in result.output


def test_export_into_a_file_path_fails_clearly(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    result = CliRunner().invoke(app, ["observe", "export", "--out", str(blocker)])
    assert result.exit_code == 1
    assert "Could not open file" in result.output


# -------------------------------------------------------------------------- report


def _json_report(*args: str, env: dict[str, str] | None = None) -> tuple[Result, dict[str, Any]]:
    result = invoke("report", *args, "--format", "json", env=env)
    return result, json.loads(result.stdout)


def test_report_lists_each_pipeline_and_its_protections(config: Path) -> None:
    result, data = _json_report(str(config))
    assert result.exit_code == 0
    assert data["source"] == str(config)
    assert data["ok"] is True
    entries = {e["name"]: e for e in data["pipelines"]}
    assert set(entries) == {"api", "db", "lonely"}  # api-retry and api-limit are in api
    api = entries["api"]
    assert api["kind"] == "pipeline"
    assert [p["name"] for p in api["policies"]] == ["api[0]", "api-limit", "api-retry", "api[3]"]
    assert api["protections"] == {
        "timeout": ["api[0]"],
        "retry": ["api-retry"],
        "circuit_breaker": ["api[3]"],
        "rate_limit": ["api-limit"],
    }
    assert api["missing"] == ["bulkhead", "fallback"]
    assert api["notes"] == []
    assert entries["lonely"]["kind"] == "policy"
    assert entries["lonely"]["protections"] == {"bulkhead": ["lonely"]}


def test_a_retry_without_backoff_does_not_count_and_order_is_noted(config: Path) -> None:
    _, data = _json_report(str(config))
    db = next(e for e in data["pipelines"] if e["name"] == "db")
    assert "retry" in db["missing"]
    assert db["policies"][0]["detail"] == "3 attempts, no backoff"
    assert db["policies"][1]["detail"] == "1s per attempt"
    notes = " ".join(db["notes"])
    assert "does not count as a retry with backoff" in notes
    assert "nothing bounds the whole call" in notes
    assert "a fallback usually goes outermost" in notes


def test_report_text_shows_tables(config: Path) -> None:
    result = invoke("report", str(config))
    assert result.exit_code == 0
    assert f"Protections in {config}" in result.output
    assert "Policies, outermost first" in result.output
    assert "4 attempts, exponential backoff" in result.output
    assert "note: db: retry 'db[0]' does not count as a retry with backoff: 3 attempts" in (
        result.output
    )


def test_require_reports_the_pipelines_lacking_it(config: Path) -> None:
    result = invoke("report", str(config), "--require", "bulkhead", "--format", "json")
    assert result.exit_code == EXIT_MISSING  # api and db lack one
    result = CliRunner().invoke(app, ["report", str(config), "--require", "timeout"])
    assert result.exit_code == EXIT_MISSING
    assert "missing: lonely: timeout" in result.stderr


def test_require_fails_naming_each_pipeline_and_protection(config: Path) -> None:
    result = CliRunner().invoke(app, ["report", str(config), "--require", "timeout,retry"])
    assert result.exit_code == EXIT_MISSING
    assert "missing: db: retry" in result.stderr
    assert "missing: lonely: timeout, retry" in result.stderr
    assert "missing: api" not in result.stderr
    assert "Timeout*" in result.stdout


def test_require_ok(tmp_path: Path) -> None:
    path = tmp_path / "buttress.toml"
    path.write_text(
        '[pipelines.api]\npolicies = [{ type = "timeout", seconds = 2 }, { type = "retry" }]\n'
    )
    result = invoke("report", str(path), "--require", "timeout", "--require", "retry")
    assert result.exit_code == 0
    result, data = _json_report(str(path), "--require", "timeout,retry")
    assert data["ok"] is True
    assert data["required"] == ["timeout", "retry"]


def test_require_accepts_aliases(config: Path) -> None:
    _, data = _json_report(str(config), "--require", "breaker,rate-limiter")
    assert data["required"] == ["circuit_breaker", "rate_limit"]


def test_an_unknown_required_protection_is_a_usage_error(config: Path) -> None:
    result = CliRunner().invoke(app, ["report", str(config), "--require", "timeout,magic"])
    assert result.exit_code == 2
    assert "unknown protection 'magic'" in result.output


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[pipelines.api\n", "invalid TOML"),
        ('[policies.x]\ntype = "retri"\n', "policies.x.type: unknown policy type 'retri'"),
        ('[pipelines.api]\npolicies = ["nope"]\n', "no policy named 'nope'"),
        ('[policies.x]\ntype = "retry"\nmax_attempts = 0\n', "policies.x.max_attempts"),
    ],
)
def test_a_bad_config_file_exits_3_with_the_config_error(
    tmp_path: Path, text: str, message: str
) -> None:
    path = tmp_path / "buttress.toml"
    path.write_text(text)
    result = CliRunner().invoke(app, ["report", str(path)])
    assert result.exit_code == EXIT_CONFIG
    assert result.stderr.startswith("error: ")
    assert message in result.stderr
    assert result.stdout == ""


def test_a_missing_config_file_exits_3(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["report", str(tmp_path / "absent.toml")])
    assert result.exit_code == EXIT_CONFIG
    assert "configuration file not found" in result.stderr


def test_report_finds_the_configuration_like_the_application(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["report"])
    assert result.exit_code == EXIT_CONFIG
    assert "no configuration found" in result.stderr
    (tmp_path / "pyproject.toml").write_text(
        '[tool.buttress.pipelines.api]\npolicies = [{ type = "bulkhead", max_concurrent = 2 }]\n'
    )
    result, data = _json_report()
    assert data["source"] == "pyproject.toml"
    assert [e["name"] for e in data["pipelines"]] == ["api"]


def test_the_environment_overrides_apply_unless_no_env(config: Path) -> None:
    env = {"BUTTRESS_POLICIES__API_RETRY__MAX_ATTEMPTS": "1"}
    _, data = _json_report(str(config), env=env)
    api = next(e for e in data["pipelines"] if e["name"] == "api")
    assert "retry" in api["missing"]  # one attempt never retries
    _, data = _json_report(str(config), "--no-env", env=env)
    api = next(e for e in data["pipelines"] if e["name"] == "api")
    assert "retry" not in api["missing"]


def test_report_on_a_registry_built_in_code(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "ops_app_resilience.py").write_text(
        "from buttress import Bulkhead, CircuitBreaker, Pipeline, Registry, Timeout\n"
        "registry = Registry()\n"
        "registry.add('search', Pipeline(Timeout(1), CircuitBreaker(), name='search'))\n"
        "registry.add('pool', Bulkhead(4, name='pool'))\n"
        "not_a_registry = 3\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    result, data = _json_report("--registry", "ops_app_resilience:registry")
    assert result.exit_code == 0
    assert data["source"] == "ops_app_resilience:registry"
    assert {e["name"]: e["kind"] for e in data["pipelines"]} == {
        "pool": "policy",
        "search": "pipeline",
    }
    for spec, message in [
        ("ops_app_resilience:not_a_registry", "is a int, not a buttress Registry"),
        ("ops_app_resilience:absent", "has no attribute 'absent'"),
        ("ops_app_missing_module:registry", "cannot import 'ops_app_missing_module'"),
        ("ops_app_resilience", "expected MODULE:ATTRIBUTE"),
    ]:
        result = CliRunner().invoke(app, ["report", "--registry", spec])
        assert result.exit_code == EXIT_CONFIG, spec
        assert message in result.stderr, spec


def test_config_file_and_registry_exclude_each_other(config: Path) -> None:
    result = CliRunner().invoke(app, ["report", str(config), "--registry", "a:b"])
    assert result.exit_code == 2
    assert "not both" in result.output


def test_import_registers_kinds_first_and_a_bad_import_exits_3(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "ops_app_kinds.py").write_text(
        "from buttress import Policy\n"
        "from buttress.registry import register_kind\n"
        "@register_kind('ops_shed', replace=True)\n"
        "class Shed(Policy):\n"
        "    def __init__(self, *, name=None):\n"
        "        super().__init__(name=name)\n"
        "    def execute(self, call):\n"
        "        return call()\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    path = tmp_path / "buttress.toml"
    path.write_text('[pipelines.api]\npolicies = [{ type = "ops_shed" }]\n')
    result, data = _json_report(str(path), "--import", "ops_app_kinds")
    assert result.exit_code == 0
    (step,) = data["pipelines"][0]["policies"]
    assert step == {"name": "api[0]", "type": "Shed", "protection": None, "detail": ""}
    result = CliRunner().invoke(app, ["report", str(path), "--import", "ops_app_nothing"])
    assert result.exit_code == EXIT_CONFIG
    assert "cannot import 'ops_app_nothing'" in result.stderr


def test_an_empty_configuration_says_so(tmp_path: Path) -> None:
    path = tmp_path / "buttress.toml"
    path.write_text("")
    result = CliRunner().invoke(app, ["report", str(path)])
    assert result.exit_code == 0
    assert f"no pipelines or policies in {path}" in result.stderr


def test_every_threshold_option_is_documented() -> None:
    import dataclasses

    from buttress.observe.ops import AlertThresholds

    page = (Path(__file__).resolve().parents[3] / "docs" / "operations.md").read_text()
    for field in dataclasses.fields(AlertThresholds):
        option = "--" + field.name.replace("_", "-")
        assert f"`{option}" in page, option

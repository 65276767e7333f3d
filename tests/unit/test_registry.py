"""Registry: named policies in code, from TOML, with BUTTRESS_* overrides."""

from __future__ import annotations

from pathlib import Path

import pytest

from buttress import (
    Bulkhead,
    CircuitBreaker,
    ConfigError,
    Pipeline,
    Registry,
    Retry,
    Timeout,
)
from buttress.registry import register_kind

TOML = """
[policies.api-retry]
type = "retry"
max_attempts = 4
delay = 0.2
on = ["ConnectionError", "socket.gaierror"]

[policies.api-breaker]
type = "circuit_breaker"
failure_ratio = 0.25
min_calls = 20

[pipelines.api]
policies = [{ type = "timeout", seconds = 2.5 }, "api-retry", "api-breaker"]

[pipelines.reports]
policies = ["api-breaker", { type = "bulkhead", max_concurrent = 3 }]
"""


def load(text: str, env: dict[str, str] | None = None, tmp: Path | None = None) -> Registry:
    assert tmp is not None
    file = tmp / "buttress.toml"
    file.write_text(text)
    return Registry.from_toml(file, env=env or {})


def test_builds_policies_and_pipelines_from_toml(tmp_path: Path) -> None:
    registry = load(TOML, tmp=tmp_path)
    retry = registry.get("api-retry")
    assert isinstance(retry, Retry)
    assert retry.name == "api-retry"
    api = registry.pipeline("api")
    assert isinstance(api, Pipeline)
    timeout, retry_in_api, breaker = api.strategies
    assert isinstance(timeout, Timeout)
    assert timeout.name == "api[0]"
    assert retry_in_api is retry
    assert isinstance(breaker, CircuitBreaker)
    assert set(registry) == {"api-retry", "api-breaker", "api", "reports"}


def test_a_named_policy_is_one_object_shared_by_pipelines(tmp_path: Path) -> None:
    registry = load(TOML, tmp=tmp_path)
    assert registry.pipeline("api")[2] is registry.pipeline("reports")[0]
    assert isinstance(registry.pipeline("reports")[1], Bulkhead)


def test_exception_names_are_resolved(tmp_path: Path) -> None:
    registry = load(TOML, tmp=tmp_path)
    retry = registry.get("api-retry")
    calls = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) == 1:
            raise ConnectionError
        return "ok"

    with __import__("buttress.testing").testing.zero_backoff():
        assert retry.call(flaky) == "ok"
    assert len(calls) == 2


def test_env_overrides_a_value_matching_dashes_and_case(tmp_path: Path) -> None:
    registry = load(
        TOML,
        env={
            "BUTTRESS_POLICIES__API_RETRY__MAX_ATTEMPTS": "6",
            "BUTTRESS_POLICIES__API_BREAKER__FAILURE_RATIO": "0.75",
            "UNRELATED": "1",
        },
        tmp=tmp_path,
    )
    retry = registry.get("api-retry")
    assert isinstance(retry, Retry)
    assert retry.max_attempts == 6
    breaker = registry.get("api-breaker")
    assert isinstance(breaker, CircuitBreaker)
    assert breaker.options.failure_ratio == 0.75


def test_env_can_define_a_new_policy(tmp_path: Path) -> None:
    registry = load(
        TOML,
        env={
            "BUTTRESS_POLICIES__EXTRA__TYPE": "bulkhead",
            "BUTTRESS_POLICIES__EXTRA__MAX_CONCURRENT": "2",
        },
        tmp=tmp_path,
    )
    extra = registry.get("extra")
    assert isinstance(extra, Bulkhead)
    assert extra.max_concurrent == 2


def test_env_value_that_is_not_toml_is_a_string(tmp_path: Path) -> None:
    registry = load(TOML, env={"BUTTRESS_POLICIES__API_RETRY__BACKOFF": "linear"}, tmp=tmp_path)
    assert isinstance(registry.get("api-retry"), Retry)


def test_pyproject_tool_section(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    body = TOML.replace("[policies.", "[tool.buttress.policies.").replace(
        "[pipelines.", "[tool.buttress.pipelines."
    )
    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'x'\n" + body)
    monkeypatch.chdir(tmp_path)
    registry = Registry.from_toml(env={})
    assert "api" in registry


def test_buttress_toml_wins_over_pyproject(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "pyproject.toml").write_text("[tool.buttress.policies.a]\ntype = 'retry'\n")
    (tmp_path / "buttress.toml").write_text("[policies.b]\ntype = 'retry'\n")
    monkeypatch.chdir(tmp_path)
    assert list(Registry.from_toml(env={})) == ["b"]


def test_no_configuration_gives_an_empty_registry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert len(Registry.from_toml(env={})) == 0


@pytest.mark.parametrize(
    ("text", "path", "fragment"),
    [
        ("[policies.a]\ntype = 'retri'\n", "policies.a.type", "unknown policy type 'retri'"),
        ("[policies.a]\nmax_attempts = 2\n", "policies.a.type", "missing 'type'"),
        (
            "[policies.a]\ntype = 'retry'\nmax_atempts = 2\n",
            "policies.a.max_atempts",
            "unknown option",
        ),
        ("[policies.a]\ntype = 'retry'\nmax_attempts = 0\n", "policies.a.max_attempts", ""),
        (
            "[policies.a]\ntype = 'bulkhead'\nmax_concurrent = 'x'\n",
            "policies.a.max_concurrent",
            "",
        ),
        (
            "[policies.a]\ntype = 'retry'\non = ['NoSuchError']\n",
            "policies.a.on[0]",
            "not a built-in exception",
        ),
        (
            "[policies.a]\ntype = 'retry'\non = 'nosuchpkg.Error'\n",
            "policies.a.on",
            "cannot import",
        ),
        (
            "[policies.a]\ntype = 'retry'\non = 'json.dumps'\n",
            "policies.a.on",
            "not an exception class",
        ),
        (
            "[pipelines.p]\npolicies = ['missing']\n",
            "pipelines.p.policies[0]",
            "no policy named 'missing'",
        ),
        ("[pipelines.p]\npolicies = []\n", "pipelines.p.policies", "non-empty"),
        ("[pipelines.p]\npolicies = [1]\n", "pipelines.p.policies[0]", "policy name"),
        (
            "[pipelines.p]\npolicies = ['a']\nextra = 1\n[policies.a]\ntype='retry'\n",
            "pipelines.p.extra",
            "unknown option",
        ),
        (
            "[pipelines.p]\npolicies = [{ type = 'timeout', seconds = -1 }]\n",
            "pipelines.p.policies[0].seconds",
            "",
        ),
        ("[other]\nx = 1\n", "other", "unknown section"),
        ("policies = 3\n", "policies", "expected a table"),
    ],
)
def test_bad_configuration_names_the_key_path(
    text: str, path: str, fragment: str, tmp_path: Path
) -> None:
    with pytest.raises(ConfigError) as info:
        load(text, tmp=tmp_path)
    assert info.value.path == path
    assert str(info.value).startswith(f"{path}: ")
    assert fragment in str(info.value)


def test_bad_env_override_names_the_variable(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load(TOML, env={"BUTTRESS_POLICIES__API_RETRY__MAX_ATTEMPTS": "-3"}, tmp=tmp_path)
    assert info.value.path == "policies.api-retry.max_attempts"


def test_invalid_toml_and_missing_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[policies\n")
    with pytest.raises(ConfigError, match="invalid TOML"):
        Registry.from_toml(bad, env={})
    with pytest.raises(ConfigError, match="not found"):
        Registry.from_toml(tmp_path / "absent.toml", env={})


def test_in_code_registration() -> None:
    registry = Registry()
    retry = registry.add("r", Retry())
    assert registry["r"] is retry
    assert "r" in registry
    with pytest.raises(ConfigError, match="already registered"):
        registry.add("r", Retry())
    with pytest.raises(ConfigError):
        registry.add("x", object())  # type: ignore[arg-type]
    with pytest.raises(KeyError, match="no policy or pipeline named 'nope'"):
        registry.get("nope")


def test_pipeline_of_a_lone_policy_wraps_it_once() -> None:
    registry = Registry()
    breaker = registry.add("b", CircuitBreaker())
    pipeline = registry.pipeline("b")
    assert list(pipeline) == [breaker]
    assert registry.pipeline("b") is pipeline


def test_registry_pipeline_is_a_decorator(tmp_path: Path) -> None:
    registry = load(TOML, tmp=tmp_path)

    @registry.pipeline("api")
    def double(x: int) -> int:
        return 2 * x

    assert double(21) == 42


def test_register_kind_adds_a_type(tmp_path: Path) -> None:
    register_kind("tiny-bulkhead", lambda *, name: Bulkhead(1, name=name))
    registry = load("[policies.t]\ntype = 'tiny_bulkhead'\n", tmp=tmp_path)
    bulkhead = registry.get("t")
    assert isinstance(bulkhead, Bulkhead)
    assert bulkhead.max_concurrent == 1


def test_rate_limiter_from_toml(tmp_path: Path) -> None:
    from buttress import FixedWindow, RateLimiter, TokenBucket

    registry = load(
        """
[policies.limit]
type = "rate_limiter"
key = "tenant-a"
limits = [
  { type = "token_bucket", rate = 5, period = 1.0 },
  { type = "fixed-window", limit = 100, period = 60 },
]
""",
        tmp=tmp_path,
    )
    limiter = registry.get("limit")
    assert isinstance(limiter, RateLimiter)
    assert limiter.limits == (TokenBucket(5, 1.0), FixedWindow(100, 60))
    assert limiter.hit().allowed


@pytest.mark.parametrize(
    ("limits", "path"),
    [
        ("[]", "policies.limit.limits"),
        ("[{ type = 'leaky' }]", "policies.limit.limits[0].type"),
        ("[{ type = 'token_bucket', rate = -1 }]", "policies.limit.limits[0].rate"),
        ("[{ type = 'token_bucket', rat = 1 }]", "policies.limit.limits[0]"),
    ],
)
def test_rate_limiter_bad_limits_name_the_path(limits: str, path: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load(f"[policies.limit]\ntype = 'rate_limiter'\nlimits = {limits}\n", tmp=tmp_path)
    assert info.value.path == path

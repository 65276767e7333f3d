"""Registry: named policies in code, from TOML, with BUTTRESS_* overrides.

Written against the registry's behaviour, not a particular policy's options class:
where a test needs a kind with options it defines its own, so these tests hold
whether a built-in policy is loaded through its ``Options`` or its signature.
"""

from __future__ import annotations

import dataclasses
import datetime
from pathlib import Path
from typing import Any

import pytest

from buttress import (
    Bulkhead,
    CircuitBreaker,
    CircuitOpen,
    ConfigError,
    FixedWindow,
    Pipeline,
    RateLimiter,
    Registry,
    Retry,
    Timeout,
    TokenBucket,
)
from buttress._options import Options, option
from buttress._strategy import Call, Policy
from buttress._validate import check_count, check_seconds
from buttress.registry import BUILTIN_KINDS, kinds, parse_duration, reference, register_kind
from buttress.registry.__main__ import main
from buttress.registry._reference import COMMAND

ROOT = Path(__file__).resolve().parents[2]

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


def setting(policy: Any, name: str) -> Any:
    """An option's value, from ``policy.options`` where the policy keeps one."""
    options = getattr(policy, "options", None)
    if options is not None and hasattr(options, name):
        return getattr(options, name)
    return getattr(policy, name)


# ------------------------------------------------------------- kinds for the tests


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class PacedOptions(Options):
    """Options of a test policy, the way every built-in policy declares its own."""

    kind = "paced"

    limit: int = option(doc="How many calls at most.")
    pause: float | datetime.timedelta = option(1.0, doc="How long to pause between calls.")
    on: object = option(None, toml="exceptions", doc="Which errors count.")
    hook: object = option(None, toml=False, doc="Code only.")

    def __post_init__(self) -> None:
        self._set("limit", check_count(self.limit, "limit"))
        self._set("pause", check_seconds(self.pause, "pause"))


class Paced(Policy):
    """A test policy with an options class and ``from_options``."""

    Options = PacedOptions

    def __init__(self, *, limit: int, pause: float = 1.0, name: str | None = None) -> None:
        self.options = PacedOptions(limit=limit, pause=pause)
        super().__init__(name=name)

    @classmethod
    def from_options(cls, options: PacedOptions, *, name: str | None = None) -> Paced:
        policy = cls.__new__(cls)
        policy.options = options
        Policy.__init__(policy, name=name)
        return policy


class Counting(Policy):
    """Counts calls; ``every`` is checked by the constructor. No options class."""

    def __init__(self, every: int = 1, *, label: str = "", name: str | None = None) -> None:
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ConfigError(f"must be an integer >= 1, got {every!r}", path="every")
        super().__init__(name=name)
        self.every = every
        self.label = label

    def execute(self, call: Call[Any]) -> Any:
        return call()


class Plain(Policy):
    """An options class but no ``from_options``: built from the validated fields."""

    Options = PacedOptions

    def __init__(
        self,
        *,
        limit: int,
        pause: float = 1.0,
        on: object = None,
        hook: object = None,
        name: str | None = None,
    ) -> None:
        super().__init__(name=name)
        self.limit = limit
        self.pause = pause


register_kind("test-paced", Paced)
register_kind("test-counting", Counting)
register_kind("test-plain", Plain)


# ------------------------------------------------------------------ loading TOML


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
    assert breaker.name == "api-breaker"
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


def test_kinds_have_aliases_and_loose_spelling() -> None:
    registry = Registry.from_mapping(
        {
            "policies": {
                "a": {"type": "breaker"},
                "b": {"type": "Circuit-Breaker"},
                "c": {"type": "RATE-LIMITER", "limits": "1/second"},
            }
        }
    )
    assert isinstance(registry["a"], CircuitBreaker)
    assert isinstance(registry["b"], CircuitBreaker)
    assert isinstance(registry["c"], RateLimiter)


def test_pipelines_can_use_pipelines_declared_before_them() -> None:
    registry = Registry.from_mapping(
        {
            "policies": {"r": {"type": "retry"}},
            "pipelines": {"inner": {"policies": ["r"]}, "outer": {"policies": ["inner"]}},
        }
    )
    assert registry.pipeline("outer")[0] is registry["inner"]


# --------------------------------------------------------------- the environment


def test_env_overrides_a_value_matching_dashes_and_case(tmp_path: Path) -> None:
    registry = load(
        TOML,
        env={
            "BUTTRESS_POLICIES__API_RETRY__MAX_ATTEMPTS": "6",
            "BUTTRESS_POLICIES__API_BREAKER__FAILURE_RATIO": "0.75",
            "BUTTRESS_TESTING": "1",  # no "__": not configuration
            "UNRELATED": "1",
        },
        tmp=tmp_path,
    )
    assert setting(registry.get("api-retry"), "max_attempts") == 6
    assert setting(registry.get("api-breaker"), "failure_ratio") == 0.75


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
    assert setting(extra, "max_concurrent") == 2


def test_env_value_that_is_not_toml_is_a_string(tmp_path: Path) -> None:
    registry = load(TOML, env={"BUTTRESS_POLICIES__API_RETRY__BACKOFF": "linear"}, tmp=tmp_path)
    assert isinstance(registry.get("api-retry"), Retry)


def test_env_indexes_lists() -> None:
    config = {
        "policies": {
            "limit": {
                "type": "rate_limiter",
                "limits": ["10/second", {"type": "token_bucket", "rate": 5}],
            }
        }
    }
    registry = Registry.from_mapping(
        config, env={"BUTTRESS_POLICIES__LIMIT__LIMITS__1__RATE": "20"}
    )
    limiter = registry.get("limit")
    assert isinstance(limiter, RateLimiter)
    assert limiter.limits == (FixedWindow(10, 1.0), TokenBucket(20))
    # The input is not changed by the override.
    assert config["policies"]["limit"]["limits"][1] == {"type": "token_bucket", "rate": 5}


@pytest.mark.parametrize(
    ("env", "path", "variable", "fragment"),
    [
        (
            {"BUTTRESS_POLICIES__API__MAX_ATTEMPTS": "0"},
            "policies.api.max_attempts",
            "BUTTRESS_POLICIES__API__MAX_ATTEMPTS",
            "",
        ),
        (
            {"BUTTRESS_POLICIES__API__MAX_ATEMPTS": "3"},
            "policies.api.max_atempts",
            "BUTTRESS_POLICIES__API__MAX_ATEMPTS",
            "valid keys: ",
        ),
        (
            {"BUTTRESS_POLICIES__API__DELAY": "soon"},
            "policies.api.delay",
            "BUTTRESS_POLICIES__API__DELAY",
            "'250ms'",
        ),
        (
            {"BUTTRESS_POLICIES__NEW__MAX_CONCURRENT": "2"},
            "policies.new.type",
            "BUTTRESS_POLICIES__NEW__MAX_CONCURRENT",
            "missing 'type'",
        ),
        (
            {"BUTTRESS_POLICIES__LIMIT__LIMITS": '["10/second", { type = "gcra", rat = 1 }]'},
            "policies.limit.limits[1].rat",
            "BUTTRESS_POLICIES__LIMIT__LIMITS",
            "valid keys: rate, period, burst",
        ),
        (
            {"BUTTRESS_POLICIES__LIMIT__LIMITS__3__RATE": "1"},
            "policies.limit.limits",
            "BUTTRESS_POLICIES__LIMIT__LIMITS__3__RATE",
            "from 0 to 0",
        ),
        (
            {"BUTTRESS_POLICIES__API__TYPE__X": "1"},
            "policies.api.type",
            "BUTTRESS_POLICIES__API__TYPE__X",
            "inside a str",
        ),
        (
            {"BUTTRESS_POLICYS__API__TYPE": "retry"},
            "policys",
            "BUTTRESS_POLICYS__API__TYPE",
            "valid sections: policies, pipelines",
        ),
        ({"BUTTRESS_POLICIES____X": "1"}, None, "BUTTRESS_POLICIES____X", "empty part"),
    ],
)
def test_bad_env_override_names_the_variable_and_the_key_path(
    env: dict[str, str], path: str | None, variable: str, fragment: str
) -> None:
    config = {
        "policies": {
            "api": {"type": "retry"},
            "limit": {"type": "rate_limiter", "limits": [{"type": "fixed_window", "limit": 5}]},
        }
    }
    with pytest.raises(ConfigError) as info:
        Registry.from_mapping(config, env=env)
    assert info.value.path == path
    assert variable in str(info.value)
    assert fragment in str(info.value)


def test_a_mistake_in_the_file_names_the_file_not_a_variable(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load(
            "[policies.a]\ntype = 'retry'\nmax_attempts = 0\n",
            env={"BUTTRESS_POLICIES__B__TYPE": "retry"},
            tmp=tmp_path,
        )
    assert info.value.path == "policies.a.max_attempts"
    assert "BUTTRESS_" not in str(info.value)
    assert str(tmp_path / "buttress.toml") in str(info.value)


# ----------------------------------------------------------- where config is read


def test_pyproject_tool_section(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    body = TOML.replace("[policies.", "[tool.buttress.policies.").replace(
        "[pipelines.", "[tool.buttress.pipelines."
    )
    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'x'\n" + body)
    monkeypatch.chdir(tmp_path)
    registry = Registry.from_toml(env={})
    assert "api" in registry
    assert "api" in Registry.from_toml(tmp_path / "pyproject.toml", env={})


def test_pyproject_errors_have_the_path_in_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "pyproject.toml").write_text(
        "[tool.buttress.policies.a]\ntype = 'retry'\nmax_atempts = 2\n"
    )
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as info:
        Registry.from_toml(env={})
    assert info.value.path == "tool.buttress.policies.a.max_atempts"
    with pytest.raises(ConfigError) as info:
        Registry.from_toml(env={"BUTTRESS_POLICIES__A__MAX_ATEMPTS": "3"})
    assert info.value.path == "tool.buttress.policies.a.max_atempts"
    assert "BUTTRESS_POLICIES__A__MAX_ATEMPTS" in str(info.value)


def test_buttress_toml_wins_over_pyproject(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "pyproject.toml").write_text("[tool.buttress.policies.a]\ntype = 'retry'\n")
    (tmp_path / "buttress.toml").write_text("[policies.b]\ntype = 'retry'\n")
    monkeypatch.chdir(tmp_path)
    assert list(Registry.from_toml(env={})) == ["b"]


def test_no_configuration_is_an_error_naming_the_files_looked_for(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match="no configuration found") as info:
        Registry.from_toml(env={})
    assert str(tmp_path / "buttress.toml") in str(info.value)
    assert str(tmp_path / "pyproject.toml") in str(info.value)
    assert "missing_ok=True" in str(info.value)
    # A pyproject.toml without [tool.buttress] is no configuration either.
    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'x'\n")
    with pytest.raises(ConfigError, match="no configuration found"):
        Registry.from_toml(env={})
    with pytest.raises(ConfigError, match=r"no \[tool.buttress\] table"):
        Registry.from_toml(tmp_path / "pyproject.toml", env={})


def test_missing_ok_gives_an_empty_registry_with_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert len(Registry.from_toml(env={}, missing_ok=True)) == 0
    assert len(Registry.from_toml(tmp_path / "absent.toml", env={}, missing_ok=True)) == 0
    registry = Registry.from_toml(env={"BUTTRESS_POLICIES__R__TYPE": "retry"}, missing_ok=True)
    assert isinstance(registry.get("r"), Retry)
    assert len(Registry()) == 0


def test_from_toml_reads_os_environ_by_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BUTTRESS_POLICIES__API_RETRY__MAX_ATTEMPTS", "7")
    (tmp_path / "buttress.toml").write_text(TOML)
    monkeypatch.chdir(tmp_path)
    assert setting(Registry.from_toml().get("api-retry"), "max_attempts") == 7


def test_invalid_toml_and_missing_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[policies\n")
    with pytest.raises(ConfigError, match="invalid TOML"):
        Registry.from_toml(bad, env={})
    with pytest.raises(ConfigError, match="not found"):
        Registry.from_toml(tmp_path / "absent.toml", env={})


# -------------------------------------------------------------- every mistake


@pytest.mark.parametrize(
    ("text", "path", "fragment"),
    [
        ("[policies.a]\ntype = 'retri'\n", "policies.a.type", "unknown policy type 'retri'"),
        ("[policies.a]\ntype = 3\n", "policies.a.type", "unknown policy type 3"),
        ("[policies.a]\nmax_attempts = 2\n", "policies.a.type", "missing 'type'"),
        (
            "[policies.a]\ntype = 'retry'\nmax_atempts = 2\n",
            "policies.a.max_atempts",
            "unknown option for 'retry'; valid keys: max_attempts, ",
        ),
        (
            "[policies.a]\ntype = 'retry'\nname = 'b'\n",
            "policies.a.name",
            "unknown option",
        ),
        (
            "[policies.a]\ntype = 'retry'\non_result = 'x'\n",
            "policies.a.on_result",
            "unknown option",
        ),
        ("[policies.a]\ntype = 'retry'\nmax_attempts = 0\n", "policies.a.max_attempts", ""),
        ("[policies.a]\ntype = 'retry'\nmax_attempts = true\n", "policies.a.max_attempts", ""),
        (
            "[policies.a]\ntype = 'bulkhead'\nmax_concurrent = 'x'\n",
            "policies.a.max_concurrent",
            "",
        ),
        ("[policies.a]\ntype = 'bulkhead'\n", "policies.a.max_concurrent", "required"),
        ("[policies.a]\ntype = 'timeout'\n", "policies.a.seconds", "required"),
        ("[policies.a]\ntype = 'timeout'\nseconds = '2 secs'\n", "policies.a.seconds", "'2s'"),
        ("[policies.a]\ntype = 'timeout'\nseconds = 00:00:02\n", "policies.a.seconds", "time"),
        ("[policies.a]\ntype = 'timeout'\nseconds = -1\n", "policies.a.seconds", ""),
        (
            "[policies.a]\ntype = 'retry'\non = ['NoSuchError']\n",
            "policies.a.on[0]",
            "NoSuchError",
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
        ("[policies]\na = 3\n", "policies.a", "expected a table"),
        (
            "[pipelines.p]\npolicies = ['missing']\n",
            "pipelines.p.policies[0]",
            "no policy named 'missing'",
        ),
        ("[pipelines.p]\npolicies = []\n", "pipelines.p.policies", "non-empty"),
        ("[pipelines.p]\nname = 'x'\n", "pipelines.p.name", "valid keys: policies"),
        ("[pipelines.p]\npolicies = [1]\n", "pipelines.p.policies[0]", "policy name"),
        (
            "[pipelines.p]\npolicies = ['a']\npolices = 1\n[policies.a]\ntype='retry'\n",
            "pipelines.p.polices",
            "unknown option for a pipeline; valid keys: policies",
        ),
        (
            "[pipelines.p]\npolicies = [{ type = 'timeout', seconds = -1 }]\n",
            "pipelines.p.policies[0].seconds",
            "",
        ),
        (
            "[pipelines.p]\npolicies = [{ type = 'timeout', second = 1 }]\n",
            "pipelines.p.policies[0].second",
            "valid keys: seconds",
        ),
        (
            "[pipelines.a]\npolicies = ['a']\n[policies.a]\ntype='retry'\n",
            "pipelines.a",
            "a policy already has this name",
        ),
        ("[other]\nx = 1\n", "other", "unknown section; valid sections: policies, pipelines"),
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


# ------------------------------------------------------------------ durations


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("250ms", 0.25),
        ("2s", 2.0),
        ("1.5s", 1.5),
        (".5s", 0.5),
        ("1m", 60.0),
        ("1m30s", 90.0),
        ("1h 30m", 5400.0),
        ("1d", 86_400.0),
        (" 2S ", 2.0),
    ],
)
def test_duration_strings(text: str, seconds: float) -> None:
    assert parse_duration(text, "x") == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "2", "2 seconds", "-1s", "1x", "s", "1s2", "1.2.3s"])
def test_bad_duration_strings(text: str) -> None:
    with pytest.raises(ConfigError, match="'250ms'") as info:
        parse_duration(text, "policies.a.delay")
    assert info.value.path == "policies.a.delay"


@pytest.mark.parametrize(("value", "seconds"), [("2s", 2.0), ("250ms", 0.25), (3, 3.0)])
def test_durations_in_files_for_built_in_kinds(value: Any, seconds: float) -> None:
    registry = Registry.from_mapping(
        {
            "policies": {
                "t": {"type": "timeout", "seconds": value},
                "b": {"type": "bulkhead", "max_concurrent": 1, "max_queue": 1, "max_wait": value},
            }
        }
    )
    assert setting(registry["t"], "seconds") == pytest.approx(seconds)
    assert setting(registry["b"], "max_wait") == pytest.approx(seconds)


def test_durations_in_files_for_options_typed_as_timedelta() -> None:
    registry = Registry.from_mapping(
        {
            "policies": {
                "a": {"type": "test-paced", "limit": 1, "pause": "1m30s"},
                "b": {"type": "test-paced", "limit": 1, "pause": 2},
            }
        }
    )
    assert setting(registry["a"], "pause") == 90.0
    assert setting(registry["b"], "pause") == 2.0
    with pytest.raises(ConfigError, match="'250ms'") as info:
        Registry.from_mapping({"policies": {"a": {"type": "test-paced", "limit": 1, "pause": "x"}}})
    assert info.value.path == "policies.a.pause"


# ---------------------------------------------------------------- rate limits


def test_rate_limiter_from_toml(tmp_path: Path) -> None:
    registry = load(
        """
[policies.limit]
type = "rate_limiter"
key = "tenant-a"
limits = [
  { type = "token_bucket", rate = 5, period = 1.0 },
  { type = "fixed-window", limit = 100, period = "1m" },
]
""",
        tmp=tmp_path,
    )
    limiter = registry.get("limit")
    assert isinstance(limiter, RateLimiter)
    assert limiter.name == "limit"
    assert limiter.limits == (TokenBucket(5, 1.0), FixedWindow(100, 60))
    assert limiter.hit().allowed


@pytest.mark.parametrize(
    ("limits", "expected"),
    [
        ("'10/second; 1000/hour'", (FixedWindow(10, 1.0), FixedWindow(1000, 3600.0))),
        (
            "['5 per minute', { type = 'gcra', rate = 2 }]",
            (FixedWindow(5, 60.0), __import__("buttress").GCRA(2)),
        ),
        ("{ type = 'token_bucket', rate = 3 }", (TokenBucket(3),)),
    ],
)
def test_rate_strings_and_tables_mix(
    limits: str, expected: tuple[Any, ...], tmp_path: Path
) -> None:
    registry = load(f"[policies.limit]\ntype = 'rate_limiter'\nlimits = {limits}\n", tmp=tmp_path)
    limiter = registry.get("limit")
    assert isinstance(limiter, RateLimiter)
    assert limiter.limits == expected


@pytest.mark.parametrize(
    ("limits", "path", "fragment"),
    [
        ("[]", "policies.limit.limits", "at least one limit"),
        ("3", "policies.limit.limits", "rate string"),
        ("'10/fortnight'", "policies.limit.limits", "cannot read '10/fortnight'"),
        ("['1/second', '10/fortnight']", "policies.limit.limits[1]", "10/fortnight"),
        ("['1/second', 7]", "policies.limit.limits[1]", "rate string"),
        ("[{ type = 'leaky' }]", "policies.limit.limits[0].type", "token_bucket, gcra"),
        ("[{ rate = 1 }]", "policies.limit.limits[0].type", "missing"),
        ("[{ type = 'token_bucket', rate = -1 }]", "policies.limit.limits[0].rate", ""),
        ("[{ type = 'token_bucket' }]", "policies.limit.limits[0].rate", "required"),
        (
            "['1/second', { type = 'token_bucket', rat = 1 }]",
            "policies.limit.limits[1].rat",
            "valid keys: rate, period, burst",
        ),
        (
            "[{ type = 'fixed_window', limit = 1, period = 'soon' }]",
            "policies.limit.limits[0].period",
            "'250ms'",
        ),
    ],
)
def test_rate_limiter_bad_limits_name_the_path(
    limits: str, path: str, fragment: str, tmp_path: Path
) -> None:
    with pytest.raises(ConfigError) as info:
        load(f"[policies.limit]\ntype = 'rate_limiter'\nlimits = {limits}\n", tmp=tmp_path)
    assert info.value.path == path
    assert fragment in str(info.value)


def test_rate_limiter_requires_limits(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load("[policies.limit]\ntype = 'rate_limiter'\n", tmp=tmp_path)
    assert info.value.path == "policies.limit.limits"


# --------------------------------------------------------------- in code


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


# ------------------------------------------------------------------ register_kind


def test_register_kind_with_a_factory(tmp_path: Path) -> None:
    register_kind("tiny-bulkhead", lambda *, name: Bulkhead(1, name=name))
    registry = load("[policies.t]\ntype = 'tiny_bulkhead'\n", tmp=tmp_path)
    bulkhead = registry.get("t")
    assert isinstance(bulkhead, Bulkhead)
    assert bulkhead.name == "t"
    assert setting(bulkhead, "max_concurrent") == 1
    with pytest.raises(ConfigError, match="unknown option for 'tiny_bulkhead'; valid keys: none"):
        load("[policies.t]\ntype = 'tiny_bulkhead'\nsize = 2\n", tmp=tmp_path)


def test_a_kind_with_options_loads_through_them() -> None:
    registry = Registry.from_mapping(
        {"policies": {"p": {"type": "test-paced", "limit": 3, "on": ["CircuitOpen"]}}}
    )
    paced = registry["p"]
    assert isinstance(paced, Paced)
    assert paced.name == "p"
    assert paced.options == PacedOptions(limit=3, on=(CircuitOpen,))


@pytest.mark.parametrize(
    ("table", "path", "fragment"),
    [
        ({"limit": 0}, "policies.p.limit", "must be an integer >= 1"),
        ({"limit": 1, "limt": 2}, "policies.p.limt", "valid keys: limit, pause, on"),
        ({"limit": 1, "hook": "x"}, "policies.p.hook", "unknown option"),
        ({}, "policies.p.limit", "required"),
        ({"limit": 1, "on": ["Nope"]}, "policies.p.on[0]", "Nope"),
        ({"limit": 1, "pause": -1}, "policies.p.pause", ""),
    ],
)
def test_a_kind_with_options_is_validated_like_the_built_ins(
    table: dict[str, Any], path: str, fragment: str
) -> None:
    for kind in ("test-paced", "test-plain"):
        with pytest.raises(ConfigError) as info:
            Registry.from_mapping({"policies": {"p": {"type": kind, **table}}})
        assert info.value.path == path
        assert fragment in str(info.value)


def test_a_kind_with_options_but_no_from_options_gets_the_fields() -> None:
    registry = Registry.from_mapping(
        {"policies": {"p": {"type": "test-plain", "limit": 2, "pause": "500ms"}}}
    )
    plain = registry["p"]
    assert isinstance(plain, Plain)
    assert (plain.name, plain.limit, plain.pause) == ("p", 2, 0.5)


def test_a_kind_without_options_loads_through_its_signature() -> None:
    registry = Registry.from_mapping(
        {"policies": {"c": {"type": "test-counting", "every": 3, "label": "x"}}}
    )
    counting = registry["c"]
    assert isinstance(counting, Counting)
    assert (counting.name, counting.every, counting.label) == ("c", 3, "x")
    with pytest.raises(ConfigError) as info:
        Registry.from_mapping({"policies": {"c": {"type": "test-counting", "evry": 3}}})
    assert info.value.path == "policies.c.evry"
    assert "valid keys: every, label" in str(info.value)
    with pytest.raises(ConfigError) as info:
        Registry.from_mapping({"policies": {"c": {"type": "test-counting", "every": 0}}})
    assert info.value.path == "policies.c.every"


def test_a_kind_whose_class_gains_options_loads_through_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # What happens to a built-in kind when its policy gets an options class: the
    # registry looks for it at each load, so nothing has to be registered again.
    class Growing(Counting):
        pass

    register_kind("test-growing", Growing)
    assert [key.name for key in kinds()["test_growing"].table_keys()] == ["every", "label"]
    built: list[PacedOptions] = []

    def from_options(cls: type[Growing], options: PacedOptions, *, name: str) -> Growing:
        built.append(options)
        return cls(options.limit, name=name)

    monkeypatch.setattr(Growing, "Options", PacedOptions, raising=False)
    monkeypatch.setattr(Growing, "from_options", classmethod(from_options), raising=False)
    registry = Registry.from_mapping(
        {"policies": {"g": {"type": "test-growing", "limit": 2, "pause": "2s"}}}
    )
    assert built == [PacedOptions(limit=2, pause=2.0)]
    assert registry["g"].name == "g"
    assert [key.name for key in kinds()["test_growing"].table_keys()] == ["limit", "pause", "on"]
    with pytest.raises(ConfigError, match="valid keys: limit, pause, on"):
        Registry.from_mapping({"policies": {"g": {"type": "test-growing", "every": 2}}})


def test_register_kind_with_options_for_a_factory() -> None:
    built: list[PacedOptions] = []

    def make(options: PacedOptions, *, name: str) -> Counting:
        built.append(options)
        return Counting(options.limit, name=name)

    register_kind("test-made", make, options=PacedOptions)
    registry = Registry.from_mapping({"policies": {"m": {"type": "test-made", "limit": 4}}})
    assert isinstance(registry["m"], Counting)
    assert registry["m"].name == "m"
    assert built == [PacedOptions(limit=4)]
    assert [key.name for key in kinds()["test_made"].table_keys()] == ["limit", "pause", "on"]


def test_register_kind_as_a_decorator() -> None:
    @register_kind("test-decorated")
    class Decorated(Policy):
        pass

    registry = Registry.from_mapping({"policies": {"d": {"type": "test-decorated"}}})
    assert isinstance(registry["d"], Decorated)
    assert registry["d"].name == "d"


def test_register_kind_refuses_what_it_cannot_build() -> None:
    with pytest.raises(ConfigError, match="already registered"):
        register_kind("retry", Counting)
    with pytest.raises(ConfigError, match="already registered"):
        register_kind("breaker", Counting)  # an alias is taken too
    with pytest.raises(ConfigError, match="Policy subclass"):
        register_kind("test-bad", int)  # type: ignore[type-var]
    with pytest.raises(ConfigError, match="not an instance"):
        register_kind("test-bad", Counting())  # type: ignore[call-overload]

    def nameless() -> Counting:
        return Counting()

    with pytest.raises(ConfigError, match="must accept name="):
        register_kind("test-bad", nameless)
    with pytest.raises(ConfigError, match="Options"):
        register_kind("test-bad", Counting, options=dict)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="name"):
        register_kind("", Counting)
    assert "test_bad" not in kinds()
    register_kind("test-counting", Counting)  # the same again: nothing changes
    register_kind("test-replaced", Counting)
    register_kind("test-replaced", Plain, replace=True)
    assert kinds()["test_replaced"].target is Plain


def test_a_factory_must_build_a_policy() -> None:
    def not_a_policy(*, name: str) -> object:
        return object()

    register_kind("test-not-a-policy", not_a_policy)  # type: ignore[type-var]
    with pytest.raises(ConfigError, match="not a policy") as info:
        Registry.from_mapping({"policies": {"x": {"type": "test-not-a-policy"}}})
    assert info.value.path == "policies.x"


def test_a_factory_raising_type_error_is_a_config_error() -> None:
    def broken(*, name: str, **options: Any) -> Counting:
        return Counting(**options, name=name)

    register_kind("test-open", broken)
    assert isinstance(
        Registry.from_mapping({"policies": {"o": {"type": "test-open", "every": 2}}})["o"],
        Counting,
    )
    with pytest.raises(ConfigError, match="unexpected keyword") as info:
        Registry.from_mapping({"policies": {"o": {"type": "test-open", "evry": 2}}})
    assert info.value.path == "policies.o"


# ------------------------------------------------------------ the reference page


def test_reference_page_is_generated_from_the_registry() -> None:
    page = (ROOT / "docs" / "configuration.md").read_text()
    assert page == reference(), f"docs/configuration.md is stale: run `{COMMAND}`"


def test_reference_lists_every_key_of_every_built_in_kind() -> None:
    page = reference()
    assert set(BUILTIN_KINDS) == {
        "retry",
        "circuit_breaker",
        "timeout",
        "bulkhead",
        "fallback",
        "rate_limiter",
    }
    for name, kind in kinds().items():
        if name not in BUILTIN_KINDS:  # registered by tests and examples
            assert f"### `{name}`" not in page
            continue
        assert f"### `{name}`" in page
        for key in kind.table_keys():
            assert f"| `{key.name}` |" in page, (name, key.name)


def test_reference_takes_docs_from_options_fields_or_docstrings() -> None:
    from buttress.registry._reference import render

    page = render(builtin_only=False)
    paced = page[page.index("### `test_paced`") :]
    assert "| `limit` | integer | required | How many calls at most. |" in paced
    assert "| `pause` | duration | `1.0` | How long to pause between calls. |" in paced
    assert "`hook`" not in paced.split("###")[1]  # code only
    counting = page[page.index("### `test_counting`") :].split("\n### ")[0]
    assert "| `every` | integer | `1` |" in counting
    assert '| `label` | string | `""` |' in counting


def test_command_line(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["--reference"]) == 0
    assert capsys.readouterr().out == reference()
    assert main(["--reference", "--import", "tests.unit.test_registry"]) == 0
    assert "### `test_paced`" in capsys.readouterr().out
    good = tmp_path / "good.toml"
    good.write_text(TOML)
    assert main(["--check", str(good)]) == 0
    assert "api-retry" in capsys.readouterr().out
    bad = tmp_path / "bad.toml"
    bad.write_text("[policies.a]\ntype = 'retry'\nmax_attempts = 0\n")
    assert main(["--check", str(bad)]) == 1
    assert "policies.a.max_attempts" in capsys.readouterr().err


def test_a_fallback_constant_comes_from_the_file(tmp_path: Path) -> None:
    registry = load(
        "[policies.prices]\ntype = 'fallback'\nvalue = { sku = 'x', price = 9.99 }\n"
        "on = ['ConnectionError']\n",
        tmp=tmp_path,
    )
    fallback = registry.get("prices")

    def down() -> dict[str, object]:
        raise ConnectionResetError

    assert fallback.call(down) == {"sku": "x", "price": 9.99}
    with pytest.raises(ConfigError, match="alternative or a value") as info:
        load("[policies.prices]\ntype = 'fallback'\n", tmp=tmp_path)
    assert info.value.path == "policies.prices.alternatives"

"""Per-host policies shared by the HTTP client integrations (no network)."""

from __future__ import annotations

import pytest

from buttress import (
    Bulkhead,
    CircuitBreaker,
    ConfigError,
    FakeClock,
    Pipeline,
    RateLimiter,
    Registry,
    Retry,
    Timeout,
)
from buttress.integrations._http import (
    HostOptions,
    HostPolicies,
    drains,
    origin,
    server_error,
)


class Response:
    def __init__(self, status: int) -> None:
        self.status_code = status

    def raise_for_status(self) -> None:
        pass


def test_origin_is_scheme_host_and_port() -> None:
    assert origin("HTTPS", "API.Example.com", None) == "https://api.example.com:443"
    assert origin("http", "example.com", None) == "http://example.com:80"
    assert origin("http", "::1", 8080) == "http://[::1]:8080"


def test_the_breaker_counts_5xx_but_not_4xx_nor_501() -> None:
    assert server_error(Response(503))
    assert server_error(Response(500))
    assert not server_error(Response(501))
    assert not server_error(Response(429))
    assert not server_error(Response(404))
    assert not server_error("not a response")


def test_responses_a_retry_may_drop_are_drained() -> None:
    assert drains(503)
    assert drains(429)
    assert drains(408)
    assert not drains(200)
    assert not drains(404)


def test_default_pipeline_has_every_policy_named_by_origin() -> None:
    options = HostOptions(rate="10/second")
    host = HostPolicies(default=options).lookup("https", "api.example.com", None)
    assert host.origin == "https://api.example.com:443"
    kinds = [type(s) for s in host.pipeline]
    assert kinds == [Timeout, Retry, CircuitBreaker, RateLimiter, Bulkhead, Timeout]
    for policy in host.pipeline:
        assert policy.name.startswith("https://api.example.com:443 ")
    assert [type(s) for s in host.once] == kinds[:1] + kinds[2:]  # type: ignore[union-attr]
    # the same breaker in both: a request sent once still counts
    assert host.once[1] is host.pipeline[2]  # type: ignore[index]


def test_policies_left_out_when_their_option_is_none() -> None:
    options = HostOptions(
        attempt_timeout=None, total_timeout=None, max_attempts=1, max_concurrent=None
    )
    host = HostPolicies(default=options).lookup("http", "h", 80)
    assert [type(s) for s in host.pipeline] == [CircuitBreaker]


@pytest.mark.parametrize(
    ("options", "path"),
    [
        ({"attempt_timeout": 0}, "attempt_timeout"),
        ({"total_timeout": -1}, "total_timeout"),
        ({"max_attempts": 0}, "max_attempts"),
        ({"failure_ratio": 2}, "failure_ratio"),
        ({"min_calls": 30, "window": 20}, "min_calls"),
        ({"max_concurrent": 0}, "max_concurrent"),
        ({"rate": ""}, "rate"),
        ({"retry_non_idempotent": "yes"}, "retry_non_idempotent"),
    ],
)
def test_bad_options_name_the_option(options: dict[str, object], path: str) -> None:
    with pytest.raises(ConfigError) as error:
        HostOptions(**options)  # type: ignore[arg-type]
    assert error.value.path == path


def test_options_load_from_a_table() -> None:
    options = HostOptions.from_mapping({"max-attempts": 5, "attempt_timeout": 2})
    assert options.max_attempts == 5
    assert options.attempt_timeout == 2.0
    with pytest.raises(ConfigError, match="unknown option"):
        HostOptions.from_mapping({"retries": 5}, path="http")


def test_per_origin_state_is_bounded_lru() -> None:
    hosts = HostPolicies(max_hosts=3)
    first = hosts.lookup("https", "a.example", None)
    hosts.lookup("https", "b.example", None)
    hosts.lookup("https", "c.example", None)
    assert hosts.lookup("https", "a.example", 443) is first  # same origin, and now recent
    hosts.lookup("https", "d.example", None)
    assert len(hosts) == 3
    assert hosts.origins() == [
        "https://c.example:443",
        "https://a.example:443",
        "https://d.example:443",
    ]
    # b was dropped: it gets a fresh pipeline (and breaker) when it comes back
    assert "https://b.example:443" not in hosts.origins()


def test_configured_hosts_by_origin_by_name_and_by_pipeline() -> None:
    shared = Pipeline(Retry(2), CircuitBreaker())
    hosts = HostPolicies(
        {
            "https://api.example.com": shared,
            "example.org": HostOptions(max_attempts=5),
        }
    )
    assert hosts.lookup("https", "api.example.com", None).pipeline is shared
    assert hosts.lookup("http", "api.example.com", None).pipeline is not shared  # other origin
    org = hosts.for_url("http://EXAMPLE.org:8080/path?q=1")
    assert org.origin == "http://example.org:8080"
    retry = next(s for s in org.pipeline if isinstance(s, Retry))
    assert retry.max_attempts == 5


def test_hosts_from_toml_through_the_registry() -> None:
    registry = Registry.from_mapping(
        {"pipelines": {"payments": {"policies": [{"type": "retry", "max_attempts": 4}]}}}
    )
    hosts = HostPolicies({"https://pay.example.com:8443": "payments"}, registry=registry)
    host = hosts.lookup("https", "pay.example.com", 8443)
    assert host.pipeline is registry.pipeline("payments")
    assert host.once is None  # nothing but a retry: sent as is when not retried
    with pytest.raises(ConfigError, match="no policy or pipeline named 'nope'") as error:
        HostPolicies({"pay.example.com": "nope"}, registry=registry)
    assert error.value.path == "hosts['pay.example.com']"
    with pytest.raises(ConfigError, match="registry="):
        HostPolicies({"pay.example.com": "payments"})


@pytest.mark.parametrize(
    "key",
    ["https://h.example/path", "https://user@h.example", "ftp://h.example", "h.example:80", ""],
)
def test_bad_host_keys_are_refused(key: str) -> None:
    with pytest.raises(ConfigError):
        HostPolicies({key: HostOptions()})


def test_default_factory_is_called_per_origin() -> None:
    made: list[str] = []

    def factory(name: str) -> Pipeline:
        made.append(name)
        return Pipeline(CircuitBreaker(name=f"{name} breaker"))

    hosts = HostPolicies(default=factory)
    hosts.lookup("http", "a", 1)
    hosts.lookup("http", "a", 1)
    hosts.lookup("http", "b", 1)
    assert made == ["http://a:1", "http://b:1"]
    with pytest.raises(ConfigError, match="not a pipeline"):
        HostPolicies(default=lambda name: "nope").lookup("http", "c", 1)  # type: ignore[arg-type,return-value]
    with pytest.raises(ConfigError) as error:
        HostPolicies(default=3)  # type: ignore[arg-type]
    assert error.value.path == "default"


def test_what_is_retried() -> None:
    host = HostPolicies().lookup("http", "h", 80)
    for method in ("GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"):
        assert host.strategy(method, False, True) is host.pipeline
    for method in ("POST", "PATCH", "CONNECT", "PROPFIND"):
        assert host.strategy(method, False, True) is host.once
        assert host.strategy(method, True, True) is host.pipeline  # Idempotency-Key
    assert host.strategy("GET", False, False) is host.once  # a body sent only once
    opted = HostPolicies(retry_non_idempotent=True).lookup("http", "h", 80)
    assert opted.strategy("POST", False, True) is opted.pipeline


def test_the_fake_clock_reaches_every_policy() -> None:
    clock = FakeClock()
    host = HostPolicies(clock=clock).lookup("http", "h", 80)
    timeout = host.pipeline[0]
    assert isinstance(timeout, Timeout)
    assert timeout.clock is clock

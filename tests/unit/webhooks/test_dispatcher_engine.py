"""The dispatcher's options and its sans-I/O engine: schedule, status rules, health."""

from __future__ import annotations

from datetime import timedelta

import pytest

from buttress.errors import ConfigError
from buttress.webhooks.dispatcher import (
    DEFAULT_DELAYS,
    Claimed,
    Deferred,
    Endpoint,
    EndpointDisabled,
    Engine,
    Refused,
    Response,
    RetrySchedule,
    SQLiteDeliveryStore,
    store_from_url,
)
from buttress.webhooks.dispatcher._engine import STORE_STREAK_AFTER
from buttress.webhooks.signing import Secret

SECRET = Secret.generate().export()
NOW = 1_800_000_000.0


def endpoint(id: str = "a", **kw: object) -> Endpoint:
    return Endpoint(id, "https://example.com/hook", SECRET, **kw)  # type: ignore[arg-type]


def row(seq: int = 1, attempts: int = 0, endpoint_id: str = "a") -> Claimed:
    return Claimed(seq, f"msg_{seq}", endpoint_id, "invoice.paid", b"{}", attempts)


def answer(
    status: int | None, *, retry_after: float | None = None, error: str | None = None
) -> Response:
    return Response(NOW, 0.01, status, error, None, None, retry_after)


def engine(
    *endpoints: Endpoint,
    delays: tuple[float, ...] = (0, 5, 300),
    disable_after: float | None = None,
) -> Engine:
    return Engine(
        {e.id: e for e in endpoints or (endpoint(),)},
        RetrySchedule(delays, jitter=0.2),
        disable_after=disable_after,
        random=lambda: 0.5,  # the middle of the jitter: exactly the delay
    )


# -- options -----------------------------------------------------------------------


def test_default_schedule_is_the_documented_one() -> None:
    schedule = RetrySchedule()
    assert schedule.delays == DEFAULT_DELAYS == (0, 5, 300, 1800, 7200, 18000, 36000, 36000)
    assert schedule.max_attempts == 8


def test_schedule_waits_with_jitter_within_bounds() -> None:
    schedule = RetrySchedule([0, 100, timedelta(minutes=5)], jitter=0.1)
    assert schedule.delays == (0.0, 100.0, 300.0)
    assert schedule.wait(1, lambda: 0.0) == pytest.approx(90.0)
    assert schedule.wait(1, lambda: 0.999999) == pytest.approx(110.0, rel=1e-5)
    assert schedule.wait(2, lambda: 0.5) == pytest.approx(300.0)
    assert schedule.wait(3, lambda: 0.5) is None  # used up


@pytest.mark.parametrize(
    ("kwargs", "path"),
    [
        ({"delays": []}, "delays"),
        ({"delays": "5"}, "delays"),
        ({"delays": [0, -1]}, "delays[1]"),
        ({"delays": [0, float("nan")]}, "delays[1]"),
        ({"jitter": 1.0}, "jitter"),
        ({"jitter": -0.1}, "jitter"),
        ({"max_retry_after": 0}, "max_retry_after"),
    ],
)
def test_schedule_refuses_bad_options(kwargs: dict[str, object], path: str) -> None:
    with pytest.raises(ConfigError) as info:
        RetrySchedule(**kwargs)  # type: ignore[arg-type]
    assert info.value.path == path


@pytest.mark.parametrize(
    ("kwargs", "path"),
    [
        ({"id": "has space"}, "id"),
        ({"id": ""}, "id"),
        ({"url": "ftp://example.com/"}, "url"),
        ({"url": "https://user:pw@example.com/"}, "url"),
        ({"url": "https:///nohost"}, "url"),
        ({"url": "http://example.com:99999/"}, "url"),
        ({"event_types": []}, "event_types"),
        ({"event_types": ["a b"]}, "event_types"),
        ({"headers": {"webhook-id": "x"}}, "headers"),
        ({"headers": {"X-Ok": "bad\r\nvalue"}}, "headers"),
        ({"headers": {"bad name": "x"}}, "headers"),
        ({"rate_limit": 0}, "rate_limit"),
        ({"max_concurrency": 0}, "max_concurrency"),
        ({"timeout": -1}, "timeout"),
        ({"ordering": "fifo"}, "ordering"),
        ({"on_exhausted": 3}, "on_exhausted"),
    ],
)
def test_endpoint_refuses_bad_options(kwargs: dict[str, object], path: str) -> None:
    options: dict[str, object] = {"id": "a", "url": "https://example.com/", "secrets": SECRET}
    options.update(kwargs)
    with pytest.raises(ConfigError) as info:
        Endpoint(**options)  # type: ignore[arg-type]
    assert info.value.path == path


def test_endpoint_refuses_a_secret_without_its_prefix() -> None:
    with pytest.raises(ConfigError):
        Endpoint("a", "https://example.com/", SECRET.removeprefix("whsec_") + "!")


def test_endpoint_filters_with_wildcards() -> None:
    e = endpoint(event_types=["invoice.*", "user.created"])
    assert e.matches("invoice.paid")
    assert e.matches("invoice.line.added")
    assert e.matches("user.created")
    assert not e.matches("user.deleted")
    assert not e.matches("xinvoice.paid")
    assert endpoint().matches("anything.at.all")
    assert endpoint(event_types="a.b").event_types == ("a.b",)


def test_endpoint_order_keys() -> None:
    assert endpoint().order_key("k") is None
    assert endpoint(ordering="endpoint").order_key("k") == "a"
    assert endpoint(ordering="endpoint").order_key(None) == "a"
    assert endpoint(ordering="key").order_key("k") == "a\x1fk"
    assert endpoint(ordering="key").order_key(None) is None


# -- the engine ----------------------------------------------------------------------


def test_a_2xx_is_delivered_and_recorded() -> None:
    decision = engine().decide([(row(), answer(204))], NOW)
    assert decision.delivered == [(1, 204)]
    assert decision.attempts == [(1, 1, NOW, 204, 0.01, None, None, None)]
    assert not decision.retry
    assert not decision.dead


@pytest.mark.parametrize("status", [500, 502, 503, 408, 409, 425, 429, 301, None])
def test_transient_failures_are_retried_on_the_schedule(status: int | None) -> None:
    e = engine()
    first = e.decide([(row(attempts=0), answer(status, error="boom"))], NOW)
    assert first.retry == [(1, NOW + 5, "boom" if status is None else f"HTTP {status}", status)]
    second = e.decide([(row(attempts=1), answer(status, error="boom"))], NOW)
    assert second.retry[0][1] == NOW + 300
    third = e.decide([(row(attempts=2), answer(status, error="boom"))], NOW)
    assert third.retry == []
    assert third.dead[0][:2] == (1, 1)
    assert third.dead[0][2].startswith("3 attempts failed; last: ")


@pytest.mark.parametrize("status", [400, 401, 403, 404, 413, 422])
def test_permanent_client_errors_are_not_retried(status: int) -> None:
    decision = engine().decide([(row(), answer(status))], NOW)
    assert decision.dead == [(1, 1, f"HTTP {status} (not retried)", status, 0)]
    assert not decision.retry


def test_a_permanent_error_is_not_retried() -> None:
    refused = Response(NOW, 0.0, None, "UnsafeAddress: 127.0.0.1", permanent=True)
    decision = engine().decide([(row(), refused)], NOW)
    assert decision.dead == [(1, 1, "UnsafeAddress: 127.0.0.1 (not retried)", None, 0)]


def test_retry_after_is_honoured_and_capped() -> None:
    e = Engine(
        {"a": endpoint()},
        RetrySchedule([0, 5, 300], jitter=0.0, max_retry_after=600),
        disable_after=None,
    )
    longer = e.decide([(row(), answer(429, retry_after=120))], NOW)
    assert longer.retry[0][1] == NOW + 120
    shorter = e.decide([(row(), answer(503, retry_after=1))], NOW)
    assert shorter.retry[0][1] == NOW + 5  # never sooner than the schedule
    capped = e.decide([(row(), answer(429, retry_after=10**9))], NOW)
    assert capped.retry[0][1] == NOW + 600


def test_410_dead_letters_and_disables_the_endpoint_once() -> None:
    e = engine()
    decision = e.decide([(row(1), answer(410)), (row(2), answer(410))], NOW)
    assert [d[0] for d in decision.dead] == [1, 2]
    assert decision.disabled == [EndpointDisabled("a", "410 Gone", NOW)]
    assert e.disabled == {"a": "410 Gone"}


def test_untried_deliveries_are_released_or_refused() -> None:
    decision = engine().decide(
        [(row(1), Deferred(NOW + 30, "circuit open")), (row(2, 3), Refused("disabled"))], NOW
    )
    assert decision.released == [(1, NOW + 30)]
    assert decision.dead == [(2, 0, "disabled", None, 0)]  # no attempt counted
    assert decision.attempts == []


def test_dead_letters_of_an_endpoint_with_a_hook_are_flagged() -> None:
    hooked = endpoint("h", on_exhausted=lambda item: None)
    e = engine(hooked, endpoint("plain"))
    decision = e.decide([(row(1, 2, "h"), answer(500)), (row(2, 2, "plain"), answer(500))], NOW)
    assert [(d[0], d[4]) for d in decision.dead] == [(1, 1), (2, 0)]
    (item,) = decision.exhausted
    assert (item.delivery_id, item.endpoint_id, item.message_id, item.attempts) == (
        "1", "h", "msg_1", 3,
    )  # fmt: skip


def test_an_endpoint_failing_for_the_period_is_disabled() -> None:
    e = engine(disable_after=3600)
    first = e.decide([(row(1), answer(500))], NOW)
    assert first.failing == []  # not stored yet: a streak is stored once it lasts
    stored = e.decide([(row(2), answer(500))], NOW + STORE_STREAK_AFTER)
    assert stored.failing == [("a", NOW)]  # with its start
    later = e.decide([(row(2), answer(500))], NOW + 1800)
    assert later.failing == []
    assert later.disabled == []
    last = e.decide([(row(3), answer(None, error="reset"))], NOW + 3600)
    assert [d.endpoint_id for d in last.disabled] == ["a"]
    assert "failing continuously" in last.disabled[0].reason


def test_a_success_resets_the_failing_period() -> None:
    e = engine(disable_after=3600)
    e.decide([(row(1), answer(500))], NOW)
    e.decide([(row(1), answer(500))], NOW + 20)
    ok = e.decide([(row(2), answer(200))], NOW + 1000)
    assert ok.recovered == ["a"]
    again = e.decide([(row(3), answer(500))], NOW + 3700)
    assert again.disabled == []
    assert e.decide([(row(3), answer(500))], NOW + 3720).failing == [("a", NOW + 3700)]


def test_a_short_streak_is_never_written() -> None:
    """One failure in ten costs no health writes: the streak never lasts."""
    e = engine(disable_after=3600)
    for n in range(101):  # the last one succeeds
        outcome = answer(500) if n % 10 == 9 else answer(200)
        decision = e.decide([(row(n), outcome)], NOW + n * 0.01)
        assert (decision.failing, decision.recovered) == ([], [])
    assert e.failing_since == {}


def test_a_streak_read_from_storage_is_cleared_by_a_success() -> None:
    e = engine(disable_after=3600)
    e.failing_since["a"] = NOW - 100
    e.stored.add("a")
    assert e.decide([(row(1), answer(200))], NOW).recovered == ["a"]
    assert e.stored == set()


def test_no_disabling_without_a_period() -> None:
    e = engine(disable_after=None)
    e.decide([(row(1), answer(500))], NOW)
    assert e.decide([(row(2), answer(500))], NOW + 10**7).disabled == []


def test_stores_from_urls() -> None:
    sqlite = store_from_url("sqlite:///hooks.db", "mine")
    assert isinstance(sqlite, SQLiteDeliveryStore)
    assert (sqlite.database, sqlite.table.name) == ("hooks.db", "mine")
    assert store_from_url("sqlite:////abs/hooks.db").database == "/abs/hooks.db"
    pg = store_from_url("postgresql://u@127.0.0.1/db")  # nothing connects yet
    assert type(pg).__name__ == "PostgresDeliveryStore"
    for bad in ("sqlite:///", "sqlite:///:memory:", "redis://x", "hooks.db"):
        with pytest.raises(ConfigError) as info:
            store_from_url(bad)
        assert info.value.path == "url"

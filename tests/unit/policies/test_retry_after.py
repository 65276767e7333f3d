"""Retry-After, read from what the call returned or raised (issue 6, item 6).

The delay hook sees the outcome: by default (``retry_after=True``) the ``Retry-After``
of a returned httpx/aiohttp/requests response or of an error that carries one,
in seconds or as an HTTP date measured from ``clock.time()``; ``False`` ignores it;
a function of the outcome is the user's own reading. A wait asked for beyond
``max_delay`` stops at once with ``RetryExhausted(reason="retry_after")``.
"""

from __future__ import annotations

import email.utils
from typing import Any

import httpx
import pytest
from multidict import CIMultiDict

from buttress import Outcome, Retry, RetryExhausted, RetryGaveUp
from buttress.clock import FakeClock
from buttress.events import Event

from tests.unit.policies.retry_helpers import MODES, Script, run


@pytest.fixture(params=MODES)
def mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def httpx_response(status: int, retry_after: str | None = None) -> httpx.Response:
    headers = {} if retry_after is None else {"Retry-After": retry_after}
    return httpx.Response(
        status, headers=headers, request=httpx.Request("GET", "https://api.test/")
    )


class AiohttpLike:
    """Shaped like ``aiohttp.ClientResponse``: ``status``, case-insensitive headers."""

    def __init__(self, status: int, headers: dict[str, str]) -> None:
        self.status = status
        self.headers = CIMultiDict(headers)

    def raise_for_status(self) -> None:
        if self.status >= 400:
            raise RuntimeError(self.status)


def requests_response(status: int, retry_after: str) -> Any:
    requests = pytest.importorskip("requests")
    answer = requests.Response()
    answer.status_code = status
    answer.headers["Retry-After"] = retry_after
    return answer


# ------------------------------------------------------------------- from results


async def test_from_a_returned_httpx_response(mode: str, clock: FakeClock) -> None:
    script = Script(httpx_response(503, "4"), httpx_response(200))
    assert (await run(Retry(jitter="none", clock=clock), script, mode)).status_code == 200
    assert clock.sleeps == [4.0]


async def test_from_a_429_asking_for_a_fraction_of_a_second(mode: str, clock: FakeClock) -> None:
    script = Script(httpx_response(429, "0.5"), httpx_response(200))
    await run(Retry(delay=0.1, jitter="none", clock=clock), script, mode)
    assert clock.sleeps == [0.5]


async def test_a_shorter_retry_after_does_not_shorten_the_backoff(
    mode: str, clock: FakeClock
) -> None:
    script = Script(httpx_response(503, "1"), httpx_response(200))
    await run(Retry(delay=3.0, jitter="none", clock=clock), script, mode)
    assert clock.sleeps == [3.0]


async def test_as_an_http_date_measured_on_the_clock(mode: str) -> None:
    clock = FakeClock(wall=1_800_000_000.0)
    when = email.utils.formatdate(clock.time() + 12, usegmt=True)
    script = Script(httpx_response(503, when), httpx_response(200))
    await run(Retry(jitter="none", clock=clock), script, mode)
    assert clock.sleeps == [12.0]


async def test_from_an_aiohttp_shaped_response(mode: str, clock: FakeClock) -> None:
    script = Script(AiohttpLike(503, {"retry-after": "6"}), AiohttpLike(200, {}))
    assert (await run(Retry(jitter="none", clock=clock), script, mode)).status == 200
    assert clock.sleeps == [6.0]


async def test_from_a_requests_response(mode: str, clock: FakeClock) -> None:
    script = Script(requests_response(503, "2"), "done")
    assert await run(Retry(jitter="none", clock=clock), script, mode) == "done"
    assert clock.sleeps == [2.0]


async def test_with_on_result(mode: str, clock: FakeClock) -> None:
    """The issue's example: a predicate that rejects 503s; the header is honoured."""
    policy = Retry(jitter="none", clock=clock, on_result=lambda r: r.status_code == 503)
    script = Script(httpx_response(503, "4"), httpx_response(200))
    assert (await run(policy, script, mode)).status_code == 200
    assert clock.sleeps == [4.0]


async def test_unparseable_or_missing_is_the_schedule(mode: str, clock: FakeClock) -> None:
    script = Script(httpx_response(503, "soon"), httpx_response(503), httpx_response(200))
    await run(Retry(jitter="none", clock=clock), script, mode)
    assert clock.sleeps == [0.1, 0.2]


# -------------------------------------------------------------------- from errors


async def test_from_an_error_carrying_a_response(mode: str, clock: FakeClock) -> None:
    answer = httpx_response(429, "3")
    error = httpx.HTTPStatusError("slow down", request=answer.request, response=answer)
    script = Script(error)
    assert await run(Retry(jitter="none", clock=clock), script, mode) == "ok"
    assert clock.sleeps == [3.0]


# ------------------------------------------------------------------ ignored, or own


async def test_false_ignores_it(mode: str, clock: FakeClock) -> None:
    answer = httpx_response(429, "3")
    error = httpx.HTTPStatusError("slow down", request=answer.request, response=answer)
    script = Script(httpx_response(503, "20"), error, "done")
    policy = Retry(jitter="none", retry_after=False, clock=clock)
    assert await run(policy, script, mode) == "done"
    assert clock.sleeps == [0.1, 0.2]


async def test_false_ignores_one_beyond_max_delay(mode: str, clock: FakeClock) -> None:
    script = Script(httpx_response(503, "3600"), "done")
    policy = Retry(jitter="none", retry_after=False, max_delay=1.0, clock=clock)
    assert await run(policy, script, mode) == "done"


async def test_a_function_of_the_outcome(mode: str, clock: FakeClock) -> None:
    seen: list[Outcome[Any]] = []

    def read(outcome: Outcome[Any]) -> float | None:
        seen.append(outcome)
        if outcome.error is not None:
            return 7.0
        return None if outcome.result == "later" else 2.0

    error = ConnectionError()
    script = Script(error, "stale", "later", "done")
    policy = Retry(6, jitter="none", clock=clock, retry_after=read, on_result=lambda r: r != "done")
    assert await run(policy, script, mode) == "done"
    # 7 for the error; 2 for "stale"; the schedule's 0.4 for "later"
    assert clock.sleeps == [7.0, 2.0, 0.4]
    assert [(o.error, o.result) for o in seen] == [(error, None), (None, "stale"), (None, "later")]
    assert seen[0].raised
    assert not seen[1].raised


@pytest.mark.parametrize(("answer", "waited"), [(-5.0, 0.1), (float("nan"), 0.1), ("3", 0.1)])
async def test_a_function_answering_nonsense(
    mode: str, answer: object, waited: float, clock: FakeClock
) -> None:
    policy = Retry(jitter="none", clock=clock, retry_after=lambda outcome: answer)  # type: ignore[arg-type, return-value]
    assert await run(policy, Script(ConnectionError()), mode) == "ok"
    assert clock.sleeps == [waited]


async def test_a_function_whose_answer_is_beyond_max_delay(mode: str, clock: FakeClock) -> None:
    policy = Retry(max_delay=5.0, clock=clock, retry_after=lambda outcome: float("inf"))
    with pytest.raises(RetryExhausted) as info:
        await run(policy, Script(ConnectionError()), mode)
    assert info.value.reason == "retry_after"


# -------------------------------------------------------------- beyond max_delay


async def test_a_result_asking_too_much_stops_at_once(mode: str, clock: FakeClock) -> None:
    answer = httpx_response(503, "60")
    seen: list[Event] = []
    policy = Retry(5, max_delay=30.0, clock=clock, name="api")
    policy.subscribe(seen.append)
    script = Script(answer)
    with pytest.raises(RetryExhausted) as info:
        await run(policy, script, mode)
    exhausted = info.value
    assert exhausted.reason == "retry_after"
    assert exhausted.attempts == 1
    assert exhausted.last_result is answer
    assert exhausted.last_error is None
    assert exhausted.detail == "Retry-After 60 s exceeds max_delay 30 s"
    assert (
        str(exhausted)
        == "'api' gave up after 1 attempt(s): Retry-After 60 s exceeds max_delay 30 s"
    )
    assert script.calls == 1
    assert clock.sleeps == []
    assert [(type(e), e.reason) for e in seen if isinstance(e, RetryGaveUp)] == [
        (RetryGaveUp, "retry_after")
    ]


async def test_an_error_asking_too_much_stops_at_once(mode: str, clock: FakeClock) -> None:
    answer = httpx_response(503, "90")
    error = httpx.HTTPStatusError("busy", request=answer.request, response=answer)
    script = Script(ConnectionError(), error)
    with pytest.raises(RetryExhausted) as info:
        await run(Retry(5, max_delay=30.0, jitter="none", clock=clock), script, mode)
    assert info.value.reason == "retry_after"
    assert info.value.attempts == 2
    assert info.value.last_error is error
    assert info.value.__cause__ is error
    assert "Retry-After 90 s exceeds max_delay 30 s" in str(info.value)
    assert clock.sleeps == [0.1]


async def test_reraise_returns_the_response_that_asked_too_much(
    mode: str, clock: FakeClock
) -> None:
    answer = httpx_response(503, "3600")
    policy = Retry(5, reraise=True, clock=clock)
    assert await run(policy, Script(answer), mode) is answer
    assert clock.sleeps == []


async def test_exactly_max_delay_is_honoured(mode: str, clock: FakeClock) -> None:
    policy = Retry(5, max_delay=30.0, clock=clock)
    script = Script(httpx_response(503, "30"), "done")
    assert await run(policy, script, mode) == "done"
    assert clock.sleeps == [30.0]


def test_the_wall_clock_is_not_read_when_ignored() -> None:
    class Counting(FakeClock):
        reads = 0

        def time(self) -> float:
            Counting.reads += 1
            return super().time()

    clock = Counting()
    Retry(retry_after=False, clock=clock).call(Script(httpx_response(503, "1")).sync)
    Retry(retry_after=lambda outcome: 1.0, clock=clock).call(Script(ConnectionError()).sync)
    assert Counting.reads == 0
    Retry(clock=clock).call(Script(httpx_response(503, "1")).sync)
    assert Counting.reads == 1

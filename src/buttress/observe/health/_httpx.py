"""The HTTP check: ``GET`` a URL and expect a status (httpx, the ``httpx`` extra)."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from datetime import timedelta

import httpx

from buttress.errors import ConfigError

from ._check import Check, check_url, ready_made
from ._status import HealthStatus, Observation

__all__ = ["http_check"]


def http_check(
    url: str,
    *,
    name: str = "http",
    expect: int | Collection[int] = range(200, 400),
    method: str = "GET",
    headers: Mapping[str, str] | None = None,
    timeout: float | timedelta = 5.0,
    critical: bool = True,
    failure_threshold: int = 1,
    success_threshold: int = 1,
) -> Check:
    """A check that ``url`` answers ``method`` (default ``GET``) with an expected status.

    ``expect``: one status or a collection of them (default: any 2xx or 3xx;
    redirects are not followed). Another status fails the run, its output naming
    the status. The response time is reported as the observed value. The other
    options are :class:`~buttress.observe.health.Check`'s.
    """
    url = check_url(url, ("http", "https"))
    expected: Collection[int] = (expect,) if isinstance(expect, int) else expect
    if (
        isinstance(expect, bool)
        or not expected
        or not all(
            isinstance(code, int) and not isinstance(code, bool) and 100 <= code <= 599
            for code in expected
        )
    ):
        raise ConfigError(
            f"must be an HTTP status or a collection of them, got {expect!r}", path="expect"
        )
    if not isinstance(method, str) or not method.isalpha():
        raise ConfigError(f"must be an HTTP method such as 'GET', got {method!r}", path="method")
    verb = method.upper()
    sent = dict(headers or {})
    check: Check

    async def request() -> Observation | None:
        async with httpx.AsyncClient(timeout=check.timeout, follow_redirects=False) as client:
            response = await client.request(verb, url, headers=sent)
        if response.status_code in expected:
            return None
        return Observation(
            status=HealthStatus.FAIL,
            output=f"{verb} answered {response.status_code}, expected {_listed(expected)}",
        )

    check = ready_made(
        name,
        request,
        url,
        component_type="http",
        timeout=timeout,
        critical=critical,
        failure_threshold=failure_threshold,
        success_threshold=success_threshold,
    )
    return check


def _listed(expected: Collection[int]) -> str:
    if isinstance(expected, range) and expected.step == 1 and len(expected) > 2:
        return f"{expected.start}-{expected.stop - 1}"
    return ", ".join(str(code) for code in sorted(expected))

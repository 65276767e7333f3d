"""RequestTimeoutMiddleware: a time limit on each HTTP request, answered with a 504.

The limit is a :class:`~buttress.Timeout` block around the application, so its
deadline is the request's *one time budget*: every wait buttress makes inside the
request (a retry's backoff, a bulkhead's queue, a limiter's wait) is capped by
what is left, and :func:`buttress.policies.timeout.remaining` tells your own code.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from buttress._validate import check_seconds
from buttress.clock import MONOTONIC, Clock
from buttress.errors import ConfigError, TimeoutExceeded
from buttress.integrations.asgi._paths import PathPattern
from buttress.integrations.asgi._problems import Problem, send_problem_response
from buttress.integrations.asgi._types import ASGIApp, Message, Receive, Scope, Send, whole_seconds
from buttress.policies.timeout import Timeout

__all__ = ["RequestTimeoutMiddleware"]


class RequestTimeoutMiddleware:
    """Pure ASGI middleware that limits how long each HTTP request may take.

    - ``timeout``: seconds for every request (``None``: no limit but the ``paths``).
    - ``paths``: per-path limits, ``{pattern: seconds or None}`` or ``(pattern,
      seconds)`` pairs; the first pattern that matches the request's path wins
      (patterns as in :class:`Rule`: ``/reports/**``, ``/items/{id}``). ``None``
      exempts the path — a stream, a long poll.
    - ``name``: the name of the :class:`~buttress.Timeout` policies (``name`` for
      the default, ``name:pattern`` for each path), in events and metrics.
    - ``clock``: a :class:`~buttress.clock.FakeClock` in tests.

    The limit covers the whole exchange, streaming the body included. When it
    passes before the response started, the application is cancelled and the
    client gets a 504 problem document. When the response had started, no second
    one can be sent: the application is cancelled and the
    :class:`~buttress.errors.TimeoutExceeded` propagates, so the server closes the
    connection and the client sees a cut-off response. WebSockets, lifespan and
    other scopes pass through untouched.

    Under :func:`buttress.testing.set_testing` the limits are off, as every
    ``Timeout`` is.
    """

    __slots__ = ("_default", "_paths", "app")

    def __init__(
        self,
        app: ASGIApp,
        timeout: float | None = 30.0,
        *,
        paths: Mapping[str, float | None] | Iterable[tuple[str, float | None]] = (),
        name: str = "request_timeout",
        clock: Clock = MONOTONIC,
    ) -> None:
        if not isinstance(name, str) or not name:
            raise ConfigError(f"must be a non-empty string, got {name!r}", path="name")
        self._default = None if timeout is None else self._policy(timeout, name, clock, "timeout")
        pairs = paths.items() if isinstance(paths, Mapping) else paths
        self._paths: list[tuple[PathPattern, Timeout | None]] = []
        for pattern, seconds in pairs:
            where = f"paths[{pattern!r}]"
            compiled = PathPattern(pattern, path=where)
            policy = (
                None
                if seconds is None
                else self._policy(seconds, f"{name}:{pattern}", clock, where)
            )
            self._paths.append((compiled, policy))
        self.app = app

    @staticmethod
    def _policy(seconds: object, name: str, clock: Clock, where: str) -> Timeout:
        value = check_seconds(seconds, where, positive=True)
        return Timeout(value, name=name, clock=clock)

    def timeout_for(self, path: str) -> Timeout | None:
        """The :class:`~buttress.Timeout` that bounds a request to ``path``, if any."""
        for pattern, policy in self._paths:
            if pattern.match(path):
                return policy
        return self._default

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        policy = self.timeout_for(scope.get("path", "")) if scope["type"] == "http" else None
        if policy is None:
            await self.app(scope, receive, send)
            return
        started = False

        async def watch(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            async with policy:
                await self.app(scope, receive, watch)
        except TimeoutExceeded as exc:
            # Only this request's limit is ours to answer; another Timeout's error
            # is the application's (a ProblemMiddleware inside maps it).
            if started or exc.name != policy.name:
                raise
            seconds = whole_seconds(policy.seconds)
            detail = f"The request did not complete within {seconds} s."
            await send_problem_response(send, scope, Problem(504, detail=detail))

    def __repr__(self) -> str:
        seconds = None if self._default is None else self._default.seconds
        paths = {pattern.pattern: None if p is None else p.seconds for pattern, p in self._paths}
        return f"RequestTimeoutMiddleware(app={self.app!r}, timeout={seconds!r}, paths={paths!r})"

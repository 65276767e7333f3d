"""RateLimitMiddleware: rate limits in front of any ASGI 3 application, no framework.

Pure ASGI: it imports no Starlette, never runs the application in another task (so
context variables flow as usual), keeps all per-request state in local variables,
and hands lifespan and any other scope type to the application untouched.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence

from buttress.errors import ConfigError
from buttress.integrations.asgi._identity import KeyFunc, client_ip, is_async_key
from buttress.integrations.asgi._rules import Decided, Rule, RuleSet, rate_limit_headers, refusal
from buttress.integrations.asgi._types import (
    ASGIApp,
    Message,
    Receive,
    Scope,
    Send,
    problem,
    send_problem,
)

__all__ = ["RateLimitMiddleware"]


class RateLimitMiddleware:
    """Pure ASGI middleware that applies rate-limit :class:`Rule` s to HTTP requests.

    - ``rules``: every rule that matches the request and whose key function
      returns a key is decided, in order; the request passes only if all allow
      it. The first refusal ends the walk: later rules are not charged (so put the
      per-IP rule before per-key ones — see ``docs/asgi.md``).
    - ``default``: a rule without ``path`` or ``methods``, applied only to
      requests no rule applied to.
    - ``exempt``: ``exempt(scope) -> bool``; exempt requests and WebSockets pass
      without limit or headers (health checks, internal callers).
    - ``headers``: add the rate-limit headers to allowed responses (429 responses
      always carry them).
    - ``max_websockets``: at most this many open WebSocket connections per
      ``websocket_key`` (default :func:`client_ip`), counted in this process. One
      over the cap is refused before it is accepted.
    - ``fail_open``: when a limiter's store fails (:class:`~buttress.stores.StoreError`),
      let the request through as far as that rule goes, logging a WARNING when
      the outage starts and an INFO when it ends; ``False`` lets the error
      propagate.

    Lifespan and every other non-HTTP, non-WebSocket scope go straight to ``app``.
    """

    __slots__ = (
        "_exempt",
        "_headers",
        "_rules",
        "_ws_key",
        "_ws_limit",
        "_ws_lock",
        "_ws_open",
        "app",
    )

    def __init__(
        self,
        app: ASGIApp,
        rules: Sequence[Rule] = (),
        *,
        default: Rule | None = None,
        exempt: Callable[[Scope], bool] | None = None,
        headers: bool = True,
        max_websockets: int | None = None,
        websocket_key: KeyFunc | None = None,
        fail_open: bool = True,
    ) -> None:
        if isinstance(rules, Rule):
            rules = (rules,)
        checked = list(rules)
        for index, rule in enumerate(checked):
            if not isinstance(rule, Rule):
                raise ConfigError(
                    f"must be a Rule, got {type(rule).__name__}", path=f"rules[{index}]"
                )
        if default is not None:
            if not isinstance(default, Rule):
                raise ConfigError(f"must be a Rule, got {type(default).__name__}", path="default")
            if default.path is not None or default.methods is not None:
                raise ConfigError(
                    "the default rule applies to every request: give it no path or methods",
                    path="default",
                )
        if exempt is not None and not callable(exempt):
            raise ConfigError(f"must be callable, got {type(exempt).__name__}", path="exempt")
        if max_websockets is not None and (
            isinstance(max_websockets, bool)
            or not isinstance(max_websockets, int)
            or max_websockets < 1
        ):
            raise ConfigError(
                f"must be an int >= 1 or None, got {max_websockets!r}", path="max_websockets"
            )
        if websocket_key is None:
            websocket_key = client_ip()
        elif not callable(websocket_key) or is_async_key(websocket_key):
            raise ConfigError(
                f"must be a synchronous key function, got {websocket_key!r}", path="websocket_key"
            )
        if not isinstance(fail_open, bool):
            raise ConfigError(f"must be a bool, got {fail_open!r}", path="fail_open")
        self.app = app
        self._rules = RuleSet(checked, default, fail_open=fail_open) if checked or default else None
        self._exempt = exempt
        self._headers = headers
        self._ws_limit = max_websockets
        self._ws_key = websocket_key
        # The one piece of shared state: open WebSockets per key. Guarded by a lock
        # because a process may serve several event loops (threads, test clients).
        self._ws_open: dict[str, int] = {}
        self._ws_lock = threading.Lock()

    @property
    def fail_open(self) -> bool:
        """Whether requests pass when a limiter's store fails (see the class docs)."""
        return self._rules is None or self._rules.fail_open

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http" and self._rules is not None:
            await self._http(self._rules, scope, receive, send)
        elif kind == "websocket" and self._ws_limit is not None:
            await self._websocket(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    # --------------------------------------------------------------------------- HTTP

    async def _http(self, rules: RuleSet, scope: Scope, receive: Receive, send: Send) -> None:
        exempt = self._exempt
        if exempt is not None and exempt(scope):
            await self.app(scope, receive, send)
            return
        decided = await rules.adecide(scope)
        if not decided.results:
            await self.app(scope, receive, send)
            return
        if not decided.allowed:
            await self._refuse(scope, send, decided)
            return
        if not self._headers:
            await self.app(scope, receive, send)
            return
        extra = rate_limit_headers(decided.results)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                # A copy: the application may reuse its message.
                message = dict(message)
                message["headers"] = [*message.get("headers", ()), *extra]
            await send(message)

        await self.app(scope, receive, send_with_headers)

    @staticmethod
    async def _refuse(scope: Scope, send: Send, decided: Decided) -> None:
        body, headers = refusal(scope.get("path", ""), decided)
        await send_problem(send, 429, body, headers)

    # ---------------------------------------------------------------------- WebSocket

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        exempt = self._exempt
        key = None if exempt is not None and exempt(scope) else self._ws_key(scope)
        if key is None:
            await self.app(scope, receive, send)
            return
        limit = self._ws_limit
        with self._ws_lock:
            count = self._ws_open.get(key, 0)
            admitted = limit is None or count < limit
            if admitted:
                self._ws_open[key] = count + 1
        if not admitted:
            await self._refuse_websocket(scope, receive, send)
            return
        try:
            await self.app(scope, receive, send)
        finally:
            # However the connection ended — closed, dropped, failed, cancelled.
            with self._ws_lock:
                count = self._ws_open[key] - 1
                if count:
                    self._ws_open[key] = count
                else:
                    del self._ws_open[key]

    @staticmethod
    async def _refuse_websocket(scope: Scope, receive: Receive, send: Send) -> None:
        # The server expects the connect event to be answered, accept or refusal.
        message = await receive()
        if message["type"] != "websocket.connect":
            return
        if "websocket.http.response" in (scope.get("extensions") or {}):
            # The denial-response extension: a real 429 instead of the bare 403.
            body = problem(
                429,
                "Too Many Requests",
                "Too many open WebSocket connections; close one and try again.",
                instance=scope.get("path", ""),
            )
            await send_problem(
                send,
                429,
                body,
                start="websocket.http.response.start",
                body_type="websocket.http.response.body",
            )
            return
        # 1008: policy violation. Before accept, servers answer the handshake with 403.
        await send({"type": "websocket.close", "code": 1008, "reason": "too many connections"})

    def open_websockets(self, key: str) -> int:
        """How many WebSocket connections are open under ``key`` now (for tests and metrics)."""
        with self._ws_lock:
            return self._ws_open.get(key, 0)

    def __repr__(self) -> str:
        rules: list[Rule] = []
        if self._rules is not None:
            rules = list(self._rules.rules)
            if self._rules.default is not None:
                rules.append(self._rules.default)
        return (
            f"RateLimitMiddleware(app={self.app!r}, rules={rules!r}, "
            f"max_websockets={self._ws_limit!r})"
        )

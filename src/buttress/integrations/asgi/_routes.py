"""RouteLimiter: per-route rate limits for Starlette and FastAPI endpoints.

``@routes.limit("5/minute")`` on an endpoint, sync or async. The one module of the
package that imports Starlette (the ``asgi`` extra): it needs the request and
response classes to find the request among the endpoint's arguments and to answer
429. The decisions, headers and problem documents are the middleware's own
(:mod:`._rules`), so a route limit and a middleware rule answer alike.
"""

from __future__ import annotations

import functools
import inspect
import typing
from collections.abc import Callable
from typing import Any, TypeVar

from starlette.requests import HTTPConnection
from starlette.responses import Response
from starlette.websockets import WebSocket

from buttress.clock import MONOTONIC, Clock
from buttress.errors import ConfigError
from buttress.integrations.asgi._identity import AsyncKeyFunc, KeyFunc, client_ip
from buttress.integrations.asgi._rules import (
    Decided,
    Rule,
    RuleSet,
    rate_limit_headers,
    refusal,
)
from buttress.integrations.asgi._types import Scope
from buttress.ratelimit import Algorithm, RateLimiter
from buttress.stores import Store, store_from_url

__all__ = ["RouteLimiter"]

F = TypeVar("F", bound=Callable[..., Any])

_RULES = "__buttress_route_rules__"


class RouteLimiter:
    """Rate limits per endpoint, as a decorator: ``@routes.limit("5/minute")``.

    One per application, shared by its routes::

        routes = RouteLimiter(store="redis://localhost:6379/0")

        @app.post("/login")
        @routes.limit("5/minute", name="login")
        async def login(request: Request, form: LoginForm) -> Token: ...

    - ``key``: the default key function of every limit (default :func:`client_ip`).
    - ``store``: a :class:`~buttress.stores.Store` or URL that every limit keeps its
      state in (built once, shared).
    - ``headers``: report the standing on allowed responses — on the response the
      endpoint returns, or on the ``Response`` parameter FastAPI hands it. 429s
      always carry the headers.
    - ``fail_open``: when the store fails, let requests through (logged once per
      outage); ``False`` lets :class:`~buttress.stores.StoreError` propagate.
    - ``clock``: the clock of limiters built here (a fake one in tests).

    See :meth:`limit` for one route's limits.
    """

    __slots__ = ("clock", "fail_open", "headers", "key", "store")

    def __init__(
        self,
        *,
        key: KeyFunc | AsyncKeyFunc | None = None,
        store: Store | str = "memory://",
        headers: bool = True,
        fail_open: bool = True,
        clock: Clock = MONOTONIC,
    ) -> None:
        if key is None:
            key = client_ip()
        elif not callable(key):
            raise ConfigError(f"must be a key function, got {key!r}", path="key")
        if isinstance(store, str):
            store = store_from_url(store, clock=clock)
        elif not isinstance(store, Store):
            raise ConfigError(
                f"must be a Store or a URL such as 'memory://', got {type(store).__name__}",
                path="store",
            )
        for option, value in (("headers", headers), ("fail_open", fail_open)):
            if not isinstance(value, bool):
                raise ConfigError(f"must be a bool, got {value!r}", path=option)
        self.key = key
        self.store = store
        self.headers = headers
        self.fail_open = fail_open
        self.clock = clock

    def limit(
        self,
        *limits: str | Algorithm | RateLimiter,
        name: str | None = None,
        key: KeyFunc | AsyncKeyFunc | None = None,
        cost: int = 1,
        methods: str | typing.Iterable[str] | None = None,
        policies: typing.Sequence[str] | None = None,
    ) -> Callable[[F], F]:
        """A decorator limiting an endpoint: ``@routes.limit("5/minute; 100/day")``.

        ``limits`` are rate strings or algorithms, decided together for each key
        (see :class:`~buttress.ratelimit.RateLimiter`), or one ready
        ``RateLimiter`` (to share one budget between several routes). ``name``
        names the limiter, and so its keys in the store and its ``RateLimit``
        policies; by default it is the endpoint's qualified name
        (``"app.api.login"``) — give one if the function may be renamed or moved.
        ``key``, ``cost``, ``methods`` and ``policies`` are as for a
        :class:`~buttress.integrations.asgi.Rule`.

        The endpoint must take the request: a parameter annotated ``Request``
        (any name — FastAPI injects it) or named ``request``; otherwise decorating
        raises :class:`~buttress.errors.ConfigError`. Its signature is kept as is
        for FastAPI to read. Stacked ``limit`` decorators on one endpoint act as
        one: every limit applies, in order from the top.
        """
        if len(limits) == 1 and isinstance(limits[0], RateLimiter):
            if name is not None:
                raise ConfigError("a RateLimiter was given: it has a name of its own", path="name")
            ready: RateLimiter | None = limits[0]
        elif not limits:
            raise ConfigError("give at least one limit, e.g. '5/minute'", path="limits")
        elif any(isinstance(limit, RateLimiter) for limit in limits):
            raise ConfigError(
                "give rate strings and algorithms, or one RateLimiter alone", path="limits"
            )
        else:
            ready = None
        if name is not None and (not isinstance(name, str) or not name.strip()):
            raise ConfigError(f"must be a non-empty string, got {name!r}", path="name")

        def decorate(endpoint: F) -> F:
            limiter = ready
            if limiter is None:
                limiter = RateLimiter(
                    *typing.cast("tuple[str | Algorithm, ...]", limits),
                    store=self.store,
                    name=name if name is not None else _qualified_name(endpoint),
                    clock=self.clock,
                )
            rule = Rule(
                limiter,
                key=key if key is not None else self.key,
                cost=cost,
                methods=methods,
                policies=policies,
            )
            return self._wrap(endpoint, rule)

        return decorate

    def _wrap(self, endpoint: F, rule: Rule) -> F:
        below: tuple[Rule, ...] = getattr(endpoint, _RULES, ())
        if below:
            # A limit stacked on another: one wrapper over the endpoint with both.
            endpoint = endpoint.__wrapped__  # type: ignore[attr-defined]
        rules = RuleSet((rule, *below), fail_open=self.fail_open)
        guard = _Guard(endpoint, self.headers)
        is_async = inspect.iscoroutinefunction(endpoint)
        if not is_async and rules.has_async_keys:
            raise ConfigError(
                f"{_qualified_name(endpoint)} is synchronous but a key function is async "
                "(api_key(validate=...) with an async validator?): make the endpoint "
                "'async def', or the key function synchronous",
                path="key",
            )
        if is_async:

            @functools.wraps(endpoint)
            async def limited(*args: Any, **kwargs: Any) -> Any:
                scope = guard.scope(args, kwargs)
                decided = await rules.adecide(scope)
                if not decided.allowed:
                    return guard.refused(scope, decided)
                return guard.finish(await endpoint(*args, **kwargs), decided, args, kwargs)

        else:

            @functools.wraps(endpoint)
            def limited(*args: Any, **kwargs: Any) -> Any:
                scope = guard.scope(args, kwargs)
                decided = rules.decide(scope)
                if not decided.allowed:
                    return guard.refused(scope, decided)
                return guard.finish(endpoint(*args, **kwargs), decided, args, kwargs)

        setattr(limited, _RULES, rules.rules)
        return typing.cast("F", limited)

    def __repr__(self) -> str:
        return (
            f"RouteLimiter(key={self.key!r}, store={self.store!r}, headers={self.headers!r}, "
            f"fail_open={self.fail_open!r})"
        )


def _qualified_name(endpoint: Callable[..., Any]) -> str:
    module = getattr(endpoint, "__module__", None) or "?"
    return f"{module}.{getattr(endpoint, '__qualname__', repr(endpoint))}"


class _Guard:
    """Where an endpoint's request (and FastAPI's sub-response) are among its arguments."""

    __slots__ = ("_headers", "_name", "_request", "_response")

    def __init__(self, endpoint: Callable[..., Any], headers: bool) -> None:
        self._name = _qualified_name(endpoint)
        parameters = _parameters(endpoint)
        request = _find(parameters, _is_request) or _find(parameters, _named_request)
        if request is None:
            raise ConfigError(
                f"{self._name} takes no request: add a parameter annotated "
                "'Request' (FastAPI passes it whatever its name) or named 'request' "
                "(Starlette passes it first)",
                path="endpoint",
            )
        self._request = request
        self._response = _find(parameters, _is_response) if headers else None
        self._headers = headers

    def scope(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Scope:
        """The ASGI scope of the request the endpoint was called with."""
        request = _argument(self._request, args, kwargs)
        if not isinstance(request, HTTPConnection):
            raise TypeError(
                f"{self._name} was called without its request (parameter "
                f"{self._request[0]!r}): got {type(request).__name__}"
            )
        return request.scope

    @staticmethod
    def refused(scope: Scope, decided: Decided) -> Response:
        """The 429 that answers a refused request in place of the endpoint."""
        body, headers = refusal(scope.get("path", ""), decided)
        response = Response(body, status_code=429, media_type="application/problem+json")
        for name, value in headers:
            response.headers.append(name.decode("latin-1"), value.decode("latin-1"))
        return response

    def finish(
        self, response: Any, decided: Decided, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        """The endpoint's ``response``, with the rate-limit headers where they can go."""
        if not self._headers or not decided.results:
            return response
        target = response
        if not isinstance(target, Response) and self._response is not None:
            # FastAPI copies the headers of the Response it injected into the one
            # it builds from a returned dict or model.
            target = _argument(self._response, args, kwargs)
        if isinstance(target, Response):
            for name, value in rate_limit_headers(decided.results):
                target.headers[name.decode("latin-1")] = value.decode("latin-1")
        return response


_Parameter = tuple[str, int | None, Any]
"""A parameter: its name, its position (``None`` if keyword-only), its annotation."""


def _parameters(endpoint: Callable[..., Any]) -> list[_Parameter]:
    signature = inspect.signature(endpoint)
    try:
        # FastAPI resolves string annotations the same way; if it cannot, neither
        # can we, and the names are compared instead.
        hints = typing.get_type_hints(endpoint)
    except Exception:  # any failure just means "unresolved"
        hints = {}
    found: list[_Parameter] = []
    for index, parameter in enumerate(signature.parameters.values()):
        if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            continue
        position = None if parameter.kind is parameter.KEYWORD_ONLY else index
        found.append((parameter.name, position, hints.get(parameter.name, parameter.annotation)))
    return found


def _find(parameters: list[_Parameter], accept: Callable[[_Parameter], bool]) -> _Parameter | None:
    return next((parameter for parameter in parameters if accept(parameter)), None)


def _annotated_as(annotation: Any, kind: type, names: tuple[str, ...]) -> bool:
    if isinstance(annotation, type):
        return issubclass(annotation, kind)
    if isinstance(annotation, str):
        # An annotation that could not be resolved: judge by its name.
        return annotation.rpartition(".")[2] in names
    return False


def _is_request(parameter: _Parameter) -> bool:
    annotation = parameter[2]
    if isinstance(annotation, type) and issubclass(annotation, WebSocket):
        return False
    return _annotated_as(annotation, HTTPConnection, ("Request", "HTTPConnection"))


def _named_request(parameter: _Parameter) -> bool:
    return parameter[0] == "request" and parameter[2] in (inspect.Parameter.empty, Any)


def _is_response(parameter: _Parameter) -> bool:
    return _annotated_as(parameter[2], Response, ("Response",))


def _argument(parameter: _Parameter, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    name, position, _ = parameter
    if name in kwargs:
        return kwargs[name]
    if position is not None and position < len(args):
        return args[position]
    return None

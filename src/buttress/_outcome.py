"""The one outcome model: what a call ended with, and whether that was a failure.

An :class:`Outcome` is a result or an exception. A :class:`Matcher` answers the one
question every policy asks of it — *was this a failure of the dependency?* — and every
policy asks it through the same matcher type (Polly's ``ShouldHandle``):

- **exceptions**: exception types (a class, or a tuple of them) and predicates on the
  exception;
- **results**: a predicate on the returned value.

The defaults agree across policies:

- a dependency failure is an error :func:`~buttress.errors.is_transient` calls
  transient (network errors, HTTP 408/425/429/5xx, lost database connections,
  deadlocks, buttress's rejections) or a timeout;
- a returned HTTP response (httpx, requests, aiohttp, or any object with a
  ``raise_for_status`` method or a ``status_code``/``status`` field) with one of those
  statuses is a failure too (a 503 returned rather than raised);
- a permanent client error (HTTP 4xx other than 408/425/429) is an *answer*: the
  dependency is up and said no;
- a programming error (:data:`PROGRAMMING_ERRORS`: ``TypeError``, ``AttributeError``,
  ...) is never a failure unless a type given to the matcher names it, so a bug
  propagates instead of being retried, counted or quietly replaced by a fallback;
- ``BaseException``\\ s that are not ``Exception``\\ s (cancellation, interrupts) are
  never failures.

Each policy adds its own rule about buttress's rejections (see the policies): a
retry does not retry an open circuit or a full bulkhead unless the matcher *names*
them, a breaker does not count them unless named, a fallback answers for them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeAlias, TypeVar

from buttress.errors import ConfigError, _parse_retry_after, is_transient, retry_after_of

__all__ = [
    "DEFAULT",
    "NEVER",
    "PROGRAMMING_ERRORS",
    "Matcher",
    "OnErrors",
    "Outcome",
    "as_matcher",
    "default_retry_after",
    "response_status",
    "result_is_failure",
]

R = TypeVar("R")

PROGRAMMING_ERRORS: tuple[type[Exception], ...] = (
    TypeError,
    AttributeError,
    NameError,
    AssertionError,
    NotImplementedError,
    ImportError,
    SyntaxError,
    RecursionError,
)
"""Errors that mean the calling code is wrong, not that the dependency failed.

No policy treats them as failures unless its matcher names the type: a retry would
repeat the bug, a breaker would blame the dependency for it, a fallback would hide
it. (:class:`~buttress.errors.ConfigError` is one too: it is a ``ValueError`` raised
by buttress only for bad configuration.)
"""

_PROGRAMMING = (*PROGRAMMING_ERRORS, ConfigError)

OnErrors: TypeAlias = (
    "Matcher | type[Exception] | tuple[type[Exception], ...] | Callable[[Exception], object]"
)
"""What ``on=`` accepts: a :class:`Matcher`, an exception type, a tuple of them, or a
predicate on the exception."""


@dataclass(frozen=True, slots=True)
class Outcome(Generic[R]):
    """What one call ended with: ``result`` if it returned, ``error`` if it raised.

    Given to hooks that look at either, such as ``Retry(retry_after=...)``.
    """

    result: R | None = None
    error: BaseException | None = None

    @property
    def raised(self) -> bool:
        """Whether the call raised (``error`` is set)."""
        return self.error is not None


# ---------------------------------------------------------------------------- results

_TRANSIENT_STATUSES = frozenset({408, 425, 429} | set(range(500, 600)) - {501, 505})

# Result types seen and found not to be HTTP responses: the common case, answered by
# one set lookup. Bounded, in case a program makes types at run time.
_PLAIN: set[type] = {type(None), bool, int, float, str, bytes, dict, list, tuple, set}
# Response types seen, with the attribute found to hold their status (``None``: not
# found yet, look again). Reading a missing attribute raises and catches an
# AttributeError inside ``getattr``; remembering which one exists spares that on
# every later response (aiohttp's has ``status``, not ``status_code``).
_RESPONSES: dict[type, str | None] = {}
_UNSEEN = "<unseen>"
_SEEN_MAX = 4096


def _is_response_type(kind: type) -> bool:
    if callable(getattr(kind, "raise_for_status", None)):
        return True  # httpx, requests, aiohttp
    for klass in kind.__mro__:
        # The class's own annotations (not inherited ones: the MRO walk sees those).
        annotations = klass.__dict__.get("__annotations__")  # noqa: RUF063 - no inspect import
        if annotations and ("status_code" in annotations or "status" in annotations):
            return True  # a response dataclass or typed class of the user's
    return kind.__module__ == "http.client" and kind.__name__ == "HTTPResponse"


def _read(result: object, attr: str) -> int | None:
    """``result.<attr>`` if it is an HTTP status, else ``None``."""
    try:
        value = getattr(result, attr, None)
    except Exception:  # a response object misbehaving is not the caller's failure
        return None
    if value.__class__ is int and 100 <= value <= 599:  # a bool is no status
        return value
    if isinstance(value, int) and not isinstance(value, bool) and 100 <= value <= 599:
        return int(value)
    return None


def response_status(result: object) -> int | None:
    """The HTTP status of ``result`` if it is an HTTP response, else ``None``."""
    kind = type(result)
    if kind in _PLAIN:
        return None
    attr = _RESPONSES.get(kind, _UNSEEN)
    if attr is _UNSEEN:
        if not _is_response_type(kind):
            if len(_PLAIN) < _SEEN_MAX:
                _PLAIN.add(kind)
            return None
        if len(_RESPONSES) < _SEEN_MAX:
            _RESPONSES[kind] = None
    elif attr is not None:
        value = _read(result, attr)
        if value is not None:
            return value
    for name in ("status_code", "status"):
        value = _read(result, name)
        if value is not None:
            if kind in _RESPONSES:
                _RESPONSES[kind] = name  # read this one first from now on
            return value
    return None


def result_is_failure(result: object) -> bool:
    """The default rule for results: an HTTP response whose status is transient.

    408, 425, 429 and 5xx other than 501 and 505, as :func:`~buttress.is_transient`
    judges an error carrying the same status. Anything that is not an HTTP response
    is a success.
    """
    if type(result) in _PLAIN:
        return False
    return response_status(result) in _TRANSIENT_STATUSES


def _headers_retry_after(result: object, now: float | None) -> float | None:
    try:
        headers = getattr(result, "headers", None)
    except Exception:
        return None
    if headers is None:
        return None
    try:
        value = headers.get("Retry-After") or headers.get("retry-after")
    except Exception:
        return None
    return _parse_retry_after(value, now)


def default_retry_after(outcome: Outcome[Any], now: float | None = None) -> float | None:
    """Seconds the outcome asked to wait before the next try, if it said.

    From an error: :func:`~buttress.errors.retry_after_of` (its ``retry_after``, or a
    ``Retry-After`` header on it or its ``response``). From a result: the
    ``Retry-After`` header of an HTTP response (httpx, requests, aiohttp), in
    delta-seconds or as an HTTP date measured from ``now`` (wall-clock seconds;
    default: the current time).
    """
    if outcome.error is not None:
        return retry_after_of(outcome.error, now=now)
    result = outcome.result
    if type(result) in _PLAIN or response_status(result) is None:
        return None
    return _headers_retry_after(result, now)


# ---------------------------------------------------------------------------- matcher


def _never(_: object) -> bool:
    return False


def _default_error(exc: BaseException) -> bool:
    if isinstance(exc, _PROGRAMMING):
        return False
    return is_transient(exc)


class Matcher:
    """Which outcomes are failures: the one matcher type every policy uses.

    ``Matcher(*errors, results=None)``:

    - ``errors``: exception types and predicates on the exception (any callable
      that is not a class). An error is a failure when it is an instance of one of
      the types or a predicate returns true for it. Given no ``errors``, the default
      rule applies: what :func:`~buttress.errors.is_transient` calls transient, and
      timeouts.
    - ``results``: a predicate on a returned value; true means failure. ``None``
      (the default) applies the default rule: an HTTP response with a transient
      status (408, 425, 429, 5xx but 501/505) is a failure.

    A programming error (:data:`PROGRAMMING_ERRORS`) is a failure only if one of the
    *types* names it (its class or a superclass that is itself a programming
    error): ``Matcher(Exception)`` lets a ``TypeError`` propagate,
    ``Matcher(Exception, TypeError)`` does not. Predicates never see programming
    errors, nor ``BaseException``\\ s that are not ``Exception``\\ s.

    Matchers combine with ``|``: ``Matcher() | Matcher(KeyError)`` is the default
    rule plus ``KeyError``. :meth:`names` tells whether an error's type was named
    explicitly, which policies use for buttress's own rejections (a retry does
    not retry :class:`~buttress.errors.CircuitOpen` unless ``CircuitOpen`` or
    ``Rejected`` is named; ``Exception`` is too broad to name it).
    """

    __slots__ = ("_named", "_programming", "_types", "error_rule", "result_rule")

    error_rule: Callable[[BaseException], bool]
    """``error_rule(exc)``: whether the error is a failure (programming errors included)."""
    result_rule: Callable[[Any], bool]
    """``result_rule(result)``: whether the returned value is a failure."""

    def __init__(
        self,
        *errors: type[Exception] | Callable[[Exception], object],
        results: Callable[[Any], object] | None = None,
    ) -> None:
        types: list[type[Exception]] = []
        predicates: list[Callable[[Exception], object]] = []
        for index, spec in enumerate(errors):
            path = f"errors[{index}]"
            if isinstance(spec, type):
                if not issubclass(spec, BaseException):
                    raise ConfigError(f"{spec!r} is not an exception class", path=path)
                if not issubclass(spec, Exception):
                    raise ConfigError(
                        f"{spec.__name__} is not an Exception: cancellation, interrupts and "
                        "exits always propagate and can never be failures",
                        path=path,
                    )
                types.append(spec)
            elif callable(spec):
                predicates.append(spec)
            else:
                raise ConfigError(
                    f"expected an exception type or a predicate on the exception, got {spec!r}",
                    path=path,
                )
        if results is not None and not callable(results):
            raise ConfigError(
                f"expected a predicate on the result, got {results!r}", path="results"
            )
        self._types: tuple[type[Exception], ...] = tuple(types)
        self._named: tuple[type[Exception], ...] = tuple(types)
        self._programming: tuple[type[Exception], ...] = tuple(
            kind for kind in types if issubclass(kind, _PROGRAMMING)
        )
        self.error_rule = (
            _default_error if not errors else self._compile(self._types, tuple(predicates))
        )
        self.result_rule = result_is_failure if results is None else _as_bool(results)

    def _compile(
        self,
        types: tuple[type[Exception], ...],
        predicates: tuple[Callable[[Exception], object], ...],
    ) -> Callable[[BaseException], bool]:
        programming = self._programming

        def error_rule(exc: BaseException) -> bool:
            if not isinstance(exc, Exception):
                return False
            if isinstance(exc, _PROGRAMMING):
                return isinstance(exc, programming)
            if types and isinstance(exc, types):
                return True
            return any(predicate(exc) for predicate in predicates)

        return error_rule

    @classmethod
    def _combine(
        cls,
        error_rule: Callable[[BaseException], bool],
        result_rule: Callable[[Any], bool],
        named: tuple[type[Exception], ...],
    ) -> Matcher:
        matcher = cls.__new__(cls)
        matcher.error_rule = error_rule
        matcher.result_rule = result_rule
        matcher._named = named
        matcher._types = named
        matcher._programming = tuple(kind for kind in named if issubclass(kind, _PROGRAMMING))
        return matcher

    # ------------------------------------------------------------------ questions

    def is_failure(self, outcome: Outcome[Any]) -> bool:
        """Whether ``outcome`` (a result or an error) is a failure of the dependency."""
        if outcome.error is not None:
            return self.error_rule(outcome.error)
        return bool(self.result_rule(outcome.result))

    def error_is_failure(self, exc: BaseException) -> bool:
        """Whether raising ``exc`` is a failure of the dependency."""
        return self.error_rule(exc)

    def result_is_failure(self, result: object) -> bool:
        """Whether returning ``result`` is a failure of the dependency."""
        return bool(self.result_rule(result))

    def names(
        self,
        exc: BaseException,
        within: type[BaseException] | tuple[type[BaseException], ...] = BaseException,
    ) -> bool:
        """Whether a type given to this matcher names ``exc``'s class (or a base of it).

        With ``within``, only types inside that family count: a policy asks
        ``names(exc, Rejected)`` so that ``CircuitOpen`` or ``Rejected`` name an open
        circuit while a broad ``Exception`` does not — ``on=Exception`` means "any
        failure", not "retry my own fail-fast rejections too".
        """
        return any(isinstance(exc, kind) and issubclass(kind, within) for kind in self._named)

    @property
    def checks_results(self) -> bool:
        """Whether some result can be a failure (False when results never are)."""
        return self.result_rule is not _never

    def __or__(self, other: Matcher) -> Matcher:
        if not isinstance(other, Matcher):
            return NotImplemented
        first_error, second_error = self.error_rule, other.error_rule
        first_result, second_result = self.result_rule, other.result_rule

        def error_rule(exc: BaseException) -> bool:
            return first_error(exc) or second_error(exc)

        if first_result is second_result:
            result_rule = first_result
        else:

            def result_rule(result: Any) -> bool:
                return bool(first_result(result)) or bool(second_result(result))

        return Matcher._combine(error_rule, result_rule, self._named + other._named)

    def __repr__(self) -> str:
        named = ", ".join(kind.__name__ for kind in self._named)
        return f"Matcher({named})" if named else "Matcher()"


def _as_bool(predicate: Callable[[Any], object]) -> Callable[[Any], bool]:
    def rule(value: Any) -> bool:
        return bool(predicate(value))

    return rule


DEFAULT = Matcher()
"""The default matcher: transient errors and timeouts; responses with a transient status."""

NEVER = Matcher._combine(_never, _never, ())
"""A matcher for which nothing is a failure."""


def as_matcher(
    on: object = None,
    on_result: object = None,
    *,
    path: str = "on",
    result_path: str = "on_result",
) -> Matcher:
    """Build the matcher a policy's ``on=``/``on_result=`` describe.

    ``on`` replaces the rule for errors (a :class:`Matcher`, a type, a tuple of types,
    or a predicate), ``on_result`` the rule for results (a predicate); each left
    ``None`` keeps its default. A :class:`Matcher` given as ``on`` brings its own
    result rule unless ``on_result`` is given too. Errors name ``path`` /
    ``result_path``.
    """
    if on_result is not None and not callable(on_result):
        raise ConfigError(
            f"expected a predicate on the result, got {on_result!r}", path=result_path
        )
    if on is None:
        return DEFAULT if on_result is None else Matcher(results=on_result)
    if isinstance(on, Matcher):
        if on_result is None:
            return on
        return Matcher._combine(on.error_rule, _as_bool(on_result), on._named)
    specs: tuple[object, ...]
    if isinstance(on, tuple):
        if not on:
            raise ConfigError("an empty tuple matches nothing", path=path)
        specs = on
    else:
        specs = (on,)
    try:
        return Matcher(*specs, results=on_result)  # type: ignore[arg-type]
    except ConfigError as exc:
        message = str(exc).partition(": ")[2] if exc.path else str(exc)
        raise ConfigError(message, path=path) from None

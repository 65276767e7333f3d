"""Typed events and their listeners: the machinery (the event types are listed in
:mod:`buttress.events`).

Policies report what they do as small frozen event objects (retry scheduled,
breaker state changed, call rejected, ...). Metrics and logs are listeners: a
listener is any callable taking one event. Register it for every policy with
:func:`subscribe`, or for one policy with ``policy.subscribe(listener)``; pass event
types to receive only those.

With no listener registered anywhere, a policy builds no event object at all: each
emitter keeps an ``enabled`` flag that is updated when listeners come and go, and
policies test it before constructing an event.
"""

from __future__ import annotations

import functools
import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

__all__ = ["CallRejected", "Emitter", "Event", "Listener", "call_name", "logger", "subscribe"]

E = TypeVar("E", bound="Event")


@dataclass(frozen=True, slots=True)
class Event:
    """Base of every event: ``policy`` is the name of the policy that emitted it.

    ``call`` is the qualified name of the function the policy was running
    (``"app.client.fetch_user"``) when the event is about one call, else ``""``. It is
    worked out only when somebody listens.
    """

    policy: str
    call: str = field(default="", kw_only=True)


@dataclass(frozen=True, slots=True)
class CallRejected(Event):
    """A policy refused a call without running it.

    ``reason`` is short and stable, fit for a metric label: ``"circuit_open"``,
    ``"half_open_full"``, ``"bulkhead_full"``, ``"queue_timeout"``, ``"rate_limited"``.
    """

    reason: str


Listener = Callable[[Any], object]
"""A callable taking one :class:`Event`. Its return value is ignored."""

_Entry = tuple[Listener, tuple[type[Event], ...]]

_lock = threading.Lock()
_global: tuple[_Entry, ...] = ()
_emitters: weakref.WeakSet[Emitter] = weakref.WeakSet()


def _refresh_all() -> None:
    for emitter in list(_emitters):
        emitter._refresh()


def subscribe(listener: Listener, *types: type[Event]) -> Callable[[], None]:
    """Send events from every policy to ``listener``; returns a function that unsubscribes.

    With ``types``, only events that are instances of one of them are delivered.
    """
    global _global
    entry: _Entry = (listener, types)
    with _lock:
        _global = (*_global, entry)
        _refresh_all()

    def unsubscribe() -> None:
        global _global
        with _lock:
            _global = tuple(e for e in _global if e is not entry)
            _refresh_all()

    return unsubscribe


class Emitter:
    """The event outlet of one policy.

    Policies write ``if self._events.enabled: self._events.emit(SomeEvent(...))`` so
    that nothing is allocated when nobody listens. A listener that raises is logged
    and skipped: telemetry never breaks a call.
    """

    __slots__ = ("__weakref__", "_local", "enabled")

    def __init__(self) -> None:
        self._local: tuple[_Entry, ...] = ()
        with _lock:
            # Read the global listeners under the lock that registers us, so a
            # subscribe() racing with this constructor cannot leave us disabled.
            self.enabled = bool(_global)
            _emitters.add(self)

    def _refresh(self) -> None:
        self.enabled = bool(self._local or _global)

    def subscribe(self, listener: Listener, *types: type[Event]) -> Callable[[], None]:
        """Send this policy's events to ``listener``; returns the unsubscribe function."""
        entry: _Entry = (listener, types)
        with _lock:
            self._local = (*self._local, entry)
            self._refresh()

        def unsubscribe() -> None:
            with _lock:
                self._local = tuple(e for e in self._local if e is not entry)
                self._refresh()

        return unsubscribe

    def emit(self, event: Event) -> None:
        """Deliver ``event`` to the matching listeners, local ones first."""
        for listener, types in self._local + _global:
            if types and not isinstance(event, types):
                continue
            try:
                listener(event)
            except Exception:
                logger("buttress.events").exception(
                    "buttress event listener %r failed on %r", listener, event
                )


def call_name(fn: object) -> str:
    """``module.qualname`` of a called function (bound methods, partials, objects too)."""
    while isinstance(fn, functools.partial):
        fn = fn.func
    target = getattr(fn, "__func__", fn)  # a bound method: its function
    qualname = getattr(target, "__qualname__", None)
    if not isinstance(qualname, str):
        qualname = type(fn).__qualname__  # a callable object: its class
        target = type(fn)
    module = getattr(target, "__module__", None)
    return f"{module}.{qualname}" if isinstance(module, str) and module else qualname


def logger(name: str) -> Any:
    """``logging.getLogger(name)``, importing :mod:`logging` only when something is logged.

    buttress logs rarely (an outage, a failing listener); importing :mod:`logging` up
    front would cost every ``import buttress``.
    """
    import logging  # noqa: PLC0415 - see the docstring

    return logging.getLogger(name)

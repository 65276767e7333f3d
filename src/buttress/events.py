"""Typed events: every event type buttress emits, in one place, and how to listen.

Policies report what they do as small frozen event objects; metrics and logs are
listeners. A listener is any callable taking one event: register it for every
policy with :func:`subscribe`, or for one policy with ``policy.subscribe(listener)``,
optionally for some event types only. With no listener registered, no event object
is ever built.

The event types (see ``docs/events.md`` for what triggers each, its fields and its
``reason`` values):

- :class:`Event` — the base: ``policy`` (the emitting policy's name) and ``call``
  (the qualified name of the function being run, when the event is about a call);
- :class:`CallRejected` — a policy refused a call without running it;
- :class:`RetryScheduled`, :class:`RetryRecovered`, :class:`RetryGaveUp` — retry;
- :class:`CircuitStateChanged` — a circuit breaker changed state;
- :class:`TimeoutOccurred` — a call ran out of time;
- :class:`FallbackUsed` — a fallback answered for a failed call;
- :class:`StoreFellBack`, :class:`StoreRecovered` — a store (or a shared breaker's
  sync) lost and regained its backend;
- :class:`DegradationChanged` — a degradation moved to another feature level;
- :class:`HealthStatusChanged` — a health check's or a health monitor's status changed;
- :class:`RelayDeadLettered` — the outbox relay dead-lettered an event.

The policy-specific types are defined beside their policies and imported from here
on first use, so ``import buttress.events`` stays light.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from buttress._events import CallRejected, Emitter, Event, Listener, call_name, subscribe

if TYPE_CHECKING:
    from buttress.messaging.relay import RelayDeadLettered
    from buttress.observe.health import HealthStatusChanged
    from buttress.policies.budget import DegradationChanged
    from buttress.policies.circuit import CircuitStateChanged
    from buttress.policies.fallback import FallbackUsed
    from buttress.policies.retry import RetryGaveUp, RetryRecovered, RetryScheduled
    from buttress.policies.timeout import TimeoutOccurred
    from buttress.stores.fallback import StoreFellBack, StoreRecovered

__all__ = [
    "CallRejected",
    "CircuitStateChanged",
    "DegradationChanged",
    "Emitter",
    "Event",
    "FallbackUsed",
    "HealthStatusChanged",
    "Listener",
    "RelayDeadLettered",
    "RetryGaveUp",
    "RetryRecovered",
    "RetryScheduled",
    "StoreFellBack",
    "StoreRecovered",
    "TimeoutOccurred",
    "call_name",
    "subscribe",
]

# Where each policy's event types live; imported when first asked for.
_HOMES = {
    "CircuitStateChanged": "buttress.policies.circuit",
    "DegradationChanged": "buttress.policies.budget",
    "FallbackUsed": "buttress.policies.fallback",
    "HealthStatusChanged": "buttress.observe.health",
    "RelayDeadLettered": "buttress.messaging.relay",
    "RetryGaveUp": "buttress.policies.retry",
    "RetryRecovered": "buttress.policies.retry",
    "RetryScheduled": "buttress.policies.retry",
    "TimeoutOccurred": "buttress.policies.timeout",
    "StoreFellBack": "buttress.stores",
    "StoreRecovered": "buttress.stores",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)

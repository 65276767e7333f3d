"""Webhooks: signed delivery to subscribers and a verifying inbound receiver.

The package follows the `Standard Webhooks <https://www.standardwebhooks.com/>`_
scheme. Its modules:

- :mod:`buttress.webhooks.signing`: secrets, signing and verification
  (``webhook-id`` / ``webhook-timestamp`` / ``webhook-signature``).
- :mod:`buttress.webhooks.receiver`: an ASGI endpoint that verifies, deduplicates
  and acknowledges inbound webhooks.
- :mod:`buttress.webhooks.dispatcher`: durable delivery to endpoints (fan-out,
  retries on a schedule, per-endpoint breaker, rate limit and concurrency cap,
  dead letters).
- :mod:`buttress.webhooks.ssrf`: the SSRF guard (URL and address policy, aiohttp
  connector and httpx transports that connect only to vetted addresses).

Names are imported from their module on first use, so ``import buttress.webhooks``
loads no optional dependency (aiohttp, Starlette, redis).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from buttress.webhooks.dispatcher import (
        Dispatcher,
        Endpoint,
        EndpointDisabled,
        Exhausted,
        Message,
        PostgresDeliveryStore,
        RetrySchedule,
        SQLiteDeliveryStore,
    )
    from buttress.webhooks.receiver import MemoryInbox, WebhookEvent, WebhookReceiver, webhook_route
    from buttress.webhooks.signing import (
        HeaderError,
        Secret,
        SignatureError,
        Signer,
        TimestampError,
        Verifier,
        WebhookVerificationError,
        sign,
    )
    from buttress.webhooks.ssrf import (
        AddressPolicy,
        AsyncGuardedTransport,
        GuardedResolver,
        GuardedTransport,
        SSRFError,
        UnsafeAddress,
        UnsafeURL,
        check_url,
        guarded_connector,
        vet,
    )

# Public name -> the submodule of this package that defines it. Each module's owner
# adds its names here, to __all__ and to the TYPE_CHECKING imports above.
_EXPORTS: dict[str, str] = {
    "Dispatcher": "dispatcher",
    "Endpoint": "dispatcher",
    "EndpointDisabled": "dispatcher",
    "Exhausted": "dispatcher",
    "Message": "dispatcher",
    "PostgresDeliveryStore": "dispatcher",
    "RetrySchedule": "dispatcher",
    "SQLiteDeliveryStore": "dispatcher",
    "HeaderError": "signing",
    "Secret": "signing",
    "SignatureError": "signing",
    "Signer": "signing",
    "TimestampError": "signing",
    "Verifier": "signing",
    "WebhookVerificationError": "signing",
    "sign": "signing",
    "MemoryInbox": "receiver",
    "WebhookEvent": "receiver",
    "WebhookReceiver": "receiver",
    "webhook_route": "receiver",
    "AddressPolicy": "ssrf",
    "AsyncGuardedTransport": "ssrf",
    "GuardedResolver": "ssrf",
    "GuardedTransport": "ssrf",
    "SSRFError": "ssrf",
    "UnsafeAddress": "ssrf",
    "UnsafeURL": "ssrf",
    "check_url": "ssrf",
    "guarded_connector": "ssrf",
    "vet": "ssrf",
}

__all__ = [
    "AddressPolicy",
    "AsyncGuardedTransport",
    "Dispatcher",
    "Endpoint",
    "EndpointDisabled",
    "Exhausted",
    "GuardedResolver",
    "GuardedTransport",
    "HeaderError",
    "MemoryInbox",
    "Message",
    "PostgresDeliveryStore",
    "RetrySchedule",
    "SQLiteDeliveryStore",
    "SSRFError",
    "Secret",
    "SignatureError",
    "Signer",
    "TimestampError",
    "UnsafeAddress",
    "UnsafeURL",
    "Verifier",
    "WebhookEvent",
    "WebhookReceiver",
    "WebhookVerificationError",
    "check_url",
    "guarded_connector",
    "sign",
    "vet",
    "webhook_route",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))

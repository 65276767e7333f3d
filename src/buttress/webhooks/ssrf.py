"""The SSRF guard: webhook deliveries go to public addresses only.

A webhook URL is chosen by a subscriber, and the request is sent from inside your
network. The guard refuses every destination that could be internal, at two points:

- **The URL** (:func:`check_url`, when an endpoint is registered and again before
  each request): scheme ``http``/``https``, ports 80 and 443 (configurable), no
  userinfo, a well-formed host of at most 253 characters (internationalised names
  IDNA-encoded), no IPv4 address in decimal, octal, hex or shortened form
  (``http://2130706433/``, ``http://0x7f.1/``, ``http://127.1/``), and a literal
  address that the address policy allows.
- **The addresses** (:func:`vet`, and the guarded clients at connect time): the host
  is resolved and refused if *any* address is loopback, private, link-local (the
  cloud metadata service 169.254.169.254 among them), CGNAT, multicast, reserved,
  unspecified, benchmarking or documentation space, or an IPv4-mapped, translated,
  NAT64, 6to4 or Teredo form of one of those (see :func:`address_refusal`).

The clients connect to the addresses that were vetted, not to a second answer of
the resolver, so DNS rebinding cannot turn a delivery inward: for aiohttp
:func:`guarded_connector` (a connector whose :class:`GuardedResolver` vets and
returns only allowed addresses), for httpx :class:`GuardedTransport` and
:class:`AsyncGuardedTransport` (which pin the vetted IP and keep the name for the
``Host`` header and TLS). Redirects are re-vetted like any request by both; better,
do not follow them (webhook senders treat a 3xx as a failed delivery).

:class:`AddressPolicy` ``allow`` lists networks that are let through anyway (e.g.
``"127.0.0.0/8"`` for local development and tests): it is the only way around the
guard. Refusals raise :class:`UnsafeURL` or :class:`UnsafeAddress`, both
:class:`SSRFError`, a permanent error (``transient = False``) that no retry repeats.

The aiohttp names need the ``aiohttp`` extra, the httpx ones the ``httpx`` extra;
they are imported on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from buttress.webhooks._ssrf_policy import (
    DEFAULT_PORTS,
    DEFAULT_SCHEMES,
    AddressPolicy,
    AsyncResolve,
    CheckedURL,
    Resolve,
    SSRFError,
    UnsafeAddress,
    UnsafeURL,
    address_refusal,
    check_address,
    check_url,
    vet,
    vet_sync,
)

if TYPE_CHECKING:
    from buttress.webhooks._ssrf_aiohttp import (
        GuardedConnector,
        GuardedResolver,
        guarded_connector,
    )
    from buttress.webhooks._ssrf_httpx import AsyncGuardedTransport, GuardedTransport

__all__ = [
    "DEFAULT_PORTS",
    "DEFAULT_SCHEMES",
    "AddressPolicy",
    "AsyncGuardedTransport",
    "AsyncResolve",
    "CheckedURL",
    "GuardedConnector",
    "GuardedResolver",
    "GuardedTransport",
    "Resolve",
    "SSRFError",
    "UnsafeAddress",
    "UnsafeURL",
    "address_refusal",
    "check_address",
    "check_url",
    "guarded_connector",
    "vet",
    "vet_sync",
]

# Client adapters, imported on first use so that the policy needs neither client.
_LAZY = {
    "GuardedConnector": ("_ssrf_aiohttp", "aiohttp"),
    "GuardedResolver": ("_ssrf_aiohttp", "aiohttp"),
    "guarded_connector": ("_ssrf_aiohttp", "aiohttp"),
    "GuardedTransport": ("_ssrf_httpx", "httpx"),
    "AsyncGuardedTransport": ("_ssrf_httpx", "httpx"),
}


def __getattr__(name: str) -> Any:
    where = _LAZY.get(name)
    if where is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module, extra = where
    try:
        value = getattr(importlib.import_module(f"buttress.webhooks.{module}"), name)
    except ModuleNotFoundError as exc:
        if exc.name not in (extra, "httpcore", "anyio"):
            raise
        raise ImportError(
            f"buttress.webhooks.ssrf.{name} needs {extra}: pip install 'buttress[{extra}]'"
        ) from exc
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))

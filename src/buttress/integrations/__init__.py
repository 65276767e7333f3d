"""Integrations with web frameworks and clients, one module each.

- :mod:`buttress.integrations.asgi`: middlewares for any ASGI application
  (Starlette, FastAPI, ...), written against the ASGI protocol alone: rate limits,
  request and correlation ids, request timeouts, errors as problem+json, graceful
  shutdown, health endpoints.
- :mod:`buttress.integrations.httpx`: resilient transports for httpx clients, sync
  and async (a pipeline per host).
- :mod:`buttress.integrations.aiohttp`: the same as a client middleware for aiohttp.

Nothing is imported here, so importing one integration never loads another's
optional dependency.
"""

from __future__ import annotations

__all__: list[str] = []

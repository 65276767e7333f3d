"""Integrations with web frameworks and clients, one module each.

- :mod:`buttress.integrations.asgi`: rate-limit middleware for any ASGI application
  (Starlette, FastAPI, ...), written against the ASGI protocol alone.

Nothing is imported here, so importing one integration never loads another's
optional dependency.
"""

from __future__ import annotations

__all__: list[str] = []

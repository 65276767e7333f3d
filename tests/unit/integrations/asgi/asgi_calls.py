"""Direct ASGI calls for the middleware tests: a scope, a receive, and what was sent."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from typing import Any

from buttress.integrations.asgi import ASGIApp, Message

__all__ = ["Call", "call", "scope_of"]


def scope_of(
    path: str = "/",
    headers: Sequence[tuple[bytes, bytes]] = (),
    *,
    kind: str = "http",
    method: str = "GET",
) -> dict[str, Any]:
    return {
        "type": kind,
        "method": method,
        "path": path,
        "query_string": b"",
        "headers": list(headers),
        "client": ("203.0.113.7", 50123),
    }


class Call:
    """One request to an app: the messages it sent, and helpers to read them."""

    def __init__(self, app: ASGIApp, scope: dict[str, Any], incoming: Sequence[Message]) -> None:
        self.app = app
        self.scope = scope
        self.sent: list[Message] = []
        self._incoming = list(incoming)
        self._disconnect: asyncio.Future[None] | None = None

    async def receive(self) -> Message:
        if self._incoming:
            return self._incoming.pop(0)
        # Nothing more to say: wait as a server does until the client goes away.
        self._disconnect = asyncio.get_running_loop().create_future()
        await self._disconnect
        return {"type": "http.disconnect"}

    async def send(self, message: Message) -> None:
        self.sent.append(message)

    async def run(self) -> Call:
        await self.app(self.scope, self.receive, self.send)
        return self

    @property
    def starts(self) -> list[Message]:
        return [m for m in self.sent if m["type"] == "http.response.start"]

    @property
    def status(self) -> int:
        (start,) = self.starts
        status: int = start["status"]
        return status

    @property
    def headers(self) -> dict[str, str]:
        (start,) = self.starts
        return {k.decode("latin-1"): v.decode("latin-1") for k, v in start["headers"]}

    def header_list(self) -> list[tuple[bytes, bytes]]:
        (start,) = self.starts
        return list(start["headers"])

    @property
    def body(self) -> bytes:
        return b"".join(m.get("body", b"") for m in self.sent if m["type"] == "http.response.body")

    def json(self) -> Any:
        return json.loads(self.body)


async def call(
    app: ASGIApp,
    path: str = "/",
    headers: Sequence[tuple[bytes, bytes]] = (),
    *,
    kind: str = "http",
    incoming: Sequence[Message] = ({"type": "http.request", "body": b""},),
) -> Call:
    return await Call(app, scope_of(path, headers, kind=kind), incoming).run()

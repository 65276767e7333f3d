"""A local HTTP server that fails in scripted ways, for the HTTP client integrations.

:class:`ScriptedServer` runs a plain ASGI app under uvicorn on 127.0.0.1 (an
ephemeral port) in a thread. A test scripts a path with :meth:`ScriptedServer.script`
— a list of steps, one per request, the last repeated — and reads how many requests
the server saw there with :meth:`ScriptedServer.seen`. Steps:

- ``200``, ``503``, ...: answer with that status (body ``"<status>"``);
- ``(429, {"Retry-After": "7"})``: a status with headers;
- ``"slow:0.5"``: wait that many seconds, then answer 200;
- ``"hang"``: never answer (until the client goes away or the server stops).

:class:`ResetServer` is a raw TCP server that resets (RST) its first ``resets``
connections and then answers ``200 OK``: uvicorn cannot be told to reset one.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import threading
import uuid
from collections import defaultdict
from typing import Any

import uvicorn

Step = int | tuple[int, dict[str, str]] | str


class ScriptedServer:
    def __init__(self) -> None:
        self._scripts: dict[str, list[Step]] = {}
        self._seen: defaultdict[str, int] = defaultdict(int)
        self._bodies: defaultdict[str, list[bytes]] = defaultdict(list)
        self._lock = threading.Lock()
        self._stop: asyncio.Event | None = None
        config = uvicorn.Config(
            self.app, host="127.0.0.1", port=0, log_level="error", lifespan="off", interface="asgi3"
        )
        self.server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self.server.run, daemon=True)
        self.port = 0

    def start(self) -> ScriptedServer:
        self._thread.start()
        waiter = threading.Event()  # never set: a bounded wait between looks
        while not self.server.started:
            waiter.wait(0.01)
        self.port = self.server.servers[0].sockets[0].getsockname()[1]
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self._thread.join(10)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def script(self, *steps: Step) -> str:
        """A fresh path that answers with ``steps``, one per request (the last repeats)."""
        path = f"/{uuid.uuid4().hex}"
        with self._lock:
            self._scripts[path] = list(steps)
        return f"{self.base}{path}"

    def seen(self, url: str) -> int:
        with self._lock:
            return self._seen[url.removeprefix(self.base)]

    def bodies(self, url: str) -> list[bytes]:
        with self._lock:
            return list(self._bodies[url.removeprefix(self.base)])

    def _next(self, path: str, body: bytes) -> Step:
        with self._lock:
            index = self._seen[path]
            self._seen[path] += 1
            self._bodies[path].append(body)
            steps = self._scripts.get(path, [200])
            return steps[min(index, len(steps) - 1)]

    async def app(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        assert scope["type"] == "http"
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        step = self._next(scope["path"], body)
        headers: dict[str, str] = {}
        if step == "hang":
            await receive()  # returns once the client has gone away
            return
        if isinstance(step, str) and step.startswith("slow:"):
            await asyncio.sleep(float(step.partition(":")[2]))
            status = 200
        elif isinstance(step, tuple):
            status, headers = step
        else:
            assert isinstance(step, int)
            status = step
        payload = str(status).encode()
        raw = [(b"content-length", str(len(payload)).encode())]
        raw += [(k.lower().encode(), v.encode()) for k, v in headers.items()]
        await send({"type": "http.response.start", "status": status, "headers": raw})
        await send({"type": "http.response.body", "body": payload})


class ResetServer:
    """Resets its first ``resets`` connections, then answers ``200 OK`` to each request."""

    def __init__(self, resets: int) -> None:
        self.resets = resets
        self.connections = 0
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(16)
        self.port = self._sock.getsockname()[1]
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._closed = False

    def start(self) -> ResetServer:
        self._thread.start()
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/reset"

    def _serve(self) -> None:
        while not self._closed:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            self.connections += 1
            worker = threading.Thread(target=self._handle, args=(conn, self.connections))
            worker.daemon = True
            worker.start()

    def _handle(self, conn: socket.socket, number: int) -> None:
        with conn:
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = conn.recv(4096)
                if not chunk:
                    return
                data += chunk
            if number <= self.resets:
                # SO_LINGER with a zero timeout: close() sends RST, not FIN.
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                return
            conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok")

    def stop(self) -> None:
        self._closed = True
        self._sock.close()
        self._thread.join(5)

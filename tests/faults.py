"""A fault-injecting TCP proxy, to cut a real service off in tests.

::

    async with FaultProxy(6379) as proxy:        # 127.0.0.1:<ephemeral> -> :6379
        url = f"redis://127.0.0.1:{proxy.port}"
        proxy.mode = "stall"                     # switch at any time

Modes:

- ``"pass"``: bytes flow both ways, untouched;
- ``"refuse"``: nothing listens on the port: new connections are refused
  (``ECONNREFUSED``); connections already open keep working;
- ``"stall"``: new connections are accepted and get nothing, ever; open
  connections stop carrying bytes either way (what the peers send is held back);
- ``"reset"``: new connections are reset (RST) as soon as they are accepted, and so
  are open ones, at the switch.

Switching back to ``"pass"`` lets held-back bytes through on connections that are
still open. Everything runs on the test's event loop; only 127.0.0.1 is used.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from typing import Literal

__all__ = ["FaultProxy", "Mode"]

Mode = Literal["pass", "refuse", "stall", "reset"]
_MODES = ("pass", "refuse", "stall", "reset")
_HOST = "127.0.0.1"


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with a TCP reset: SO_LINGER with a zero timeout, then abort."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class FaultProxy:
    """A TCP proxy on 127.0.0.1 and an ephemeral port, forwarding to ``target_port``."""

    def __init__(self, target_port: int, *, mode: Mode = "pass") -> None:
        self.target_port = target_port
        self.port = 0
        self._mode: Mode = "pass"
        self._server: asyncio.Server | None = None
        self._flowing = asyncio.Event()
        self._pairs: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter | None]] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self.accepted = 0
        """How many connections were accepted (in any mode)."""
        self._initial = mode

    # ------------------------------------------------------------ life cycle

    async def start(self) -> FaultProxy:
        self._server = await asyncio.start_server(self._handle, _HOST, 0)
        self.port = self._server.sockets[0].getsockname()[1]
        await self.set_mode(self._initial)
        return self

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for client, upstream in list(self._pairs):
            client.transport.abort()
            if upstream is not None:
                upstream.transport.abort()
        self._pairs.clear()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def __aenter__(self) -> FaultProxy:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # ------------------------------------------------------------ modes

    @property
    def mode(self) -> Mode:
        return self._mode

    @mode.setter
    def mode(self, mode: Mode) -> None:
        # The setter cannot await; refusing/listening again is done by a task.
        task = asyncio.get_running_loop().create_task(self.set_mode(mode))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def set_mode(self, mode: Mode) -> None:
        """Switch to ``mode``; when it returns, new connections meet it."""
        if mode not in _MODES:
            raise ValueError(f"mode must be one of {_MODES}, got {mode!r}")
        self._mode = mode
        if mode == "pass":
            self._flowing.set()
        else:
            self._flowing.clear()
        if mode == "reset":
            for client, upstream in list(self._pairs):
                _reset(client)
                if upstream is not None:
                    upstream.transport.abort()
            self._pairs.clear()
        if mode == "refuse":
            if self._server is not None and self._server.is_serving():
                self._server.close()
                await self._server.wait_closed()
        elif self._server is not None and not self._server.is_serving():
            # Listen again on the same port (reuse_address lets us, past TIME_WAIT).
            self._server = await asyncio.start_server(
                self._handle, _HOST, self.port, reuse_address=True
            )

    # ------------------------------------------------------------ connections

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        handler = asyncio.current_task()
        if handler is not None:  # cancelled by close(), wherever it waits
            self._tasks.add(handler)
            handler.add_done_callback(self._tasks.discard)
        mode = self._mode
        if mode in ("reset", "refuse"):
            # "refuse" here: a connection that raced the switch.
            _reset(writer)
            return
        upstream: asyncio.StreamWriter | None = None
        pair: tuple[asyncio.StreamWriter, asyncio.StreamWriter | None] = (writer, None)
        self._pairs.add(pair)
        try:
            await self._flowing.wait()  # a stalled connection waits here, reading nothing
            if self._mode != "pass" or writer.is_closing():
                return
            try:
                up_reader, upstream = await asyncio.open_connection(_HOST, self.target_port)
            except OSError:
                _reset(writer)
                return
            self._pairs.discard(pair)
            pair = (writer, upstream)
            self._pairs.add(pair)
            await asyncio.gather(self._pump(reader, upstream), self._pump(up_reader, writer))
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        except asyncio.CancelledError:
            # Cancelled by close(): end quietly (asyncio's stream server reads a
            # handler's exception, and would log a cancellation as an error).
            pass
        finally:
            self._pairs.discard(pair)
            for side in (writer, upstream):
                if side is not None and not side.is_closing():
                    side.close()

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                # Stalled: hold the bytes until the proxy passes traffic again.
                await self._flowing.wait()
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            if not writer.is_closing():
                with contextlib.suppress(OSError, RuntimeError):
                    writer.write_eof()

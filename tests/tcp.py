"""A loopback stream server for tests whose stop leaves nothing behind.

asyncio's own `Server.close()` (3.11) stops accepting but leaves the accepted connections and
their handler tasks running. A handler still waiting on its client when the test's loop
closed left a socket that the garbage collector found during a later test, whose run then
failed on the ResourceWarning (filterwarnings = error). Stopping this server drops every
connection it accepted and waits for each handler to end."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class TcpServer:
    def __init__(self, handler: Handler, port: int = 0) -> None:
        self.handler = handler
        self.bind_port = port
        self.server: asyncio.Server | None = None
        self._open: dict[asyncio.Task[object], asyncio.StreamWriter] = {}

    async def start(self) -> TcpServer:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", self.bind_port)
        return self

    @property
    def port(self) -> int:
        assert self.server is not None, "start() first"
        return int(self.server.sockets[0].getsockname()[1])

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._open[task] = writer
        try:
            await self.handler(reader, writer)
        finally:
            del self._open[task]
            if not writer.is_closing():
                writer.close()

    async def stop(self, grace: float = 1.0) -> None:
        """Refuse new connections, drop the open ones, and wait for their handlers (those
        that do not end within `grace` seconds once their connection is gone are cancelled)."""
        if self.server is None:
            return
        self.server.close()
        for writer in self._open.values():
            writer.transport.abort()
        handlers = set(self._open)
        if handlers:
            _, stuck = await asyncio.wait(handlers, timeout=grace)
            for task in stuck:
                task.cancel()
            await asyncio.gather(*handlers, return_exceptions=True)
        await self.server.wait_closed()
        self.server = None

    async def __aenter__(self) -> TcpServer:
        return self if self.server is not None else await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

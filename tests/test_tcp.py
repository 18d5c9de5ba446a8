"""The tests' loopback server (tests/tcp.py) leaves no connection or handler behind."""

from __future__ import annotations

import asyncio
import contextlib

from tests.tcp import TcpServer


async def connected(server: TcpServer) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(b"hello")
    await writer.drain()
    return reader, writer


async def test_stop_drops_a_waiting_connection_and_its_handler_ends() -> None:
    ended: list[bytes] = []
    started = asyncio.Event()

    async def wait_for_hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        started.set()
        ended.append(await reader.read())  # only a hang-up ends this

    server = await TcpServer(wait_for_hang_up).start()
    reader, writer = await connected(server)
    await asyncio.wait_for(started.wait(), 5)
    await server.stop()
    assert ended == [b"hello"], "the handler saw its connection go, and finished"
    with contextlib.suppress(ConnectionError):
        assert await asyncio.wait_for(reader.read(), 5) == b""
    writer.close()


async def test_a_handler_that_ignores_the_drop_is_cancelled_after_the_grace() -> None:
    cancelled: list[bool] = []
    started = asyncio.Event()

    async def stuck(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.append(True)
            raise

    server = await TcpServer(stuck).start()
    _, writer = await connected(server)
    await asyncio.wait_for(started.wait(), 5)
    await server.stop(grace=0.1)
    assert cancelled == [True]
    writer.close()


async def test_a_handler_that_closes_politely_keeps_what_it_wrote() -> None:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readexactly(5)
        writer.write(b"bye")

    async with TcpServer(answer) as server:
        reader, writer = await connected(server)
        assert await asyncio.wait_for(reader.read(), 5) == b"bye"
        writer.close()

"""The PostgreSQL store's connections: kept open between calls, lent without ceremony.

asyncpg's Pool does a great deal per acquire and release: a task for the acquire's timeout,
another for the shielded release, a reset step, and three timers (acquire, release, idle
lifetime). Measured under callgrind on the send path (claim, suppression check, outcome),
that came to about 290,000 instructions per statement, more than the statement itself. This
pool lends an idle connection with a list pop and takes it back with an append; it starts a
timer only when it has to wait for a connection, and drops (rather than repairs) a connection
handed back in any doubtful state, since that is rare and a new one is cheap.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Final, TypeAlias

import asyncpg

if TYPE_CHECKING:
    Connection: TypeAlias = "asyncpg.Connection[asyncpg.Record]"
else:
    Connection: TypeAlias = asyncpg.Connection

# An idle connection older than this, beyond the pool's minimum, is closed: the server's
# backends are not held after a burst, and no idle socket lives long enough for a firewall
# or NAT table to forget it silently (asyncpg's pool uses the same 300 s).
IDLE_LIFETIME: Final = 300.0


class Pool:
    """At most `max_size` open connections; `acquire` waits `acquire_timeout` for one."""

    def __init__(self, connect: Callable[[], Awaitable[Connection]], *, min_size: int,
                 max_size: int, acquire_timeout: float) -> None:
        self._connect = connect
        self._min_size = min_size
        self._max_size = max_size
        self._acquire_timeout = acquire_timeout
        # Most recently used last: lent from the end (warm), aged out from the front.
        self._idle: deque[tuple[Connection, float]] = deque()
        self._size = 0  # open, being opened or reserved for a waiter; idle or lent
        # Each waiter gets a connection, or None: a slot came free (already counted in
        # _size for it), open your own in it.
        self._waiters: deque[asyncio.Future[Connection | None]] = deque()
        self._closed = False

    @property
    def size(self) -> int:
        return self._size

    async def open(self) -> None:
        """Open the minimum now, so a database that is down fails at start-up."""
        opened = await asyncio.gather(*(self._open_one() for _ in range(self._min_size)),
                                      return_exceptions=True)
        failed = [c for c in opened if isinstance(c, BaseException)]
        for conn in opened:
            if not isinstance(conn, BaseException):
                self.release(conn)
        if failed:
            await self.close()
            raise failed[0]

    async def acquire(self) -> Connection:
        if self._closed:
            raise asyncpg.InterfaceError("the pool is closed")
        idle = self._idle
        while idle:
            conn = idle.pop()[0]
            if not conn.is_closed():
                return conn
            self._size -= 1  # the server or the network dropped it while idle
        if self._size < self._max_size:
            return await self._open_one()
        return await self._wait()

    def release(self, conn: Connection, *, broken: bool = False) -> None:
        """Take a connection back. One closed or mid-transaction is dropped, and so is one
        `broken` (its statement timed out or was cancelled: asyncpg is still cancelling it
        on the server, and a new connection is cheaper than waiting for that)."""
        if broken or self._closed or conn.is_closed() or conn.is_in_transaction():
            self._drop(conn)
            return
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(conn)
                return
        now = time.monotonic()
        idle = self._idle
        idle.append((conn, now))
        if self._size > self._min_size and idle[0][1] < now - IDLE_LIFETIME:
            self._drop(idle.popleft()[0])

    def expire(self) -> None:
        """The server or the network failed: drop every idle connection, so each next call
        opens a fresh one instead of failing once on each stale one."""
        while self._idle:
            self._drop(self._idle.popleft()[0])

    async def close(self) -> None:
        """Close the idle connections; those still lent are closed as they come back."""
        self._closed = True
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_exception(asyncpg.InterfaceError("the pool is closed"))
        idle = [conn for conn, _ in self._idle]
        self._idle.clear()
        self._size -= len(idle)
        try:
            await asyncio.gather(*(conn.close() for conn in idle))
        except BaseException:
            for conn in idle:
                conn.terminate()
            raise

    def terminate(self) -> None:
        """Drop every idle connection at once (close() did not finish)."""
        self._closed = True
        self.expire()

    async def _open_one(self, *, reserved: bool = False) -> Connection:
        if not reserved:
            self._size += 1
        try:
            return await self._connect()
        except BaseException:
            self._size -= 1
            self._free_slot()
            raise

    async def _wait(self) -> Connection:
        waiter: asyncio.Future[Connection | None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            async with asyncio.timeout(self._acquire_timeout):
                conn = await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                handed = waiter.result()  # handed over just as the wait ended
                if handed is None:  # pass the reserved slot on
                    self._size -= 1
                    self._free_slot()
                else:
                    self.release(handed)
            else:
                waiter.cancel()  # release() skips it
            raise
        return conn if conn is not None else await self._open_one(reserved=True)

    def _drop(self, conn: Connection) -> None:
        conn.terminate()
        self._size -= 1
        self._free_slot()

    def _free_slot(self) -> None:
        """A slot came free: it is reserved for the first waiter, who opens a connection in
        it (so a caller arriving meanwhile cannot take it and overfill the pool)."""
        if self._closed:
            return
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                self._size += 1
                waiter.set_result(None)
                return

"""Run an ASGI app under uvicorn on 127.0.0.1 in a background thread."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self

import uvicorn
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from .vendor_contracts import CheckRequests, ContractLog

HOST = "127.0.0.1"


class ServerThread:
    """One uvicorn server in a daemon thread with its own event loop; restartable on the same port."""

    def __init__(self, app: ASGIApp, port: int = 0) -> None:
        self.app = app
        self.port = port
        self.url = ""
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    def start(self, timeout: float = 10.0) -> Self:
        """Start serving and block until the socket listens; reuses the last port on restart."""
        if self._thread is not None:
            raise RuntimeError("server already running")
        config = uvicorn.Config(
            self.app,
            host=HOST,
            port=self.port,
            log_level="warning",
            access_log=False,
            lifespan="off",
            # websockets' legacy module raises DeprecationWarning on import; we serve plain HTTP only.
            ws="none",
        )
        server = uvicorn.Server(config)
        thread = threading.Thread(target=server.run, name=f"uvicorn-{self.port}", daemon=True)
        thread.start()
        deadline = time.monotonic() + timeout
        while not server.started:
            if not thread.is_alive():
                # uvicorn calls sys.exit() on bind failure, which ends the thread silently.
                raise RuntimeError(f"uvicorn failed to start on {HOST}:{self.port}")
            if time.monotonic() > deadline:
                server.should_exit = True
                thread.join(5.0)
                raise RuntimeError("uvicorn did not start in time")
            time.sleep(0.005)
        self._server, self._thread = server, thread
        self.port = int(server.servers[0].sockets[0].getsockname()[1])
        self.url = f"http://{HOST}:{self.port}"
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Shut down; in-flight requests get `timeout` seconds before being cancelled."""
        server, thread = self._server, self._thread
        if server is None or thread is None:
            return
        server.should_exit = True
        thread.join(timeout)
        if thread.is_alive():
            # A handler is still busy (e.g. a long canned delay): stop waiting for it.
            server.force_exit = True
            thread.join(timeout)
        if thread.is_alive():
            raise RuntimeError("uvicorn thread did not exit")
        self._server = self._thread = None

    @property
    def running(self) -> bool:
        """True while the server thread is serving."""
        return self._thread is not None and self._thread.is_alive()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class ServedApp:
    """Base for fakes: an ASGI app that can serve itself via `start()`/`stop()` or `with`."""

    _asgi: ASGIApp
    # The vendor whose published documents every request is checked against
    # (tests/fakes/vendor_contracts.py); None: the vendor publishes none (Bird).
    contract_vendor: str | None = None

    def __init__(self) -> None:
        self.contract = ContractLog()
        self._runner: ServerThread | None = None
        self._last_port = 0
        # Set while stopping so delayed handlers return at once instead of holding shutdown.
        self.closing = threading.Event()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.contract_vendor is None:
            await self._asgi(scope, receive, send)
        else:
            await CheckRequests(self._asgi, self.contract_vendor, self.contract)(
                scope, receive, send)

    @property
    def contract_violations(self) -> list[str]:
        """Requests received and callbacks sent that the vendor's document forbids."""
        return self.contract.violations

    def start(self, port: int | None = None) -> Self:
        """Serve on 127.0.0.1 (given port, else the previous one, else a free one)."""
        if self._runner is not None:
            raise RuntimeError("already started")
        self.closing.clear()
        runner = ServerThread(self, port=self._last_port if port is None else port)
        runner.start()
        self._runner, self._last_port = runner, runner.port
        return self

    def stop(self) -> None:
        """Stop serving; recorded state is kept so the fake can be restarted on the same port."""
        if self._runner is not None:
            self.closing.set()
            self._runner.stop()
            self._runner = None

    @property
    def port(self) -> int:
        """Port of the running (or last) server."""
        return self._last_port

    @property
    def base_url(self) -> str:
        """`http://127.0.0.1:PORT` of the running (or last) server."""
        if not self._last_port:
            raise RuntimeError("not started")
        return f"http://{HOST}:{self._last_port}"

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost"})


def host_is_local(host_header: str) -> bool:
    """True when a Host header names 127.0.0.1/localhost (any port)."""
    host = host_header.strip().lower()
    return bool(host) and not host.startswith("[") and host.rsplit(":", 1)[0] in LOCAL_HOSTS


class LocalHostOnly:
    """ASGI middleware answering 421 to requests whose Host isn't 127.0.0.1/localhost."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            host = dict(scope["headers"]).get(b"host", b"").decode("latin-1")
            if not host_is_local(host):
                # A misconfigured client pointed at the real vendor must not get a fake success.
                body = {"status": 421, "message": f"Misdirected Request: unknown host {host!r}"}
                await JSONResponse(body, status_code=421)(scope, receive, send)
                return
        await self.app(scope, receive, send)


async def sleep_unless_gone(request: Request, delay: float, closing: threading.Event) -> None:
    """Wait `delay` s, returning early if the client hung up or the server is stopping."""
    deadline = time.monotonic() + delay
    while time.monotonic() < deadline:
        if closing.is_set() or await request.is_disconnected():
            return
        await asyncio.sleep(min(0.02, max(0.0, deadline - time.monotonic())))


@dataclass
class Canned:
    """A queued answer for a fake vendor's next valid send (FIFO).

    body: JSON to return, bytes for a raw body, or None for the vendor's default; None with a
    2xx status means really create the message, then reply `delay` seconds later. `reject`
    (Infobip) makes a 200 that refuses every destination with that status id.
    """

    status: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    reject: int | None = None


class CannedAnswers:
    """The canned-answer queue every vendor fake shares; the fake owns `_lock`."""

    _lock: threading.Lock
    _canned: deque[Canned]

    def queue(self, status: int, json_body: Any = None,
              headers: Mapping[str, str] | None = None, delay: float = 0.0) -> None:
        """Answer the next valid send with this (FIFO); see Canned."""
        self._enqueue(Canned(status, json_body, dict(headers or {}), delay))

    def _enqueue(self, canned: Canned) -> None:
        with self._lock:
            self._canned.append(canned)

    def unused_canned(self) -> list[Canned]:
        """Canned answers no send has consumed yet (tests assert none are left)."""
        with self._lock:
            return list(self._canned)

"""Fake delivery-report endpoint: JWT-authenticated POSTs of JSON event arrays, scriptable replies."""

from __future__ import annotations

import copy
import json
import threading
import time
from collections import deque
from collections.abc import Iterable
from typing import Any, NamedTuple

import jwt
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .server import LocalHostOnly, ServedApp, sleep_unless_gone

MAX_AGE = 15 * 60  # iat older than this is rejected
MAX_SKEW = 60  # iat this far in the future is rejected

Step = int | tuple[int, dict[str, str]] | tuple[int, dict[str, str], float]


class Post(NamedTuple):
    """One received POST: wall time, status we answered, parsed events (None if unparseable), headers."""

    time: float
    status: int
    events: list[Any] | None
    headers: dict[str, str]


class ReportReceiver(ServedApp):
    """Starlette app for `POST /reports/{name}` that checks an HS256 JWT and records accepted events."""

    def __init__(self, secret: str, *, prefix: str = "", algorithm: str = "HS256") -> None:
        super().__init__()
        if len(secret.encode()) < 32:
            # PyJWT emits InsecureKeyLengthWarning for short HS256 keys, which filterwarnings=error
            # would turn into 500s inside the server thread; fail loudly here instead.
            raise ValueError("HS256 secret must be at least 32 bytes")
        self.secret = secret
        # e.g. "Bearer " when the connector sends `Authorization: Bearer <jwt>`.
        self.prefix = prefix
        self.algorithm = algorithm
        self._cond = threading.Condition()
        self._posts: list[Post] = []
        self._post_names: list[str] = []
        self._events: list[dict[str, Any]] = []
        self._auth_failures: list[dict[str, Any]] = []
        self._script: deque[tuple[int, dict[str, str], float]] = deque()
        self._asgi = LocalHostOnly(
            Starlette(routes=[Route("/reports/{name}", self._post, methods=["POST"])])
        )

    # ---- test-side API ----

    def url(self, name: str = "r") -> str:
        """Absolute URL of the report endpoint `name` on the running server."""
        return f"{self.base_url}/reports/{name}"

    def script(self, steps: Iterable[Step]) -> None:
        """Answer the next authenticated POSTs with these statuses (optionally headers, delay s), then 200."""
        with self._cond:
            for step in steps:
                if isinstance(step, int):
                    self._script.append((step, {}, 0.0))
                elif len(step) == 2:
                    self._script.append((step[0], dict(step[1]), 0.0))
                else:
                    self._script.append((step[0], dict(step[1]), float(step[2])))

    def unused_script(self) -> list[tuple[int, dict[str, str], float]]:
        """Scripted replies not consumed yet."""
        with self._cond:
            return list(self._script)

    @property
    def posts(self) -> list[Post]:
        """Every POST received (including rejected ones), in arrival order."""
        with self._cond:
            return list(self._posts)

    @property
    def post_names(self) -> list[str]:
        """The `{name}` path segment of each entry in `posts`, same order."""
        with self._cond:
            return list(self._post_names)

    @property
    def events(self) -> list[dict[str, Any]]:
        """Events from POSTs answered 2xx, in arrival order."""
        with self._cond:
            return copy.deepcopy(self._events)

    @property
    def auth_failures(self) -> list[dict[str, Any]]:
        """POSTs rejected with 401: reason and the Authorization header seen."""
        with self._cond:
            return copy.deepcopy(self._auth_failures)

    def wait_for(self, n: int, timeout: float = 10.0) -> list[dict[str, Any]]:
        """Block until at least n accepted events; AssertionError (showing what arrived) on timeout."""
        with self._cond:
            if not self._cond.wait_for(lambda: len(self._events) >= n, timeout):
                raise AssertionError(
                    f"wanted {n} events within {timeout}s, got {len(self._events)}: {self._events!r}; "
                    f"posts={[(p.status, p.events) for p in self._posts]!r}; "
                    f"auth_failures={self._auth_failures!r}"
                )
            return copy.deepcopy(self._events)

    # ---- internals ----

    def _check_jwt(self, header: str | None) -> str | None:
        """Reason the Authorization header is unacceptable, or None when valid."""
        if header is None:
            return "missing Authorization header"
        if not header.startswith(self.prefix):
            return f"Authorization does not start with {self.prefix!r}"
        token = header[len(self.prefix) :]
        try:
            # iat bounds are checked by hand below so both limits are explicit and exact.
            claims = jwt.decode(
                token,
                self.secret,
                algorithms=[self.algorithm],
                options={"require": ["iat"], "verify_iat": False, "verify_aud": False},
            )
        except jwt.PyJWTError as exc:
            return f"invalid JWT: {exc}"
        iat = claims["iat"]
        if not isinstance(iat, int | float) or isinstance(iat, bool):
            return f"iat is not a number: {iat!r}"
        now = time.time()
        if now - iat > MAX_AGE:
            return f"iat too old ({now - iat:.0f}s)"
        if iat - now > MAX_SKEW:
            return f"iat in the future ({iat - now:.0f}s)"
        return None

    def _record(self, name: str, post: Post, accepted: list[dict[str, Any]] | None = None) -> None:
        with self._cond:
            self._posts.append(post)
            self._post_names.append(name)
            if accepted:
                self._events.extend(accepted)
            self._cond.notify_all()

    async def _post(self, request: Request) -> Response:
        name = request.path_params["name"]
        headers = dict(request.headers)
        raw = await request.body()
        try:
            parsed: Any = json.loads(raw)
        except ValueError:
            parsed = None
        events = parsed if isinstance(parsed, list) else None
        reason = self._check_jwt(request.headers.get("authorization"))
        if reason is not None:
            with self._cond:
                self._auth_failures.append(
                    {"reason": reason, "authorization": headers.get("authorization")}
                )
            self._record(name, Post(time.time(), 401, events, headers))
            return JSONResponse({"error": "unauthorized", "detail": reason}, status_code=401)
        if events is None or not all(isinstance(e, dict) for e in events):
            self._record(name, Post(time.time(), 400, events, headers))
            return JSONResponse({"error": "body must be a JSON array of objects"}, status_code=400)
        with self._cond:
            status, extra, delay = self._script.popleft() if self._script else (200, {}, 0.0)
        await sleep_unless_gone(request, delay, self.closing)
        ok = 200 <= status < 300
        self._record(name, Post(time.time(), status, events, headers), events if ok else None)
        return JSONResponse(
            {"accepted": len(events)} if ok else {"error": "scripted"},
            status_code=status,
            headers=extra,
        )

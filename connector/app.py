"""The ASGI application: routes, the request-log middleware, error mapping, lifespan."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import gc
import hmac
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Final

import msgspec
import structlog
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Message, Receive, Scope, Send

from connector import logs, metrics
from connector.api import callbacks, deadletters, health, inbound, mms, operator, verify
from connector.api import send as send_api  # `send` is the ASGI callable's name here
from connector.api.send import Answer
from connector.errors import ConnectorError, PlatformKeyRefused
from connector.services import Services
from connector.settings import Settings

log = structlog.get_logger("connector.http")

_INTERNAL = ConnectorError("unexpected error; it has been logged")
# Set once a request has run in this context. The server starts each request in a task of
# its own, from a context nothing was bound in, so the log context needs clearing only where
# one context serves a second request (an ASGI client calling the app in its own task):
# structlog's clear_contextvars copies and walks the whole context, ~17,000 instructions a
# request under callgrind, three requests a message (#11).
_SERVED: Final = contextvars.ContextVar("connector_request_served", default=False)


async def _connector_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ConnectorError)
    structlog.contextvars.bind_contextvars(error=exc.code)
    return Response(exc.body(), status_code=exc.status, headers=exc.headers(),
                    media_type="application/json")


_ROUTING_CODES: Final = {404: "not_found"}  # as the operator API's OperatorError documents


async def _no_route(request: Request, exc: Exception) -> Response:
    """Starlette's own 404/405 answers are plain text; every answer here is the error body.
    (A path a route cannot match, e.g. a suppressed account with a newline, lands here.)"""
    assert isinstance(exc, HTTPException)
    code = _ROUTING_CODES.get(exc.status_code, "invalid_request")
    body = msgspec.json.encode({"error": {"code": code, "message": exc.detail,
                                          "retryable": False, "vendor_code": None}})
    return Response(body, status_code=exc.status_code, headers=exc.headers,
                    media_type="application/json")


async def _unexpected(request: Request, exc: Exception) -> Response:
    log.exception("unhandled_error")
    return Response(_INTERNAL.body(), status_code=500, media_type="application/json")


# The hot routes, called without Starlette's layers (see Front).
_SEND_PATH: Final = "/sms/send"
_CALLBACK_ROUTE: Final = "/callbacks/{vendor}/status"
# Every platform call, present and future (SPEC section 2, "Platform key").
_PLATFORM_PREFIXES: Final = ("/sms/", "/mms/")
_PLATFORM_ROUTES: Final = frozenset({_SEND_PATH, "/sms/verify"})
_PLATFORM_HEADER: Final = b"chan-connector-key"
# Hot endpoints in the bare form: (scope, receive, services) -> Answer, which Front writes
# itself (see Front._answer_raw); the app's endpoints take a Request and return a Response.
RawEndpoint = Callable[[Scope, Receive, Services], Awaitable[Answer]]
_JSON_TYPE: Final = "application/json"
_JSON: Final = (b"content-type", _JSON_TYPE.encode())


async def _refuse_platform(scope: Scope, receive: Receive, services: Services) -> Answer:
    raise PlatformKeyRefused("Chan-Connector-Key is missing or wrong")


def _raw_adapter(endpoint: RawEndpoint) -> Callable[[Request], Awaitable[Response]]:
    """A raw endpoint as a Starlette endpoint, for what reaches it through the app (HEAD)."""
    async def adapted(request: Request) -> Response:
        answer = await endpoint(request.scope, request.receive, request.app.state.services)
        return Response(answer.body, status_code=answer.status, headers=answer.headers,
                        media_type=answer.media_type)
    return adapted


def platform_key_ok(scope: Scope, key: bytes) -> bool:
    """The platform key check: off when no key is set; constant-time compare otherwise."""
    if not key:
        return True
    path: str = scope["path"]
    if not (path.startswith(_PLATFORM_PREFIXES) or path in ("/sms", "/mms")):
        return True
    given = next((value for name, value in scope["headers"] if name == _PLATFORM_HEADER), b"")
    return hmac.compare_digest(given, key)


class _Answered:
    """The app's `send`, noting the status it answered with (500 until it answers)."""

    __slots__ = ("send", "status")

    def __init__(self, send: Send) -> None:
        self.send = send
        self.status = 500

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
        await self.send(message)


class Front:
    """The ASGI entry: one log line and one metric per request, errors mapped to the error
    body, the platform key checked on every platform route (before any body is read), and
    the two routes every message passes through three times (its send and its vendor
    callbacks) called directly. Everything else goes to the Starlette app.

    Measured with bench/servers.py: Starlette's application, middleware and routing layers
    cost about 75 µs of CPU per request over a bare ASGI callable; this keeps them for the
    operator and health routes only.
    """

    def __init__(self, app: Starlette, platform_key: str = "") -> None:
        self.app = app
        self.platform_key = platform_key.encode()
        self.state = app.state
        self.router = app.router
        self.routes = app.routes
        # REQUESTS' child by its labels: labels() validates and locks on every call (#11).
        # The same child it would return; as many as the metric itself has.
        self._counters: dict[tuple[str, str, int], Any] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if _SERVED.get():
            structlog.contextvars.clear_contextvars()  # a previous request's binds are here
        else:
            _SERVED.set(True)
        started = time.perf_counter()
        path, method = scope["path"], scope["method"]
        if platform_key_ok(scope, self.platform_key):
            endpoint, route = self._hot(scope, path, method)
        else:  # before anything reads the body or touches the store
            endpoint = _refuse_platform
            route = path if path in _PLATFORM_ROUTES else "unmatched"
        status = 500
        try:
            if endpoint is not None:
                status = await self._answer_raw(endpoint, scope, receive, send)
            else:
                answered = _Answered(send)
                try:
                    await self.app(scope, receive, answered)
                finally:
                    status = answered.status
                found = scope.get("route")
                route = getattr(found, "path", "unmatched")
        finally:
            counter = self._counters.get((route, method, status))
            if counter is None:
                counter = metrics.REQUESTS.labels(route, method, str(status))
                self._counters[(route, method, status)] = counter
            counter.inc()
            if logs.info_enabled:  # a dropped line costs no call (#11)
                log.info("request", method=method, path=path, status=status,
                         ms=round((time.perf_counter() - started) * 1000, 2))

    async def _answer_raw(self, endpoint: RawEndpoint, scope: Scope, receive: Receive,
                          send: Send) -> int:
        """A hot endpoint without Starlette's Request and Response (#11): it reads the body
        from `receive`; its answer is written as the two ASGI messages a Response would write
        (typed as its media_type says unless it names its own Content-Type), errors mapped as
        the app's handlers map them. Returns the status sent."""
        try:
            status, body, headers, media_type = await endpoint(scope, receive,
                                                               self.state.services)
        except ConnectorError as exc:
            structlog.contextvars.bind_contextvars(error=exc.code)
            status, body, headers, media_type = (exc.status, exc.body(), exc.headers(),
                                                 _JSON_TYPE)
        except Exception:
            log.exception("unhandled_error")
            status, body, headers, media_type = 500, _INTERNAL.body(), {}, _JSON_TYPE
        raw_headers = [(k.lower().encode("latin-1"), v.encode("latin-1"))
                       for k, v in headers.items()] if headers else []
        if not (status < 200 or status in (204, 304)):  # as Starlette's Response
            raw_headers.append((b"content-length", str(len(body)).encode()))
        if media_type is not None and (
                not headers or all(name != b"content-type" for name, _ in raw_headers)):
            raw_headers.append(_JSON if media_type == _JSON_TYPE
                               else (b"content-type", media_type.encode("latin-1")))
        await send({"type": "http.response.start", "status": status, "headers": raw_headers})
        await send({"type": "http.response.body", "body": body})
        return status

    @staticmethod
    def _hot(scope: Scope, path: str, method: str) -> tuple[RawEndpoint | None, str]:
        if path == _SEND_PATH and method == "POST":
            return send_api.send_asgi, _SEND_PATH
        if path.startswith("/callbacks/") and method in ("POST", "GET"):
            parts = path.split("/")
            if len(parts) == 4 and parts[3] == "status" and parts[2]:
                scope["path_params"] = {"vendor": parts[2]}
                return callbacks.status, _CALLBACK_ROUTE
        return None, ""


def create_app(settings: Settings, services: Services | None = None) -> Front:
    services = services or Services.build(settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await services.start()
        # Everything built so far lives as long as the process: keep it out of the cyclic
        # collector's scans, which otherwise walk it on every full collection.
        gc.freeze()
        task = asyncio.create_task(services.dispatcher.run()) if settings.dispatcher else None
        app.state.dispatcher_task = task
        try:
            yield
        finally:
            if task is not None:
                services.dispatcher.stop()
                await task
            await services.close()

    routes = [
        Route("/sms/send", send_api.send, methods=["POST"]),
        Route("/sms/verify", verify.verify, methods=["GET", "POST"]),
        Route("/mms/send", mms.send, methods=["POST"]),
        Route("/mms/verify", mms.verify, methods=["GET", "POST"]),
        Route("/callbacks/{vendor}/status", _raw_adapter(callbacks.status),
              methods=["POST", "GET"]),
        Route("/callbacks/{vendor}/inbound", inbound.inbound, methods=["POST", "GET"]),
        Route("/api/v1/messages/{id}", operator.message, methods=["GET"]),
        Route("/api/v1/dead-letters", deadletters.list_dead, methods=["GET"]),
        Route("/api/v1/dead-letters/replay", deadletters.replay, methods=["POST"]),
        Route("/api/v1/suppressions", operator.suppressions, methods=["GET"]),
        # {account:path}: an Infobip account is its base URL, slashes and all.
        Route("/api/v1/suppressions/{account:path}/{number}", operator.unsuppress,
              methods=["DELETE"]),
        Route("/api/v1/app-integrations/{appIntegrationId}/sms/test", operator.test_send,
              methods=["POST"]),
        Route("/healthz", health.healthz, methods=["GET"]),
        Route("/readyz", health.readyz, methods=["GET"]),
        Route("/openapi.yaml", health.openapi, methods=["GET"]),
        Route("/metrics", health.metrics, methods=["GET"]),
    ]
    handlers: dict[Any, Any] = {ConnectorError: _connector_error, HTTPException: _no_route,
                                Exception: _unexpected}
    app = Starlette(routes=routes, lifespan=lifespan, exception_handlers=handlers)
    app.state.services = services
    app.state.dispatcher_task = None
    return Front(app, settings.platform_key)

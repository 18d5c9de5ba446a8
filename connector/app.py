"""The ASGI application: routes, the request-log middleware, error mapping, lifespan."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import structlog
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from connector import metrics
from connector.api import callbacks, health, operator, send, verify
from connector.errors import ConnectorError
from connector.services import Services
from connector.settings import Settings

log = structlog.get_logger("connector.http")

_INTERNAL = ConnectorError("unexpected error; it has been logged")


async def _connector_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ConnectorError)
    structlog.contextvars.bind_contextvars(error=exc.code)
    return Response(exc.body(), status_code=exc.status, headers=exc.headers(),
                    media_type="application/json")


async def _unexpected(request: Request, exc: Exception) -> Response:
    log.exception("unhandled_error")
    return Response(_INTERNAL.body(), status_code=500, media_type="application/json")


class RequestLog:
    """One log line per request, with whatever the handler bound (request_id, vendor...)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        structlog.contextvars.clear_contextvars()
        started = time.perf_counter()
        status = 500

        async def capture(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, capture)
        finally:
            route = scope.get("route")
            metrics.REQUESTS.labels(getattr(route, "path", "unmatched"), scope["method"],
                                    str(status)).inc()
            log.info("request", method=scope["method"], path=scope["path"], status=status,
                     ms=round((time.perf_counter() - started) * 1000, 2))


def create_app(settings: Settings, services: Services | None = None) -> Starlette:
    services = services or Services.build(settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await services.start()
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
        Route("/sms/send", send.send, methods=["POST"]),
        Route("/sms/verify", verify.verify, methods=["GET", "POST"]),
        Route("/callbacks/{vendor}/status", callbacks.status, methods=["POST", "GET"]),
        Route("/api/v1/messages/{id}", operator.message, methods=["GET"]),
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
    handlers: dict[Any, Any] = {ConnectorError: _connector_error, Exception: _unexpected}
    app = Starlette(routes=routes, lifespan=lifespan, exception_handlers=handlers)
    app.state.services = services
    app.state.dispatcher_task = None
    app.add_middleware(RequestLog)
    return app

"""Liveness, readiness and the published OpenAPI document."""

from __future__ import annotations

from pathlib import Path
from typing import Final

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from connector.errors import StoreUnavailable
from connector.metrics import render
from connector.services import Services

OPENAPI: Final = Path(__file__).resolve().parents[2] / "openapi.yaml"


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    services: Services = request.app.state.services
    try:
        await services.store.ping()
    except StoreUnavailable as exc:
        return JSONResponse({"status": "unavailable", "detail": exc.message}, status_code=503)
    task = request.app.state.dispatcher_task
    if task is not None and task.done():
        # Reports would pile up unseen: let the orchestrator restart this process.
        return JSONResponse({"status": "unavailable", "detail": "the report dispatcher stopped"},
                            status_code=503)
    return JSONResponse({"status": "ready"})


async def metrics(request: Request) -> Response:
    services: Services = request.app.state.services
    try:
        services.outbox_gauges.update(*await services.store.outbox_stats())
    except StoreUnavailable:
        # Counters still render and the outbox gauges keep their last reading; store_up
        # says so, for the alert.
        services.outbox_gauges.store_up = 0
    body, content_type = render(services.outbox_gauges)
    return Response(body, media_type=content_type)


async def openapi(request: Request) -> Response:
    return Response(OPENAPI.read_bytes(), media_type="application/yaml")

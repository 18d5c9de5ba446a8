"""POST /callbacks/{vendor}/status: authenticate a vendor's status callback and apply it once,
only forward (SPEC section 3)."""

from __future__ import annotations

import time
from typing import Final
from urllib.parse import parse_qsl

import structlog
from starlette.requests import Request
from starlette.responses import Response

from connector.api.send import read_body
from connector.errors import InvalidSignature
from connector.model import Applied
from connector.services import Services
from connector.vendors import VENDORS
from connector.vendors.base import Callback

log = structlog.get_logger("connector.callbacks")

MAX_CALLBACK_BYTES: Final = 64 * 1024
_FORM: Final = "application/x-www-form-urlencoded"


def public_url(services: Services, request: Request) -> str:
    """The URL the vendor called, as it saw it: behind a proxy our own view differs."""
    query = request.url.query
    base = services.settings.public_url + request.url.path
    return f"{base}?{query}" if query else base


async def status(request: Request) -> Response:
    services: Services = request.app.state.services
    vendor = VENDORS.get(request.path_params["vendor"])
    if vendor is None:
        return Response(status_code=404)
    structlog.contextvars.bind_contextvars(vendor=vendor.name)
    body = await read_body(request, MAX_CALLBACK_BYTES)
    if request.method == "GET":
        params = [(k, v) for k, v in request.query_params.multi_items() if k != "m"]
    elif request.headers.get("content-type", "").startswith(_FORM):
        params = parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True)
    else:
        params = []
    token = request.query_params.get("m")
    message_id = services.tokens.unsign(token) if token else None
    if message_id is None:
        raise InvalidSignature("callback token is missing or invalid")
    structlog.contextvars.bind_contextvars(message_id=message_id)
    row = await services.store.message(message_id)
    if row is None:
        log.info("callback_unknown_message")
        return Response(status_code=204)
    if row.vendor != vendor.name:
        raise InvalidSignature(f"message was sent through {row.vendor}, not {vendor.name}")
    callback = Callback(url=public_url(services, request), headers=request.headers,
                        body=body, params=params)
    vendor.verify(callback, services.box.open(row.sealed_settings) or {})
    now = time.time()
    for update in vendor.parse_status(callback):
        applied = await services.store.apply_status(message_id, update, now, services.report)
        log.info("callback_applied", status=update.status.value, result=applied.value)
        if applied is Applied.APPLIED:
            services.dispatcher.wake()
    return Response(status_code=204)

"""POST /callbacks/{vendor}/status: authenticate a vendor's status callback and apply it once,
only forward (SPEC section 3)."""

from __future__ import annotations

import base64
import hmac
import time
from typing import Final
from urllib.parse import parse_qsl

import structlog
from starlette.requests import Request
from starlette.responses import Response

from connector import metrics
from connector.api.send import read_body
from connector.errors import BadRequest, InvalidSignature
from connector.model import Applied, StatusUpdate
from connector.optouts import suppress_reported
from connector.services import Services
from connector.store.base import MessageRow
from connector.vendors import VENDORS
from connector.vendors.base import Callback, Vendor

log = structlog.get_logger("connector.callbacks")

MAX_CALLBACK_BYTES: Final = 256 * 1024  # JSON bodies: Infobip and Sinch batch their reports
MAX_FORM_BYTES: Final = 32 * 1024  # a form receipt (Twilio, Vonage) is under 2 KiB
MAX_FIELDS: Final = 100  # Twilio's richest status callback has about 25
_FORM: Final = "application/x-www-form-urlencoded"


def public_url(services: Services, request: Request) -> str:
    """The URL the vendor called, as it saw it: behind a proxy our own view differs."""
    scope = request.scope
    query = scope["query_string"].decode("latin-1")
    # The path as Starlette's request.url gives it (escaped the same way), without the cost.
    path = scope["path"].replace("?", "%3F").replace("#", "%23").replace("\\", "%5C")
    base = services.settings.public_url + path
    return f"{base}?{query}" if query else base


def _check_basic_auth(services: Services, request: Request) -> None:
    expected = services.settings.callback_basic_auth
    if not expected:
        return
    given = request.headers.get("authorization", "")
    wanted = "Basic " + base64.b64encode(expected.encode()).decode()
    if not hmac.compare_digest(given.encode(), wanted.encode()):
        raise InvalidSignature("callback Basic credentials are missing or wrong")


async def _message_for(services: Services, vendor: Vendor, token_id: str | None,
                       update: StatusUpdate) -> MessageRow | None:
    store = services.store
    if token_id is not None:
        if update.message_ref is not None and update.message_ref != token_id:
            raise InvalidSignature("callback is about another message than its token")
        return await store.message(token_id)
    if update.message_ref is not None:
        row = await store.message(update.message_ref)
        if row is not None:
            return row
    if update.vendor_message_id is not None:
        return await store.find_by_vendor_id(vendor.name, update.vendor_message_id)
    return None


async def status(request: Request) -> Response:
    services: Services = request.app.state.services
    vendor = VENDORS.get(request.path_params["vendor"])
    if vendor is None:
        return Response(status_code=404)
    structlog.contextvars.bind_contextvars(vendor=vendor.name)
    try:
        return await _status(request, services, vendor)
    except InvalidSignature as exc:
        metrics.CALLBACKS.labels(vendor.name, "forbidden").inc()
        log.warning("callback_forbidden", reason=exc.message)
        raise


def _fields(text: str, what: str) -> list[tuple[str, str]]:
    try:
        return parse_qsl(text, keep_blank_values=True, max_num_fields=MAX_FIELDS)
    except ValueError:
        raise BadRequest(f"callback {what} has more than {MAX_FIELDS} fields") from None


async def _status(request: Request, services: Services, vendor: Vendor) -> Response:
    # Whatever can be checked without the body is checked before it is read: a forged
    # callback costs no read and no parse.
    _check_basic_auth(services, request)
    query = _fields(request.scope["query_string"].decode("latin-1"), "query")
    token = next((v for k, v in query if k == "m"), None)
    token_id = services.tokens.unsign(token) if token else None
    if token_id is None and (token or vendor.token_callbacks):
        raise InvalidSignature("callback token is missing or invalid")
    form = request.headers.get("content-type", "").startswith(_FORM)
    body = await read_body(request, MAX_FORM_BYTES if form else MAX_CALLBACK_BYTES)
    if request.method == "GET":
        params = [(k, v) for k, v in query if k != "m"]
    elif form:
        params = _fields(body.decode("utf-8", "replace"), "body")
    else:
        params = []
    callback = Callback(url=public_url(services, request), method=request.method,
                        headers=request.headers, body=body, params=params,
                        max_age=services.settings.signature_window)
    try:
        updates = vendor.parse_status(callback)
    except RecursionError:  # msgspec's answer to JSON nested deeper than it will follow
        raise BadRequest("callback body is nested too deeply") from None
    # Parsing reads only; nothing is applied until every message involved is verified.
    pending: list[tuple[MessageRow, StatusUpdate]] = []
    verified: set[str] = set()
    for update in updates:
        row = await _message_for(services, vendor, token_id, update)
        if row is None:
            metrics.CALLBACKS.labels(vendor.name, "unknown").inc()
            log.info("callback_unknown_message", vendor_message_id=update.vendor_message_id)
            continue
        if row.vendor != vendor.name:
            raise InvalidSignature(f"message was sent through {row.vendor}, not {vendor.name}")
        if row.id not in verified:
            vendor.verify(callback, services.box.open(row.sealed_settings) or {})
            verified.add(row.id)
        pending.append((row, update))
    now = time.time()
    for row, update in pending:
        structlog.contextvars.bind_contextvars(message_id=row.id)
        applied = await services.store.apply_status(row.id, update, now, services.report,
                                                    seen=row)
        metrics.CALLBACKS.labels(vendor.name, applied.value).inc()
        log.info("callback_applied", status=update.status.value, part=update.part_id,
                 result=applied.value)
        if applied is Applied.APPLIED:
            services.dispatcher.wake()
        if update.opted_out:
            await suppress_reported(services, row, update, applied)
    return Response(status_code=204)

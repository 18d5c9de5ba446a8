"""POST /callbacks/{vendor}/inbound: verify a vendor's inbound (MO) message with the account's
stored settings, apply its keyword and forward it once through the outbox (SPEC section 9)."""

from __future__ import annotations

import time
import uuid
from typing import Final
from urllib.parse import parse_qsl

import msgspec
import structlog
from starlette.requests import Request
from starlette.responses import Response

from connector import metrics
from connector.api.callbacks import MAX_CALLBACK_BYTES, _check_basic_auth, public_url
from connector.api.send import read_body
from connector.errors import InvalidSignature
from connector.inbound import Inbound, InboundAdapter, e164
from connector.inbound.registry import INBOUND
from connector.outbox import rfc3339
from connector.services import Services
from connector.store.base import InboundRecord, OutboxEntry
from connector.vendors.base import Callback

log = structlog.get_logger("connector.inbound")

_FORM: Final = "application/x-www-form-urlencoded"
# Twilio reads the answer as TwiML: an empty Response sends no reply to the recipient.
_TWIML: Final = b'<?xml version="1.0" encoding="UTF-8"?><Response/>'
_encode = msgspec.json.Encoder()


def platform_number(raw: str) -> str:
    number = e164(raw)
    return "00" + number[1:] if number.startswith("+") else number


def event_for(vendor: str, message: Inbound, url: str, now: float) -> OutboxEntry:
    """The event the platform gets: stable event_id per vendor message id."""
    event_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"inbound/{vendor}/{message.vendor_message_id}"))
    payload = {
        "event_id": event_id, "type": "inbound",
        "message": {"from": platform_number(message.sender), "to": platform_number(message.to),
                    "text": message.text,
                    "media": [{"url": m.url, "content_type": m.content_type}
                              for m in message.media]},
        "timestamp": rfc3339(message.received_at or now), "vendor": vendor,
        "vendor_message_id": message.vendor_message_id,
    }
    return OutboxEntry(event_id=event_id, url=url, payload=_encode.encode(payload))


async def inbound(request: Request) -> Response:
    services: Services = request.app.state.services
    adapter = INBOUND.get(request.path_params["vendor"])
    if adapter is None:
        return Response(status_code=404)
    if not services.settings.inbound_url:
        log.warning("inbound_not_taken", reason="CONNECTOR_INBOUND_URL is unset")
        return Response(status_code=404)
    structlog.contextvars.bind_contextvars(vendor=adapter.name)
    try:
        return await _inbound(request, services, adapter)
    except InvalidSignature as exc:
        metrics.INBOUND.labels(adapter.name, "forbidden").inc()
        log.warning("inbound_forbidden", reason=exc.message)
        raise


async def _callback(request: Request, services: Services) -> Callback:
    body = await read_body(request, MAX_CALLBACK_BYTES)
    if request.method == "GET":
        params = parse_qsl(request.scope["query_string"].decode("latin-1"),
                           keep_blank_values=True)
    elif request.headers.get("content-type", "").startswith(_FORM):
        params = parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True)
    else:
        params = []
    return Callback(url=public_url(services, request), method=request.method,
                    headers=request.headers, body=body, params=params)


async def _inbound(request: Request, services: Services, adapter: InboundAdapter) -> Response:
    _check_basic_auth(services, request)
    callback = await _callback(request, services)
    account = adapter.account(callback)
    if account is None:
        raise InvalidSignature(f"the {adapter.name} inbound webhook names no account")
    sealed = await services.store.account_settings(adapter.name, account)
    if sealed is None:
        raise InvalidSignature(f"{adapter.name} account {account} is unknown here: no send or "
                               "verify call has brought its credentials")
    settings = services.box.open(sealed)
    if settings is None:
        raise InvalidSignature(f"the stored settings of {adapter.name} account {account} cannot "
                               "be opened (CONNECTOR_SECRET_KEY changed since)")
    if adapter.signed(settings):
        adapter.verify(callback, settings)
    elif not services.settings.callback_basic_auth:
        raise InvalidSignature(f"{adapter.name} account {account} does not sign its webhooks "
                               "and CONNECTOR_CALLBACK_BASIC_AUTH is unset: nothing authenticates "
                               "this inbound message")
    # The tenant the account's own sends are checked as: a STOP lists the sender for them.
    tenant = services.sender.tenants.of(adapter.name, settings)
    now = time.time()
    forwarded = False
    for message in adapter.parse(callback):
        sender = e164(message.sender)
        listed = services.keywords.listed(message.text) if services.settings.suppress_opt_outs \
            else None
        record = InboundRecord(
            vendor=adapter.name, vendor_message_id=message.vendor_message_id,
            entry=event_for(adapter.name, message, services.settings.inbound_url, now),
            account=tenant.account, credential=tenant.credential, number=sender, listed=listed,
            reason=f"{adapter.name}: the recipient sent {message.text.strip()[:40]!r}")
        new = await services.store.record_inbound(record, now)
        result = "forwarded" if new else "duplicate"
        metrics.INBOUND.labels(adapter.name, result).inc()
        log.info("inbound_" + result, vendor_message_id=message.vendor_message_id,
                 keyword={True: "opt_out", False: "opt_in", None: None}[listed] if new else None)
        forwarded = forwarded or new
    if forwarded:
        services.dispatcher.wake()
    if adapter.name == "twilio":
        return Response(_TWIML, media_type="text/xml")
    return Response(status_code=204)

"""POST /sms/send: validate, claim the request_id, forward to the vendor, answer in the
platform's retry contract (SPEC section 2)."""

from __future__ import annotations

import math
import time
from typing import Any, Final

import msgspec
import structlog
from starlette.requests import Request
from starlette.responses import Response

from connector import msisdn, segments
from connector.errors import BadRequest, PayloadTooLarge, RefusedMessage
from connector.model import new_message_id
from connector.services import Services
from connector.store.base import NewMessage
from connector.vendors import VENDORS
from connector.vendors.base import Vendor

MAX_CUSTOM_DATA_BYTES: Final = 4096
_PREFIX: Final = "chan-"


class SendBody(msgspec.Struct):
    """The platform's message. Unknown extra fields are ignored; wrong types are refused."""

    sender: str
    recipient: str
    message: str
    custom_data: str
    request_id: str | None = None
    callback_url: str | None = None
    webhook_url: str | None = None
    metadata: dict[str, Any] | None = None


_decode = msgspec.json.Decoder(SendBody)
_encode = msgspec.json.Encoder()


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refusing (413) as soon as it passes `limit` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"body is larger than {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"body is larger than {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def parse_body(raw: bytes) -> SendBody:
    try:
        body = _decode.decode(raw)
    except msgspec.ValidationError as exc:
        raise BadRequest(f"invalid body: {exc}", code="invalid_field") from None
    except msgspec.DecodeError:
        raise BadRequest("body is not valid JSON", code="malformed_json") from None
    if not body.message:
        raise BadRequest("message must not be empty", code="invalid_field")
    if len(body.message) > segments.MAX_MESSAGE_CHARS:
        raise RefusedMessage(f"message is over {segments.MAX_MESSAGE_CHARS} characters",
                             code="message_too_long")
    if len(body.custom_data.encode()) > MAX_CUSTOM_DATA_BYTES:
        raise BadRequest(f"custom_data is over {MAX_CUSTOM_DATA_BYTES} bytes",
                         code="invalid_field")
    if not (body.callback_url or body.webhook_url):
        raise BadRequest("callback_url (or webhook_url) is required", code="invalid_field")
    return body


def vendor_settings(request: Request, default_vendor: str) -> tuple[Vendor, dict[str, str]]:
    """The vendor named by Chan-Vendor (or the default) and its Chan-* settings."""
    given = {name[len(_PREFIX):]: value for name, value in request.headers.items()
             if name.startswith(_PREFIX) and value}
    name = given.pop("vendor", default_vendor).lower()
    vendor = VENDORS.get(name)
    if vendor is None:
        raise BadRequest(f"Chan-Vendor {name!r} is not one of {', '.join(VENDORS)}",
                         code="unknown_vendor")
    for setting in vendor.required:
        if setting not in given:
            raise BadRequest(f"missing header {_header(setting)} (required for {vendor.name})",
                             code="missing_setting")
    known = set(vendor.required) | set(vendor.optional)
    return vendor, {k: v for k, v in given.items() if k in known}


def _header(setting: str) -> str:
    return "Chan-" + "-".join(part.capitalize() for part in setting.split("-"))


async def send(request: Request) -> Response:
    services: Services = request.app.state.services
    settings = services.settings
    body = parse_body(await read_body(request, settings.max_body_bytes))
    request_id = body.request_id or None
    structlog.contextvars.bind_contextvars(request_id=request_id)
    vendor, config = vendor_settings(request, settings.default_vendor)
    structlog.contextvars.bind_contextvars(vendor=vendor.name)
    to_e164, number = msisdn.recipient(body.recipient)
    sender = msisdn.parse_sender(body.sender)
    pooled = services.pools.pick(sender, number, vendor.name, config)  # a pool's number, or None
    sender = pooled or sender
    services.rules.check(number, sender)
    callback_url = body.callback_url or body.webhook_url or ""
    await services.guard.check(callback_url, "callback_url", settings.callback_hosts or None)
    base_url = vendor.base_url(config)  # refuses bad settings (e.g. a region) before the claim
    if "base-url" in config:
        await services.guard.check(base_url, "Chan-Base-Url",
                                   vendor.hosts + settings.vendor_hosts)
    info = segments.analyse(body.message)
    message_id = new_message_id()
    structlog.contextvars.bind_contextvars(message_id=message_id)
    message = NewMessage(
        id=message_id, request_id=request_id, vendor=vendor.name,
        sealed_settings=services.box.seal(config), sender=sender, to_number=to_e164,
        custom_data=body.custom_data, callback_url=callback_url,
        metadata=None if body.metadata is None else _encode.encode(body.metadata),
        segments=info.segments, encoding=info.encoding, from_number=pooled,
        claimed_until=time.time() + services.sender.claim_seconds,
        # Dedupe within the caller's tenant: a request_id reused with another account or a
        # wrong secret never meets this account's claim.
        claim_key=services.sender.tenants.of(vendor.name, config).claim_key(request_id),
    )
    answer = await services.sender.send(vendor, config, message, body.message)
    headers = {}
    if answer.retry_after is not None:
        headers["Retry-After"] = str(max(1, math.ceil(answer.retry_after)))
    return Response(answer.body, status_code=answer.status, headers=headers,
                    media_type="application/json")

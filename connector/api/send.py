"""POST /sms/send: validate, claim the request_id, forward to the vendor, answer in the
platform's retry contract (SPEC section 2)."""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Mapping
from typing import Any, Final, NamedTuple, Protocol, TypeVar

import msgspec
import structlog
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import Receive, Scope

from connector import mms, msisdn, segments
from connector.errors import BadRequest, PayloadTooLarge, RefusedMessage
from connector.model import Mms, new_message_id
from connector.services import Services
from connector.store.base import NewMessage
from connector.vendors import VENDORS
from connector.vendors.base import Vendor

MAX_CUSTOM_DATA_BYTES: Final = 4096
_PREFIX: Final = "chan-"
_RAW_PREFIX: Final = b"chan-"
T = TypeVar("T")


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


async def receive_body(scope: Scope, receive: Receive, limit: int) -> bytes:
    """read_body for a bare ASGI call (Front's hot route): the same refusals, read straight
    from `receive` without building a Request (#11)."""
    for name, value in scope["headers"]:
        if name == b"content-length" and value.isdigit() and int(value) > limit:
            raise PayloadTooLarge(f"body is larger than {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect()  # as Request.stream() says it
        chunk: bytes = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"body is larger than {limit} bytes")
        if not message.get("more_body", False):
            if not chunks:
                return chunk
            chunks.append(chunk)
            return b"".join(chunks)
        chunks.append(chunk)


def parse_body(raw: bytes) -> SendBody:
    body = decode(raw, _decode)
    if not body.message:
        raise BadRequest("message must not be empty", code="invalid_field")
    check_common(body)
    return body


def decode(raw: bytes, decoder: msgspec.json.Decoder[T]) -> T:
    try:
        return decoder.decode(raw)
    except msgspec.ValidationError as exc:
        raise BadRequest(f"invalid body: {exc}", code="invalid_field") from None
    except msgspec.DecodeError:
        raise BadRequest("body is not valid JSON", code="malformed_json") from None
    except RecursionError:  # msgspec refuses to follow nesting this deep (e.g. metadata)
        raise BadRequest("body is nested too deeply", code="malformed_json") from None


def check_common(body: SendBody) -> None:
    """The rules every send body obeys, SMS or MMS."""
    if len(body.message) > segments.MAX_MESSAGE_CHARS:
        raise RefusedMessage(f"message is over {segments.MAX_MESSAGE_CHARS} characters",
                             code="message_too_long")
    if len(body.custom_data.encode()) > MAX_CUSTOM_DATA_BYTES:
        raise BadRequest(f"custom_data is over {MAX_CUSTOM_DATA_BYTES} bytes",
                         code="invalid_field")
    if not (body.callback_url or body.webhook_url):
        raise BadRequest("callback_url (or webhook_url) is required", code="invalid_field")
    if body.request_id and "\x00" in body.request_id:
        # The dedupe key is looked up as text, and PostgreSQL text cannot hold NUL: refused
        # here on every store, rather than a 503 the platform would retry for ever.
        raise BadRequest("request_id must not contain NUL (U+0000)", code="invalid_field")


class Content(NamedTuple):
    """What goes to the vendor: the text, and for /mms/send the MMS part or the fallback."""

    text: str
    mms: Mms | None = None
    fallback: bool | None = None  # None: an SMS send; else whether the fallback SMS goes


class Extension(Protocol):
    """A send endpoint beside /sms/send (/mms/send): its body and what it sends, with every
    other step (headers, rules, URL checks, dedupe, throttle, suppression) shared."""

    def parse(self, raw: bytes) -> tuple[SendBody, object]:
        """The common part (checked with check_common) and the endpoint's own part."""

    async def content(self, services: Services, vendor: Vendor, config: Mapping[str, str],
                      to_e164: str, own: object, body: SendBody) -> Content:
        """Check the endpoint's own part (URLs, vendor support) and say what to send."""


def vendor_settings(request: Request, default_vendor: str) -> tuple[Vendor, dict[str, str]]:
    """The vendor named by Chan-Vendor (or the default) and its Chan-* settings."""
    return settings_of(chan_headers(request), default_vendor)


def chan_headers(request: Request) -> dict[str, str]:
    """The Chan-* headers, without the prefix (the later of repeated headers wins)."""
    return {name[len(_PREFIX):]: value for name, value in request.headers.items()
            if name.startswith(_PREFIX) and value}


def raw_chan_headers(headers: Iterable[tuple[bytes, bytes]]) -> dict[str, str]:
    """chan_headers from an ASGI scope's headers, decoding only those."""
    return {name[len(_PREFIX):].decode("latin-1"): value.decode("latin-1")
            for name, value in headers if name.startswith(_RAW_PREFIX) and value}


def settings_of(given: dict[str, str], default_vendor: str) -> tuple[Vendor, dict[str, str]]:
    """The vendor and its settings from the Chan-* headers (without the prefix; consumed)."""
    name = given.pop("vendor", default_vendor).lower()
    vendor = VENDORS.get(name)
    if vendor is None:
        raise BadRequest(f"Chan-Vendor {name!r} is not one of {', '.join(VENDORS)}",
                         code="unknown_vendor")
    missing = [_header(setting) for setting in vendor.required if setting not in given]
    if missing:
        # Every one at once: the platform's user fixes the integration in one pass.
        noun = "header" if len(missing) == 1 else "headers"
        raise BadRequest(f"missing {noun} {', '.join(missing)} (required for {vendor.name})",
                         code="missing_setting")
    known = set(vendor.required) | set(vendor.optional)
    config = {k: v for k, v in given.items() if k in known}
    bad = [_header(k) for k, v in config.items() if not v.isprintable()]
    if bad:
        # Settings go into vendor URLs and headers: a tab or control character there would
        # make a request no client can send. The value is not echoed: it may be a secret.
        raise BadRequest(f"{', '.join(sorted(bad))} must not contain tabs or control characters",
                         code="invalid_setting")
    return vendor, config


def _header(setting: str) -> str:
    return "Chan-" + "-".join(part.capitalize() for part in setting.split("-"))


class Answer(NamedTuple):
    """What a send answers, before any framework wraps it."""

    status: int
    body: bytes  # JSON, unless `headers` name another Content-Type
    headers: Mapping[str, str]
    # The Content-Type when `headers` name none; None for an answer without one (a bare 204).
    media_type: str | None = "application/json"


async def send(request: Request, extension: Extension | None = None) -> Response:
    """The Starlette endpoint (/mms/send, and /sms/send when reached through the app)."""
    services: Services = request.app.state.services
    raw = await read_body(request, services.settings.max_body_bytes)
    answer = await handle(services, raw, chan_headers(request), extension)
    return Response(answer.body, status_code=answer.status, headers=answer.headers,
                    media_type="application/json")


async def send_asgi(scope: Scope, receive: Receive, services: Services) -> Answer:
    """/sms/send as Front calls it: no Request, no Response (#11: building them, the header
    map and the body stream cost about a tenth of a send's Python calls)."""
    raw = await receive_body(scope, receive, services.settings.max_body_bytes)
    return await handle(services, raw, raw_chan_headers(scope["headers"]), None)


async def handle(services: Services, raw: bytes, chan: dict[str, str],
                 extension: Extension | None) -> Answer:
    """One send, from its body and its Chan-* headers to the platform's answer."""
    settings = services.settings
    body, own = extension.parse(raw) if extension else (parse_body(raw), None)
    request_id = body.request_id or None
    structlog.contextvars.bind_contextvars(request_id=request_id)
    vendor, config = settings_of(chan, settings.default_vendor)
    structlog.contextvars.bind_contextvars(vendor=vendor.name)
    to_e164, number, region = msisdn.destination(body.recipient)
    sender = msisdn.parse_sender(body.sender)
    pooled = services.pools.pick(sender, number, vendor.name, config)  # a pool's number, or None
    sender = pooled or sender
    services.rules.check(number, sender, region)
    callback_url = body.callback_url or body.webhook_url or ""
    await services.guard.check(callback_url, "callback_url", settings.callback_hosts or None)
    content = (await extension.content(services, vendor, config, to_e164, own, body)
               if extension else Content(body.message))
    base_url = vendor.base_url(config)  # refuses bad settings (e.g. a region) before the claim
    if "base-url" in config:
        await services.guard.check(base_url, "Chan-Base-Url",
                                   vendor.hosts + settings.vendor_hosts)
    info = segments.analyse(content.text)
    tenant = services.sender.tenants.of(vendor.name, config)  # once: an HMAC of the secret
    message_id = new_message_id()
    structlog.contextvars.bind_contextvars(message_id=message_id)
    message = NewMessage(
        id=message_id, request_id=request_id, vendor=vendor.name,
        sealed_settings=services.box.seal(config), sender=sender, to_number=to_e164,
        custom_data=body.custom_data, callback_url=callback_url,
        metadata=None if body.metadata is None else _encode.encode(body.metadata),
        segments=1 if content.mms else info.segments,
        encoding=mms.stored_encoding(info.encoding, content.fallback), from_number=pooled,
        claimed_until=time.time() + services.sender.claim_seconds,
        mms=content.mms, fallback=content.fallback,
        # Dedupe within the caller's tenant: a request_id reused with another account or a
        # wrong secret never meets this account's claim.
        claim_key=tenant.claim_key(request_id),
    )
    answer = await services.sender.send(vendor, config, message, content.text, tenant)
    if answer.status == 200:  # credentials that worked: inbound webhooks are verified with them
        await services.accounts.remember(vendor.name, config, message.sealed_settings)
    if settings.keep_message_text:
        # After the send, so the claim statement stays as it is; a repeat's own id was never
        # inserted, so this changes nothing for it.
        await services.store.keep_text(message_id, content.text)
    headers = {}
    if answer.retry_after is not None:
        headers["Retry-After"] = str(max(1, math.ceil(answer.retry_after)))
    return Answer(answer.status, answer.body, headers)

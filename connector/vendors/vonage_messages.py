"""Vonage Messages API (api.nexmo.com/v1/messages), `mms` channel: send and message-status.

Facts: Vonage's Messages API OpenAPI document (1.20.0: OutboundMMSImage/vCard/Audio/Video/File/
Content, channelOptionsMms, outboundMessageCommon, messageStatusMMS, x-errors) and
developer.vonage.com/en/messages/concepts/mms (US and Canada only). Sent with Basic auth (API
key and secret), which the send accepts; status webhooks go to the per-message `webhook_url`,
signed (when the account signs) with an HS256 JWT whose `payload_hash` is the body's SHA-256.
Vonage's authentication page says Basic auth "does not support webhooks" (meaning the
application's webhook settings); that the per-message `webhook_url` still applies is [inferred].
"""

from __future__ import annotations

import hashlib
import hmac
import warnings
from collections.abc import Mapping
from datetime import datetime
from typing import Final

import jwt
import msgspec
import structlog
from jwt.warnings import InsecureKeyLengthWarning

from connector import http
from connector.errors import AmbiguousOutcome, InvalidSignature, VendorError
from connector.mms import kind
from connector.model import Accepted, Outgoing, Status, StatusUpdate
from connector.msisdn import digits
from connector.vendors.base import AUTH, REJECTED, THROTTLED, TRANSIENT, classify, error_for

log = structlog.get_logger("connector.vendors.vonage")

DEFAULT_BASE_URL: Final = "https://api.nexmo.com"
TTL_RANGE: Final = (300, 259200)  # channelOptionsMms.ttl, seconds

# messageStatusBase.status
STATUS_MAP: Final[Mapping[str, Status]] = {
    "submitted": Status.SENT,
    "delivered": Status.DELIVERED,
    "rejected": Status.REJECTED,
    "undeliverable": Status.UNDELIVERED,
}
# x-errors codes (in an error's `type` URL fragment, or a status error's `title`).
ERROR_CODES: Final[Mapping[str, tuple[str, str]]] = {
    "1000": (THROTTLED, "throttled"),
    "1030": (TRANSIENT, "vendor_unavailable"),
    "1050": (REJECTED, "blocked"),
    "1060": (AUTH, "vendor_account_suspended"),
    "1120": (REJECTED, "sender_not_allowed"),
    "1170": (REJECTED, "invalid_recipient"),
    "1240": (REJECTED, "opted_out"),
    "1420": (REJECTED, "sender_not_allowed"),
    "1430": (REJECTED, "invalid_recipient"),
    "1380": (REJECTED, "content_rejected"),
    "1381": (REJECTED, "content_rejected"),
    "1382": (REJECTED, "content_rejected"),
}
# "Illegal Number": the user sent STOP to this sender (x-errors 1240).
OPT_OUT_CODES: Final = frozenset({"1240"})


class _Accepted(msgspec.Struct):
    message_uuid: str


class _Problem(msgspec.Struct):
    type: str | None = None
    title: str | None = None
    detail: str | None = None


class _Status(msgspec.Struct):
    message_uuid: str
    status: str = ""
    timestamp: str | None = None
    client_ref: str | None = None
    from_: str | None = msgspec.field(default=None, name="from")
    error: _Problem | None = None


_accepted = msgspec.json.Decoder(_Accepted)
_problem = msgspec.json.Decoder(_Problem)
_status = msgspec.json.Decoder(_Status)


def base_url(settings: Mapping[str, str]) -> str:
    return settings.get("base-url", DEFAULT_BASE_URL).rstrip("/")


def build_mms(message: Outgoing, headers: Mapping[str, str],
              settings: Mapping[str, str]) -> http.Request:
    """One item: its own message type (image, vcard, audio, video, file) with the text as
    caption; several: a `content` message listing them (the text captions the first). The
    Messages API's MMS has no subject field."""
    assert message.mms is not None
    items = message.mms.media
    body: dict[str, object] = {
        "channel": "mms", "to": digits(message.to_e164), "from": digits(message.sender),
        "client_ref": message.message_id, "webhook_url": message.callback_url,
        "webhook_version": "v1",
    }
    caption = {"caption": message.text} if message.text else {}
    if len(items) == 1:
        body["message_type"] = kind(items[0])
        body[kind(items[0])] = {"url": items[0].url, **caption}
    else:
        body["message_type"] = "content"
        body["content"] = [{"type": kind(item), "url": item.url, **(caption if i == 0 else {})}
                           for i, item in enumerate(items)]
    if message.validity is not None:
        low, high = TTL_RANGE
        body["ttl"] = max(low, min(high, message.validity))
    return http.request("POST", f"{base_url(settings)}/v1/messages", headers, json=body)


def _code(problem: _Problem) -> str | None:
    fragment = (problem.type or "").rpartition("#")[2]
    return fragment if fragment.isdigit() else None


def parse_mms(response: http.Response) -> Accepted:
    if response.status_code in (200, 202):
        try:
            return Accepted(vendor_message_id=_accepted.decode(response.content).message_uuid)
        except msgspec.DecodeError:
            raise AmbiguousOutcome("vonage: unreadable answer to an MMS send") from None
    raise failure(response)


def failure(response: http.Response) -> VendorError:
    try:
        problem = _problem.decode(response.content)
    except msgspec.DecodeError:
        problem = _Problem()
    detail = ": ".join(filter(None, [problem.title, problem.detail]))
    code = _code(problem)
    if response.status_code == 402:
        return error_for(AUTH, "insufficient_funds", f"vonage: {detail or 'payment required'}",
                         code)
    return classify(response, vendor="vonage", vendor_code=code, detail=detail,
                    codes=ERROR_CODES)


def is_message_status(body: bytes) -> bool:
    """A Messages API webhook (JSON with a message_uuid), not an SMS API receipt."""
    return body.lstrip().startswith(b"{") and b'"message_uuid"' in body


def verify(headers: Mapping[str, str], body: bytes, secret: str, now: float,
           window: float) -> None:
    """Authorization: Bearer <HS256 JWT signed with the signature secret> whose payload_hash
    is the hex SHA-256 of the raw body; iat within the window (replays keep their old iat)."""
    scheme, _, token = headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise InvalidSignature("Vonage message-status has no signed JWT")
    try:
        with warnings.catch_warnings():  # the account's secret, however long Vonage made it
            warnings.simplefilter("ignore", InsecureKeyLengthWarning)
            claims = jwt.decode(token, secret, algorithms=["HS256"],
                                options={"require": ["iat"]})
    except jwt.PyJWTError as exc:
        raise InvalidSignature(f"Vonage message-status JWT is not valid: {exc}") from None
    wanted = hashlib.sha256(body).hexdigest()
    if not hmac.compare_digest(str(claims.get("payload_hash", "")), wanted):
        raise InvalidSignature("Vonage message-status payload_hash does not match the body")
    if abs(now - float(claims["iat"])) > window:
        raise InvalidSignature("Vonage message-status JWT is stale")


def parse_status(body: bytes) -> list[StatusUpdate]:
    try:
        event = _status.decode(body)
    except msgspec.DecodeError:
        log.warning("unreadable_callback", vendor="vonage")
        return []
    status = STATUS_MAP.get(event.status)
    if status is None:
        log.warning("unknown_vendor_status", vendor="vonage", vendor_status=event.status)
        return []
    failed = status.terminal and status is not Status.DELIVERED and event.error is not None
    code = (event.error.title or _code(event.error)) if failed and event.error else None
    return [StatusUpdate(
        status=status, vendor_message_id=event.message_uuid,
        message_ref=event.client_ref or None, occurred_at=_when(event.timestamp),
        error_code=code, error_message=event.error.detail if failed and event.error else None,
        from_number=_sender(event.from_), opted_out=code in OPT_OUT_CODES,
    )]


def _when(stamp: str | None) -> float | None:
    try:
        return datetime.fromisoformat(stamp).timestamp() if stamp else None
    except ValueError:
        return None


def _sender(raw: str | None) -> str | None:
    return "+" + raw if raw and raw.isdigit() and len(raw) > 8 else raw or None

"""Twilio Programmable Messaging: form-encoded send, X-Twilio-Signature callbacks.

Facts: https://www.twilio.com/docs/messaging/api/message-resource,
https://www.twilio.com/docs/usage/webhooks/webhooks-security, error codes from
https://www.twilio.com/docs/api/errors (table in shared/reference/vendors.md section 1.2).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping
from typing import Final
from urllib.parse import parse_qsl, urlsplit, urlunsplit

import msgspec
import structlog

from connector import http
from connector.errors import InvalidSignature, VendorAuthFailed
from connector.mms import US_CA, region
from connector.model import Accepted, Mms, Outgoing, Status, StatusUpdate
from connector.vendors.base import AUTH, THROTTLED, TRANSIENT, Callback, basic_auth, classify

log = structlog.get_logger("connector.vendors.twilio")

DEFAULT_BASE_URL: Final = "https://api.twilio.com"
# ValidityPeriod: seconds in Twilio's outgoing queue, documented as 1-36000 (default 36000).
# CONNECTOR_VALIDITY is clamped into that range rather than refused.
VALIDITY_RANGE: Final = (1, 36000)

# https://www.twilio.com/docs/messaging/api/message-resource#message-status-values
STATUS_MAP: Final[Mapping[str, Status]] = {
    "accepted": Status.ACCEPTED,
    "scheduled": Status.ACCEPTED,
    "queued": Status.ACCEPTED,
    "sending": Status.SENT,
    "sent": Status.SENT,
    "delivered": Status.DELIVERED,
    "read": Status.DELIVERED,  # OTT channels report read after delivered
    "undelivered": Status.UNDELIVERED,
    "partially_delivered": Status.UNDELIVERED,  # not every part arrived
    "failed": Status.FAILED,
    "canceled": Status.FAILED,
}

# Twilio error code -> (class, platform code). Unlisted 4xx codes are permanent rejections.
ERROR_CODES: Final[Mapping[str, tuple[str, str]]] = {
    "20003": (AUTH, "vendor_auth_failed"),
    "20005": (AUTH, "vendor_account_inactive"),
    "30002": (AUTH, "vendor_account_suspended"),
    "21211": ("rejected", "invalid_recipient"),
    "21614": ("rejected", "invalid_recipient"),
    "21612": ("rejected", "invalid_recipient"),
    "21407": ("rejected", "invalid_recipient"),
    "30005": ("rejected", "invalid_recipient"),
    "30006": ("rejected", "landline"),
    "21610": ("rejected", "opted_out"),
    "30004": ("rejected", "blocked"),
    "30007": ("rejected", "content_rejected"),
    "21602": ("rejected", "content_rejected"),
    "21617": ("rejected", "message_too_long"),
    "30019": ("rejected", "message_too_long"),
    "21606": ("rejected", "sender_not_allowed"),
    "21603": ("rejected", "sender_not_allowed"),
    "21703": ("rejected", "sender_not_allowed"),
    "30024": ("rejected", "sender_not_allowed"),
    "30032": ("rejected", "sender_not_allowed"),
    "21408": ("rejected", "region_not_permitted"),
    "20429": (THROTTLED, "throttled"),
    "14107": (THROTTLED, "throttled"),
    "30022": (THROTTLED, "throttled"),
    "63018": (THROTTLED, "throttled"),
    "30001": (TRANSIENT, "vendor_unavailable"),
    "21611": (TRANSIENT, "vendor_unavailable"),
    "30017": (TRANSIENT, "vendor_unavailable"),
    "30410": (TRANSIENT, "vendor_unavailable"),
    "20500": (TRANSIENT, "vendor_unavailable"),
    "20503": (TRANSIENT, "vendor_unavailable"),
}
# Codes that mean the recipient opted out (21610: replied STOP), whether the send answer or a
# later status callback carries them. 30004 "Message blocked" is left out: it may be the
# carrier's doing as much as the recipient's.
OPT_OUT_CODES: Final = frozenset(
    code for code, (_, platform) in ERROR_CODES.items() if platform == "opted_out")


class _Created(msgspec.Struct):
    sid: str
    status: str | None = None
    num_segments: str | int | None = None
    from_: str | None = msgspec.field(default=None, name="from")


class _Error(msgspec.Struct):
    # Legacy bodies say code/message; RFC 9457 bodies say code/detail.
    code: int | str | None = None
    message: str | None = None
    detail: str | None = None


_created = msgspec.json.Decoder(_Created)
_error = msgspec.json.Decoder(_Error)


def signature(token: str, url: str, params: list[tuple[str, str]]) -> str:
    """Base64 HMAC-SHA1 over the URL then each param name+value, sorted; values per name
    sorted and de-duplicated as the official SDK does (sorting the distinct pairs orders by
    name, then value: the same string, built without a Python call per field)."""
    payload = url + "".join(map("".join, sorted(set(params))))
    keyed = _KEYED.get(token)
    if keyed is None:
        keyed = _KEYED[token] = hmac.new(token.encode(), digestmod=hashlib.sha1)
        if len(_KEYED) > _KEYED_TOKENS:
            del _KEYED[next(iter(_KEYED))]
    mac = keyed.copy()
    mac.update(payload.encode())
    return base64.b64encode(mac.digest()).decode()


# HMACs keyed with an account's auth token, oldest first: copying one skips the key set-up
# a one-shot hmac.digest repeats for each callback (~6,000 of its ~28,000 instructions under
# callgrind). Bounded; process memory only, never logged.
_KEYED: dict[str, hmac.HMAC] = {}
_KEYED_TOKENS: Final = 256


def _port_variants(url: str) -> tuple[str, str]:
    """The URL with and without its default port: Twilio signs either form (per its SDK)."""
    parts = urlsplit(url)
    default = 443 if parts.scheme == "https" else 80
    host = parts.hostname or ""
    bare = urlunsplit(parts._replace(netloc=host if parts.port in (None, default) else parts.netloc))
    with_port = urlunsplit(parts._replace(netloc=f"{host}:{parts.port or default}"))
    return bare, with_port


def _code(response: http.Response) -> str | None:
    try:
        code = _error.decode(response.content).code
    except msgspec.DecodeError:
        return None
    return None if code is None else str(code)


class Twilio:
    name: str = "twilio"
    required: tuple[str, ...] = ("account-sid", "auth-token")
    optional: tuple[str, ...] = ("messaging-service-sid", "base-url")
    hosts: tuple[str, ...] = ("api.twilio.com",)
    token_callbacks: bool = True

    def base_url(self, settings: Mapping[str, str]) -> str:
        return settings.get("base-url", DEFAULT_BASE_URL).rstrip("/")

    def build_send(self, message: Outgoing, settings: Mapping[str, str]) -> http.Request:
        sid = settings["account-sid"]
        form = {"To": message.to_e164, "Body": message.text,
                "StatusCallback": message.callback_url}
        service = settings.get("messaging-service-sid")
        # With a Messaging Service, Twilio picks the sender from the service's pool.
        if service:
            form["MessagingServiceSid"] = service
        else:
            form["From"] = message.sender
        if message.validity is not None:
            low, high = VALIDITY_RANGE
            form["ValidityPeriod"] = str(max(low, min(high, message.validity)))
        return http.request(
            "POST", f"{self.base_url(settings)}/2010-04-01/Accounts/{sid}/Messages.json",
            {"Accept": "application/json", "Authorization": basic_auth(sid, settings["auth-token"])},
            form=form)

    def parse_send(self, response: http.Response) -> Accepted:
        if response.status_code in (200, 201):
            created = _created.decode(response.content)
            segments = int(created.num_segments) if created.num_segments else None
            return Accepted(vendor_message_id=created.sid, segments=segments or None,
                            from_number=created.from_)
        try:
            error = _error.decode(response.content)
        except msgspec.DecodeError:
            error = _Error()
        raise classify(response, vendor=self.name, vendor_code=_code(response),
                       detail=error.message or error.detail or "", codes=ERROR_CODES)

    def build_verify(self, settings: Mapping[str, str]) -> http.Request:
        sid = settings["account-sid"]
        return http.request(
            "GET", f"{self.base_url(settings)}/2010-04-01/Accounts/{sid}.json",
            {"Accept": "application/json", "Authorization": basic_auth(sid, settings["auth-token"])})

    def parse_verify(self, response: http.Response) -> None:
        if response.status_code == 200:
            return
        if response.status_code in (401, 403, 404):
            raise VendorAuthFailed("twilio: the Account SID and Auth Token were not accepted",
                                   vendor_code=_code(response))
        raise classify(response, vendor=self.name, vendor_code=_code(response),
                       detail="could not check the credentials", codes=ERROR_CODES)

    def mms_refusal(self, to_e164: str, mms: Mms, settings: Mapping[str, str]) -> str | None:
        # Twilio sends MMS to the US and Canada only; elsewhere it would send an SMS with a
        # link instead (its MMS Converter), so the platform's own fallback text goes instead.
        if region(to_e164) not in US_CA:
            return "twilio sends MMS to US and Canadian numbers only"
        return None

    def build_mms(self, message: Outgoing, settings: Mapping[str, str]) -> http.Request:
        """The SMS form plus one MediaUrl per item; Body may be empty with media. Twilio's
        Messages resource has no subject field, so the subject is not sent."""
        sms = self.build_send(message, settings)
        form = [(k, v) for k, v in parse_qsl(sms.content.decode(), keep_blank_values=True)
                if k != "Body" or v]
        form += [("MediaUrl", item.url) for item in message.mms.media] if message.mms else []
        return http.request("POST", sms.url, {
            "Accept": "application/json", "Authorization": sms.headers["authorization"]},
            form=form)

    def parse_mms(self, response: http.Response) -> Accepted:
        accepted = self.parse_send(response)
        return msgspec.structs.replace(accepted, segments=None)  # an MMS is one message

    def mms_capability(self, settings: Mapping[str, str], response: http.Response
                       ) -> bool | None:
        return None  # MMS is a property of each number, not of the account Twilio shows

    def build_lookup(self, message: Outgoing, settings: Mapping[str, str]
                     ) -> http.Request | None:
        return None  # Twilio takes no client reference to look a message up by

    def parse_lookup(self, response: http.Response) -> Accepted | None:
        return None

    def verify(self, callback: Callback, settings: Mapping[str, str]) -> None:
        given = callback.headers.get("x-twilio-signature", "")
        token = settings.get("auth-token", "")
        if given and token:
            if hmac.compare_digest(signature(token, callback.url, callback.params), given):
                return
            for url in _port_variants(callback.url):
                if hmac.compare_digest(signature(token, url, callback.params), given):
                    return
        raise InvalidSignature("X-Twilio-Signature does not match")

    def parse_status(self, callback: Callback) -> list[StatusUpdate]:
        params = dict(callback.params)
        raw = params.get("MessageStatus") or params.get("SmsStatus") or ""
        status = STATUS_MAP.get(raw)
        if status is None:
            log.warning("unknown_vendor_status", vendor=self.name, vendor_status=raw)
            return []
        segments = params.get("NumSegments")
        code = params.get("ErrorCode") or None
        return [StatusUpdate(
            status=status,
            vendor_message_id=params.get("MessageSid") or params.get("SmsSid"),
            error_code=code,
            opted_out=code in OPT_OUT_CODES and status.terminal and status is not Status.DELIVERED,
            error_message=params.get("ErrorMessage") or None,
            from_number=params.get("From") or None,
            segments=int(segments) if segments and segments.isdigit() else None,
        )]

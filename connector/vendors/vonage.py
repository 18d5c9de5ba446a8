"""Vonage SMS API (rest.nexmo.com): form send answered per part, `sig`-signed delivery receipts.

Facts: https://developer.vonage.com/en/api/sms (Nexmo/api-specification definitions/sms.yml),
developer.vonage.com/en/messaging/sms/guides/delivery-receipts and
/en/getting-started/concepts/signing-messages; shared/reference/vendors.md sections 6 and 8.6.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, Final
from urllib.parse import parse_qsl, urlsplit

import msgspec
import structlog

from connector import http, segments
from connector.errors import (
    AmbiguousOutcome,
    BadRequest,
    InvalidSignature,
    VendorAuthFailed,
    VendorError,
    VendorUnavailable,
)
from connector.mms import US_CA, region
from connector.model import Accepted, Mms, Outgoing, Status, StatusUpdate
from connector.msisdn import digits
from connector.vendors import vonage_messages as messages
from connector.vendors.base import (
    AUTH,
    REJECTED,
    THROTTLED,
    TRANSIENT,
    Callback,
    basic_auth,
    classify,
    error_for,
)

log = structlog.get_logger("connector.vendors.vonage")

DEFAULT_BASE_URL: Final = "https://rest.nexmo.com"
# `ttl`: milliseconds, documented as 20000-604800000 (20 s to 7 days; default 72 h).
# CONNECTOR_VALIDITY (seconds) is converted and clamped into that range rather than refused.
TTL_RANGE: Final = (20_000, 604_800_000)
# Dashboard setting -> HMAC digest; "md5hash" (the default) is md5(params + secret), no HMAC.
SIGNATURE_METHODS: Final[Mapping[str, str | None]] = {
    "md5hash": None, "md5": "md5", "sha1": "sha1", "sha256": "sha256", "sha512": "sha512",
}

# https://developer.vonage.com/en/messaging/sms/guides/delivery-receipts (DLR `status`)
STATUS_MAP: Final[Mapping[str, Status]] = {
    "accepted": Status.SENT,  # taken by the downstream carrier, not yet on the handset
    "buffered": Status.SENT,  # held by the carrier for a later attempt
    "delivered": Status.DELIVERED,
    "expired": Status.EXPIRED,
    "failed": Status.UNDELIVERED,  # the carrier tried and could not deliver
    "rejected": Status.REJECTED,  # the carrier refused to carry it at all
    "unknown": Status.FAILED,  # final receipt without a verdict: not delivered as far as known
}

# Send `status` (non-"0") -> (class, platform code); spec x-errors. Out of credit (9) is an
# account condition like a suspension: every send fails until someone tops up, so a 401.
ERROR_CODES: Final[Mapping[str, tuple[str, str]]] = {
    "1": (THROTTLED, "throttled"),
    "2": (REJECTED, "rejected"),  # missing parameters
    "3": (REJECTED, "rejected"),  # invalid parameters
    "4": (AUTH, "vendor_auth_failed"),
    "5": (TRANSIENT, "vendor_unavailable"),
    "6": (REJECTED, "invalid_recipient"),  # e.g. unrecognised number prefix
    "7": (REJECTED, "blocked"),  # number barred
    "8": (AUTH, "vendor_account_suspended"),
    "9": (AUTH, "insufficient_funds"),
    "10": (TRANSIENT, "vendor_unavailable"),  # too many binds: back off
    "11": (AUTH, "vendor_account_inactive"),  # not provisioned for the HTTP SMS API
    "12": (REJECTED, "message_too_long"),
    "14": (AUTH, "vendor_auth_failed"),  # invalid signature
    "15": (REJECTED, "sender_not_allowed"),
    "22": (REJECTED, "invalid_recipient"),  # network code does not match the destination
    "23": (REJECTED, "rejected"),  # invalid callback URL
    "29": (REJECTED, "rejected"),  # demo account, destination not whitelisted
    "32": (AUTH, "vendor_auth_failed"),
    "33": (REJECTED, "invalid_recipient"),  # number de-activated
}

# DLR `err-code` meanings (developer.vonage.com delivery-receipts#dlr-error-codes, via courier).
DLR_ERRORS: Final[Mapping[str, str]] = {
    "1": "Unknown", "2": "Absent Subscriber - Temporary", "3": "Absent Subscriber - Permanent",
    "4": "Call Barred by User", "5": "Portability Error", "6": "Anti-Spam Rejection",
    "7": "Handset Busy", "8": "Network Error", "9": "Illegal Number", "10": "Illegal Message",
    "11": "Unroutable", "12": "Destination Unreachable", "13": "Subscriber Age Restriction",
    "14": "Number Blocked by Carrier", "15": "Prepaid Insufficient Funds",
    "16": "Gateway Quota Exceeded", "50": "Entity Filter", "51": "Header Filter",
    "52": "Content Filter", "53": "Consent Filter", "54": "Regulation Error",
    "99": "General Error",
}

# DLR err-codes that mean the recipient opted out: 9 "Illegal Number", which Vonage describes
# as the user having asked not to receive messages from this service (support article 204014733).
# Not 4 (a bar the user set with their operator, for every sender), 6/14 (carrier filtering
# and blocking) or 53 (a consent filter whose owner the docs do not name).
OPT_OUT_DLR_CODES: Final = frozenset({"9"})

_WAIT: Final = re.compile(r"wait \[\s*(\d+)\s*\]")  # "please wait [ 250 ] and retry", in ms


class _Part(msgspec.Struct):
    status: str = ""
    message_id: str | None = msgspec.field(default=None, name="message-id")
    error_text: str | None = msgspec.field(default=None, name="error-text")


class _Sent(msgspec.Struct):
    messages: list[_Part] = []


class _Balance(msgspec.Struct):
    value: float


_sent = msgspec.json.Decoder(_Sent)
_balance = msgspec.json.Decoder(_Balance)
_json_object = msgspec.json.Decoder(dict[str, Any])


def signature(params: Mapping[str, str], secret: str, method: str = "md5hash") -> str:
    """Lower-case hex `sig` over `&name=value` for every param sorted by name, with `&` and
    `=` inside values replaced by `_`, as Vonage's SDKs compute it."""
    payload = "".join(f"&{name}=" + params[name].replace("&", "_").replace("=", "_")
                      for name in sorted(params)).encode()
    digest = SIGNATURE_METHODS[method]
    if digest is None:
        return hashlib.md5(payload + secret.encode()).hexdigest()
    return hmac.new(secret.encode(), payload, digest).hexdigest()


def _method(settings: Mapping[str, str]) -> str:
    method = settings.get("signature-method", "md5hash").lower()
    if method not in SIGNATURE_METHODS:
        raise BadRequest("Chan-Signature-Method must be one of " + ", ".join(SIGNATURE_METHODS),
                         code="invalid_request")
    return method


def _fields(callback: Callback) -> dict[str, str]:
    """The receipt's fields: query (GET) or form fields, else a JSON body's members."""
    if callback.params or not callback.body:
        return dict(callback.params)
    try:
        decoded = _json_object.decode(callback.body)
    except msgspec.DecodeError:
        return {}
    return {k: v if isinstance(v, str) else str(v) for k, v in decoded.items() if v is not None}


def _when(fields: Mapping[str, str]) -> float | None:
    """The carrier's time (scts, YYMMDDHHMM) else Vonage's push time; both UTC [inferred]."""
    for name, pattern in (("scts", "%y%m%d%H%M"), ("message-timestamp", "%Y-%m-%d %H:%M:%S")):
        try:
            return datetime.strptime(fields.get(name, ""), pattern).replace(tzinfo=UTC).timestamp()
        except ValueError:
            continue
    return None


def _sender(raw: str | None) -> str | None:
    # Receipts give numbers as bare digits; short codes stay as they are.
    if raw and raw.isdigit() and len(raw) > 8:
        return "+" + raw
    return raw or None


class Vonage:
    name: str = "vonage"
    required: tuple[str, ...] = ("api-key", "api-secret")
    optional: tuple[str, ...] = ("signature-secret", "signature-method", "base-url")
    hosts: tuple[str, ...] = ("rest.nexmo.com", "api.nexmo.com")  # SMS API, Messages API
    token_callbacks: bool = True

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock

    def base_url(self, settings: Mapping[str, str]) -> str:
        return settings.get("base-url", DEFAULT_BASE_URL).rstrip("/")

    def _auth(self, settings: Mapping[str, str]) -> dict[str, str]:
        # Basic, as Vonage's own SDK (v4) sends: the secret stays out of bodies and URLs.
        return {"Accept": "application/json",
                "Authorization": basic_auth(settings["api-key"], settings["api-secret"])}

    def build_send(self, message: Outgoing, settings: Mapping[str, str]) -> http.Request:
        _method(settings)  # a bad setting would make every receipt unverifiable: refuse now
        ucs2 = segments.analyse(message.text).encoding == "ucs2"
        form = {
            "from": digits(message.sender), "to": digits(message.to_e164),
            "text": message.text, "type": "unicode" if ucs2 else "text",
            "callback": message.callback_url, "status-report-req": "true",
            "client-ref": message.message_id,
        }
        if message.validity is not None:
            low, high = TTL_RANGE
            form["ttl"] = str(max(low, min(high, message.validity * 1000)))
        return http.request("POST", f"{self.base_url(settings)}/sms/json", self._auth(settings),
                            form=form)

    def parse_send(self, response: http.Response) -> Accepted:
        if response.status_code != 200:
            raise classify(response, vendor=self.name, vendor_code=None, detail="",
                           codes=ERROR_CODES)
        try:
            sent = _sent.decode(response.content)
        except msgspec.DecodeError:
            sent = _Sent()
        for part in sent.messages:
            if part.status != "0":
                raise self._refusal(part)
        ids = tuple(part.message_id for part in sent.messages if part.message_id)
        if not ids:
            # A 200 we cannot read may still mean Vonage took the message.
            raise AmbiguousOutcome("vonage: unreadable answer to a send")
        return Accepted(vendor_message_id=ids[0], segments=len(ids), part_ids=ids)

    def _refusal(self, part: _Part) -> VendorError:
        kind, code = ERROR_CODES.get(part.status, (REJECTED, "rejected"))
        text = part.error_text or f"status {part.status}"
        wait = _WAIT.search(text) if kind == THROTTLED else None
        retry_after = max(1.0, int(wait.group(1)) / 1000) if wait else None
        return error_for(kind, code, f"vonage: {text}", part.status, retry_after)

    def mms_refusal(self, to_e164: str, mms: Mms, settings: Mapping[str, str]) -> str | None:
        # developer.vonage.com/en/messages/concepts/mms: MMS in the US and Canada only.
        if region(to_e164) not in US_CA:
            return "vonage sends MMS to US and Canadian numbers only"
        return None

    def build_mms(self, message: Outgoing, settings: Mapping[str, str]) -> http.Request:
        _method(settings)
        return messages.build_mms(message, self._auth(settings), settings)

    def parse_mms(self, response: http.Response) -> Accepted:
        return messages.parse_mms(response)

    def mms_capability(self, settings: Mapping[str, str], response: http.Response
                       ) -> bool | None:
        return None  # MMS depends on the sending number (10DLC, toll-free, short code)

    def build_verify(self, settings: Mapping[str, str]) -> http.Request:
        _method(settings)
        return http.request("GET", f"{self.base_url(settings)}/account/get-balance",
                            self._auth(settings))

    def parse_verify(self, response: http.Response) -> None:
        if response.status_code == 401:
            raise VendorAuthFailed("vonage: the API key and secret were not accepted",
                                   vendor_code="401")
        if response.status_code == 200:
            try:
                _balance.decode(response.content)
            except msgspec.DecodeError:
                raise VendorUnavailable("vonage: unreadable answer to the balance check") from None
            return
        raise classify(response, vendor=self.name, vendor_code=None,
                       detail="could not check the credentials", codes=ERROR_CODES)

    def build_lookup(self, message: Outgoing, settings: Mapping[str, str]
                     ) -> http.Request | None:
        return None  # the SMS API has no search by client-ref (only the separate Reports API)

    def parse_lookup(self, response: http.Response) -> Accepted | None:
        return None

    def verify(self, callback: Callback, settings: Mapping[str, str]) -> None:
        if messages.is_message_status(callback.body):  # an MMS: the Messages API's webhook
            secret = settings.get("signature-secret")
            if secret:  # else the connector's `?m=` token is the authentication
                messages.verify(callback.headers, callback.body, secret, self._clock(),
                                callback.max_age)
            return
        if _fields(callback).get("api-key", settings["api-key"]) != settings["api-key"]:
            raise InvalidSignature("Vonage receipt is for another API key")
        secret = settings.get("signature-secret")
        if not secret:
            return  # unsigned receipts: the connector's `?m=` token is the authentication
        method = settings.get("signature-method", "md5hash").lower()
        query = dict(parse_qsl(urlsplit(callback.url).query, keep_blank_values=True))
        token = query.pop("m", None)
        # Whatever reached us in the URL besides our token came from Vonage, so it is signed.
        body = _fields(callback)
        if any(body.get(name, value) != value for name, value in query.items()):
            raise InvalidSignature("Vonage receipt URL and body disagree")
        fields = {**query, **body}
        given = fields.pop("sig", "").lower()
        if not given or method not in SIGNATURE_METHODS:
            raise InvalidSignature("Vonage sig is missing or cannot be checked")
        try:
            stamp = int(fields.get("timestamp", ""))
        except ValueError:
            raise InvalidSignature("Vonage signed receipt has no timestamp") from None
        # No documented window (signing-messages guide): CONNECTOR_SIGNATURE_WINDOW decides.
        if abs(self._clock() - stamp) > callback.max_age:
            raise InvalidSignature("Vonage signed receipt is stale")
        # Whether Vonage signs our own `m` on GET receipts is not documented: accept either.
        variants = [fields] if token is None else [fields, {**fields, "m": token}]
        for signed in variants:
            if hmac.compare_digest(signature(signed, secret, method).encode(), given.encode()):
                return
        raise InvalidSignature("Vonage sig does not match")

    def parse_status(self, callback: Callback) -> list[StatusUpdate]:
        if messages.is_message_status(callback.body):
            return messages.parse_status(callback.body)
        fields = _fields(callback)
        raw = fields.get("status", "")
        status = STATUS_MAP.get(raw)
        if status is None:
            log.warning("unknown_vendor_status", vendor=self.name, vendor_status=raw)
            return []
        part = fields.get("messageId") or None
        code = fields.get("err-code", "0")
        error = code not in ("", "0")
        return [StatusUpdate(
            status=status, vendor_message_id=part, part_id=part,
            message_ref=fields.get("client-ref") or None, occurred_at=_when(fields),
            error_code=code if error else None,
            error_message=DLR_ERRORS.get(code) if error else None,
            from_number=_sender(fields.get("to")),
            opted_out=code in OPT_OUT_DLR_CODES and status.terminal
            and status is not Status.DELIVERED,
        )]

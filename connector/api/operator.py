"""Operator endpoints under /api/v1 (SPEC sections 6 and 7), all behind the Auth-Key header."""

from __future__ import annotations

import hmac
from typing import Any, Final

import msgspec
import structlog
from starlette.requests import Request
from starlette.responses import Response

from connector import msisdn, segments
from connector.api.send import read_body
from connector.errors import BadRequest, ConnectorError, RefusedMessage
from connector.model import Outgoing, new_message_id
from connector.outbox import rfc3339
from connector.services import Services
from connector.store.base import MessageRow, Suppression
from connector.vendors import VENDORS
from connector.vendors.base import read_answer

log = structlog.get_logger("connector.operator")
_encode = msgspec.json.Encoder()

# How the test form's username/password fill each vendor's settings.
TEST_CREDENTIALS: Final = {
    "twilio": ("account-sid", "auth-token"),
    "sinch": ("service-plan-id", "api-token"),
    "vonage": ("api-key", "api-secret"),
    "infobip": ("base-url", "api-key"),
    "bird": ("workspace-id/channel-id", "access-key"),
}


class TestSend(msgspec.Struct, rename="camel"):
    username: str
    password: str
    phone_number_from: str
    phone_number_to: str
    message: str


_decode_test = msgspec.json.Decoder(TestSend)


def authorized(services: Services, request: Request) -> bool:
    expected = services.settings.admin_key
    given = request.headers.get("auth-key", "")
    return bool(expected) and hmac.compare_digest(given.encode(), expected.encode())


def _json(body: Any, status: int = 200) -> Response:
    return Response(_encode.encode(body), status_code=status, media_type="application/json")


def _operator_error(code: str, message: str, status: int) -> Response:
    return _json({"error": {"code": code, "message": message, "retryable": False,
                            "vendor_code": None}}, status)


_UNAUTHORIZED: Final = ("unauthorized", "Auth-Key is missing or wrong", 401)
MAX_PAGE: Final = 1000
DEFAULT_PAGE: Final = 100
MAX_OFFSET: Final = 1_000_000_000


def _time(value: float | None) -> str | None:
    return None if value is None else rfc3339(value)


async def message(request: Request) -> Response:
    """One message's lifecycle by connector id or request_id, with its report deliveries."""
    services: Services = request.app.state.services
    if not authorized(services, request):
        return _json({"error": {"code": "unauthorized", "message": "Auth-Key is missing or "
                                "wrong", "retryable": False, "vendor_code": None}}, 401)
    row = await services.store.find(request.path_params["id"])
    if row is None:
        return _json({"error": {"code": "not_found", "message": "no such message",
                                "retryable": False, "vendor_code": None}}, 404)
    reports = await services.store.reports_for(row.id)
    kept = services.settings.keep_message_text
    text = await services.store.message_text(row.id) if kept else None
    return _json({**_view(row), "text": text, "reports": [{
        "event_id": r.event_id, "url": r.url, "state": r.state,
        "next_attempt_at": _time(r.next_attempt_at),
        "attempts": [{"at": rfc3339(a.at), "outcome": a.outcome, "status_code": a.status_code,
                      "error": a.error} for a in r.attempts],
    } for r in reports]})


def _view(row: MessageRow) -> dict[str, Any]:
    return {
        "id": row.id, "request_id": row.request_id, "vendor": row.vendor,
        "vendor_message_id": row.vendor_message_id, "from_number": row.from_number,
        "to_number": row.to_number, "status": row.status.value, "segments": row.segments,
        "encoding": row.encoding, "handed_off_at": _time(row.handed_off_at),
        "delivered_at": _time(row.delivered_at), "errored_at": _time(row.errored_at),
        "error_code": row.error_code, "created_at": rfc3339(row.created_at),
        "updated_at": rfc3339(row.updated_at),
    }


def _envelope(success: bool, status: int, message: str) -> Response:
    return _json({"success": success, "statusCode": status, "message": message,
                  "data": success}, status)


async def test_send(request: Request) -> Response:
    """Send one message with explicit credentials; every outcome in the same envelope."""
    services: Services = request.app.state.services
    if not authorized(services, request):
        return _envelope(False, 401, "Auth-Key is missing or wrong")
    try:
        if not request.headers.get("brand-url"):
            raise BadRequest("missing header Brand-URL", code="missing_setting")
        vendor_name = request.path_params["appIntegrationId"].lower()
        vendor = VENDORS.get(vendor_name)
        if vendor is None:
            raise BadRequest(f"unknown integration {vendor_name!r}; use one of "
                             f"{', '.join(VENDORS)}", code="unknown_vendor")
        form = _test_form(await read_body(request, services.settings.max_body_bytes))
        config = _test_settings(vendor_name, form, request)
        if "base-url" in config:
            await services.guard.check(config["base-url"], "vendor base URL",
                                       vendor.hosts + services.settings.vendor_hosts)
        outgoing = Outgoing(
            message_id=new_message_id(), sender=msisdn.parse_sender(form.phone_number_from),
            to_e164=msisdn.parse_recipient(form.phone_number_to), text=form.message,
            callback_url=services.sender.callback_url(vendor.name, new_message_id()))
        answer = await services.http.send(vendor.build_send(outgoing, config),
                                          services.settings.vendor_timeout, what=vendor.name)
        accepted = read_answer(vendor.parse_send, answer, vendor.name)
    except ConnectorError as exc:
        log.info("test_send_failed", code=exc.code)
        return _envelope(False, exc.status, exc.message)
    log.info("test_send_accepted", vendor=vendor.name)
    return _envelope(True, 200, f"Sent through {vendor.name} as {accepted.vendor_message_id}")


def _test_form(raw: bytes) -> TestSend:
    try:
        form = _decode_test.decode(raw)
    except msgspec.ValidationError as exc:
        raise BadRequest(f"invalid body: {exc}", code="invalid_field") from None
    except msgspec.DecodeError:
        raise BadRequest("body is not valid JSON", code="malformed_json") from None
    except RecursionError:  # msgspec refuses to follow nesting this deep
        raise BadRequest("body is nested too deeply", code="malformed_json") from None
    for name in ("username", "password", "phone_number_from", "phone_number_to", "message"):
        if not getattr(form, name):
            raise BadRequest(f"{name} must not be empty", code="invalid_field")
    if len(form.message) > segments.MAX_MESSAGE_CHARS:
        raise RefusedMessage(f"message is over {segments.MAX_MESSAGE_CHARS} characters",
                             code="message_too_long")
    return form


def _test_settings(vendor: str, form: TestSend, request: Request) -> dict[str, str]:
    user_key, password_key = TEST_CREDENTIALS[vendor]
    config = {k[5:]: v for k, v in request.headers.items() if k.startswith("chan-") and v}
    if "/" in user_key:  # bird: workspace and channel travel together in the username
        first, _, second = form.username.partition("/")
        keys = user_key.split("/")
        config.update({keys[0]: first, keys[1]: second})
    else:
        config[user_key] = form.username
    config[password_key] = form.password
    return config


async def suppressions(request: Request) -> Response:
    """GET: the opted-out recipients, newest first, optionally for one account."""
    services: Services = request.app.state.services
    if not authorized(services, request):
        return _operator_error(*_UNAUTHORIZED)
    query = request.query_params
    try:
        limit = _whole(query.get("limit"), DEFAULT_PAGE, "limit", 1, MAX_PAGE)
        offset = _whole(query.get("offset"), 0, "offset", 0, MAX_OFFSET)
    except ValueError as exc:
        return _operator_error("invalid_request", str(exc), 400)
    account = query.get("account") or None
    entries = await services.store.suppressions(account, limit, offset)
    return _json({"suppressions": [_suppression(e) for e in entries], "limit": limit,
                  "offset": offset})


async def unsuppress(request: Request) -> Response:
    """DELETE: take one recipient off an account's list, so sends to them reach the vendor."""
    services: Services = request.app.state.services
    if not authorized(services, request):
        return _operator_error(*_UNAUTHORIZED)
    account = request.path_params["account"]
    number = _e164(request.path_params["number"])
    if not await services.store.unsuppress(account, number):
        return _operator_error("not_found", "no such suppression", 404)
    log.info("suppression_removed", account=account, number=msisdn.mask(number))
    return Response(status_code=204)


def _suppression(entry: Suppression) -> dict[str, Any]:
    return {"account": entry.account, "credential": entry.credential or None,
            "number": entry.number, "reason": entry.reason,
            "vendor_code": entry.vendor_code, "created_at": rfc3339(entry.created_at)}


def _whole(raw: str | None, default: int, name: str, low: int, high: int) -> int:
    if not raw:
        return default
    value = int(raw) if raw.isascii() and raw.isdigit() and len(raw) <= 10 else -1
    if not low <= value <= high:
        raise ValueError(f"{name} must be a whole number from {low} to {high}")
    return value


def _e164(raw: str) -> str:
    """The stored form of a number given as +E.164, 00-international or bare digits."""
    number = raw.strip()
    if number.startswith("00"):
        return "+" + number[2:]
    if number.isdigit():
        return "+" + number
    return number

"""POST /callbacks/{vendor}/status: authenticate a vendor's status callback and apply it once,
only forward (SPEC section 3).

Every message brings two or three of these, so the path works on the ASGI scope and receive
channel directly (issue #11): Starlette's Request properties, its body stream and urllib's
parse_qsl cost more Python calls than the rest of the callback.
"""

from __future__ import annotations

import base64
import functools
import hmac
import time
from typing import Any, Final
from urllib.parse import unquote, unquote_to_bytes

import structlog
from starlette.requests import Request
from starlette.types import Receive, Scope

from connector import logs, metrics
from connector.api.send import Answer, receive_body
from connector.errors import BadRequest, InvalidSignature
from connector.model import TERMINAL, Applied, Status, StatusUpdate
from connector.optouts import acts_on, suppress_reported
from connector.outbox import Dispatcher
from connector.services import Services
from connector.store.base import Handoff, MessageRow, OutboxEntry, ReportBuilder, SentVia
from connector.vendors import VENDORS
from connector.vendors.base import Callback, Vendor

log = structlog.get_logger("connector.callbacks")

MAX_CALLBACK_BYTES: Final = 256 * 1024  # JSON bodies: Infobip and Sinch batch their reports
MAX_FORM_BYTES: Final = 32 * 1024  # a form receipt (Twilio, Vonage) is under 2 KiB
MAX_FIELDS: Final = 100  # Twilio's richest status callback has about 25
_FORM: Final = "application/x-www-form-urlencoded"
# Empty answers with no Content-Type, as Starlette's bare Response(status_code=...) gives.
_APPLIED: Final = Answer(204, b"", {}, None)
_NOT_FOUND: Final = Answer(404, b"", {}, None)


def _url(services: Services, scope: Any, query: str) -> str:
    # The path as Starlette's request.url gives it (escaped the same way), without the cost.
    path = scope["path"].replace("?", "%3F").replace("#", "%23").replace("\\", "%5C")
    base = services.settings.public_url + path
    return f"{base}?{query}" if query else base


def public_url(services: Services, request: Request) -> str:
    """The URL the vendor called, as it saw it: behind a proxy our own view differs."""
    return _url(services, request.scope, request.scope["query_string"].decode("latin-1"))


@functools.lru_cache(maxsize=4)
def _basic(expected: str) -> bytes:
    """The whole `Authorization` value CONNECTOR_CALLBACK_BASIC_AUTH asks for, made once."""
    return b"Basic " + base64.b64encode(expected.encode())


def _basic_ok(services: Services, given: str) -> None:
    expected = services.settings.callback_basic_auth
    if expected and not hmac.compare_digest(given.encode(), _basic(expected)):
        raise InvalidSignature("callback Basic credentials are missing or wrong")


def _check_basic_auth(services: Services, request: Request) -> None:
    _basic_ok(services, request.headers.get("authorization", ""))


async def _message_for(services: Services, vendor: Vendor, token_id: str | None,
                       update: StatusUpdate) -> tuple[str, SentVia, MessageRow | None] | None:
    """The message an update is about: its id, what verifies it, and its row when that was
    read whole (found by the vendor's id). A message sent by this process, or whose callback
    came here before, is known without a read (Services.recent); else only what verifying
    needs is read."""
    if token_id is not None:
        if update.message_ref is not None and update.message_ref != token_id:
            raise InvalidSignature("callback is about another message than its token")
        via = await _sent_via(services, token_id)
        return None if via is None else (token_id, via, None)
    if update.message_ref is not None:
        via = await _sent_via(services, update.message_ref)
        if via is not None:
            return update.message_ref, via, None
    if update.vendor_message_id is not None:
        row = await services.store.find_by_vendor_id(vendor.name, update.vendor_message_id)
        if row is not None:
            return row.id, SentVia(row.vendor, row.sealed_settings), row
    return None


async def _sent_via(services: Services, message_id: str) -> SentVia | None:
    via = services.recent.get(message_id)
    if via is None:
        via = await services.store.sent_via(message_id)
        if via is not None:
            services.recent.remember(message_id, via)
    return via


async def status(scope: Scope, receive: Receive, services: Services) -> Answer:
    """The endpoint in the bare form Front calls directly (its hot routes; see Front): the
    answer is written by Front, errors mapped as the app maps them."""
    vendor = VENDORS.get(scope["path_params"]["vendor"])
    if vendor is None:
        return _NOT_FOUND
    structlog.contextvars.bind_contextvars(vendor=vendor.name)
    try:
        return await _status(scope, receive, services, vendor)
    except InvalidSignature as exc:
        metrics.CALLBACKS.labels(vendor.name, "forbidden").inc()
        log.warning("callback_forbidden", reason=exc.message)
        raise


def _fields(text: str, what: str) -> list[tuple[str, str]]:
    """What `parse_qsl(text, keep_blank_values=True, max_num_fields=MAX_FIELDS)` gives, with
    urllib's two unquote calls per field spent only on fields that have `%` or `+` in them
    (in a vendor's receipt, two or three of about ten)."""
    if not text:
        return []
    if text.count("&") >= MAX_FIELDS:
        raise BadRequest(f"callback {what} has more than {MAX_FIELDS} fields")
    fields = []
    for field in text.split("&"):
        if not field:
            continue
        name, _, value = field.partition("=")
        if "%" in field or "+" in field:
            if "%" in name or "+" in name:
                name = _unquote_plus(name)
            if "%" in value or "+" in value:
                value = _unquote_plus(value)
        fields.append((name, value))
    return fields


def _unquote_plus(text: str) -> str:
    """`unquote_plus(text, errors="replace")`. For ASCII text, what a vendor sends (a `+` of
    an E.164 number as %2B), that is the UTF-8 decoding of unquote_to_bytes: unquote itself
    gets there through a regular expression that splits ASCII from other text, about 17,000
    instructions a field against 9,500 (#11)."""
    text = text.replace("+", " ")
    if not text.isascii():
        return unquote(text, errors="replace")
    return unquote_to_bytes(text).decode("utf-8", "replace")


def _headers(scope: Any) -> dict[str, str]:
    """The request headers by lower-case name (the server lower-cases them); the first of a
    repeated header wins, as with Starlette's Headers.get."""
    return {k.decode("latin-1"): v.decode("latin-1") for k, v in reversed(scope["headers"])}


class _Reports:
    """The deployment's report builder, noting whether it built a report: the dispatcher is
    woken only then. A status the platform does not hear of (`sent` under the default
    CONNECTOR_REPORT_STATUSES) woke it for a lease query and an idle wait that found nothing.
    A report built but not written (the row changed meanwhile) costs one needless wake."""

    __slots__ = ("build", "built", "dispatcher", "handoff", "statuses")

    def __init__(self, build: ReportBuilder, dispatcher: Dispatcher) -> None:
        self.build = build
        self.built = False
        self.dispatcher = dispatcher
        self.handoff: Handoff | None = None
        # What the builder reports (store.base.may_report), so the store can tell as well.
        self.statuses: frozenset[Status] | None = getattr(build, "statuses", None)

    def __call__(self, row: MessageRow, update: StatusUpdate, now: float) -> OutboxEntry | None:
        entry = self.build(row, update, now)
        if entry is None:
            return None
        self.built = True
        # The local dispatcher takes the report itself when it can (a store that honours
        # the offer writes it leased to it): no lease query and no idle round for it.
        if self.handoff is None:
            self.handoff = self.dispatcher.handoff()
        if self.handoff is None:
            return entry
        return OutboxEntry(event_id=entry.event_id, url=entry.url, payload=entry.payload,
                           handoff=self.handoff)

    def written(self) -> None:
        """The write that used this builder committed: the dispatcher gets its reports,
        handed over when the store honoured the offer, or else a wake to look for them."""
        handoff = self.handoff
        if handoff is not None and handoff.reports:
            self.dispatcher.take(handoff.reports)
            handoff.reports = []
        else:
            self.dispatcher.wake()


async def _status(scope: Scope, receive: Receive, services: Services, vendor: Vendor
                  ) -> Answer:
    # Whatever can be checked without the body is checked before it is read: a forged
    # callback costs no read and no parse.
    headers = _headers(scope)
    _basic_ok(services, headers.get("authorization", ""))
    raw_query = scope["query_string"].decode("latin-1")
    query = _fields(raw_query, "query")
    token = next((v for k, v in query if k == "m"), None)
    token_id = services.tokens.unsign(token) if token else None
    if token_id is None and (token or vendor.token_callbacks):
        raise InvalidSignature("callback token is missing or invalid")
    form = headers.get("content-type", "").startswith(_FORM)
    body = await receive_body(scope, receive, MAX_FORM_BYTES if form else MAX_CALLBACK_BYTES)
    method = scope["method"]
    if method == "GET":
        params = [(k, v) for k, v in query if k != "m"]
    elif form:
        params = _fields(body.decode("utf-8", "replace"), "body")
    else:
        params = []
    callback = Callback(url=_url(services, scope, raw_query), method=method, headers=headers,
                        body=body, params=params, max_age=services.settings.signature_window)
    try:
        updates = vendor.parse_status(callback)
    except RecursionError:  # msgspec's answer to JSON nested deeper than it will follow
        raise BadRequest("callback body is nested too deeply") from None
    # Parsing reads only; nothing is applied until every message involved is verified.
    pending: list[tuple[str, MessageRow | None, StatusUpdate, bool]] = []
    verified: set[str] = set()
    for update in updates:
        found = await _message_for(services, vendor, token_id, update)
        if found is None:
            metrics.CALLBACKS.labels(vendor.name, "unknown").inc()
            log.info("callback_unknown_message", vendor_message_id=update.vendor_message_id)
            continue
        message_id, via, row = found
        if via.vendor != vendor.name:
            raise InvalidSignature(f"message was sent through {via.vendor}, not {vendor.name}")
        if message_id not in verified:
            vendor.verify(callback, services.box.open(via.sealed_settings) or {})
            verified.add(message_id)
        pending.append((message_id, row, update, via.vendor_id_stored))
    now = time.time()
    report = _Reports(services.report, services.dispatcher)
    store = services.store
    for message_id, row, update, known_id in pending:
        structlog.contextvars.bind_contextvars(message_id=message_id)
        if update.part_id is None:
            # One conditional write: the row is read back only for a report (issue #11).
            applied = await store.advance(message_id, update, now, report, known_id=known_id)
            if applied is Applied.APPLIED and update.status in TERMINAL:
                services.recent.forget(message_id)  # its callbacks are, but for repeats, over
        else:
            applied = await store.apply_status(message_id, update, now, report, seen=row)
        metrics.CALLBACKS.labels(vendor.name, str(applied)).inc()
        if logs.info_enabled:
            log.info("callback_applied", status=str(update.status), part=update.part_id,
                     result=str(applied))
        if applied is Applied.APPLIED and report.built:
            report.written()
        if acts_on(services, update, applied):
            row = row or await store.message(message_id)  # rare: read only for this
            if row is not None:
                await suppress_reported(services, row, update, applied)
    return _APPLIED

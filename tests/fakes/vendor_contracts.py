"""Which published document each vendor's exchanges are held to, and the calls that check them.

    errors = check_built("infobip", adapter.build_send(message, settings))   # a builder
    errors = check_webhook("sinch", "deliveryReport", "application/json", body)

A new builder (MMS, say) needs nothing here when its operation is in one of the vendor's
documents: `check_built` finds the operation in whichever document has it. Bird publishes no
machine-readable document (tests/fakes/specs/README.md lists what its fake checks instead).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import threading
from collections.abc import Callable, Mapping, Sequence
from functools import cache
from typing import Any, Final
from urllib.parse import parse_qsl, urlencode, urlsplit

import httpx
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from connector import http

from .contract import FORM, Contract

DOCUMENTS: Final[dict[str, tuple[str, ...]]] = {
    "twilio": ("twilio-messages.openapi.json", "twilio-accounts.openapi.json"),
    "infobip": ("infobip-sms.openapi.json", "infobip-mms.openapi.json",
                "infobip-account.openapi.json"),
    "vonage": ("vonage-sms.openapi.json", "vonage-messages.openapi.json",
               "vonage-account.openapi.json"),
    "sinch": ("sinch-sms.openapi.json",),
}

# Where a document is behind the vendor's current API, what is accepted anyway (and why):
# - sinch: the 2021 third-party copy predates List Batches' `client_reference` filter, which
#   Sinch's current reference (developers.sinch.com, SMS API, Batches: List) documents.
# - sinch: its current recipient delivery report carries `encoding` (with automatic
#   encoding), which the 2021 copy's "Retrieve a recipient delivery report" lacks, and its
#   batch report's `total_message_count` is a number (the copy says string). Such top-level
#   fields of callback bodies are left out of the check.
STALE_QUERY: Final[dict[str, frozenset[str]]] = {"sinch": frozenset({"client_reference"})}
STALE_FIELDS: Final[dict[str, frozenset[str]]] = {
    "sinch": frozenset({"encoding", "total_message_count"})}


def _current(vendor: str, body: bytes) -> bytes:
    """A callback body without the top-level fields the vendor's document is behind on."""
    stale = STALE_FIELDS.get(vendor)
    loaded = json.loads(body) if stale else None
    if not isinstance(loaded, dict):
        return body
    return json.dumps({k: v for k, v in loaded.items() if k not in stale}).encode()

_INFOBIP_TIME: Final = re.compile(
    r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:?\d\d)")


def _infobip_date_time(value: object) -> bool:
    """Infobip declares `format: date-time` (RFC 3339) but writes offsets as `+0000`, in its
    document's own examples as on the wire: both spellings pass."""
    return not isinstance(value, str) or _INFOBIP_TIME.fullmatch(value) is not None


FORMATS: Final[dict[str, dict[str, Callable[[object], bool]]]] = {
    "infobip": {"date-time": _infobip_date_time},
}


def _split_enums(node: Any) -> Any:
    """The Sinch copy writes some enums as one string, `['Queued, Dispatched, ...']`: a
    conversion slip of the third-party copy, read here as the list it stands for."""
    if isinstance(node, list):
        return [_split_enums(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {k: _split_enums(v) for k, v in node.items()}
    enum = out.get("enum")
    if isinstance(enum, list) and len(enum) == 1 and isinstance(enum[0], str) and ", " in enum[0]:
        out["enum"] = enum[0].split(", ")
    return out


REPAIRS: Final[dict[str, Callable[[Any], Any]]] = {"sinch": _split_enums}


@cache
def contract(vendor: str, name: str) -> Contract:
    """One of the vendor's documents, with the vendor's allowances and repairs."""
    doc = Contract.load(name).doc
    repair = REPAIRS.get(vendor)
    return Contract(repair(doc) if repair else doc, formats=FORMATS.get(vendor))


def _vonage_basic(headers: Mapping[str, str]) -> list[tuple[str, str]]:
    """Vonage documents api_key/api_secret parameters and, as the alternative the connector
    uses, the same pair as HTTP Basic auth (developer.vonage.com, Authentication: Basic):
    the 2021 SMS and Account documents know only the parameters, so Basic counts as them."""
    scheme, _, blob = headers.get("authorization", "").partition(" ")
    if scheme.lower() != "basic":
        return []
    try:
        key, _, secret = base64.b64decode(blob, validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return []
    return [("api_key", key), ("api_secret", secret)]


IMPLIED: Final[dict[str, Callable[[Mapping[str, str]], list[tuple[str, str]]]]] = {
    "vonage": _vonage_basic,
}


def _http_auth(doc: Contract, op: dict[str, Any]) -> frozenset[str]:
    """The HTTP auth schemes (basic, bearer) an operation takes, when it takes nothing else
    (Vonage Messages v1: bearerAuth or basicAuth); empty when any alternative is not HTTP."""
    schemes = doc.doc.get("components", {}).get("securitySchemes", {})
    found: set[str] = set()
    for requirement in op.get("security", doc.doc.get("security", [])):
        for name in requirement:
            scheme = schemes.get(name, {})
            if scheme.get("type") != "http":
                return frozenset()
            found.add(str(scheme.get("scheme", "")).lower())
    return frozenset(found)


def check_request(vendor: str, method: str, path: str, query: Sequence[tuple[str, str]],
                  headers: Mapping[str, str], body: bytes) -> list[str]:
    """Errors of one request to `vendor` against the document that has its operation."""
    for name in DOCUMENTS[vendor]:
        doc = contract(vendor, name)
        found = doc.operation(method, path)
        if found is None:
            continue
        stale = STALE_QUERY.get(vendor, frozenset())
        query = [(k, v) for k, v in query if k not in stale]
        content_type = headers.get("content-type") if body else None
        auth = _http_auth(doc, found[0])
        given = headers.get("authorization", "").partition(" ")[0].lower()
        errors = [f"Authorization: one of {', '.join(sorted(auth))} is required"] if (
            auth and given not in auth) else []
        # A document that declares Basic auth needs no stand-in parameters for it.
        implied = IMPLIED[vendor](headers) if vendor in IMPLIED and "basic" not in auth else []
        if implied and content_type and content_type.startswith(FORM):
            body += b"&" + urlencode(implied).encode()
        elif implied:
            query = [*query, *implied]
        return [f"{name}: {error}" for error in
                errors + doc.request(method, path, query, content_type, body)]
    return [f"{method} {path}: in none of {', '.join(DOCUMENTS[vendor])}"]


def check_built(vendor: str, request: http.Request) -> list[str]:
    """Errors of a request a connector builder made (empty: the vendor's document allows it)."""
    return check_request(vendor, request.method, httpx.URL(request.url).path,
                         parse_qsl(urlsplit(request.url).query, keep_blank_values=True),
                         request.headers, request.content)


def check_webhook(vendor: str, webhook: str, content_type: str | None, body: bytes,
                  query: Sequence[tuple[str, str]] = ()) -> list[str]:
    """Errors of a callback the vendor sends, against the webhook its document publishes."""
    for name in DOCUMENTS[vendor]:
        doc = contract(vendor, name)
        if doc.webhook_operation(webhook) is not None:
            return [f"{name} {webhook}: {error}"
                    for error in doc.webhook(webhook, content_type, _current(vendor, body),
                                             query)]
    return [f"webhook {webhook}: in none of {', '.join(DOCUMENTS[vendor])}"]


def check_response(vendor: str, name: str, method: str, template: str, status: int,
                   body: bytes) -> list[str]:
    """Errors of a JSON body against an operation's documented answer (a callback whose
    webhook entry points to that answer's format, as Sinch's per-recipient reports do)."""
    return [f"{name} {method} {template} {status}: {error}" for error in
            contract(vendor, name).response_body(method, template, status,
                                                 _current(vendor, body))]


class ContractLog:
    """What a fake saw that its vendor's document forbids (thread-safe; should stay empty)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seen: list[str] = []

    def add(self, errors: list[str]) -> None:
        with self._lock:
            self._seen.extend(errors)

    @property
    def violations(self) -> list[str]:
        with self._lock:
            return list(self._seen)

    def response(self, vendor: str, name: str, method: str, template: str, status: int,
                 body: bytes) -> None:
        self.add(check_response(vendor, name, method, template, status, body))

    def webhook(self, vendor: str, webhook: str, content_type: str | None, body: bytes,
                query: Sequence[tuple[str, str]] = ()) -> None:
        self.add(check_webhook(vendor, webhook, content_type, body, query))


class CheckRequests:
    """ASGI wrapper: every HTTP request is checked against the vendor's documents, then served
    unchanged (the fake's own answer, vendor-like refusals included, is what the client sees)."""

    def __init__(self, app: ASGIApp, vendor: str, log: ContractLog) -> None:
        self.app, self.vendor, self.log = app, vendor, log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        body = b"".join(chunks)
        headers = httpx.Headers([(k.decode("latin-1"), v.decode("latin-1"))
                                 for k, v in scope["headers"]])
        query = parse_qsl(scope.get("query_string", b"").decode("latin-1"),
                          keep_blank_values=True)
        self.log.add([f"{scope['method']} {scope['path']}: {error}" for error in check_request(
            self.vendor, scope["method"], scope["path"], query, headers, body)])
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)

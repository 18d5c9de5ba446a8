"""What every vendor adapter is: a sans-I/O Protocol, plus the one shared outcome classifier."""

from __future__ import annotations

import base64
import email.utils
import time
from collections.abc import Callable, Mapping
from typing import Final, Protocol, TypeVar

import msgspec

from connector import http
from connector.errors import (
    AmbiguousOutcome,
    VendorAuthFailed,
    VendorError,
    VendorRejected,
    VendorThrottled,
    VendorUnavailable,
)
from connector.model import Accepted, Mms, Outgoing, StatusUpdate

T = TypeVar("T")

# How a vendor's own error code reads for the platform: a class and the platform-facing code.
AUTH: Final = "auth"
THROTTLED: Final = "throttled"
TRANSIENT: Final = "transient"
REJECTED: Final = "rejected"
DEFAULT_SIGNATURE_WINDOW: Final = 300.0


class Callback(msgspec.Struct, frozen=True, kw_only=True):
    """A vendor's status callback as received: everything an adapter may verify or read."""

    url: str  # the public URL the vendor called, query string included
    method: str = "POST"
    headers: Mapping[str, str]  # lower-case names
    body: bytes
    params: list[tuple[str, str]]  # form fields (or query fields for GET callbacks), in order
    # Seconds a signed timestamp may differ from our clock (CONNECTOR_SIGNATURE_WINDOW): no
    # vendor documents a window for Bird, Sinch or Vonage signatures, so the deployment sets it.
    max_age: float = DEFAULT_SIGNATURE_WINDOW


class Vendor(Protocol):
    """A CPaaS vendor. No I/O: build requests, read responses and callbacks.

    Settings are the `Chan-*` headers, lower case without the prefix (`auth-token`).
    """

    name: str
    required: tuple[str, ...]
    optional: tuple[str, ...]
    hosts: tuple[str, ...]  # documented API hosts a Base-Url may name without extra allowing
    # True: every callback must carry the connector's signed token (`?m=`) in its URL.
    # False: the vendor calls a fixed subscription URL; callbacks are matched by the reference
    # or vendor id inside them and must pass the vendor's own signature check.
    token_callbacks: bool

    def base_url(self, settings: Mapping[str, str]) -> str: ...

    def build_send(self, message: Outgoing, settings: Mapping[str, str]) -> http.Request: ...

    def parse_send(self, response: http.Response) -> Accepted:
        """The acceptance, or raise the VendorError the platform should see."""

    def verify(self, callback: Callback, settings: Mapping[str, str]) -> None:
        """Raise InvalidSignature unless the callback is authentic for these settings."""

    def parse_status(self, callback: Callback) -> list[StatusUpdate]:
        """Updates in the shared model; unknown vendor statuses are logged and left out."""

    def build_verify(self, settings: Mapping[str, str]) -> http.Request:
        """One cheap authenticated call that proves the credentials work."""

    def parse_verify(self, response: http.Response) -> None:
        """Return when the credentials work, else raise a VendorError saying what is wrong."""

    def build_lookup(self, message: Outgoing, settings: Mapping[str, str]
                     ) -> http.Request | None:
        """A look-up of this message by the connector's reference; None: the vendor has none."""

    def parse_lookup(self, response: http.Response) -> Accepted | None:
        """The message as the vendor knows it, None when the vendor never took it; raise a
        VendorError when the look-up itself failed."""

    # MMS (SPEC section 8). A message with `mms` set goes through build_mms/parse_mms; the
    # rest of its life (callbacks, look-ups by reference, reports) is the SMS one.
    def mms_refusal(self, to_e164: str, mms: Mms, settings: Mapping[str, str]) -> str | None:
        """Why this account or destination cannot take this MMS (then the fallback SMS goes,
        or 422 mms_not_supported); None when it can."""

    def build_mms(self, message: Outgoing, settings: Mapping[str, str]) -> http.Request: ...

    def parse_mms(self, response: http.Response) -> Accepted:
        """As parse_send, for the answer to build_mms's request."""

    def mms_capability(self, settings: Mapping[str, str], response: http.Response
                       ) -> bool | None:
        """From a successful build_verify answer: can the account send MMS? None: cannot tell."""


def build_request(vendor: Vendor, message: Outgoing, settings: Mapping[str, str]
                  ) -> http.Request:
    """The vendor request for this message: its MMS send when it carries MMS, else its SMS."""
    if message.mms is not None:
        return vendor.build_mms(message, settings)
    return vendor.build_send(message, settings)


def parse_answer(vendor: Vendor, message: Outgoing, response: http.Response) -> Accepted:
    if message.mms is not None:
        return vendor.parse_mms(response)
    return vendor.parse_send(response)


def basic_auth(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def retry_after(response: http.Response) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or HTTP date), None when absent/bad."""
    raw = response.headers.get("retry-after")
    if raw is None:
        return None
    try:
        return max(0.0, float(raw))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def read_answer(parse: Callable[[http.Response], T], answer: http.Response, what: str) -> T:
    """`parse(answer)`, with an answer the adapter could not read (JSON of the wrong shape, or
    nested deeper than msgspec follows) taken as unreadable: the vendor may have acted on the
    request, so it is ambiguous, never an unexpected error."""
    try:
        return parse(answer)
    except (msgspec.DecodeError, RecursionError):
        raise AmbiguousOutcome(f"{what}: unreadable answer") from None


def classify(
    response: http.Response,
    *,
    vendor: str,
    vendor_code: str | None,
    detail: str,
    codes: Mapping[str, tuple[str, str]],
) -> VendorError:
    """Turn a non-success vendor answer into the error the platform should see.

    The vendor's own code decides first (`codes` maps it to a class and a platform code);
    otherwise the HTTP status: 429 throttled, 5xx unavailable, 401/403 auth, other 4xx rejected.
    """
    known = codes.get(vendor_code) if vendor_code is not None else None
    kind, code = known if known is not None else by_status(response.status_code)
    message = f"{vendor}: {detail}" if detail else f"{vendor} answered HTTP {response.status_code}"
    return error_for(kind, code, message, vendor_code, retry_after(response))


def error_for(kind: str, code: str, message: str, vendor_code: str | None,
              retry_after: float | None = None) -> VendorError:
    """The VendorError of one class; for vendors that report errors inside a 200 (Vonage)."""
    if kind == THROTTLED:
        return VendorThrottled(message, vendor_code=vendor_code, retry_after=retry_after or 1.0)
    if kind == TRANSIENT:
        return VendorUnavailable(message, code=code, vendor_code=vendor_code,
                                 retry_after=retry_after)
    if kind == AUTH:
        return VendorAuthFailed(message, code=code, vendor_code=vendor_code)
    return VendorRejected(message, code=code, vendor_code=vendor_code)


def by_status(status: int) -> tuple[str, str]:
    if status == 429:
        return THROTTLED, "throttled"
    if status >= 500:
        return TRANSIENT, "vendor_unavailable"
    if status in (401, 403):
        return AUTH, "vendor_auth_failed"
    return REJECTED, "rejected"

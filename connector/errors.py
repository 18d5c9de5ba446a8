"""The closed error tree and the one table that maps it onto the platform's status codes.

    ConnectorError
    ├── BadRequest                 400  malformed JSON, schema, recipient/sender, missing setting
    ├── PlatformKeyRefused         401  Chan-Connector-Key missing or wrong (platform calls)
    ├── PayloadTooLarge            413
    ├── RefusedMessage             422  the connector refuses before any vendor call
    ├── StoreUnavailable           503  retryable
    ├── InflightTimeout            503  retryable: the original is still being sent
    ├── InvalidSignature           403  (callbacks only)
    └── VendorError                     every one says whether the platform should retry
        ├── VendorAuthFailed       401  permanent
        ├── VendorRejected         422  permanent, this message only
        ├── VendorThrottled        429  retryable, keeps Retry-After
        ├── VendorUnavailable      502  retryable: 5xx, refused connection; nothing was sent
        ├── VendorTimeout          504  retryable: no answer in time, before the request went out
        └── AmbiguousOutcome       502  the vendor may have taken it: the policy decides
"""

from __future__ import annotations

import math
from typing import ClassVar

import msgspec


class ConnectorError(Exception):
    status: ClassVar[int] = 500
    code: ClassVar[str] = "internal_error"
    retryable: ClassVar[bool] = False

    def __init__(self, message: str, *, code: str | None = None,
                 vendor_code: str | None = None, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code  # type: ignore[misc]
        self.vendor_code = vendor_code
        self.retry_after = retry_after

    def body(self) -> bytes:
        return msgspec.json.encode({"error": {
            "code": self.code, "message": self.message,
            "retryable": self.retryable, "vendor_code": self.vendor_code,
        }})

    def headers(self) -> dict[str, str]:
        if self.retry_after is None:
            return {}
        # Rounded up: a platform that comes back on time must find the bucket refilled.
        return {"Retry-After": str(max(1, math.ceil(self.retry_after)))}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={self.code!r}, vendor_code={self.vendor_code!r})"


class BadRequest(ConnectorError):
    status = 400
    code = "invalid_request"


class PlatformKeyRefused(ConnectorError):
    status = 401
    code = "platform_key"


class PayloadTooLarge(ConnectorError):
    status = 413
    code = "payload_too_large"


class RefusedMessage(ConnectorError):
    status = 422
    code = "rejected"


class StoreUnavailable(ConnectorError):
    status = 503
    code = "store_unavailable"
    retryable = True


class InflightTimeout(ConnectorError):
    status = 503
    code = "in_flight"
    retryable = True


class InvalidSignature(ConnectorError):
    status = 403
    code = "invalid_signature"


class VendorError(ConnectorError):
    code = "vendor_error"


class VendorAuthFailed(VendorError):
    status = 401
    code = "vendor_auth_failed"


class VendorRejected(VendorError):
    status = 422
    code = "rejected"


class VendorThrottled(VendorError):
    status = 429
    code = "throttled"
    retryable = True


class VendorUnavailable(VendorError):
    status = 502
    code = "vendor_unavailable"
    retryable = True


class VendorTimeout(VendorError):
    status = 504
    code = "vendor_timeout"
    retryable = True


class AmbiguousOutcome(VendorError):
    status = 502
    code = "ambiguous_outcome"
    retryable = True

"""What the benchmark's processes agree on: credentials, request ids, custom_data, bodies."""

from __future__ import annotations

import base64
from typing import Final
from urllib.parse import urlencode

import msgspec

SID: Final = "AC" + "0123456789abcdef" * 2
TOKEN: Final = "bench-twilio-auth-token-" + "t0k3n" * 4
BASIC: Final = "Basic " + base64.b64encode(f"{SID}:{TOKEN}".encode()).decode()
REPORT_SECRET: Final = "bench-report-secret-" + "r" * 32
MESSAGES_PATH: Final = f"/2010-04-01/Accounts/{SID}/Messages.json"
TEXT: Final = ("Hi Anna, your order #48213 has shipped and arrives on Thursday. Track it: "
               "https://ex.am/t/48213 Reply STOP to opt out")
METADATA: Final = {"campaign": "spring-2025", "step": "s3"}

_json = msgspec.json.Encoder()


def request_id(prefix: str, seq: int, sent_us: int) -> str:
    """`prefix-seq-µs`: unique, and the receiver reads the send time back out of it."""
    return f"{prefix}-{seq}-{sent_us}"


def parse_request_id(rid: str) -> tuple[str, int, int] | None:
    parts = rid.rsplit("-", 2)
    if len(parts) != 3 or not parts[1].isdigit() or not parts[2].isdigit():
        return None
    return parts[0], int(parts[1]), int(parts[2])


def custom_data(rid: str) -> str:
    """Derived from the request id, so the receiver can check every one byte for byte; quotes,
    a backslash and non-ASCII make sure it survives JSON and the store unchanged."""
    return f'{{"c":"spring","r":"{rid}","n":"Zoë \\"ü\\" ✓"}}~&/'


def recipient(seq: int) -> str:
    """A different valid UK mobile per message, so no per-number cache flatters the results."""
    return f"0044790{seq % 10_000_000:07d}"


def send_body(rid: str, seq: int, callback_url: str) -> bytes:
    """A realistic /sms/send body (about 400 bytes)."""
    return _json.encode({
        "sender": "MyBrand", "recipient": recipient(seq), "message": TEXT, "request_id": rid,
        "custom_data": custom_data(rid), "callback_url": callback_url, "metadata": METADATA,
    })


def vendor_form(callback_url: str) -> bytes:
    """What the connector posts to Twilio for the same message (for the vendor's own latency)."""
    return urlencode({"To": "+447911123456", "From": "MyBrand", "Body": TEXT,
                      "StatusCallback": callback_url}).encode()


def send_headers(vendor_base_url: str) -> dict[str, str]:
    return {"Chan-Account-Sid": SID, "Chan-Auth-Token": TOKEN, "Chan-Base-Url": vendor_base_url,
            "Content-Type": "application/json"}


def percentiles(values: list[float]) -> dict[str, float]:
    """p50/p90/p99/max in milliseconds of `values` in seconds (nearest rank)."""
    if not values:
        return {"p50_ms": 0.0, "p90_ms": 0.0, "p99_ms": 0.0, "max_ms": 0.0}
    ordered = sorted(values)
    n = len(ordered)

    def rank(q: float) -> float:
        return round(ordered[min(n - 1, int(n * q))] * 1e3, 3)

    return {"p50_ms": rank(0.50), "p90_ms": rank(0.90), "p99_ms": rank(0.99),
            "max_ms": round(ordered[-1] * 1e3, 3)}

"""What the fault suite's processes agree on: credentials, secrets, message bodies."""

from __future__ import annotations

import base64
import re
from typing import Final

SID: Final = "AC" + "fa017fa017fa017f" * 2
TOKEN: Final = "faults-twilio-auth-token-" + "k3y" * 6
BASIC: Final = "Basic " + base64.b64encode(f"{SID}:{TOKEN}".encode()).decode()
SECRET_KEY: Final = "faults-secret-key-" + "s" * 32  # shared by every replica of a cluster
REPORT_SECRET: Final = "faults-report-secret-" + "r" * 32
ADMIN_KEY: Final = "faults-admin-key"
MESSAGES_PATH: Final = f"/2010-04-01/Accounts/{SID}/Messages.json"

_RID_IN_BODY: Final = re.compile(r"\brid=(\S+)")


def text(rid: str) -> str:
    """The SMS text: carries the request_id so the vendor fake can count sends per id."""
    return f"rid={rid} Your code is 4711"


def rid_of(body_text: str) -> str | None:
    found = _RID_IN_BODY.search(body_text)
    return found.group(1) if found else None


def custom_data(rid: str) -> str:
    """Derived from the request id, so the receiver checks every one byte for byte."""
    return f'{{"r":"{rid}","n":"Zoë \\"ü\\" ✓"}}~&/'


def recipient(seq: int) -> str:
    return f"0044791{seq % 10_000_000:07d}"

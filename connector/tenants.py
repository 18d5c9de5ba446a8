"""Whose state a send touches: the vendor account it names, bound to the secret that proves it.

A `Chan-*` account id (a Twilio Account SID, an Infobip base URL) is no secret: anyone can name
it. Dedupe claims, suppression lists and rate buckets are therefore keyed by the account
together with a keyed hash of the account's secret credential (HMAC-SHA256 under a key derived
from CONNECTOR_SECRET_KEY, so the stored key says nothing about the secret). A caller with a
wrong secret lands in a tenant of its own and never reaches the owner's state.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from typing import Final, NamedTuple

# The setting that names the vendor account (never a secret: it may appear in configuration).
ACCOUNT_SETTING: Final = {
    "twilio": "account-sid",
    "bird": "workspace-id",
    "sinch": "service-plan-id",
    "infobip": "base-url",
    "vonage": "api-key",
}
# The setting that proves the caller owns that account.
SECRET_SETTING: Final = {
    "twilio": "auth-token",
    "bird": "access-key",
    "sinch": "api-token",
    "infobip": "api-key",
    "vonage": "api-secret",
}
_SEPARATOR: Final = "|"
_CREDENTIAL_HEX: Final = 32  # 128 bits of the HMAC: collisions are out of reach
_KNOWN_CREDENTIALS: Final = 1024


def account_of(vendor: str, settings: Mapping[str, str]) -> str:
    """The account a send is charged to; unknown vendors fall back to a hash of settings."""
    name = ACCOUNT_SETTING.get(vendor)
    if name is not None and settings.get(name):
        return f"{vendor}:{settings[name]}"
    digest = hashlib.sha256(repr(sorted(settings.items())).encode()).hexdigest()[:16]
    return f"{vendor}:#{digest}"


class Tenant(NamedTuple):
    account: str  # "twilio:AC...", what CONNECTOR_RATE_LIMITS and the operator API name
    credential: str  # keyed hash of the account's secret, hex

    @property
    def key(self) -> str:
        """The rate bucket's name: the account under this credential."""
        return f"{self.account}{_SEPARATOR}{self.credential}"

    def claim_key(self, request_id: str | None) -> str | None:
        """The dedupe key of `request_id` within this tenant (None: no dedupe)."""
        if request_id is None:
            return None
        return f"{self.account}{_SEPARATOR}{self.credential}{_SEPARATOR}{request_id}"


class Tenants:
    """Names the tenant of a send's settings; one per process, keyed from the secret key."""

    def __init__(self, secret_key: str) -> None:
        self._key = hmac.new(secret_key.encode(), b"tenant-credential", hashlib.sha256).digest()
        # Credentials already hashed, oldest first: a deployment sends for a few accounts, and
        # each send paid a full HMAC (~28,000 instructions under callgrind) for the same
        # answer. Bounded; process memory only (the secrets are in the request it serves),
        # never logged.
        self._known: dict[str, str] = {}

    def of(self, vendor: str, settings: Mapping[str, str]) -> Tenant:
        secret_name = SECRET_SETTING.get(vendor)
        secret = settings.get(secret_name, "") if secret_name is not None else ""
        if not secret:  # an adapter without a known secret: every setting stands for it
            secret = repr(sorted(settings.items()))
        named = f"{vendor}\0{secret}"
        credential = self._known.get(named)
        if credential is None:
            credential = hmac.digest(self._key, named.encode(), "sha256").hex()[:_CREDENTIAL_HEX]
            self._known[named] = credential
            if len(self._known) > _KNOWN_CREDENTIALS:
                del self._known[next(iter(self._known))]
        return Tenant(account_of(vendor, settings), credential)

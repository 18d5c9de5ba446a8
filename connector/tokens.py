"""Keys derived from the deployment secrets: callback tokens, sealed vendor secrets, report JWTs."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import time
from collections import OrderedDict
from typing import Final, TypeVar

import itsdangerous
import jwt
import msgspec
from cryptography.fernet import Fernet, InvalidToken

_SEAL_CACHE_SIZE: Final = 1024
_TOKEN_CACHE_SIZE: Final = 4096
COMPACT_MAC_BYTES: Final = 8
COMPACT_TOKEN_CHARS: Final = 33  # 22 for the 16-byte id, 11 for the MAC
_COMPACT_ID: Final = re.compile(r"[0-9a-f]{32}")
_FROM_URLSAFE: Final = str.maketrans("-_", "+/")
_TO_URLSAFE: Final = bytes.maketrans(b"+/", b"-_")
_TOKEN_PERSON: Final = b"callback-token"
V = TypeVar("V")


def _derive(secret: str, purpose: bytes) -> bytes:
    # Separate keys per purpose, so a leaked callback token says nothing about the sealing key.
    return hmac.new(secret.encode(), purpose, hashlib.sha256).digest()


class CallbackTokens:
    """Signs the connector's message id for the per-message vendor callback URL (`?m=`).

    A connector id (32 hex digits) gets a compact token: the id's 16 bytes and an 8-byte
    keyed BLAKE2b of them (8 bytes of HMAC-SHA256 in tokens made before, still accepted),
    base64url, 33 characters. Vonage caps the callback URL at 100
    characters, and the public base (up to 40) plus `/callbacks/vonage/status?m=` leave 33.
    64 bits of MAC stop guessing (each wrong guess is a 403 on the public endpoint; 2**63
    of them are out of reach); they are not a key. Other ids, and tokens made before the
    compact form, use itsdangerous's `id.signature`, still accepted.
    """

    def __init__(self, secret_key: str) -> None:
        self._key = _derive(secret_key, b"callback-token")
        # The key is derived once here, so itsdangerous need not derive it on every call.
        self._signer = itsdangerous.Signer(
            self._key, key_derivation="none", digest_method=hashlib.sha256,
        )
        # Tokens that verified, oldest first: a message's vendor calls back two or three
        # times with the same token, and only the first pays for the MAC. Bounded; holds
        # nothing secret (the token is in the URL the vendor was given, the id in the row).
        self._verified: dict[str, str] = {}

    def _mac(self, raw: bytes) -> bytes:
        # Keyed BLAKE2b, a MAC by design: one C call, ~7,900 instructions under callgrind
        # against ~28,000 for a one-shot HMAC-SHA256 (OpenSSL 3 sets that up afresh each
        # time), and every send signs a token (#11).
        return hashlib.blake2b(raw, key=self._key, digest_size=COMPACT_MAC_BYTES,
                               person=_TOKEN_PERSON).digest()

    def _hmac_mac(self, raw: bytes) -> bytes:
        """The MAC of compact tokens made before BLAKE2b (HMAC-SHA256, cut to 8 bytes): still
        accepted, for the messages sent before an upgrade whose callbacks come after it."""
        return hmac.digest(self._key, raw, "sha256")[:COMPACT_MAC_BYTES]

    def sign(self, message_id: str) -> str:
        if _COMPACT_ID.fullmatch(message_id):
            raw = bytes.fromhex(message_id)
            # base64url without padding, as `_check` reads it: 16 bytes are 22 characters and
            # the 8-byte MAC 11. binascii directly: base64's urlsafe_b64encode is three
            # Python calls a part (#11).
            token = (binascii.b2a_base64(raw, newline=False)[:22]
                     + binascii.b2a_base64(self._mac(raw), newline=False)[:11]
                     ).translate(_TO_URLSAFE).decode()
            # Made here, so good by construction: the message's callbacks that reach this
            # process need no MAC of their own (one MAC per message saved, #11).
            self._remember(token, message_id)
            return token
        return self._signer.sign(message_id).decode()

    def _remember(self, token: str, message_id: str) -> None:
        self._verified[token] = message_id
        if len(self._verified) > _TOKEN_CACHE_SIZE:
            del self._verified[next(iter(self._verified))]

    def unsign(self, token: str) -> str | None:
        """The message id, or None when the token was not made by this deployment."""
        message_id = self._verified.get(token)
        if message_id is None:
            message_id = self._check(token)
            if message_id is not None:
                self._remember(token, message_id)
        return message_id

    def _check(self, token: str) -> str | None:
        if len(token) == COMPACT_TOKEN_CHARS and "." not in token:
            # binascii directly: base64.urlsafe_b64decode is three Python calls per part.
            try:
                raw = binascii.a2b_base64(token[:22].translate(_FROM_URLSAFE) + "==")
            except (binascii.Error, ValueError):
                return None
            if len(raw) != 16:
                return None
            # The MAC is compared as the text it travels as: decoding it would ignore the two
            # spare bits of its last character, and take four spellings of one token.
            given = token[22:].encode()
            for made in (self._mac, self._hmac_mac):
                mac = binascii.b2a_base64(made(raw), newline=False)[:11].translate(_TO_URLSAFE)
                if hmac.compare_digest(mac, given):
                    return raw.hex()
            return None
        try:
            return self._signer.unsign(token).decode()
        except itsdangerous.BadSignature:
            return None


class SecretBox:
    """Seals vendor settings for storage (Fernet: AES-CBC + HMAC), never kept in clear at rest.

    Sealing the same settings again reuses the sealed form, so the hot send path pays for
    Fernet once per credential set rather than once per message.
    """

    def __init__(self, secret_key: str) -> None:
        self._fernet = Fernet(base64.urlsafe_b64encode(_derive(secret_key, b"vendor-secrets")))
        self._sealed: OrderedDict[bytes, bytes] = OrderedDict()
        self._opened: OrderedDict[bytes, dict[str, str]] = OrderedDict()

    def seal(self, settings: dict[str, str]) -> bytes:
        plain = msgspec.json.encode(dict(sorted(settings.items())))
        sealed = self._sealed.get(plain)
        if sealed is None:
            sealed = self._fernet.encrypt(plain)
            _remember(self._sealed, plain, sealed)
        return sealed

    def open(self, sealed: bytes) -> dict[str, str] | None:
        opened = self._opened.get(sealed)
        if opened is None:
            try:
                opened = msgspec.json.decode(self._fernet.decrypt(sealed), type=dict[str, str])
            except InvalidToken:
                return None
            _remember(self._opened, sealed, opened)
        return dict(opened)


def _remember(cache: OrderedDict[bytes, V], key: bytes, value: V) -> None:
    cache[key] = value
    if len(cache) > _SEAL_CACHE_SIZE:
        cache.popitem(last=False)


class ReportSigner:
    """The `Authorization` value for report POSTs: HS256 JWT with `iat` (the platform's rule)."""

    def __init__(self, secret: str, prefix: str = "") -> None:
        self._secret = secret
        self._prefix = prefix
        self._cached: tuple[int, str] = (-1, "")

    def header(self) -> str:
        now = int(time.time())
        # One token per second is enough: iat has one-second resolution.
        if self._cached[0] != now:
            token = jwt.encode({"iat": now}, self._secret, algorithm="HS256")
            self._cached = (now, self._prefix + token)
        return self._cached[1]

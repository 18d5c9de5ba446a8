"""Callback tokens, sealed vendor secrets and report JWTs."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time

import jwt

from connector.model import new_message_id
from connector.tokens import CallbackTokens, ReportSigner, SecretBox


def test_callback_token_round_trip_and_tamper() -> None:
    tokens = CallbackTokens("deployment-secret")
    token = tokens.sign("abc123")
    assert tokens.unsign(token) == "abc123"
    assert tokens.unsign(token.replace("abc123", "abc124")) is None
    assert tokens.unsign(token + "x") is None
    assert CallbackTokens("another-deployment").unsign(token) is None


def test_sealed_settings_hide_secrets_and_open_again() -> None:
    box = SecretBox("deployment-secret")
    sealed = box.seal({"auth-token": "very-secret-token", "account-sid": "AC1"})
    assert b"very-secret-token" not in sealed
    assert box.open(sealed) == {"auth-token": "very-secret-token", "account-sid": "AC1"}
    assert SecretBox("deployment-secret").open(sealed)["auth-token"] == "very-secret-token"
    assert SecretBox("other-secret").open(sealed) is None


def test_report_jwt_is_hs256_with_iat_and_prefix() -> None:
    secret = "report-secret-" + "y" * 32
    header = ReportSigner(secret, "Bearer ").header()
    assert header.startswith("Bearer ")
    token = header.removeprefix("Bearer ")
    assert jwt.get_unverified_header(token)["alg"] == "HS256"
    claims = jwt.decode(token, secret, algorithms=["HS256"])
    assert abs(claims["iat"] - time.time()) < 5


def test_connector_ids_get_compact_tokens_that_fit_vonage_callbacks() -> None:
    tokens = CallbackTokens("deployment-secret")
    message_id = new_message_id()
    token = tokens.sign(message_id)
    assert len(token) == 33 and tokens.unsign(token) == message_id
    # One MAC character changed. Not the last: of its 6 bits only 4 are the MAC's (8 bytes are
    # 64 bits in 11 characters), so A and B there decode alike and the swap failed 1 run in 16.
    flipped = token[:-2] + ("A" if token[-2] != "A" else "B") + token[-1]
    assert tokens.unsign(flipped) is None
    other = new_message_id()
    assert tokens.unsign(tokens.sign(other)[:22] + token[22:]) is None  # MAC of another id
    assert CallbackTokens("another-deployment").unsign(token) is None
    public = "https://" + "c" * 32  # the longest public base the settings allow (40)
    assert len(f"{public}/callbacks/vonage/status?m={token}") <= 100


def test_a_compact_token_is_the_unpadded_base64url_of_the_id_and_its_mac() -> None:
    """The token's spelling is fixed (vendors store the callback URL; a process of the
    previous release reads it): the id's 16 bytes, then the MAC's 8, each base64url without
    padding. Checked against base64 itself over random ids (their encodings use - and _)."""
    tokens = CallbackTokens("deployment-secret")
    for _ in range(200):
        message_id = new_message_id()
        raw = bytes.fromhex(message_id)
        mac = tokens._mac(raw)
        expected = b"".join(base64.urlsafe_b64encode(part).rstrip(b"=") for part in (raw, mac))
        assert tokens.sign(message_id) == expected.decode()


def test_a_compact_token_has_one_spelling() -> None:
    tokens = CallbackTokens("deployment-secret")
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    for _ in range(20):
        token = tokens.sign(new_message_id())
        last = alphabet.index(token[-1])
        # The last character carries 4 MAC bits and 2 spare ones: other spare bits, same
        # decoded bytes, and still refused.
        for spare in range(1, 4):
            assert tokens.unsign(token[:-1] + alphabet[last ^ spare]) is None
    assert tokens.unsign("\u00e9" * 33) is None
    assert tokens.unsign("!" * 33) is None


def test_tokens_made_before_the_compact_form_still_verify() -> None:
    tokens = CallbackTokens("deployment-secret")
    message_id = new_message_id()
    old = tokens._signer.sign(message_id).decode()  # the itsdangerous form sent until now
    assert tokens.unsign(old) == message_id


def test_verified_tokens_are_remembered_boundedly_and_forged_ones_never() -> None:
    tokens = CallbackTokens("deployment-secret")
    message_id = new_message_id()
    token = tokens.sign(message_id)
    assert tokens.unsign(token) == message_id
    tokens._key = b"another key"  # a second look would now fail: the answer is remembered
    assert tokens.unsign(token) == message_id
    tokens._key = _derive_again("deployment-secret")
    forged = CallbackTokens("another deployment").sign(new_message_id())  # refused, and again
    assert tokens.unsign(forged) is None
    assert tokens.unsign(forged) is None and forged not in tokens._verified
    for _ in range(5000):
        tokens.unsign(tokens.sign(new_message_id()))
    assert len(tokens._verified) <= 4096 and token not in tokens._verified


def _derive_again(secret: str) -> bytes:
    return CallbackTokens(secret)._key


def test_a_token_this_process_made_needs_no_mac_to_verify_and_others_still_do() -> None:
    tokens = CallbackTokens("deployment-secret")
    message_id = new_message_id()
    token = tokens.sign(message_id)
    checked: list[str] = []
    real_check = tokens._check

    def check(given: str) -> str | None:
        checked.append(given)
        return real_check(given)

    tokens._check = check  # type: ignore[method-assign]
    assert tokens.unsign(token) == message_id and checked == []  # remembered when made
    # Another process of the deployment (no memory of it) verifies it by its MAC...
    other = CallbackTokens("deployment-secret")
    assert other.unsign(token) == message_id
    # ...and a tampered spelling is never taken for the one made here.
    tampered = token[:-1] + ("A" if token[-1] != "A" else "B")
    assert tokens.unsign(tampered) is None and checked == [tampered]


def test_compact_tokens_made_with_the_earlier_hmac_still_verify_and_forgeries_do_not() -> None:
    tokens = CallbackTokens("deployment-secret")
    message_id = new_message_id()
    raw = bytes.fromhex(message_id)
    key = _derive_again("deployment-secret")

    def compact(mac: bytes) -> str:
        return (base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
                + base64.urlsafe_b64encode(mac).rstrip(b"=").decode())

    earlier = compact(hmac.digest(key, raw, "sha256")[:8])  # as tokens were made before
    now = CallbackTokens("deployment-secret").sign(message_id)
    assert now != earlier and len(now) == len(earlier) == 33
    assert tokens.unsign(earlier) == message_id
    assert tokens.unsign(now) == message_id
    assert now == compact(hashlib.blake2b(raw, key=key, digest_size=8,
                                          person=b"callback-token").digest())
    for forged in (compact(hmac.digest(b"other key", raw, "sha256")[:8]),
                   compact(hashlib.blake2b(raw, key=b"other key", digest_size=8,
                                           person=b"callback-token").digest()),
                   compact(hashlib.blake2b(raw, key=key, digest_size=8).digest())):
        assert tokens.unsign(forged) is None

"""Callback tokens, sealed vendor secrets and report JWTs."""

from __future__ import annotations

import time

import jwt

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

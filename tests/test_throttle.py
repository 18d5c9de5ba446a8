"""Token buckets per vendor account, with the exact wait in Retry-After."""

from __future__ import annotations

import pytest

from connector.errors import VendorThrottled
from connector.throttle import Throttle, account_of


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_bucket_allows_the_rate_then_says_how_long_to_wait() -> None:
    clock = Clock()
    throttle = Throttle({"twilio": 5}, clock=clock)
    for _ in range(5):
        throttle.acquire("twilio:AC1")
    with pytest.raises(VendorThrottled) as caught:
        throttle.acquire("twilio:AC1")
    assert caught.value.status == 429
    assert caught.value.retry_after == pytest.approx(0.2)
    assert caught.value.headers() == {"Retry-After": "1"}
    clock.now += 0.2
    throttle.acquire("twilio:AC1")


def test_accounts_have_their_own_buckets_and_specific_limits_win() -> None:
    clock = Clock()
    throttle = Throttle({"twilio": 2, "twilio:AC2": 1}, clock=clock)
    throttle.acquire("twilio:AC1")
    throttle.acquire("twilio:AC1")
    throttle.acquire("twilio:AC2")
    with pytest.raises(VendorThrottled):
        throttle.acquire("twilio:AC2")
    throttle.acquire("twilio:AC3")  # untouched by the others


def test_unlimited_accounts_pass() -> None:
    throttle = Throttle({"sinch": 1}, clock=Clock())
    for _ in range(100):
        throttle.acquire("twilio:AC1")


def test_segments_cost_more() -> None:
    clock = Clock()
    throttle = Throttle({"twilio": 10}, clock=clock)
    throttle.acquire("twilio:AC1", cost=7)
    with pytest.raises(VendorThrottled) as caught:
        throttle.acquire("twilio:AC1", cost=4)
    assert caught.value.retry_after == pytest.approx(0.1)


def test_vendor_429_pauses_the_account() -> None:
    clock = Clock()
    throttle = Throttle({}, clock=clock)
    throttle.pause("twilio:AC1", 3)
    with pytest.raises(VendorThrottled) as caught:
        throttle.acquire("twilio:AC1")
    assert caught.value.retry_after == pytest.approx(3)
    throttle.acquire("twilio:AC2")
    clock.now += 3.01
    throttle.acquire("twilio:AC1")


def test_account_identity_never_holds_a_secret() -> None:
    assert account_of("twilio", {"account-sid": "AC1", "auth-token": "s3cret"}) == "twilio:AC1"
    hashed = account_of("other", {"token": "s3cret"})
    assert hashed.startswith("other:#") and "s3cret" not in hashed

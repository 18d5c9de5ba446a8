"""Tenants: an account id counts only together with the secret that proves it (issue #15)."""

from __future__ import annotations

import pytest

from connector.errors import VendorThrottled
from connector.tenants import Tenants
from connector.throttle import Throttle
from connector.throttle.local import LocalBuckets

KEY = "k" * 40
OWNER = {"account-sid": "AC1", "auth-token": "the-real-token"}
FORGED = {"account-sid": "AC1", "auth-token": "a-guess"}


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_tenant_binds_the_account_to_a_keyed_hash_of_its_secret() -> None:
    tenants = Tenants(KEY)
    owner, forged = tenants.of("twilio", OWNER), tenants.of("twilio", FORGED)
    assert owner.account == forged.account == "twilio:AC1"  # what limits and operators name
    assert owner.credential != forged.credential
    assert tenants.of("twilio", dict(OWNER)) == owner  # stable for one secret
    assert Tenants("x" * 40).of("twilio", OWNER) != owner  # keyed: another deployment differs
    for text in (owner.key, owner.claim_key("r1") or ""):
        assert "the-real-token" not in text
    assert owner.claim_key("r1") != forged.claim_key("r1")
    assert owner.claim_key(None) is None


@pytest.mark.parametrize(("vendor", "settings", "secret"), [
    ("bird", {"workspace-id": "w", "access-key": "A", "channel-id": "c"}, "access-key"),
    ("sinch", {"service-plan-id": "p", "api-token": "A"}, "api-token"),
    ("infobip", {"base-url": "https://x.api.infobip.com", "api-key": "A"}, "api-key"),
    ("vonage", {"api-key": "k", "api-secret": "A"}, "api-secret"),
])
def test_every_vendor_names_its_secret(vendor: str, settings: dict[str, str],
                                       secret: str) -> None:
    tenants = Tenants(KEY)
    assert tenants.of(vendor, settings) != tenants.of(vendor, {**settings, secret: "B"})


async def test_a_wrong_secret_never_drains_the_owners_bucket() -> None:
    tenants, clock = Tenants(KEY), Clock()
    throttle = Throttle({"twilio:AC1": 2}, clock=clock)  # configured by account id
    owner, forged = tenants.of("twilio", OWNER), tenants.of("twilio", FORGED)
    for _ in range(2):
        await throttle.acquire(forged.account, bucket=forged.key)
    with pytest.raises(VendorThrottled):
        await throttle.acquire(forged.account, bucket=forged.key)  # the limit holds for it
    for _ in range(2):
        await throttle.acquire(owner.account, bucket=owner.key)
    await throttle.pause(forged.account, 30, bucket=forged.key)
    clock.now += 1
    await throttle.acquire(owner.account, bucket=owner.key)  # the forged pause is its own


async def test_invented_accounts_cannot_grow_the_bucket_table_without_bound() -> None:
    clock = Clock()
    buckets = LocalBuckets(clock, limit=100)
    await buckets.take("owner", 1.0, 1.0, 1.0)  # used up, refilling for a second
    for n in range(1000):
        await buckets.take(f"invented-{n}", 1.0, 1.0, 1.0)
        assert len(buckets) <= 100
    clock.now += 10  # every invented bucket has refilled: dropping them loses nothing
    for n in range(99):
        await buckets.take(f"later-{n}", 1.0, 1.0, 1.0)
    assert len(buckets) <= 100
    # A bucket dropped for room was full anyway; one kept still counts.
    clock.now += 0.5
    assert (await buckets.take("later-98", 1.0, 1.0, 1.0))[0] > 0


def test_known_credentials_are_remembered_boundedly_and_match_a_fresh_hash() -> None:
    tenants = Tenants(KEY)
    first = tenants.of("twilio", OWNER)
    for n in range(1500):  # more accounts than it keeps
        tenant = tenants.of("twilio", {"account-sid": f"AC{n}", "auth-token": f"t{n}"})
        assert tenant == Tenants(KEY).of("twilio", {"account-sid": f"AC{n}", "auth-token": f"t{n}"})
    assert len(tenants._known) <= 1024
    assert tenants.of("twilio", OWNER) == first == Tenants(KEY).of("twilio", OWNER)
    assert tenants.of("twilio", FORGED) != first  # a remembered secret answers for itself only

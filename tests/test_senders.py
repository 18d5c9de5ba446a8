"""Sender pools: configuration, area-code and country matching, stickiness, spread, movement."""

from __future__ import annotations

import collections
import json
import os
import subprocess
import sys
from collections.abc import Mapping

import phonenumbers
import pytest

from connector.errors import BadRequest
from connector.senders import Pools, parse_pools
from connector.settings import Settings, SettingsError

NY, LA, SF1, SF2 = "+12125550100", "+13105550100", "+14155550100", "+14155550199"
TORONTO, UK, DE = "+16475550100", "+447400123456", "+4915123456789"
NANP = (NY, LA, SF1, SF2, TORONTO)
MIXED = {"mkt": (*NANP, UK, DE)}


def pick(pools: Pools | Mapping[str, tuple[str, ...]], to: str, sender: str = "mkt",
         vendor: str = "twilio", **config: str) -> str | None:
    resolver = pools if isinstance(pools, Pools) else Pools(pools)
    return resolver.pick(sender, phonenumbers.parse(to), vendor, config)


def uk_recipients(count: int) -> list[str]:
    return [f"+4474001{i:05d}" for i in range(count)]


# --- configuration ---------------------------------------------------------------------------


@pytest.mark.parametrize(("raw", "pools"), [
    pytest.param("", {}, id="unset"),
    pytest.param("marketing=+12125550100", {"marketing": ("+12125550100",)}, id="one"),
    pytest.param(" marketing = +1 212 555 0100 , 0013105550100 ; alerts=+1-415-555-0100 ;",
                 {"marketing": (NY, LA), "alerts": (SF1,)}, id="spaces-00-dashes"),
    pytest.param("My Pool 2=+447400123456", {"My Pool 2": (UK,)}, id="name-with-space-digit"),
    pytest.param("a=+12125550100;b=+12125550100", {"a": (NY,), "b": (NY,)},
                 id="number-in-two-pools"),
])
def test_pools_parse_to_e164(raw: str, pools: dict[str, tuple[str, ...]]) -> None:
    assert Settings.from_env({"CONNECTOR_SENDER_POOLS": raw}).sender_pools == pools


@pytest.mark.parametrize(("raw", "why"), [
    pytest.param("marketing", "not name=number", id="no-equals"),
    pytest.param("marketing=", "has no numbers", id="empty-pool"),
    pytest.param("=+12125550100", "pool name ''", id="no-name"),
    pytest.param("+12125550100=+13105550100", "pool name", id="name-is-a-number"),
    pytest.param("12345=+12125550100", "pool name", id="name-is-a-short-code"),
    pytest.param("marketing team=+12125550100", "pool name", id="name-over-11"),
    pytest.param("mkt!=+12125550100", "pool name", id="name-punctuation"),
    pytest.param("a=+12125550100;a=+13105550100", "defined twice", id="duplicate-pool"),
    pytest.param("a=+12125550100,+1 212 555 0100", "more than once", id="duplicate-number"),
    pytest.param("a=2125550100", "not a valid international number", id="national-form"),
    pytest.param("a=+1212555", "not a valid international number", id="too-short"),
    pytest.param("a=+447700900123", "not a valid international number", id="invalid-range"),
    pytest.param("a=MyBrand", "not a valid international number", id="alphanumeric"),
])
def test_bad_pools_stop_start_up_naming_the_variable(raw: str, why: str) -> None:
    with pytest.raises(SettingsError, match="CONNECTOR_SENDER_POOLS") as caught:
        Settings.from_env({"CONNECTOR_SENDER_POOLS": raw})
    assert why in str(caught.value)


# --- which numbers may serve a recipient -----------------------------------------------------


@pytest.mark.parametrize(("to", "allowed"), [
    pytest.param("+12125551234", {NY}, id="nanp-area-code-match"),
    pytest.param("+13105559876", {LA}, id="nanp-other-area-code"),
    pytest.param("+14155552671", {SF1, SF2}, id="nanp-two-in-area"),
    pytest.param("+16475551234", {TORONTO}, id="canada-area-code"),
    pytest.param("+13125550123", set(NANP), id="nanp-no-area-match-stays-in-nanp"),
    pytest.param("+447911234567", {UK}, id="non-nanp-same-country"),
    pytest.param("+4930123456", {DE}, id="non-nanp-landline-same-country"),
    pytest.param("+33612345678", set(MIXED["mkt"]), id="no-country-match-whole-pool"),
])
def test_geomatch_prefers_area_then_country_then_all(to: str, allowed: set[str]) -> None:
    resolver = Pools(MIXED)
    # many neighbours of the recipient: every pick stays inside the allowed tier
    national = to[:-2]
    seen = {pick(resolver, f"{national}{i:02d}") for i in range(100)
            if phonenumbers.is_valid_number(phonenumbers.parse(f"{national}{i:02d}"))}
    assert seen <= allowed
    assert pick(resolver, to) in allowed
    if len(allowed) > 1:
        assert len(seen) > 1, "a tier of several numbers is shared, not one number"


def test_nanp_recipient_without_area_match_falls_back_to_whole_pool_without_nanp() -> None:
    picked = {pick({"mkt": (UK, DE)}, f"+1312555{i:04d}") for i in range(100, 200)}
    assert picked == {UK, DE}


@pytest.mark.parametrize("sender", ["MyBrand", "Mkt", "+12125550100", "12345"])
def test_a_sender_that_names_no_pool_is_left_alone(sender: str) -> None:
    assert pick(MIXED, "+12125551234", sender=sender) is None


@pytest.mark.parametrize(("vendor", "config"), [
    pytest.param("twilio", {"messaging-service-sid": "MG" + "0" * 32}, id="twilio-service"),
    pytest.param("bird", {}, id="bird-channel"),
])
def test_pool_name_refused_where_the_vendor_picks_its_own_sender(
        vendor: str, config: dict[str, str]) -> None:
    with pytest.raises(BadRequest) as caught:
        pick(MIXED, "+12125551234", vendor=vendor, **config)
    assert (caught.value.status, caught.value.code) == (400, "invalid_sender")
    assert "mkt" in caught.value.message


@pytest.mark.parametrize("vendor", ["twilio", "sinch", "infobip", "vonage"])
def test_vendors_that_send_from_the_given_sender_take_the_pick(vendor: str) -> None:
    assert pick(MIXED, "+12125551234", vendor=vendor) == NY


# --- stickiness, spread and movement ---------------------------------------------------------


def test_same_recipient_keeps_its_number_across_calls_and_resolvers() -> None:
    first = Pools(MIXED)
    second = Pools({"mkt": tuple(reversed(MIXED["mkt"]))})  # built apart, numbers reordered
    for to in uk_recipients(50) + [f"+1312555{i:04d}" for i in range(100, 150)]:
        chosen = pick(first, to)
        assert all(pick(first, to) == chosen for _ in range(5))
        assert pick(second, to) == chosen


def test_picks_are_the_same_in_another_process_with_another_hash_seed() -> None:
    pools = {"mkt": NANP}
    recipients = [f"+1312555{i:04d}" for i in range(100, 160)]
    script = (
        "import json, sys, phonenumbers\n"
        "from connector.senders import Pools\n"
        "pools, recipients = json.loads(sys.argv[1])\n"
        "resolver = Pools({k: tuple(v) for k, v in pools.items()})\n"
        "print(json.dumps([resolver.pick('mkt', phonenumbers.parse(r), 'twilio', {})"
        " for r in recipients]))\n"
    )
    elsewhere = subprocess.run(
        [sys.executable, "-c", script, json.dumps([pools, recipients])],
        env={**os.environ, "PYTHONHASHSEED": "12345"}, capture_output=True, check=True,
    )
    assert json.loads(elsewhere.stdout) == [pick(pools, r) for r in recipients]


def test_the_pool_name_takes_part_in_the_pick() -> None:
    resolver = Pools({"a": NANP, "b": NANP})
    recipients = [f"+1312555{i:04d}" for i in range(100, 300)]
    differ = sum(pick(resolver, r, sender="a") != pick(resolver, r, sender="b")
                 for r in recipients)
    assert differ > len(recipients) // 2  # two pools of the same numbers spread independently


def test_recipients_spread_evenly_over_the_pool() -> None:
    numbers = (UK, "+447400123457", "+447400123458")
    counts = collections.Counter(pick({"mkt": numbers}, to) for to in uk_recipients(3000))
    assert set(counts) == set(numbers)
    assert all(850 <= n <= 1150 for n in counts.values()), counts  # expected 1000 each


def test_adding_a_number_moves_only_its_share_and_only_to_it() -> None:
    numbers = tuple(f"+4474001234{i:02d}" for i in range(4))
    added = "+447400123499"
    before, after = Pools({"mkt": numbers}), Pools({"mkt": (*numbers, added)})
    recipients = uk_recipients(3000)
    moved = [to for to in recipients if pick(before, to) != pick(after, to)]
    assert all(pick(after, to) == added for to in moved)
    assert 0.15 <= len(moved) / len(recipients) <= 0.25  # expected 1/5


def test_removing_a_number_moves_only_its_recipients() -> None:
    numbers = tuple(f"+4474001234{i:02d}" for i in range(5))
    removed = numbers[2]
    before, after = Pools({"mkt": numbers}), Pools({"mkt": numbers[:2] + numbers[3:]})
    for to in uk_recipients(1000):
        if pick(before, to) != removed:
            assert pick(after, to) == pick(before, to)
        else:
            assert pick(after, to) != removed


def test_a_one_number_pool_serves_every_recipient() -> None:
    pools = parse_pools("alerts=+14155550100")
    for to in ("+12125551234", "+447911234567", "+33612345678"):
        assert pick(pools, to, sender="alerts") == SF1

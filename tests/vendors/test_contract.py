"""One contract, every registered vendor: what each adapter must do, whatever its wire format."""

from __future__ import annotations

import importlib
import logging
from urllib.parse import unquote_plus

import httpx
import pytest
import structlog

from connector.errors import (
    InvalidSignature,
    VendorError,
    VendorRejected,
    VendorThrottled,
    VendorUnavailable,
)
from connector.model import Outgoing, Status
from connector.vendors import VENDORS
from connector.vendors.base import Callback, Vendor
from tests.answers import reply
from tests.vendors.cases import Case, Failure

MESSAGE = Outgoing(message_id="c0ffee", sender="MyBrand", to_e164="+447911123456",
                   text="Contract test", callback_url="https://connector.example/cb?m=tok")


def case_for(name: str) -> Case:
    module = importlib.import_module(f"tests.vendors.cases.{name}")
    case: Case = module.CASE
    return case


@pytest.fixture(params=sorted(VENDORS))
def vendor(request: pytest.FixtureRequest) -> tuple[Vendor, Case]:
    return VENDORS[request.param], case_for(request.param)


def test_every_vendor_has_a_case() -> None:
    for name in VENDORS:
        assert case_for(name).settings


def test_send_targets_the_vendor_host_with_auth_and_converted_number(
        vendor: tuple[Vendor, Case]) -> None:
    adapter, case = vendor
    request = adapter.build_send(MESSAGE, case.settings)
    assert request.method == "POST"
    host = httpx.URL(request.url).host
    assert any(host == h or (h.startswith("*.") and host.endswith(h[1:]))
               for h in adapter.hosts), host
    raw = request.content.decode() + str(request.url)
    # form bodies are percent-encoded, JSON bodies are not: look in both readings
    sent = raw + "\n" + unquote_plus(raw)
    assert "authorization" in request.headers or any(s in sent for s in case.secrets)
    assert case.number in sent
    # the connector's reference travels with the message: its id or its signed callback URL
    assert MESSAGE.message_id in sent or MESSAGE.callback_url in sent


def test_success_yields_the_vendor_id(vendor: tuple[Vendor, Case]) -> None:
    adapter, case = vendor
    assert adapter.parse_send(case.accepted).vendor_message_id == case.vendor_id


def test_429_is_throttled_and_keeps_retry_after(vendor: tuple[Vendor, Case]) -> None:
    adapter, _ = vendor
    with pytest.raises(VendorThrottled) as caught:
        adapter.parse_send(reply(429, headers={"Retry-After": "9"}, json={}))
    assert caught.value.retry_after == 9.0
    assert caught.value.status == 429


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_5xx_is_retryable(vendor: tuple[Vendor, Case], status: int) -> None:
    adapter, _ = vendor
    with pytest.raises(VendorUnavailable) as caught:
        adapter.parse_send(reply(status, text="<html>oops</html>"))
    assert caught.value.retryable


def test_other_4xx_is_permanent_with_the_vendor_code(vendor: tuple[Vendor, Case]) -> None:
    adapter, case = vendor
    answer, code = case.rejected
    with pytest.raises(VendorRejected) as caught:
        adapter.parse_send(answer)
    assert not caught.value.retryable
    assert caught.value.vendor_code == code


def test_every_status_map_key_round_trips(vendor: tuple[Vendor, Case]) -> None:
    adapter, case = vendor
    status_map: dict[str, Status] = importlib.import_module(
        type(adapter).__module__).STATUS_MAP
    for vendor_status, expected in status_map.items():
        callback = case.callback(vendor_status)
        adapter.verify(callback, case.settings)
        updates = adapter.parse_status(callback)
        assert [u.status for u in updates] == [expected], vendor_status


def test_only_failures_can_say_the_recipient_opted_out(vendor: tuple[Vendor, Case]) -> None:
    adapter, case = vendor
    status_map: dict[str, Status] = importlib.import_module(
        type(adapter).__module__).STATUS_MAP
    for vendor_status in status_map:
        assert not any(u.opted_out for u in adapter.parse_status(case.callback(vendor_status)))


FAILURES = [pytest.param(name, failure, id=f"{name}-{failure.label}")
            for name in sorted(VENDORS) for failure in case_for(name).failures]
# Vendors whose documentation names a code for "the recipient opted out" (vendors.md).
OPT_OUT_VENDORS = {"bird", "infobip", "twilio", "vonage"}


@pytest.mark.parametrize(("name", "failure"), FAILURES)
def test_failure_callbacks_say_whether_the_recipient_opted_out(name: str,
                                                               failure: Failure) -> None:
    adapter, case = VENDORS[name], case_for(name)
    callback = failure.callback()
    adapter.verify(callback, case.settings)
    (update,) = adapter.parse_status(callback)
    assert update.status.terminal and update.status is not Status.DELIVERED
    assert update.opted_out is failure.opted_out
    assert update.error_code  # the vendor's own code stays for the report


def test_every_vendor_has_a_plain_failure_and_opt_out_cases_where_documented() -> None:
    for name in VENDORS:
        kinds = {failure.opted_out for failure in case_for(name).failures}
        assert False in kinds, name
        assert (True in kinds) is (name in OPT_OUT_VENDORS), name


def test_unknown_status_is_ignored(vendor: tuple[Vendor, Case]) -> None:
    adapter, case = vendor
    assert adapter.parse_status(case.callback("no-such-status-xyz")) == []


def _tampered(callback: Callback, signs_url: bool) -> list[Callback]:
    flipped = callback.body.replace(b"e", b"E", 1) if callback.body else callback.body
    params = [(k, v + "x") for k, v in callback.params]
    tampered = [Callback(url=callback.url, method=callback.method, headers=callback.headers,
                         body=flipped, params=params)]
    if signs_url:
        tampered.append(Callback(url=callback.url + "&extra=1", method=callback.method,
                                 headers=callback.headers, body=callback.body,
                                 params=callback.params))
    return tampered


def test_tampered_callbacks_raise(vendor: tuple[Vendor, Case]) -> None:
    adapter, case = vendor
    signed = case.callback(next(iter(importlib.import_module(
        type(adapter).__module__).STATUS_MAP)))
    adapter.verify(signed, case.settings)
    for tampered in _tampered(signed, case.signs_url):
        if case.signed:
            with pytest.raises(InvalidSignature):
                adapter.verify(tampered, case.settings)
        else:  # nothing to check here: the signed URL token was checked before the adapter
            adapter.verify(tampered, case.settings)


def test_secrets_never_leak(vendor: tuple[Vendor, Case], caplog: pytest.LogCaptureFixture,
                            capsys: pytest.CaptureFixture[str]) -> None:
    adapter, case = vendor
    caplog.set_level(logging.DEBUG)
    request = adapter.build_send(MESSAGE, case.settings)
    shown = [repr(request), repr(adapter)]
    answer, _ = case.rejected
    for failing in (answer, reply(401, json={}), reply(500, text="x")):
        with pytest.raises(VendorError) as caught:
            adapter.parse_send(failing)
        shown += [str(caught.value), repr(caught.value), caught.value.body().decode()]
    structlog.get_logger().info("contract", request=repr(request))
    adapter.parse_status(case.callback("no-such-status-xyz"))  # logs a warning
    captured = capsys.readouterr()
    shown += [caplog.text, captured.out, captured.err]
    for secret in case.secrets:
        assert not [text for text in shown if secret in text], secret

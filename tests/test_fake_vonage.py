"""Self-tests for the fake Vonage SMS API over real HTTP on 127.0.0.1."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qsl

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tests.fakes.server import ServerThread
from tests.fakes.vonage import DlrMethod, FakeVonage, vonage_signature

KEY, SECRET = "abcd1234", "fake-vonage-secret-1"
SIG_KEY, SIG_SECRET = "sign5678", "fake-vonage-sig-secret"
BASIC = (KEY, SECRET)
P12 = {"param1": "value1", "param2": "value2", "timestamp": "1234567890"}


@pytest.fixture
def vonage() -> Iterator[FakeVonage]:
    fake = FakeVonage({KEY: SECRET, SIG_KEY: SIG_SECRET},
                      signing={SIG_KEY: (SIG_SECRET, "sha256")}).start()
    yield fake
    fake.stop()


@pytest.fixture
def hook() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """A receipt endpoint recording method, query, form and JSON of each call."""
    seen: list[dict[str, Any]] = []

    async def status(request: Request) -> Response:
        body = await request.body()
        is_json = request.headers.get("content-type", "").startswith("application/json")
        seen.append({"method": request.method, "query": dict(request.query_params),
                     "form": {} if is_json else dict(parse_qsl(body.decode())),
                     "json": json.loads(body) if is_json else None})
        return Response(status_code=204)

    app = Starlette(routes=[Route("/dlr", status, methods=["GET", "POST"])])
    with ServerThread(app) as server:
        yield f"{server.url}/dlr?m=tok", seen


def send(vonage: FakeVonage, auth: tuple[str, str] | None = BASIC,
         params: dict[str, str] | None = None, **more: str) -> Any:
    form = {"from": "MyBrand", "to": "447911123456", "text": "Hello", **(params or {}), **more}
    answer = httpx.post(vonage.base_url + "/sms/json", data=form, auth=auth)
    assert answer.status_code == 200
    return answer.json()


@pytest.mark.parametrize(("method", "expected"), [
    ("sha256", "280c4320703dbc98bfa22db676655ed2acfbfe8792b062ff7622e67f1183c287"),
    ("md5", "724c2bf6ca423c36e20631b11d1c5753"),
    ("md5hash", "d72f75ac8cda9bbce891c4fa62bee6cd"),
])
def test_signature_vectors(method: str, expected: str) -> None:  # vendors.md 8.6
    assert vonage_signature(P12, "signature_secret", method) == expected.upper()


def test_escaped_values_vector() -> None:
    params = {"param1": "value&1", "param2": "value=2", "timestamp": "1234567890"}
    assert vonage_signature(params, "signature_secret", "md5") == "2BBF0ABAFB2C55E5AF6231513896A2AC"


@pytest.mark.parametrize("auth", ["basic", "params"])
def test_send_accepts_both_documented_credentials(vonage: FakeVonage, auth: str) -> None:
    answer = (send(vonage, params={"client-ref": "ref-1"}) if auth == "basic" else
              send(vonage, None, api_key=KEY, api_secret=SECRET))
    (part,) = answer["messages"]
    assert answer["message-count"] == "1" and part["status"] == "0"
    assert vonage.messages[0]["id"] == part["message-id"]


@pytest.mark.parametrize(("auth", "params", "code"), [
    pytest.param((KEY, "wrong"), {}, "4", id="bad-secret"),
    pytest.param(None, {}, "2", id="no-credentials"),
    pytest.param(None, {"api_key": KEY, "api_secret": SECRET, "sig": "x"}, "32",
                 id="sig-and-secret"),
    pytest.param(BASIC, {"to": "+447911123456"}, "3", id="to-with-plus"),
    pytest.param(BASIC, {"from": "+447700900000"}, "3", id="from-with-plus"),
    pytest.param(BASIC, {"text": ""}, "2", id="no-text"),
    pytest.param(BASIC, {"client-ref": "x" * 41}, "3", id="client-ref-over-40"),
    pytest.param(BASIC, {"callback": "ftp://x/y"}, "23", id="bad-callback"),
    pytest.param(BASIC, {"callback": "https://c.example/" + "x" * 83}, "23",
                 id="callback-over-100"),
])
def test_send_refusals_are_200_with_a_status(vonage: FakeVonage, auth: tuple[str, str] | None,
                                             params: dict[str, str], code: str) -> None:
    (part,) = send(vonage, auth, params)["messages"]
    assert part["status"] == code and part["error-text"]
    assert vonage.messages == []


@pytest.mark.parametrize(("text", "kind", "parts"), [
    pytest.param("a" * 160, "text", 1, id="gsm-160"),
    pytest.param("a" * 161, "text", 2, id="gsm-161"),
    pytest.param("ж" * 70, "unicode", 1, id="ucs2-70"),
    pytest.param("ж" * 71, "unicode", 2, id="ucs2-71"),
])
def test_long_text_answers_one_id_per_part(vonage: FakeVonage, text: str, kind: str,
                                           parts: int) -> None:
    answer = send(vonage, text=text, type=kind)
    ids = [m["message-id"] for m in answer["messages"]]
    assert answer["message-count"] == str(parts) and len(set(ids)) == parts
    assert vonage.message(ids[-1])["part_ids"] == ids
    assert vonage.violations == []


def test_non_gsm_text_as_type_text_is_a_violation(vonage: FakeVonage) -> None:
    send(vonage, text="Zdravo čestitamo")
    assert vonage.violations


def test_json_body_is_a_violation(vonage: FakeVonage) -> None:
    answer = httpx.post(vonage.base_url + "/sms/json", json={"to": "1"}, auth=BASIC)
    assert answer.json()["messages"][0]["status"] == "2"
    assert vonage.violations


def test_canned_answers_are_used_in_order_and_unused_ones_reported(vonage: FakeVonage) -> None:
    vonage.queue_refusal(1, "Throughput Rate Exceeded - please wait [ 250 ] and retry")
    vonage.queue(503, b"<html>down</html>")
    vonage.queue(200)
    assert send(vonage)["messages"][0]["status"] == "1"
    assert httpx.post(vonage.base_url + "/sms/json", auth=BASIC, data={
        "from": "A", "to": "447911123456", "text": "x"}).status_code == 503
    assert len(vonage.unused_canned()) == 1
    assert send(vonage)["messages"][0]["status"] == "0"
    assert vonage.unused_canned() == [] and vonage.send_calls == 3


@pytest.mark.parametrize(("auth", "query", "status"), [
    pytest.param(BASIC, {}, 200, id="basic"),
    pytest.param(None, {"api_key": KEY, "api_secret": SECRET}, 200, id="query"),
    pytest.param((KEY, "nope"), {}, 401, id="wrong"),
])
def test_balance(vonage: FakeVonage, auth: tuple[str, str] | None, query: dict[str, str],
                 status: int) -> None:
    answer = httpx.get(vonage.base_url + "/account/get-balance", params=query, auth=auth)
    assert answer.status_code == status
    assert ("value" in answer.json()) is (status == 200)


def test_refuses_other_hosts(vonage: FakeVonage) -> None:
    answer = httpx.get(vonage.base_url + "/account/get-balance", auth=BASIC,
                       headers={"Host": "rest.nexmo.com"})
    assert answer.status_code == 421


@pytest.mark.parametrize("method", ["POST", "GET", "JSON"])
def test_receipts_reach_the_callback_in_each_account_method(
        vonage: FakeVonage, hook: tuple[str, list[dict[str, Any]]], method: DlrMethod) -> None:
    url, seen = hook
    part = send(vonage, params={"client-ref": "ref-1"}, callback=url)["messages"][0]["message-id"]
    assert vonage.send_status(part, "delivered", method=method).status_code == 204
    (got,) = seen
    fields = {"POST": got["form"], "JSON": got["json"],
              "GET": {k: v for k, v in got["query"].items() if k != "m"}}[method]
    assert got["query"]["m"] == "tok"
    assert fields == {**fields, "messageId": part, "status": "delivered", "err-code": "0",
                      "msisdn": "447911123456", "to": "MyBrand", "client-ref": "ref-1",
                      "api-key": KEY}
    assert "sig" not in fields
    assert vonage.message(part)["parts"][part] == "delivered"


def test_signed_receipts_carry_timestamp_nonce_and_sig(
        vonage: FakeVonage, hook: tuple[str, list[dict[str, Any]]]) -> None:
    url, seen = hook
    answer = send(vonage, (SIG_KEY, SIG_SECRET), callback=url, text="b" * 200)
    first, second = (m["message-id"] for m in answer["messages"])
    assert [r.status_code for r in vonage.send_statuses(first, "delivered", timestamp=1.0e9)] == [
        204, 204]
    vonage.send_status(second, "failed", 2, signature_override="F" * 64)
    (one, two, forged) = (s["form"] for s in seen)
    assert [one["messageId"], two["messageId"]] == [first, second]
    for fields in (one, two):
        signed = {k: v for k, v in fields.items() if k != "sig"}
        assert fields["timestamp"] == "1000000000" and fields["nonce"]
        assert fields["sig"] == vonage_signature(signed, SIG_SECRET, "sha256")
    assert (forged["sig"], forged["err-code"], forged["status"]) == ("F" * 64, "2", "failed")

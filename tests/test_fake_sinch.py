"""Self-tests for the loopback Sinch fake: it must behave as Sinch documents, or tests lie."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tests.fakes.server import ServerThread
from tests.fakes.sinch import FakeSinch, sinch_signature

PLAN = "plan0123456789abcdef0123456789ab"
TOKEN = "fake-sinch-token-1"
SECRET = "fake-webhook-secret"


class Hook:
    """A callback endpoint that records what the fake posts to it."""

    def __init__(self) -> None:
        self.seen: list[tuple[dict[str, str], bytes, str]] = []
        self.lock = threading.Lock()
        self.server = ServerThread(Starlette(routes=[Route("/hook", self._hook,
                                                           methods=["POST"])]))

    async def _hook(self, request: Request) -> Response:
        with self.lock:
            self.seen.append((dict(request.headers), await request.body(), str(request.url)))
        return Response(status_code=204)


@pytest.fixture
def fake() -> Iterator[FakeSinch]:
    server = FakeSinch({PLAN: TOKEN}, secrets={PLAN: SECRET}).start()
    yield server
    server.stop()


@pytest.fixture
def hook() -> Iterator[Hook]:
    hook = Hook()
    hook.server.start()
    yield hook
    hook.server.stop()


def send(fake: FakeSinch, body: dict[str, Any], token: str = TOKEN,
         plan: str = PLAN) -> httpx.Response:
    return httpx.post(f"{fake.base_url}/xms/v1/{plan}/batches", json=body,
                      headers={"Authorization": f"Bearer {token}"})


def batch(callback: str | None = "http://127.0.0.1:9/hook", **changes: Any) -> dict[str, Any]:
    body = {"from": "MyBrand", "to": ["+447911123456"], "body": "Hi",
            "delivery_report": "per_recipient", "callback_url": callback,
            "client_reference": "ref-1"}
    return {k: v for k, v in {**body, **changes}.items() if v is not None}


def test_signature_matches_the_official_vector() -> None:
    body = (b'{"at":"2025-01-13T09:22:40.914Z","batch_id":"01JHFFHQ0P99JPPNQPJDV7JTBP",'
            b'"client_reference":"a client reference","code":0,'
            b'"operator_status_at":"2025-01-13T09:22:00Z","recipient":"33662162466",'
            b'"status":"Delivered","type":"recipient_delivery_report_sms"}')
    assert sinch_signature("SMSWebhooksSecret", body, "01JHFFHWYY7HSS4FWTMDTQEK8V",
                           "1736760161") == "ZoHei66PPN/kZjw7hFVfGhJOnml3iGNCMWoyQVcE5o0="


def test_send_creates_a_batch_with_numbers_normalised(fake: FakeSinch) -> None:
    answer = send(fake, batch())
    assert answer.status_code == 201
    created = answer.json()
    assert len(created["id"]) == 26
    assert created["to"] == ["447911123456"]
    assert (created["from"], created["client_reference"]) == ("MyBrand", "ref-1")
    assert created["canceled"] is False
    (record,) = fake.batches
    assert record["request"]["to"] == ["+447911123456"]


@pytest.mark.parametrize(("token", "plan"), [
    pytest.param("wrong", PLAN, id="bad-token"), pytest.param(TOKEN, "other", id="bad-plan"),
])
def test_bad_credentials_are_401(fake: FakeSinch, token: str, plan: str) -> None:
    assert send(fake, batch(), token=token, plan=plan).status_code == 401
    assert fake.batches == []


@pytest.mark.parametrize(("body", "status", "code"), [
    pytest.param(batch(to=["4479"]), 400, "syntax_invalid_parameter_format", id="short-msisdn"),
    pytest.param(batch(to=[]), 400, "syntax_constraint_violation", id="no-recipient"),
    pytest.param(batch(**{"from": "Far Too Long Name"}), 400,
                 "syntax_invalid_parameter_format", id="long-alnum-sender"),
    pytest.param(batch(body="x" * 1601), 400, "syntax_constraint_violation", id="too-long"),
    pytest.param(batch(colour="blue"), 400, "syntax_invalid_json", id="unknown-field"),
    pytest.param(batch(delivery_report="sometimes"), 400, "syntax_invalid_parameter_format",
                 id="bad-report-kind"),
    pytest.param(batch(client_reference="r" * 129), 400, "syntax_constraint_violation",
                 id="long-reference"),
    pytest.param(batch(callback=None), 403, "missing_callback_url", id="no-callback-url"),
])
def test_documented_refusals(fake: FakeSinch, body: dict[str, Any], status: int,
                             code: str) -> None:
    answer = send(fake, body)
    assert (answer.status_code, answer.json()["code"]) == (status, code)
    assert fake.batches == []


def test_non_json_is_refused(fake: FakeSinch) -> None:
    url = f"{fake.base_url}/xms/v1/{PLAN}/batches"
    auth = {"Authorization": f"Bearer {TOKEN}"}
    assert httpx.post(url, data={"to": "x"}, headers=auth).status_code == 415
    broken = httpx.post(url, content=b"{", headers={**auth, "Content-Type": "application/json"})
    assert broken.json()["code"] == "syntax_invalid_json"


def test_canned_answers_are_used_in_order_and_reported_when_unused(fake: FakeSinch) -> None:
    fake.queue(429, headers={"Retry-After": "4"})
    fake.queue(201, None)
    fake.queue(503, b"<html>down</html>")
    throttled = send(fake, batch())
    assert (throttled.status_code, throttled.headers["retry-after"]) == (429, "4")
    assert send(fake, batch()).status_code == 201
    assert len(fake.batches) == 1
    assert [c.status for c in fake.unused_canned()] == [503]
    assert send(fake, batch()).text == "<html>down</html>"
    assert fake.unused_canned() == []


def test_list_filters_by_client_reference_and_pages(fake: FakeSinch) -> None:
    first = send(fake, batch(client_reference="a")).json()["id"]
    send(fake, batch(client_reference="b"))
    url = f"{fake.base_url}/xms/v1/{PLAN}/batches"
    auth = {"Authorization": f"Bearer {TOKEN}"}
    found = httpx.get(url, params={"client_reference": "a"}, headers=auth).json()
    assert (found["count"], [b["id"] for b in found["batches"]]) == (1, [first])
    none = httpx.get(url, params={"client_reference": "zzz"}, headers=auth).json()
    assert (none["count"], none["batches"]) == (0, [])
    page = httpx.get(url, params={"page_size": "1"}, headers=auth).json()
    assert (page["count"], page["page_size"]) == (2, 1)
    assert httpx.get(url, params={"page_size": "x"}, headers=auth).status_code == 400
    assert httpx.get(url, headers={"Authorization": "Bearer no"}).status_code == 401


def test_get_one_batch(fake: FakeSinch) -> None:
    created = send(fake, batch()).json()
    auth = {"Authorization": f"Bearer {TOKEN}"}
    url = f"{fake.base_url}/xms/v1/{PLAN}/batches/"
    assert httpx.get(url + created["id"], headers=auth).json() == created
    assert httpx.get(url + "01NOPE", headers=auth).status_code == 404


def test_other_hosts_are_misdirected(fake: FakeSinch) -> None:
    answer = httpx.post(f"{fake.base_url}/xms/v1/{PLAN}/batches", json=batch(),
                        headers={"Authorization": f"Bearer {TOKEN}",
                                 "Host": "us.sms.api.sinch.com"})
    assert answer.status_code == 421


def test_send_status_posts_a_signed_per_recipient_report(fake: FakeSinch, hook: Hook) -> None:
    created = send(fake, batch(callback=hook.server.url + "/hook?m=tok")).json()
    assert fake.send_status(created["id"], "Failed", 402).status_code == 204
    ((headers, body, url),) = hook.seen
    assert url.endswith("/hook?m=tok")
    report = json.loads(body)
    assert report["type"] == "recipient_delivery_report_sms"
    assert (report["batch_id"], report["status"], report["code"]) == (created["id"], "Failed",
                                                                      402)
    assert (report["recipient"], report["client_reference"]) == ("447911123456", "ref-1")
    assert headers["x-sinch-webhook-signature-algorithm"] == "HmacSHA256"
    assert headers["x-sinch-webhook-signature"] == sinch_signature(
        SECRET, body, headers["x-sinch-webhook-signature-nonce"],
        headers["x-sinch-webhook-signature-timestamp"])
    assert fake.batch(created["id"])["statuses"] == ["Failed"]


def test_plans_without_a_secret_send_unsigned_reports(hook: Hook) -> None:
    with FakeSinch({PLAN: TOKEN}) as fake:
        created = send(fake, batch(callback=hook.server.url + "/hook")).json()
        fake.send_status(created["id"], "Delivered")
    ((headers, body, _),) = hook.seen
    assert "x-sinch-webhook-signature" not in headers
    assert json.loads(body)["code"] == 0


def test_report_kinds_limit_what_can_be_sent(fake: FakeSinch) -> None:
    final = send(fake, batch(delivery_report="per_recipient_final")).json()["id"]
    summary = send(fake, batch(delivery_report="summary")).json()["id"]
    with pytest.raises(ValueError, match="final statuses"):
        fake.send_status(final, "Dispatched")
    with pytest.raises(ValueError, match="per-recipient"):
        fake.send_status(summary, "Delivered")

"""Self-tests for the loopback Bird fake over real HTTP on 127.0.0.1."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from connector.vendors.base import Callback
from connector.vendors.bird import Bird
from tests.fakes.bird import FakeBird, bird_signature
from tests.fakes.server import ServerThread

KEY, WS, CH, SIGNING = "fake-access-key", "ws-1", "ch-1", "fake-signing-key"
PATH = f"/workspaces/{WS}/channels/{CH}"
GOOD = {"receiver": {"contacts": [{"identifierKey": "phonenumber",
                                   "identifierValue": "+447911123456"}]},
        "body": {"type": "text", "text": {"text": "hello"}}, "reference": "ref-1"}


def test_signature_matches_vendors_md_vector() -> None:
    body = (b'{"service":"channels","event":"sms.outbound",'
            b'"payload":{"id":"m1","status":"delivered"}}')
    assert bird_signature("secureSigningKey", "1719823259", "https://domain.com/webhook/bird",
                          body) == "Mj1sk47DPujtXhWyT0aduUyqv5wWs8ICBCIvbWtDtro="


@pytest.fixture
def bird() -> Iterator[FakeBird]:
    fake = FakeBird(KEY, WS, CH, signing_key=SIGNING)
    with fake:
        yield fake
    assert fake.unused_canned() == []


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=5.0, trust_env=False,
                      headers={"Authorization": f"AccessKey {KEY}"}) as c:
        yield c


def send(client: httpx.Client, fake: FakeBird, body: Any, path: str = PATH) -> httpx.Response:
    return client.post(fake.base_url + path + "/messages", json=body)


def test_send_is_202_with_a_message_object(bird: FakeBird, client: httpx.Client) -> None:
    answer = send(client, bird, GOOD)
    assert answer.status_code == 202, answer.text
    created = answer.json()
    assert created["status"] == "accepted" and created["reference"] == "ref-1"
    assert created["sender"]["connector"]["identifierValue"] == "+31970102030"
    (record,) = bird.messages
    assert (record["id"], record["request"]) == (created["id"], GOOD)
    assert bird.violations == []


@pytest.mark.parametrize(("headers", "path", "status", "code"), [
    pytest.param({"Authorization": "AccessKey wrong"}, PATH, 401, "Unauthorized", id="bad-key"),
    pytest.param({"Authorization": f"Bearer {KEY}"}, PATH, 401, "Unauthorized",
                 id="bearer-scheme"),
    pytest.param({}, f"/workspaces/{WS}/channels/other", 404, "NotFound", id="other-channel"),
    pytest.param({}, f"/workspaces/other/channels/{CH}", 404, "NotFound", id="other-workspace"),
])
def test_auth_and_unknown_channel_are_refused(bird: FakeBird, client: httpx.Client,
                                              headers: dict[str, str], path: str, status: int,
                                              code: str) -> None:
    answer = client.post(bird.base_url + path + "/messages", json=GOOD, headers=headers)
    assert (answer.status_code, answer.json()["code"]) == (status, code)
    assert bird.messages == []


@pytest.mark.parametrize(("body", "field"), [
    pytest.param({**GOOD, "from": "MyBrand"}, "from", id="invented-from"),
    pytest.param({**GOOD, "receiver": {"contacts": []}}, "receiver.contacts", id="no-contact"),
    pytest.param({**GOOD, "receiver": {"contacts": [{"identifierValue": "447911123456"}]}},
                 "receiver.contacts[0].identifierValue", id="no-plus"),
    pytest.param({**GOOD, "body": {"type": "text", "text": {"text": ""}}}, "body.text.text",
                 id="empty-text"),
    pytest.param({**GOOD, "reference": 7}, "reference", id="numeric-reference"),
    pytest.param([GOOD], "", id="not-an-object"),
])
def test_invalid_bodies_are_422_invalid_payload(bird: FakeBird, client: httpx.Client,
                                                body: Any, field: str) -> None:
    answer = send(client, bird, body)
    assert answer.status_code == 422
    assert answer.json()["code"] == "InvalidPayload"
    assert field in answer.json()["details"]
    assert len(bird.violations) == 1 and bird.messages == []


def test_canned_throttle_then_real_send(bird: FakeBird, client: httpx.Client) -> None:
    bird.queue(429, headers={"Retry-After": "2"})
    throttled = send(client, bird, GOOD)
    assert throttled.status_code == 429 and throttled.headers["retry-after"] == "2"
    assert throttled.json()["code"] == "TooManyRequests"
    assert send(client, bird, GOOD).status_code == 202
    assert [r["canned"] for r in bird.requests] == [True, False]


def test_canned_delay_creates_before_answering(bird: FakeBird, client: httpx.Client) -> None:
    bird.queue(202, None, delay=2.0)
    with pytest.raises(httpx.ReadTimeout):
        client.post(bird.base_url + PATH + "/messages", json=GOOD, timeout=0.3)
    assert len(bird.messages) == 1  # the outcome is unknown to the client, not to Bird


def test_list_filters_by_reference(bird: FakeBird, client: httpx.Client) -> None:
    send(client, bird, GOOD)
    send(client, bird, {**GOOD, "reference": "ref-2"})
    found = client.get(bird.base_url + PATH + "/messages", params={"reference": "ref-2"})
    assert [m["reference"] for m in found.json()["results"]] == ["ref-2"]
    none = client.get(bird.base_url + PATH + "/messages", params={"reference": "nope"})
    assert none.json()["results"] == []
    assert bird.lookups[-1] == {"reference": "nope"}


def test_get_channel_and_message(bird: FakeBird, client: httpx.Client) -> None:
    assert client.get(bird.base_url + PATH).json()["status"] == "active"
    created = send(client, bird, GOOD).json()
    got = client.get(f"{bird.base_url}{PATH}/messages/{created['id']}")
    assert got.json()["id"] == created["id"]
    assert client.get(f"{bird.base_url}{PATH}/messages/nope").status_code == 404


def test_refuses_non_loopback_host(bird: FakeBird, client: httpx.Client) -> None:
    answer = client.get(bird.base_url + PATH, headers={"Host": "api.bird.com"})
    assert answer.status_code == 421


class Hook:
    """A webhook endpoint that records what it is sent."""

    def __init__(self) -> None:
        self.seen: list[tuple[dict[str, str], bytes]] = []
        self.lock = threading.Lock()

    async def handle(self, request: Request) -> Response:
        with self.lock:
            self.seen.append((dict(request.headers), await request.body()))
        return Response(status_code=204)


@pytest.fixture
def hook() -> Iterator[tuple[Hook, str]]:
    recorder = Hook()
    app = Starlette(routes=[Route("/callbacks/bird/status", recorder.handle, methods=["POST"])])
    with ServerThread(app) as server:
        yield recorder, server.url + "/callbacks/bird/status"


def test_send_status_posts_an_envelope_the_adapter_accepts(
        bird: FakeBird, client: httpx.Client, hook: tuple[Hook, str]) -> None:
    recorder, url = hook
    bird.webhook_url = url
    created = send(client, bird, GOOD).json()
    answer = bird.send_status(created["id"], "delivery_failed", reason="Expired",
                              failure_code=15010)
    assert answer.status_code == 204
    ((headers, body),) = recorder.seen
    event = json.loads(body)
    assert (event["service"], event["event"]) == ("channels", "sms.outbound")
    assert event["payload"]["reference"] == "ref-1"
    assert event["payload"]["failure"]["code"] == 15010
    assert abs(int(headers["messagebird-request-timestamp"]) - time.time()) < 5
    callback = Callback(url=url, headers=headers, body=body, params=[])
    Bird().verify(callback, {"signing-key": SIGNING})
    (update,) = Bird().parse_status(callback)
    assert (update.vendor_message_id, update.message_ref) == (created["id"], "ref-1")
    assert bird.message(created["id"])["status"] == "delivery_failed"


def test_send_status_needs_a_webhook_url(bird: FakeBird, client: httpx.Client) -> None:
    created = send(client, bird, GOOD).json()
    with pytest.raises(ValueError, match="webhook_url"):
        bird.send_status(created["id"], "delivered")

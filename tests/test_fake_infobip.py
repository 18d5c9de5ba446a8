"""Self-tests for the loopback Infobip fake: it must behave as Infobip documents, or the
adapter's end-to-end tests prove nothing."""

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

from tests.fakes.infobip import BALANCE_PATH, LOGS_PATH, SEND_PATH, FakeInfobip, infobip_time
from tests.fakes.server import ServerThread

KEY, SEND_ONLY = "fake-key-1", "fake-key-send-only"


@pytest.fixture
def infobip() -> Iterator[FakeInfobip]:
    with FakeInfobip([KEY], send_only=[SEND_ONLY]) as fake:
        yield fake
    assert fake.unused_canned() == []


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=5.0, trust_env=False) as c:
        yield c


def body(to: str = "447911123456", message_id: str | None = "m-1", text: str = "Hi",
         url: str | None = "http://127.0.0.1:9/dlr?m=t") -> dict[str, Any]:
    destination: dict[str, Any] = {"to": to}
    if message_id is not None:
        destination["messageId"] = message_id
    msg: dict[str, Any] = {"sender": "MyBrand", "destinations": [destination],
                           "content": {"text": text}}
    if url is not None:
        msg["webhooks"] = {"delivery": {"url": url, "intermediateReport": True},
                           "contentType": "application/json"}
    return {"messages": [msg]}


def send(client: httpx.Client, fake: FakeInfobip, payload: Any, key: str = KEY,
         scheme: str = "App") -> httpx.Response:
    return client.post(fake.base_url + SEND_PATH, json=payload,
                       headers={"Authorization": f"{scheme} {key}"})


def test_send_takes_our_message_id_and_answers_pending(infobip: FakeInfobip,
                                                       client: httpx.Client) -> None:
    r = send(client, infobip, body(text="a" * 161))
    assert r.status_code == 200, r.text
    (msg,) = r.json()["messages"]
    assert msg["messageId"] == "m-1"
    assert msg["status"]["groupName"] == "PENDING" and msg["status"]["id"] == 26
    assert msg["destination"] == "447911123456"
    assert msg["details"]["messageCount"] == 2
    stored = infobip.message("m-1")
    assert (stored["sender"], stored["callback_url"], stored["intermediate"]) == (
        "MyBrand", "http://127.0.0.1:9/dlr?m=t", True)


def test_send_without_message_id_gets_one(infobip: FakeInfobip, client: httpx.Client) -> None:
    (msg,) = send(client, infobip, body(message_id=None)).json()["messages"]
    assert len(msg["messageId"]) == 36


@pytest.mark.parametrize(("key", "scheme"), [("wrong", "App"), (KEY, "Basic"), (KEY, "Bearer")])
def test_wrong_credentials_are_401_api_error(infobip: FakeInfobip, client: httpx.Client,
                                              key: str, scheme: str) -> None:
    r = send(client, infobip, body(), key=key, scheme=scheme)
    assert r.status_code == 401
    assert r.json()["errorCode"] == "E401"
    assert infobip.messages == []


@pytest.mark.parametrize(("payload", "property_"), [
    pytest.param({"messages": []}, "messages", id="no-messages"),
    pytest.param({"messages": [{"destinations": [{"to": "1"}]}]}, "messages[0].content.text",
                 id="no-text"),
    pytest.param({"messages": [{"content": {"text": "x"}, "destinations": []}]},
                 "messages[0].destinations", id="no-destinations"),
    pytest.param({"messages": [{"from": "A", "destinations": [{"to": "447911123456"}],
                                "text": "x", "content": {"text": "x"}}]},
                 "messages[0]", id="v2-fields"),
    pytest.param({"messages": [{"content": {"text": "x"}, "destinations": [{"to": "1"}],
                                "webhooks": {"delivery": {"url": 5}}}]},
                 "messages[0].webhooks.delivery.url", id="bad-url"),
])
def test_schema_violations_are_400_and_recorded(infobip: FakeInfobip, client: httpx.Client,
                                                payload: Any, property_: str) -> None:
    r = send(client, infobip, payload)
    assert r.status_code == 400
    assert r.json()["errorCode"] == "E400"
    assert r.json()["violations"][0]["property"] == property_
    assert len(infobip.schema_violations) == 1


def test_form_body_is_refused(infobip: FakeInfobip, client: httpx.Client) -> None:
    r = client.post(infobip.base_url + SEND_PATH, data={"to": "1"},
                    headers={"Authorization": f"App {KEY}"})
    assert r.status_code == 400


@pytest.mark.parametrize(("payload", "name", "status_id"), [
    pytest.param(body(to="+447911123456"), "REJECTED_DESTINATION", 52, id="plus"),
    pytest.param(body(to="00447911123456"), "REJECTED_DESTINATION", 52, id="00"),
    pytest.param(body(to=""), "MISSING_TO", 51, id="empty"),
    pytest.param(body(text="x" * 4001), "REJECTED_MESSAGE_TOO_LONG", 25, id="too-long"),
])
def test_refusals_come_inside_a_200(infobip: FakeInfobip, client: httpx.Client,
                                    payload: Any, name: str, status_id: int) -> None:
    r = send(client, infobip, payload)
    assert r.status_code == 200
    status = r.json()["messages"][0]["status"]
    assert (status["groupName"], status["name"], status["id"]) == ("REJECTED", name, status_id)


def test_reused_message_id_is_a_duplicate(infobip: FakeInfobip, client: httpx.Client) -> None:
    send(client, infobip, body())
    status = send(client, infobip, body()).json()["messages"][0]["status"]
    assert (status["id"], status["name"]) == (23, "REJECTED_DUPLICATE_MESSAGE_ID")
    assert len(infobip.messages) == 1


def test_canned_answers(infobip: FakeInfobip, client: httpx.Client) -> None:
    infobip.queue(429, headers={"Retry-After": "3"})
    infobip.queue(200, reject=10)
    infobip.queue(502, b"<html>bad gateway</html>")
    r = send(client, infobip, body(message_id="a"))
    assert (r.status_code, r.json()["errorCode"], r.headers["retry-after"]) == (429, "E429", "3")
    r = send(client, infobip, body(message_id="b"))
    assert r.json()["messages"][0]["status"]["name"] == "REJECTED_DND"
    assert send(client, infobip, body(message_id="c")).text == "<html>bad gateway</html>"
    assert [m["status"] for m in infobip.messages] == ["REJECTED_DND"]
    assert infobip.send_calls == 3


def test_unused_canned_is_reported() -> None:
    fake = FakeInfobip([KEY])
    fake.queue(500)
    assert len(fake.unused_canned()) == 1


def test_delayed_real_send_still_takes_the_message(infobip: FakeInfobip) -> None:
    infobip.queue(200, delay=1.0)
    with httpx.Client(timeout=0.3, trust_env=False) as impatient, pytest.raises(
            httpx.ReadTimeout):
        send(impatient, infobip, body())
    assert infobip.message("m-1")["status"] == "PENDING_ACCEPTED"


def test_logs_find_by_message_id_and_need_the_scope(infobip: FakeInfobip,
                                                    client: httpx.Client) -> None:
    send(client, infobip, body(message_id="m-1"))
    send(client, infobip, body(message_id="m-2"))
    auth = {"Authorization": f"App {KEY}"}
    r = client.get(infobip.base_url + LOGS_PATH, params={"messageId": "m-2"}, headers=auth)
    (log,) = r.json()["results"]
    assert (log["messageId"], log["destination"], log["status"]["groupName"]) == (
        "m-2", "447911123456", "PENDING")
    assert client.get(infobip.base_url + LOGS_PATH, params={"messageId": "nope"},
                      headers=auth).json() == {"results": []}
    assert len(client.get(infobip.base_url + LOGS_PATH, headers=auth).json()["results"]) == 2
    denied = client.get(infobip.base_url + LOGS_PATH,
                        headers={"Authorization": f"App {SEND_ONLY}"})
    assert (denied.status_code, denied.json()["errorCode"]) == (403, "E403")
    assert client.get(infobip.base_url + LOGS_PATH).status_code == 401


def test_balance(infobip: FakeInfobip, client: httpx.Client) -> None:
    url = infobip.base_url + BALANCE_PATH
    ok = client.get(url, headers={"Authorization": f"App {KEY}"})
    assert ok.json() == {"balance": 47.79, "currency": "EUR"}
    assert client.get(url, headers={"Authorization": "App nope"}).status_code == 401
    assert client.get(url, headers={"Authorization": f"App {SEND_ONLY}"}).status_code == 403


class Hook:
    """A one-route server that records the delivery reports it is sent."""

    def __init__(self) -> None:
        self.seen: list[tuple[dict[str, str], Any]] = []
        self.lock = threading.Lock()

    async def receive(self, request: Request) -> Response:
        with self.lock:
            self.seen.append((dict(request.headers), json.loads(await request.body())))
        return Response(status_code=204)


@pytest.fixture
def hook() -> Iterator[tuple[Hook, str]]:
    recorder = Hook()
    app = Starlette(routes=[Route("/dlr", recorder.receive, methods=["POST"])])
    with ServerThread(app) as server:
        yield recorder, server.url + "/dlr?m=tok"


def test_send_status_posts_a_documented_report(infobip: FakeInfobip, client: httpx.Client,
                                               hook: tuple[Hook, str]) -> None:
    recorder, url = hook
    send(client, infobip, body(url=url, text="a" * 200))
    r = infobip.send_status("m-1", "UNDELIVERABLE_NOT_DELIVERED", "EC_ABSENT_SUBSCRIBER",
                            auth=("hook", "pass"))
    assert r.status_code == 204
    ((headers, report),) = recorder.seen
    assert headers["content-type"] == "application/json"
    assert headers["authorization"] == "Basic aG9vazpwYXNz"
    (result,) = report["results"]
    assert (result["messageId"], result["to"], result["sender"], result["messageCount"]) == (
        "m-1", "447911123456", "MyBrand", 2)
    assert result["status"] == {"groupId": 2, "groupName": "UNDELIVERABLE", "id": 9,
                                "name": "UNDELIVERABLE_NOT_DELIVERED",
                                "description": "Message sent not delivered"}
    assert (result["error"]["id"], result["error"]["permanent"]) == (27, False)
    assert infobip.message("m-1")["status"] == "UNDELIVERABLE_NOT_DELIVERED"


def test_intermediate_reports_only_when_asked(infobip: FakeInfobip, client: httpx.Client,
                                              hook: tuple[Hook, str]) -> None:
    _, url = hook
    payload = body(url=url)
    payload["messages"][0]["webhooks"]["delivery"]["intermediateReport"] = False
    send(client, infobip, payload)
    with pytest.raises(ValueError, match="intermediate"):
        infobip.send_status("m-1", "DELIVERED_TO_OPERATOR")
    assert infobip.send_status("m-1", "DELIVERED_TO_HANDSET").status_code == 204


def test_time_format() -> None:
    assert infobip_time(1573311605.25) == "2019-11-09T15:00:05.250+0000"


def test_refuses_other_hosts(infobip: FakeInfobip, client: httpx.Client) -> None:
    r = client.post(infobip.base_url + SEND_PATH, json=body(),
                    headers={"Authorization": f"App {KEY}", "Host": "x9k2p.api.infobip.com"})
    assert r.status_code == 421

"""Self-tests for the fakes' MMS endpoints: they refuse what the vendors' documents refuse."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import jwt
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tests.fakes.bird import FakeBird
from tests.fakes.infobip import FakeInfobip
from tests.fakes.server import ServerThread
from tests.fakes.sinch import FakeSinch
from tests.fakes.vonage import FakeVonage

JPG = "https://cdn.example/a.jpg"


@pytest.fixture
def hook() -> Iterator[tuple[str, list[tuple[dict[str, str], bytes]]]]:
    seen: list[tuple[dict[str, str], bytes]] = []
    lock = threading.Lock()

    async def record(request: Request) -> Response:
        body = await request.body()
        with lock:
            seen.append((dict(request.headers), body))
        return Response(status_code=204)

    server = ServerThread(Starlette(routes=[Route("/hook", record, methods=["POST"])])).start()
    yield server.url + "/hook", seen
    server.stop()


def test_infobip_mms_takes_the_documented_request_and_reports_as_mms(
        hook: tuple[str, list[tuple[dict[str, str], bytes]]]) -> None:
    url, seen = hook
    with FakeInfobip(["k"]) as fake:
        auth = {"Authorization": "App k"}
        good = {"messages": [{"destinations": [{"to": "12125550100", "messageId": "m1"}],
                              "from": "12125550199", "notifyUrl": url, "title": "Hi",
                              "messageSegments": [{"text": "t"}, {
                                  "contentId": "media", "contentUrl": JPG}]}]}
        answer = httpx.post(fake.base_url + "/mms/1/advanced", json=good, headers=auth)
        assert answer.status_code == 200
        assert answer.json()["messages"][0]["status"]["groupName"] == "PENDING"
        sms_shaped = {"messages": [{"destinations": [{"to": "12125550100"}], "sender": "x",
                                    "content": {"text": "t"}, "messageSegments": [
                                        {"contentId": "media 1", "contentUrl": JPG}]}]}
        bad = httpx.post(fake.base_url + "/mms/1/advanced", json=sms_shaped, headers=auth)
        assert bad.status_code == 400
        (violation,) = fake.schema_violations
        assert {p for p, _ in violation["errors"]} >= {
            "messages[0].sender", "messages[0].content", "messages[0].messageSegments[0].contentId"}
        fake.send_status("m1")
        logs = httpx.get(fake.base_url + "/mms/1/logs", params={"messageId": "m1"},
                         headers=auth).json()["results"]
        assert [r["messageId"] for r in logs] == ["m1"]
    (report,) = [httpx.Response(200, content=b).json()["results"][0] for _, b in seen]
    assert report["smsCount"] == 1 and report["messageId"] == "m1"
    assert "sender" not in report and "messageCount" not in report


def test_vonage_mms_checks_the_body_and_signs_message_status(
        hook: tuple[str, list[tuple[dict[str, str], bytes]]]) -> None:
    url, seen = hook
    secret = "vonage-fake-signature-secret-" + "x" * 8
    with FakeVonage({"key": "secret"}, signing={"key": (secret, "sha256")}) as fake:
        body: dict[str, Any] = {"channel": "mms", "message_type": "image", "to": "12125550100",
                                "from": "12125550199", "image": {"url": JPG},
                                "client_ref": "m1", "webhook_url": url}
        sent = httpx.post(fake.base_url + "/v1/messages", json=body, auth=("key", "secret"))
        assert sent.status_code == 202
        wrong = httpx.post(fake.base_url + "/v1/messages", json=body, auth=("key", "nope"))
        assert wrong.status_code == 401
        bad = httpx.post(fake.base_url + "/v1/messages", auth=("key", "secret"),
                         json={**body, "ttl": 60, "to": "+12125550100"})
        assert bad.status_code == 422 and len(fake.violations) == 2
        assert fake.send_mms_status(sent.json()["message_uuid"], "delivered").status_code == 204
    ((headers, raw),) = seen
    claims = jwt.decode(headers["authorization"].removeprefix("Bearer "), secret,
                        algorithms=["HS256"])
    assert claims["payload_hash"] == hashlib.sha256(raw).hexdigest()


def test_bird_media_needs_an_mms_channel_and_a_documented_body() -> None:
    message = {"receiver": {"contacts": [{"identifierKey": "phonenumber",
                                          "identifierValue": "+12125550100"}]},
               "body": {"type": "image", "image": {"images": [{"mediaUrl": JPG}],
                                                   "text": "t"}}}
    auth = {"Authorization": "AccessKey ak"}
    with FakeBird("ak", "ws", "ch") as plain:
        refused = httpx.post(plain.base_url + "/workspaces/ws/channels/ch/messages",
                             json=message, headers=auth)
        assert refused.status_code == 422 and plain.violations == []
        assert "capabilities" not in httpx.get(
            plain.base_url + "/workspaces/ws/channels/ch", headers=auth).json()
    with FakeBird("ak", "ws", "ch", mms=True) as capable:
        path = capable.base_url + "/workspaces/ws/channels/ch/messages"
        assert httpx.post(path, json=message, headers=auth).status_code == 202
        no_type = {**message, "body": {"type": "file", "file": {"files": [{"mediaUrl": JPG}]}}}
        assert httpx.post(path, json=no_type, headers=auth).status_code == 422
        assert len(capable.violations) == 1


def test_sinch_mt_media_needs_a_media_body() -> None:
    with FakeSinch({"plan": "tok"}) as fake:
        path, auth = fake.base_url + "/xms/v1/plan/batches", {"Authorization": "Bearer tok"}
        batch = {"type": "mt_media", "from": "12125550199", "to": ["12125550100"],
                 "body": {"url": JPG, "message": "t"}}
        assert httpx.post(path, json=batch, headers=auth).status_code == 201
        text_body = {**batch, "body": "just text"}
        assert httpx.post(path, json=text_body, headers=auth).status_code == 400
        assert fake.batches[0]["resource"]["type"] == "mt_media"

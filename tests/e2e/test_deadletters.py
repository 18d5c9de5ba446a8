"""Dead letters over loopback: a receiver's 4xx dead-letters a report, an operator lists it
and replays it (API and `connector replay`), and it arrives once with its event_id."""

from __future__ import annotations

import subprocess
import sys
import time
from typing import Any

import httpx
import pytest

from connector import cli
from tests.e2e.conftest import Connector, checked, headers, send_body
from tests.e2e.test_metrics import scrape, value
from tests.fakes.receiver import ReportReceiver
from tests.fakes.twilio import FakeTwilio

pytestmark = pytest.mark.e2e
ADMIN = "operator-key-123"
AUTH = {"Auth-Key": ADMIN}


@pytest.fixture
def operated(start_connector: Any) -> Connector:
    started: Connector = start_connector(CONNECTOR_ADMIN_KEY=ADMIN)
    return started


def listed(connector: Connector, **query: str) -> dict[str, Any]:
    answer = checked(httpx.get(connector.url + "/api/v1/dead-letters", params=query,
                               headers=AUTH))
    assert answer.status_code == 200, answer.text
    found: dict[str, Any] = answer.json()
    return found


def replay(connector: Connector, body: Any, auth: dict[str, str] = AUTH) -> httpx.Response:
    return checked(httpx.post(connector.url + "/api/v1/dead-letters/replay", json=body,
                              headers=auth))


def dead_letter(connector: Connector, twilio: FakeTwilio, receiver: ReportReceiver,
                request_id: str, answer: int = 404) -> dict[str, Any]:
    """Send one message, deliver it, and let the receiver refuse its report for good."""
    receiver.script([answer])
    before = len(receiver.posts)
    sent = httpx.post(connector.url + "/sms/send", json=send_body(receiver, request_id=request_id),
                      headers=headers(twilio))
    assert sent.status_code == 200, sent.text
    twilio.send_status(twilio.messages[-1]["sid"], "delivered")
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        entries = [d for d in listed(connector)["dead_letters"]
                   if d["message_id"] == sent.json()["message_id"]]
        if entries:
            assert [p.status for p in receiver.posts[before:]] == [answer]
            entry: dict[str, Any] = entries[0]
            return entry
        time.sleep(0.05)
    raise AssertionError(f"not dead-lettered in 20 s: {receiver.posts!r}")


def arrived(receiver: ReportReceiver, event_id: str) -> int:
    return sum(1 for e in receiver.events if e["event_id"] == event_id)


def marker(connector: Connector, twilio: FakeTwilio, receiver: ReportReceiver,
           request_id: str) -> None:
    """Send and deliver one more report and wait for it: anything queued before is done."""
    count = len(receiver.events)
    httpx.post(connector.url + "/sms/send", json=send_body(receiver, request_id=request_id),
               headers=headers(twilio))
    twilio.send_status(twilio.messages[-1]["sid"], "delivered")
    receiver.wait_for(count + 1, timeout=20)


def test_a_dead_letter_is_listed_replayed_and_arrives_once(
        operated: Connector, twilio: FakeTwilio, receiver: ReportReceiver) -> None:
    entry = dead_letter(operated, twilio, receiver, "req-dead")
    assert entry["url_host"] == "127.0.0.1"
    assert (entry["attempts"], entry["last_error"]) == (1, "HTTP 404")
    assert listed(operated, host="elsewhere.example")["dead_letters"] == []
    assert listed(operated, since="2999-01-01T00:00:00Z")["dead_letters"] == []
    # the receiver is fixed (its script is used up: it answers 200 now)
    assert replay(operated, {"ids": [entry["id"]]}).json() == {"replayed": 1}
    events = receiver.wait_for(1, timeout=20)
    assert [e["event_id"] for e in events] == [entry["event_id"]]
    assert listed(operated)["dead_letters"] == []
    assert replay(operated, {"ids": [entry["id"]]}).json() == {"replayed": 0}
    assert replay(operated, {"all": True}).json() == {"replayed": 0}
    marker(operated, twilio, receiver, "req-marker")
    assert arrived(receiver, entry["event_id"]) == 1
    view = checked(httpx.get(f"{operated.url}/api/v1/messages/req-dead", headers=AUTH)).json()
    (report,) = view["reports"]
    assert report["state"] == "delivered"
    assert [a["status_code"] for a in report["attempts"]] == [404, 200]
    assert value(scrape(operated), "connector_report_replays_total") == 1


def test_connector_replay_on_the_command_line(
        operated: Connector, twilio: FakeTwilio, receiver: ReportReceiver,
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    entry = dead_letter(operated, twilio, receiver, "req-cli")
    for name, setting in operated.env.items():
        if name.startswith("CONNECTOR_"):
            monkeypatch.setenv(name, setting)
    # Refusals in this process (a subprocess start costs seconds on these cores)...
    assert cli.main(["replay"]) == 2
    assert "--all" in capsys.readouterr().err
    assert cli.main(["replay", "--since", "yesterday"]) == 2
    assert "since" in capsys.readouterr().err
    # ...and the real command once.
    done = subprocess.run([sys.executable, "-m", "connector.cli", "replay", "--host",
                           "127.0.0.1", "--since", "2000-01-01T00:00:00Z"],
                          env=operated.env, capture_output=True, text=True, timeout=120)
    assert (done.returncode, done.stdout.strip()) == (0, "replayed 1 dead letters"), done
    assert [e["event_id"] for e in receiver.wait_for(1, timeout=20)] == [entry["event_id"]]
    assert cli.main(["replay", "--id", str(entry["id"])]) == 0
    assert capsys.readouterr().out.strip() == "replayed 0 dead letters"


BAD_BODIES: list[Any] = [
    {}, {"ids": []}, {"ids": [0]}, {"since": "yesterday"}, {"host": "a/b"}, {"host": "a\x00b"},
    {"since": "2026-01-02T00:00:00Z", "until": "2026-01-01T00:00:00Z"},
    {"since": "2026-01-01T00:00:00"}, {"unknown": 1}, {"ids": "1"},
]
BAD_QUERIES = [{"limit": "0"}, {"after": "-1"}, {"until": "nope"}, {"host": "a b"},
               {"host": "a\x01b"}]


def test_pages_by_cursor_and_bad_input_changes_nothing(
        operated: Connector, twilio: FakeTwilio, receiver: ReportReceiver) -> None:
    # one connector for both: starting one costs seconds on these cores
    first = dead_letter(operated, twilio, receiver, "req-a")
    second = dead_letter(operated, twilio, receiver, "req-b", answer=410)
    page = listed(operated, limit="1")
    assert [d["id"] for d in page["dead_letters"]] == [first["id"]]
    page = listed(operated, limit="1", after=str(page["next_after"]))
    assert [d["id"] for d in page["dead_letters"]] == [second["id"]]
    assert listed(operated, limit="1", after=str(page["next_after"])) == {
        "dead_letters": [], "limit": 1, "next_after": None}
    for body in BAD_BODIES:
        answer = replay(operated, body)
        assert answer.status_code == 400, body
        assert answer.json()["error"]["code"] == "invalid_field", body
    answer = checked(httpx.post(operated.url + "/api/v1/dead-letters/replay", content=b"{",
                                headers=AUTH))
    assert (answer.status_code, answer.json()["error"]["code"]) == (400, "malformed_json")
    for query in BAD_QUERIES:
        answer = checked(httpx.get(operated.url + "/api/v1/dead-letters", params=query,
                                   headers=AUTH))
        assert answer.status_code == 400, query
    assert checked(httpx.get(operated.url + "/api/v1/dead-letters")).status_code == 401
    assert replay(operated, {"all": True}, auth={"Auth-Key": "wrong"}).status_code == 401
    assert [d["id"] for d in listed(operated)["dead_letters"]] == [first["id"], second["id"]]

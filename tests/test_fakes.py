"""Self-tests for the loopback fakes (Twilio, report receiver) over real HTTP on 127.0.0.1."""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qsl, urlencode

import httpx
import jwt
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from tests.fakes.receiver import ReportReceiver
from tests.fakes.server import ServerThread
from tests.fakes.twilio import FakeTwilio, num_segments, twilio_signature
from tests.fakes.twilio_schema import validate_message

SID = "AC" + "0123456789abcdef" * 2
TOKEN = "auth-token-1"
MSG_PATH = f"/2010-04-01/Accounts/{SID}/Messages.json"
SECRET = "receiver-secret-at-least-32-bytes-long"

# --- §8.1 official vectors (twilio-python tests/unit/test_request_validator.py) ---

VECTOR_URL = "https://mycompany.com/myapp.php?foo=1&bar=2"
VECTOR_PARAMS = {
    "CallSid": "CA1234567890ABCDE",
    "Digits": "1234",
    "From": "+14158675309",
    "To": "+18005551212",
    "Caller": "+14158675309",
}
REPEATED = [
    ("Sid", "CA123"),
    ("SidAccount", "AC123"),
    ("Digits", "5678"),
    ("Digits", "1234"),
    ("Digits", "1234"),
]


def test_signature_basic_vector() -> None:
    assert twilio_signature("12345", VECTOR_URL, VECTOR_PARAMS) == "RSOYDt4T1cUTdK1PDd93/VVr8B8="


def test_signature_repeated_keys_sorted_and_deduped() -> None:
    assert twilio_signature("12345", VECTOR_URL, REPEATED) == "IK+Dwps556ElfBT0I3Rgjkr1wJU="
    as_mapping = {"Sid": "CA123", "SidAccount": "AC123", "Digits": ["5678", "1234", "1234"]}
    assert twilio_signature("12345", VECTOR_URL, as_mapping) == "IK+Dwps556ElfBT0I3Rgjkr1wJU="


@pytest.mark.parametrize(
    ("url", "expected"),
    [  # vendors.md: "same params" = the first vector's params
        ("https://mycompany.com:443/myapp.php?foo=1&bar=2", "kvajT1Ptam85bY51eRf/AJRuM3w="),
        ("http://mycompany.com:80/myapp.php?foo=1&bar=2", "0ZXoZLH/DfblKGATFgpif+LLRf4="),
        ("http://mycompany.com:1234/myapp.php?foo=1&bar=2", "Zmvh+3yNM1Phv2jhDCwEM3q5ebU="),
    ],
)
def test_signature_port_variants(url: str, expected: str) -> None:
    assert twilio_signature("12345", url, VECTOR_PARAMS) == expected


def test_signature_json_body_vector() -> None:
    body = '{"property": "value", "boolean": true}'
    digest = hashlib.sha256(body.encode()).hexdigest()
    assert digest == "0a1ff7634d9ab3b95db5c9a2dfe9416e41502b283a80c7cf19632632f96e6620"
    assert (
        twilio_signature("12345", f"{VECTOR_URL}&bodySHA256={digest}", {})
        == "a9nBmqA0ju/hNViExpshrM61xv4="
    )


def test_num_segments() -> None:
    assert num_segments("a" * 160) == 1
    assert num_segments("a" * 161) == 2
    assert num_segments("€" * 80) == 1  # extension chars take two septets
    assert num_segments("€" * 81) == 2
    assert num_segments("ж" * 70) == 1
    assert num_segments("ж" * 71) == 2


# --- fixtures ---


@pytest.fixture
def twilio() -> Iterator[FakeTwilio]:
    fake = FakeTwilio({SID: TOKEN})
    with fake:
        yield fake
    assert fake.unused_canned() == []


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=5.0, trust_env=False) as c:
        yield c


def create(
    client: httpx.Client, fake: FakeTwilio, data: Any, auth: tuple[str, str] = (SID, TOKEN)
) -> httpx.Response:
    # urlencode ourselves so lists of pairs (repeated keys) are sent as-is.
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    return client.post(
        fake.base_url + MSG_PATH, content=urlencode(data), headers=headers, auth=auth
    )


# --- ServerThread ---


def _hello(_: Request) -> Response:
    return PlainTextResponse("hi")


def test_server_thread_restart_on_same_port(client: httpx.Client) -> None:
    app = Starlette(routes=[Route("/", _hello)])
    with ServerThread(app) as server:
        port = server.port
        assert server.url == f"http://127.0.0.1:{port}"
        assert client.get(server.url + "/").text == "hi"
    with pytest.raises(httpx.ConnectError):
        client.get(f"http://127.0.0.1:{port}/")
    with ServerThread(app, port=port) as again:
        assert again.port == port
        assert client.get(again.url + "/").text == "hi"


# --- FakeTwilio ---


def test_create_returns_201_message_resource(twilio: FakeTwilio, client: httpx.Client) -> None:
    cb = "http://127.0.0.1:9/status?uuid=abc"
    r = create(
        client,
        twilio,
        {"To": "+447700900123", "From": "+15005550006", "Body": "hi", "StatusCallback": cb},
    )
    assert r.status_code == 201, r.text
    res = r.json()
    assert validate_message(res) == []
    assert res["sid"].startswith("SM") and len(res["sid"]) == 34
    assert (res["status"], res["num_segments"], res["error_code"]) == ("queued", "1", None)
    assert (res["to"], res["from"], res["body"]) == ("+447700900123", "+15005550006", "hi")
    assert res["date_created"].endswith("+0000")
    [msg] = twilio.messages
    assert msg["sid"] == res["sid"] and msg["account_sid"] == SID and msg["status_callback"] == cb
    assert msg["params"]["Body"] == "hi"
    assert twilio.create_calls == 1 and twilio.schema_violations == []


def test_create_with_messaging_service_is_accepted(
    twilio: FakeTwilio, client: httpx.Client
) -> None:
    mg = "MG" + "a" * 32
    r = create(
        client,
        twilio,
        {"To": "+14155552345", "MessagingServiceSid": mg, "Body": "hi", "ValidityPeriod": "60"},
    )
    assert r.status_code == 201, r.text
    assert r.json()["status"] == "accepted" and r.json()["messaging_service_sid"] == mg
    assert twilio.schema_violations == []


def test_account_fetch_checks_credentials(twilio: FakeTwilio, client: httpx.Client) -> None:
    url = f"{twilio.base_url}/2010-04-01/Accounts/{SID}.json"
    ok = client.get(url, auth=(SID, TOKEN))
    assert ok.status_code == 200 and ok.json()["sid"] == SID and ok.json()["status"] == "active"
    assert client.get(url, auth=(SID, "wrong")).status_code == 401


@pytest.mark.parametrize(
    "auth",
    [(SID, "wrong"), ("AC" + "f" * 32, TOKEN), None],
    ids=["bad-token", "unknown-sid", "missing"],
)
def test_bad_auth_is_401_20003(
    twilio: FakeTwilio, client: httpx.Client, auth: tuple[str, str] | None
) -> None:
    data = {"To": "+447700900123", "From": "+15005550006", "Body": "hi"}
    r = (
        client.post(twilio.base_url + MSG_PATH, data=data, auth=auth)
        if auth
        else client.post(twilio.base_url + MSG_PATH, data=data)
    )
    assert r.status_code == 401
    assert r.json() == {
        "code": 20003,
        "message": "Authenticate",
        "more_info": "https://www.twilio.com/docs/errors/20003",
        "status": 401,
    }
    assert twilio.messages == [] and twilio.create_calls == 0


def test_url_account_must_match_basic_user(client: httpx.Client) -> None:
    other = "AC" + "b" * 32
    with FakeTwilio({SID: TOKEN, other: "t2"}) as fake:
        r = client.post(
            f"{fake.base_url}/2010-04-01/Accounts/{other}/Messages.json", auth=(SID, TOKEN), data={}
        )
        assert r.status_code == 401 and r.json()["code"] == 20003


def test_to_without_plus_is_21211(twilio: FakeTwilio, client: httpx.Client) -> None:
    r = create(client, twilio, {"To": "00447700900123", "From": "+15005550006", "Body": "hi"})
    assert r.status_code == 400
    assert r.json()["code"] == 21211
    assert r.json()["message"] == "The 'To' number 00447700900123 is not a valid phone number."
    assert twilio.messages == [] and twilio.schema_violations == []


@pytest.mark.parametrize(
    ("data", "code"),
    [
        ({"To": "+447700900123", "Body": "hi"}, 21603),
        ({"To": "+447700900123", "From": "+15005550006"}, 21602),
        ({"To": "+447700900123", "From": "+15005550006", "Body": "x" * 1601}, 21617),
        ({"To": "+447700900123", "From": "not_a_sender!", "Body": "hi"}, 21212),
    ],
)
def test_semantic_errors(
    twilio: FakeTwilio, client: httpx.Client, data: dict[str, str], code: int
) -> None:
    r = create(client, twilio, data)
    assert (r.status_code, r.json()["code"]) == (400, code)
    assert twilio.schema_violations == []


@pytest.mark.parametrize(
    "data",
    [
        {
            "To": "+447700900123",
            "From": "+15005550006",
            "Body": "hi",
            "Reference": "x",
        },  # unknown param
        {
            "To": "+447700900123",
            "From": "+15005550006",
            "Body": "hi",
            "ValidityPeriod": "soon",
        },  # type
        {
            "To": "+447700900123",
            "From": "+15005550006",
            "Body": "hi",
            "SmartEncoded": "yes",
        },  # type
        {"To": "+447700900123", "From": "+15005550006", "Body": "hi", "RiskCheck": "off"},  # enum
        {"To": "+447700900123", "MessagingServiceSid": "MG123", "Body": "hi"},  # pattern
        {"From": "+15005550006", "Body": "hi"},  # required To
        [
            ("To", "+447700900123"),
            ("To", "+447700900124"),
            ("From", "+15005550006"),
            ("Body", "hi"),
        ],
    ],
    ids=["unknown", "integer", "boolean", "enum", "pattern", "required", "repeated"],
)
def test_schema_violations_are_recorded(
    twilio: FakeTwilio, client: httpx.Client, data: Any
) -> None:
    r = create(client, twilio, data)
    assert r.status_code == 400
    assert r.json()["status"] == 400
    [violation] = twilio.schema_violations
    assert violation["errors"]
    assert twilio.messages == []


def test_json_body_is_a_schema_violation(twilio: FakeTwilio, client: httpx.Client) -> None:
    r = client.post(twilio.base_url + MSG_PATH, json={"To": "+447700900123"}, auth=(SID, TOKEN))
    assert r.status_code == 400
    assert "Content-Type" in twilio.schema_violations[0]["errors"][0]


def test_canned_responses_are_fifo(twilio: FakeTwilio, client: httpx.Client) -> None:
    twilio.queue(
        429, {"code": 20429, "message": "Too Many Requests", "status": 429}, {"Retry-After": "1"}
    )
    twilio.queue(
        400, {"code": 21610, "message": "Attempt to send to unsubscribed recipient", "status": 400}
    )
    twilio.queue(500)
    data = {"To": "+447700900123", "From": "+15005550006", "Body": "hi"}
    first, second, third, fourth = (create(client, twilio, data) for _ in range(4))
    assert (first.status_code, first.json()["code"], first.headers["retry-after"]) == (
        429,
        20429,
        "1",
    )
    assert (second.status_code, second.json()["code"]) == (400, 21610)
    assert (third.status_code, third.json()["code"]) == (500, 20500)
    assert fourth.status_code == 201
    assert [r["status"] for r in twilio.requests] == [429, 400, 500, 201]
    assert len(twilio.messages) == 1 and twilio.create_calls == 4
    assert twilio.unused_canned() == []


def test_canned_delay_provokes_client_timeout_but_message_exists(twilio: FakeTwilio) -> None:
    twilio.queue(201, delay=2.0)
    data = {"To": "+447700900123", "From": "+15005550006", "Body": "hi"}
    with httpx.Client(timeout=0.3, trust_env=False) as slow, pytest.raises(httpx.ReadTimeout):
        slow.post(twilio.base_url + MSG_PATH, data=data, auth=(SID, TOKEN))
    assert len(twilio.messages) == 1  # created before the (lost) response: "unknown outcome"


def test_unknown_host_is_421(twilio: FakeTwilio, client: httpx.Client) -> None:
    r = client.post(
        twilio.base_url + MSG_PATH, data={}, auth=(SID, TOKEN), headers={"Host": "api.twilio.com"}
    )
    assert r.status_code == 421
    assert twilio.create_calls == 0


def test_send_status_posts_signed_form(twilio: FakeTwilio, client: httpx.Client) -> None:
    seen: list[tuple[str, dict[str, str], str]] = []

    async def status(request: Request) -> Response:
        form = dict(parse_qsl((await request.body()).decode(), keep_blank_values=True))
        seen.append((str(request.url), form, request.headers["x-twilio-signature"]))
        return Response(status_code=204)

    with ServerThread(Starlette(routes=[Route("/status", status, methods=["POST"])])) as hook:
        cb = f"{hook.url}/status?uuid=m-1"
        mg = "MG" + "c" * 32
        data = {
            "To": "+447700900123",
            "MessagingServiceSid": mg,
            "Body": "hi",
            "StatusCallback": cb,
        }
        sid = create(client, twilio, data).json()["sid"]
        assert twilio.send_status(sid, "sent").status_code == 204
        assert twilio.send_status(sid, "undelivered", error_code=30003).status_code == 204
        twilio.send_status(sid, "delivered", signature_override="forged")
    (url1, p1, s1), (_, p2, s2), (_, _, s3) = seen
    assert url1 == cb and s1 == twilio_signature(TOKEN, cb, p1)
    assert p1 == {
        "MessageSid": sid,
        "SmsSid": sid,
        "MessageStatus": "sent",
        "SmsStatus": "sent",
        "AccountSid": SID,
        "From": twilio.service_from,
        "To": "+447700900123",
        "ApiVersion": "2010-04-01",
        "MessagingServiceSid": mg,
    }
    assert (
        p2["ErrorCode"] == "30003"
        and len(p2["RawDlrDoneDate"]) == 10
        and s2 == twilio_signature(TOKEN, cb, p2)
    )
    assert s3 == "forged"
    assert twilio.message(sid)["status"] == "delivered"


# --- ReportReceiver ---


@pytest.fixture
def receiver() -> Iterator[ReportReceiver]:
    rec = ReportReceiver(SECRET, prefix="Bearer ")
    with rec:
        yield rec


def bearer(secret: str = SECRET, iat: float | None = None) -> dict[str, str]:
    claims = {"iat": int(time.time() if iat is None else iat)}
    return {"Authorization": "Bearer " + jwt.encode(claims, secret, algorithm="HS256")}


def test_receiver_accepts_valid_jwt(receiver: ReportReceiver, client: httpx.Client) -> None:
    r = client.post(receiver.url("tenant"), json=[{"id": 1}, {"id": 2}], headers=bearer())
    assert r.status_code == 200
    assert receiver.wait_for(2, timeout=1.0) == [{"id": 1}, {"id": 2}]
    assert receiver.auth_failures == [] and receiver.post_names == ["tenant"]
    _, status, events, headers = receiver.posts[0]
    assert (
        status == 200
        and events == [{"id": 1}, {"id": 2}]
        and headers["authorization"].startswith("Bearer ")
    )


BAD_AUTH: dict[str, Any] = {
    "missing": dict,
    "bad-secret": lambda: bearer(secret="wrong-secret-but-also-32-bytes-long"),
    "too-old": lambda: bearer(iat=time.time() - 16 * 60),
    "future": lambda: bearer(iat=time.time() + 120),
    "no-prefix": lambda: {
        "Authorization": jwt.encode({"iat": int(time.time())}, SECRET, algorithm="HS256")
    },
    "no-iat": lambda: {
        "Authorization": "Bearer " + jwt.encode({"sub": "x"}, SECRET, algorithm="HS256")
    },
}


@pytest.mark.parametrize("case", list(BAD_AUTH))
def test_receiver_rejects_bad_jwt(
    receiver: ReportReceiver, client: httpx.Client, case: str
) -> None:
    # Headers are built at run time so iat bounds don't drift with collection time.
    r = client.post(receiver.url(), json=[{"id": 1}], headers=BAD_AUTH[case]())
    assert r.status_code == 401
    assert len(receiver.auth_failures) == 1 and receiver.events == []
    assert receiver.posts[0].status == 401


def test_receiver_script_order(receiver: ReportReceiver, client: httpx.Client) -> None:
    receiver.script([503, (429, {"Retry-After": "1"}), 200])
    statuses = []
    for i in range(4):
        r = client.post(receiver.url(), json=[{"n": i}], headers=bearer())
        statuses.append((r.status_code, r.headers.get("retry-after")))
    assert statuses == [(503, None), (429, "1"), (200, None), (200, None)]
    assert receiver.events == [{"n": 2}, {"n": 3}]
    assert [p.status for p in receiver.posts] == [503, 429, 200, 200]
    assert receiver.unused_script() == []


def test_receiver_rejects_non_array(receiver: ReportReceiver, client: httpx.Client) -> None:
    assert client.post(receiver.url(), json={"id": 1}, headers=bearer()).status_code == 400
    assert receiver.events == []


def test_wait_for_blocks_until_events_then_times_out(receiver: ReportReceiver) -> None:
    def later() -> None:
        time.sleep(0.2)
        with httpx.Client(trust_env=False) as c:
            c.post(receiver.url(), json=[{"late": True}], headers=bearer())

    worker = threading.Thread(target=later)
    worker.start()
    try:
        assert receiver.wait_for(1, timeout=5.0) == [{"late": True}]
    finally:
        worker.join()
    with pytest.raises(AssertionError, match="wanted 2 events"):
        receiver.wait_for(2, timeout=0.2)


def test_fake_restarts_on_same_port_keeping_state(client: httpx.Client) -> None:
    fake = FakeTwilio({SID: TOKEN})
    with fake:
        port = fake.port
        sid = create(client, fake, {"To": "+447700900123", "From": "Shop", "Body": "hi"}).json()[
            "sid"
        ]
    with fake:  # "vendor outage over": same port, same recorded messages
        assert fake.port == port
        r = client.get(
            f"{fake.base_url}/2010-04-01/Accounts/{SID}/Messages/{sid}.json", auth=(SID, TOKEN)
        )
        assert r.status_code == 200 and r.json()["sid"] == sid and r.json()["from"] == "Shop"
        missing = f"{fake.base_url}/2010-04-01/Accounts/{SID}/Messages/SM{'0' * 32}.json"
        assert client.get(missing, auth=(SID, TOKEN)).json()["code"] == 20404


def test_stop_does_not_wait_for_long_canned_delay(client: httpx.Client) -> None:
    fake = FakeTwilio({SID: TOKEN}).start()
    fake.queue(500, delay=30.0)
    worker = threading.Thread(target=create, args=(client, fake, {"To": "+447700900123"}))
    worker.start()
    time.sleep(0.3)
    started = time.monotonic()
    fake.stop()
    worker.join()
    assert time.monotonic() - started < 3.0
    assert fake.unused_canned() == []

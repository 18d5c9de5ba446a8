"""One account's rate limit held across two `connector serve` processes sharing buckets."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import TOKEN, CheckedTwilio, Connector, checked, send_body
from tests.fakes.receiver import ReportReceiver
from tests.fakes.twilio import FakeTwilio
from tests.store.conftest import fresh_database
from tests.test_throttle import REDIS_URL

pytestmark = pytest.mark.e2e

RATE = 5
BURST = 24
SID, WARM_SID = ("AC" + uuid.uuid4().hex for _ in range(2))


@pytest.fixture
async def database() -> AsyncIterator[str]:
    async with fresh_database() as dsn:
        yield dsn


@pytest.fixture
def twilio() -> Iterator[FakeTwilio]:
    """Twilio knowing two accounts of this test's own, so runs sharing one Redis never meet:
    one to warm each connector up, one for the burst."""
    fake = CheckedTwilio({WARM_SID: TOKEN, SID: TOKEN}).start()
    yield fake
    fake.stop()
    assert fake.contract_violations == [], "against the vendor's own document"
    assert fake.schema_violations == []


def post(client: httpx.Client, connector: Connector, sid: str, twilio: FakeTwilio,
         body: dict[str, Any]) -> httpx.Response:
    headers = {"Chan-Account-Sid": sid, "Chan-Auth-Token": TOKEN,
               "Chan-Base-Url": twilio.base_url}
    return client.post(connector.url + "/sms/send", json=body, headers=headers)


@pytest.mark.parametrize("store", ["postgresql", "sqlite+redis"])
def test_two_replicas_admit_one_accounts_rate_between_them(
        store: str, request: pytest.FixtureRequest, start_connector: Any, tmp_path: Path,
        twilio: FakeTwilio, receiver: ReportReceiver) -> None:
    # Replicas share the secret key, as the README requires: buckets are named by a hash keyed
    # from it (connector/tenants.py).
    env = {"CONNECTOR_RATE_LIMITS": f"twilio={RATE}", "CONNECTOR_SECRET_KEY": "k" * 40}
    if store == "postgresql":
        env["CONNECTOR_DATABASE_URL"] = request.getfixturevalue("database")
        dirs = [tmp_path / "one", tmp_path / "two"]
    else:  # two processes on one SQLite file: without Redis each would count alone
        env["CONNECTOR_REDIS_URL"] = REDIS_URL
        dirs = [tmp_path / "data"] * 2
    connectors = [start_connector(data_dir=d, **env) for d in dirs]
    with httpx.Client(timeout=30, limits=httpx.Limits(max_connections=BURST)) as client:
        for i, connector in enumerate(connectors):  # the first send of a process is slow
            warm = post(client, connector, WARM_SID, twilio,
                        send_body(receiver, request_id=f"warm-{i}"))
            assert warm.status_code == 200
        before = twilio.create_calls

        def one(i: int) -> httpx.Response:
            return post(client, connectors[i % 2], SID, twilio,
                        send_body(receiver, request_id=f"burst-{i}"))

        began = time.monotonic()
        with ThreadPoolExecutor(BURST) as pool:
            answers = list(pool.map(one, range(BURST)))
        seconds = time.monotonic() - began

    statuses = [checked(a).status_code for a in answers]
    ok = statuses.count(200)
    assert set(statuses) <= {200, 429}, statuses
    # One full bucket, and what refilled while the burst lasted: per process it would be twice.
    assert RATE <= ok <= RATE + RATE * seconds, (ok, seconds)
    assert twilio.create_calls - before == ok
    for answer in answers:
        if answer.status_code == 429:
            assert answer.json()["error"]["code"] == "throttled"
            assert int(answer.headers["retry-after"]) >= 1


def test_unreachable_shared_buckets_answer_a_retryable_503_and_send_nothing(
        start_connector: Any, twilio: FakeTwilio, receiver: ReportReceiver) -> None:
    connector = start_connector(CONNECTOR_RATE_LIMITS="twilio=5",
                                CONNECTOR_REDIS_URL="redis://127.0.0.1:1/0")  # nobody listens
    with httpx.Client(timeout=30) as client:
        first = checked(post(client, connector, SID, twilio,
                             send_body(receiver, request_id="no-redis")))
        again = checked(post(client, connector, SID, twilio,
                             send_body(receiver, request_id="no-redis")))
    for answer in (first, again):  # the request_id was let go: each try is a fresh attempt
        assert answer.status_code == 503
        assert answer.json()["error"]["code"] == "store_unavailable"
        assert answer.json()["error"]["retryable"] is True
        assert answer.headers["retry-after"] == "1"
    assert twilio.create_calls == 0
    assert connector.logs().count("throttle_unavailable") == 2  # the repeat was not a replay

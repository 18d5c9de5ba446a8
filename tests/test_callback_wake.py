"""A status callback wakes the report dispatcher only when it queued a report (issue #11):
`sent`, which the platform does not hear of by default, must not send it looking."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from connector.app import Front, create_app
from connector.model import Status
from connector.services import Services
from connector.settings import Settings
from connector.store.base import LeasedReport, NewMessage, SendOutcome, StoredResponse
from connector.vendors.twilio import signature
from tests.test_guards import FORM, play

SID = "AC" + "0123456789abcdef" * 2
TOKEN = "twilio-auth-token-" + "s3cr3t" * 3


@pytest.fixture
async def services(tmp_path: Path) -> AsyncIterator[Services]:
    settings = Settings.from_env({
        "CONNECTOR_DATA_DIR": str(tmp_path), "CONNECTOR_ALLOW_PRIVATE_NETWORKS": "true",
        "CONNECTOR_ALLOW_HTTP": "true", "CONNECTOR_VENDOR_HOSTS": "127.0.0.1",
        "CONNECTOR_PUBLIC_URL": "http://connector.test"})
    built = Services.build(settings)
    await built.start()
    yield built
    await built.close()


async def _stored(services: Services) -> tuple[str, str]:
    """A Twilio message the vendor accepted: (its signed token, its vendor id)."""
    message_id, now = "0" * 31 + "1", time.time()
    await services.store.claim(NewMessage(
        id=message_id, request_id="r1", vendor="twilio",
        sealed_settings=services.box.seal({"account-sid": SID, "auth-token": TOKEN}),
        sender="+15005550006", to_number="+447911123456", custom_data="cd",
        callback_url="http://receiver.test/reports", metadata=None, segments=1,
        encoding="gsm", claimed_until=now + 60), now)
    await services.store.record_outcome(message_id, SendOutcome(
        response=StoredResponse(status=200, body=b"{}"), status=Status.ACCEPTED,
        vendor_message_id="SM1"), now, services.report)
    return services.tokens.sign(message_id), "SM1"


async def _callback(app: Front, token: str, sid: str, status: str) -> int:
    params = [("MessageSid", sid), ("MessageStatus", status)]
    url = f"http://connector.test/callbacks/twilio/status?m={token}"
    body = f"MessageSid={sid}&MessageStatus={status}".encode()
    answer = await play(app, "POST", "/callbacks/twilio/status", body, f"m={token}",
                        {**FORM, "x-twilio-signature": signature(TOKEN, url, params)})
    return answer.status


async def test_only_a_reported_status_wakes_the_dispatcher(
        services: Services, monkeypatch: pytest.MonkeyPatch) -> None:
    wakes: list[None] = []
    monkeypatch.setattr(services.dispatcher, "wake", lambda: wakes.append(None))
    app = create_app(services.settings, services)
    token, sid = await _stored(services)
    assert await _callback(app, token, sid, "sent") == 204
    row = await services.store.message("0" * 31 + "1")
    assert row is not None and row.status is Status.SENT and not wakes
    assert await _callback(app, token, sid, "delivered") == 204
    assert len(wakes) == 1
    assert len(await services.store.reports_for(row.id)) == 1  # delivered, queued
    assert await _callback(app, token, sid, "delivered") == 204  # a repeat: nothing new
    assert len(wakes) == 1


async def test_a_running_dispatcher_is_handed_the_report_instead_of_woken(
        services: Services, monkeypatch: pytest.MonkeyPatch) -> None:
    wakes: list[None] = []
    taken: list[LeasedReport] = []
    dispatcher = services.dispatcher
    monkeypatch.setattr(dispatcher, "_running", True)  # as inside run(); nothing POSTs here
    monkeypatch.setattr(dispatcher, "wake", lambda: wakes.append(None))
    monkeypatch.setattr(dispatcher, "take", taken.extend)
    app = create_app(services.settings, services)
    token, sid = await _stored(services)
    assert await _callback(app, token, sid, "sent") == 204
    assert not taken and not wakes
    assert await _callback(app, token, sid, "delivered") == 204
    (report,) = taken
    assert not wakes
    (view,) = await services.store.reports_for("0" * 31 + "1")
    assert (view.event_id, view.state) == (report.event_id, "pending")
    assert json.loads(report.payload)["status"] == "delivered"
    # Leased to this dispatcher: no other takes it while it runs.
    assert await services.store.lease_reports("other", time.time(), 10, 30) == []
    assert await _callback(app, token, sid, "delivered") == 204  # a repeat: nothing new
    assert len(taken) == 1 and not wakes

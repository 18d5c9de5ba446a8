"""Inbound forwards share the report dispatcher: their own JWT secret, and their URL is the
operator's configuration, so the private-address guard for callback_url does not apply."""

from __future__ import annotations

from pathlib import Path

from connector.http import HttpClient
from connector.netcheck import AddressGuard
from connector.outbox import Dispatcher
from connector.settings import Settings
from connector.store.base import InboundRecord, OutboxEntry
from connector.store.sqlite import SqliteStore
from tests.e2e.conftest import REPORT_SECRET
from tests.fakes.receiver import ReportReceiver

INBOUND_SECRET = "inbound-secret-" + "n" * 32


async def test_inbound_forwards_use_their_secret_and_skip_the_address_guard(
        tmp_path: Path) -> None:
    inbox = ReportReceiver(INBOUND_SECRET).start()
    reports = ReportReceiver(REPORT_SECRET).start()
    store = SqliteStore(tmp_path / "c.db")
    http = HttpClient()
    try:
        settings = Settings.from_env({
            "CONNECTOR_DATA_DIR": str(tmp_path), "CONNECTOR_REPORT_SECRET": REPORT_SECRET,
            "CONNECTOR_INBOUND_URL": inbox.url("inbound"),
            "CONNECTOR_INBOUND_SECRET": INBOUND_SECRET, "CONNECTOR_ALLOW_HTTP": "true",
        }).with_generated_secrets()
        await store.open()
        await http.start()
        # Loopback is refused for platform-given URLs here (no ALLOW_PRIVATE_NETWORKS).
        dispatcher = Dispatcher(store, http, settings,
                                AddressGuard(allow_private=False, allow_http=True))
        for event_id, url in (("in-1", settings.inbound_url), ("report-1", reports.url("r"))):
            await store.record_inbound(InboundRecord(
                vendor="twilio", vendor_message_id=event_id, account="twilio:AC1",
                number="+447911123456",
                entry=OutboxEntry(event_id=event_id, url=url,
                                  payload=b'{"event_id":"%s"}' % event_id.encode())), 1.0)
        assert await dispatcher.deliver_due()
        assert [e["event_id"] for e in inbox.wait_for(1)] == ["in-1"]
        assert inbox.auth_failures == []
        assert reports.posts == []  # a loopback callback_url stays refused
    finally:
        await http.close()
        await store.close()
        inbox.stop()
        reports.stop()

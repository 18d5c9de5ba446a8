"""Opt-outs reported in status callbacks: which ones list the recipient, on which account."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from connector.model import Applied, Status, StatusUpdate
from connector.optouts import suppress_reported
from connector.services import Services
from connector.settings import Settings
from connector.store.base import MessageRow, NewMessage
from connector.tokens import SecretBox

SID = "AC" + "5" * 32
ACCOUNT = f"twilio:{SID}"
NUMBER = "+447911123456"
OPT_OUT = StatusUpdate(status=Status.UNDELIVERED, error_code="21610",
                       error_message="Attempt to send to unsubscribed recipient", opted_out=True)


async def services_for(tmp_path: Path, **env: str) -> Services:
    settings = Settings.from_env({"CONNECTOR_DATA_DIR": str(tmp_path), **env})
    services = Services.build(settings)
    await services.store.open()
    return services


@pytest.fixture
async def services(tmp_path: Path) -> AsyncIterator[Services]:
    built = await services_for(tmp_path)
    yield built
    await built.store.close()


async def stored(services: Services, sealed: bytes | None = None) -> MessageRow:
    message = NewMessage(
        id=uuid.uuid4().hex, request_id=None, vendor="twilio",
        sealed_settings=sealed or services.box.seal({"account-sid": SID, "auth-token": "t0k"}),
        sender="MyBrand", to_number=NUMBER, custom_data="cd", callback_url="https://r",
        metadata=None, segments=1, encoding="gsm7", claimed_until=0.0)
    await services.store.claim(message, 0.0)
    row = await services.store.message(message.id)
    assert row is not None
    return row


@pytest.mark.parametrize(("applied", "listed"), [
    pytest.param(Applied.APPLIED, True, id="applied"),
    # A vendor's retry: listing again is harmless and covers a first write that failed.
    pytest.param(Applied.DUPLICATE, True, id="duplicate"),
    pytest.param(Applied.REGRESSED, False, id="regressed"),
])
async def test_an_opt_out_lists_the_recipient_on_the_message_account(
        services: Services, applied: Applied, listed: bool) -> None:
    row = await stored(services)
    assert await suppress_reported(services, row, OPT_OUT, applied) is listed
    # Listed under the tenant the message's own sends are checked under, and no other.
    tenant = services.sender.tenants.of("twilio", {"account-sid": SID, "auth-token": "t0k"})
    assert tenant.account == ACCOUNT
    assert await services.store.is_suppressed(ACCOUNT, NUMBER, tenant.credential) is listed
    forged = services.sender.tenants.of("twilio", {"account-sid": SID, "auth-token": "bad"})
    assert not await services.store.is_suppressed(ACCOUNT, NUMBER, forged.credential)
    if listed:
        (entry,) = await services.store.suppressions(ACCOUNT, 10, 0)
        assert entry.credential == tenant.credential
        assert entry.vendor_code == "21610"
        assert entry.reason == ("twilio: Attempt to send to unsubscribed recipient "
                                "(status callback)")


async def test_a_plain_failure_lists_nobody(services: Services) -> None:
    row = await stored(services)
    plain = StatusUpdate(status=Status.UNDELIVERED, error_code="30003")
    assert await suppress_reported(services, row, plain, Applied.APPLIED) is False
    assert await services.store.suppressions(None, 10, 0) == []


async def test_with_the_setting_off_nobody_is_listed(tmp_path: Path) -> None:
    services = await services_for(tmp_path, CONNECTOR_SUPPRESS_OPT_OUTS="false")
    try:
        row = await stored(services)
        assert await suppress_reported(services, row, OPT_OUT, Applied.APPLIED) is False
        assert await services.store.suppressions(None, 10, 0) == []
    finally:
        await services.store.close()


async def test_settings_sealed_under_another_key_list_nobody(services: Services) -> None:
    foreign = SecretBox("another-secret-key-" + "k" * 32).seal({"account-sid": SID})
    row = await stored(services, sealed=foreign)
    assert await suppress_reported(services, row, OPT_OUT, Applied.APPLIED) is False
    assert await services.store.suppressions(None, 10, 0) == []


async def test_a_store_failure_is_logged_not_raised(
        services: Services, capsys: pytest.CaptureFixture[str]) -> None:
    row = await stored(services)
    await services.store.close()
    assert await suppress_reported(services, row, OPT_OUT, Applied.APPLIED) is False
    assert "suppress_failed" in "".join(capsys.readouterr())

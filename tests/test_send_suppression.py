"""The send's suppression check when the store answers it with the claim (PostgreSQL does)."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest

from connector.sending import Sender
from connector.settings import Settings
from connector.store.base import Claim, NewMessage
from connector.store.sqlite import SqliteStore
from connector.tokens import CallbackTokens
from connector.vendors.infobip import Infobip

INFOBIP = Infobip()
CONFIG = {"base-url": "https://acme.api.infobip.com", "api-key": "infobip-key-" + "k" * 20}
SECRET = "s" * 40
PENDING = {"groupId": 1, "groupName": "PENDING", "id": 26, "name": "PENDING_ACCEPTED"}


class Vendor:
    """Stands in for the HttpClient: accepts every message, counting the calls."""

    def __init__(self) -> None:
        self.calls = 0

    async def send(self, request: httpx.Request, timeout: float, *,  # noqa: ASYNC109
                   what: str) -> httpx.Response:
        self.calls += 1
        return httpx.Response(200, json={"messages": [{"messageId": "v1", "status": PENDING}]})


class Answering:
    """The store, with a claim that answers the suppression check as told; asking
    is_suppressed again would be a second round trip, so it fails the test."""

    def __init__(self, store: SqliteStore, listed: bool) -> None:
        self._store = store
        self.listed = listed
        self.asked: tuple[str, str] | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    async def claim(self, message: NewMessage, now: float,
                    suppression: tuple[str, str] | None = None) -> Claim:
        self.asked = suppression
        claim = await self._store.claim(message, now)
        return msgspec.structs.replace(claim, suppressed=self.listed)

    async def is_suppressed(self, account: str, number: str, credential: str = "") -> bool:
        raise AssertionError("the claim already answered")


@pytest.fixture
async def sqlite(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    store = SqliteStore(tmp_path / "connector.db")
    await store.open()
    yield store
    await store.close()


@pytest.mark.parametrize("listed", [True, False], ids=["suppressed", "not-suppressed"])
async def test_the_claims_answer_decides_without_a_second_look_up(
        sqlite: SqliteStore, tmp_path: Path, listed: bool) -> None:
    settings = Settings.from_env({"CONNECTOR_DATA_DIR": str(tmp_path),
                                  "CONNECTOR_SECRET_KEY": SECRET})
    store, vendor = Answering(sqlite, listed), Vendor()
    sender = Sender(store, vendor, settings, CallbackTokens(SECRET))  # type: ignore[arg-type]
    tenant = sender.tenants.of(INFOBIP.name, CONFIG)
    message = NewMessage(
        id=uuid.uuid4().hex, request_id="r1", vendor=INFOBIP.name, sealed_settings=b"s",
        sender="MyBrand", to_number="+447911123456", custom_data="cd",
        callback_url="https://platform.example/hook", metadata=None, segments=1,
        encoding="gsm7", claimed_until=2e9, claim_key=tenant.claim_key("r1"))
    answer = await sender.send(INFOBIP, CONFIG, message, "Hello")
    assert store.asked == (tenant.account, tenant.credential)  # this tenant's list
    if listed:
        assert answer.status == 422 and json.loads(answer.body)["error"]["code"] == "opted_out"
        assert vendor.calls == 0
    else:
        assert answer.status == 200 and vendor.calls == 1

"""Inbound configuration and the per-account settings memory behind inbound verification."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from connector.errors import StoreUnavailable
from connector.inbound.accounts import Accounts
from connector.settings import Settings, SettingsError
from connector.store.sqlite import SqliteStore

TWILIO = {"account-sid": "AC1", "auth-token": "token-1"}


class CountingStore(SqliteStore):
    """A real SQLite store that counts settings writes and can be made to fail them."""

    writes = 0
    failing = False

    async def remember_account(self, vendor: str, account: str, sealed: bytes,
                               now: float) -> None:
        if self.failing:
            raise StoreUnavailable("store unavailable: test")
        self.writes += 1
        await super().remember_account(vendor, account, sealed, now)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[CountingStore]:
    opened = CountingStore(tmp_path / "c.db")
    await opened.open()
    yield opened
    await opened.close()


async def test_unchanged_settings_cost_no_write(store: CountingStore) -> None:
    accounts = Accounts(store)
    await accounts.remember("twilio", TWILIO, b"sealed-1")
    await accounts.remember("twilio", TWILIO, b"sealed-1")
    assert store.writes == 1
    await accounts.remember("twilio", {**TWILIO, "auth-token": "token-2"}, b"sealed-2")
    assert store.writes == 2
    assert await store.account_settings("twilio", "AC1") == b"sealed-2"


async def test_a_failed_write_is_tried_again_by_the_next_send(store: CountingStore) -> None:
    accounts = Accounts(store)
    store.failing = True
    await accounts.remember("twilio", TWILIO, b"sealed-1")  # logged, never raised
    store.failing = False
    await accounts.remember("twilio", TWILIO, b"sealed-1")
    assert await store.account_settings("twilio", "AC1") == b"sealed-1"


async def test_settings_without_an_account_id_are_not_kept(store: CountingStore) -> None:
    await Accounts(store).remember("sinch", {"api-token": "t"}, b"sealed")
    assert store.writes == 0


def test_a_short_inbound_secret_stops_start_up_without_showing_it() -> None:
    with pytest.raises(SettingsError, match="CONNECTOR_INBOUND_SECRET") as raised:
        Settings.from_env({"CONNECTOR_INBOUND_SECRET": "short-secret"})
    assert "short-secret" not in str(raised.value)


def test_inbound_settings_are_read() -> None:
    secret = "i" * 32
    settings = Settings.from_env({"CONNECTOR_INBOUND_URL": "https://platform.example/in?p=1",
                                  "CONNECTOR_INBOUND_SECRET": secret,
                                  "CONNECTOR_OPT_OUT_KEYWORDS": "Arret, HALT",
                                  "CONNECTOR_OPT_IN_KEYWORDS": "join"})
    assert settings.inbound_url == "https://platform.example/in?p=1"
    assert settings.inbound_secret == secret and secret not in repr(settings)
    assert (settings.opt_out_keywords, settings.opt_in_keywords) == (("arret", "halt"), ("join",))


@pytest.mark.parametrize(("name", "value"), [
    pytest.param("CONNECTOR_INBOUND_URL", "ftp://platform.example/in", id="url-scheme"),
    pytest.param("CONNECTOR_OPT_OUT_KEYWORDS", "please stop", id="keyword-two-words"),
])
def test_bad_inbound_settings_name_their_variable(name: str, value: str) -> None:
    with pytest.raises(SettingsError, match=name):
        Settings.from_env({name: value})

"""The callbacks' cache of recently sent messages (connector/recent.py): bounded, never a way
around signature verification, and never needed: a callback landing on a process that did
not send the message reads what verifying needs."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
from prometheus_client import REGISTRY

from connector.app import create_app
from connector.model import Status
from connector.recent import RecentSends
from connector.services import Services
from connector.settings import Settings
from connector.store.base import SentVia
from connector.vendors.twilio import signature
from tests.test_guards import FORM, play
from tests.test_send_path import HEADERS, Running, Started, body, started  # noqa: F401

TOKEN = HEADERS["Chan-Auth-Token"]
SID = "SM" + "1" * 32  # what FakeTwilio answers


def test_the_cache_is_bounded_and_drops_the_oldest_first() -> None:
    recent = RecentSends(size=3)
    for n in range(5):
        recent.remember(f"m{n}", SentVia("twilio", b"sealed"))
    assert len(recent) == 3
    assert [recent.get(f"m{n}") is not None for n in range(5)] == [False, False, True, True,
                                                                    True]
    recent.forget("m3")
    assert recent.get("m3") is None and len(recent) == 2
    assert "sealed" not in repr(recent)


async def _sent(running: Running) -> tuple[str, str]:
    """Send one message; (its id, the status URL the vendor was given)."""
    answer = await running.client.post("/sms/send", headers=HEADERS, content=body())
    assert answer.status_code == 200
    form = dict(parse_qsl(running.vendor.requests[-1].content.decode()))
    return answer.json()["message_id"], form["StatusCallback"]


async def _callback(services: Services, url: str, status: str, *, token: str = TOKEN
                    ) -> int:
    params = [("MessageSid", SID), ("MessageStatus", status)]
    query = urlsplit(url).query
    app = create_app(services.settings, services)
    answer = await play(app, "POST", "/callbacks/twilio/status",
                        f"MessageSid={SID}&MessageStatus={status}".encode(), query,
                        {**FORM, "x-twilio-signature": signature(token, url, params)})
    return answer.status


def _no_reads(services: Services, monkeypatch: pytest.MonkeyPatch) -> None:
    async def refused(*args: Any) -> None:
        raise AssertionError("the callback read the store")

    for name in ("message", "sent_via", "find_by_vendor_id"):
        monkeypatch.setattr(services.store, name, refused)


async def test_a_message_sent_here_verifies_its_callbacks_without_a_read(
        started: Started, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    async with started() as running:
        message_id, url = await _sent(running)
        assert running.services.recent.get(message_id) is not None
        with monkeypatch.context() as patched:
            _no_reads(running.services, patched)
            assert await _callback(running.services, url, "sent") == 204
            assert await _callback(running.services, url, "delivered") == 204
        row = await running.services.store.message(message_id)
        assert row is not None and row.status is Status.DELIVERED
        assert len(await running.services.store.reports_for(message_id)) == 1
        # Its callbacks are over: the entry goes, so the bound holds messages in flight.
        assert running.services.recent.get(message_id) is None


async def test_the_answer_marks_the_entry_and_its_callback_writes_with_that_hint(
        started: Started, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    """Once the send's answer (with the vendor's id) is recorded, the entry says so, and the
    message's status callbacks tell the store the row likely holds that id (Store.advance's
    `known_id`, which lets SQLite leave the column and its index alone)."""
    async with started() as running:
        message_id, url = await _sent(running)
        via = running.services.recent.get(message_id)
        assert via is not None and via.vendor_id_stored
        hints: list[bool] = []
        real = running.services.store.advance

        async def spied(*args: Any, known_id: bool = False) -> Any:
            hints.append(known_id)
            return await real(*args, known_id=known_id)

        monkeypatch.setattr(running.services.store, "advance", spied)
        assert await _callback(running.services, url, "sent") == 204
        assert hints == [True]
        row = await running.services.store.message(message_id)
        assert row is not None and row.status is Status.SENT and row.vendor_message_id == SID


async def test_a_cached_message_never_skips_verification(
        started: Started) -> None:  # noqa: F811
    async with started() as running:
        message_id, url = await _sent(running)
        assert await _callback(running.services, url, "delivered", token="forged") == 403
        row = await running.services.store.message(message_id)
        assert row is not None and row.status is Status.ACCEPTED
        assert await running.services.store.reports_for(message_id) == []


async def test_a_cached_message_refuses_another_vendors_callback(
        started: Started) -> None:  # noqa: F811
    # Vonage takes unsigned receipts on the strength of the `?m=` token alone: the token of a
    # message sent through Twilio must not let a Vonage-shaped receipt through.
    async with started() as running:
        message_id, url = await _sent(running)
        app = create_app(running.services.settings, running.services)
        answer = await play(app, "POST", "/callbacks/vonage/status", b"status=delivered",
                            urlsplit(url).query, FORM)
        assert answer.status == 403
        row = await running.services.store.message(message_id)
        assert row is not None and row.status is Status.ACCEPTED


@contextlib.asynccontextmanager
async def _another_process(data: Path, settings: Settings) -> AsyncIterator[Services]:
    """A second connector process on the same store: the same secrets, its own memory."""
    other = Services.build(settings)
    await other.store.open()
    try:
        yield other
    finally:
        await other.store.close()


async def test_a_callback_on_a_process_that_did_not_send_reads_and_verifies(
        started: Started, tmp_path: Path) -> None:  # noqa: F811
    async with started() as running:
        message_id, url = await _sent(running)
        async with _another_process(tmp_path, running.services.settings) as other:
            assert other.recent.get(message_id) is None
            assert await _callback(other, url, "sent") == 204
            # Read once, then known: the delivered receipt verifies from memory.
            assert other.recent.get(message_id) == await other.store.sent_via(message_id)
            assert await _callback(other, url, "delivered", token="forged") == 403
            assert await _callback(other, url, "delivered") == 204
        row = await running.services.store.message(message_id)
        assert row is not None and row.status is Status.DELIVERED
        assert len(await running.services.store.reports_for(message_id)) == 1


async def test_an_unknown_message_is_counted_unknown_and_answered(
        started: Started) -> None:  # noqa: F811
    async with started() as running:
        message_id, url = await _sent(running)
        other_id = "f" * 32
        url = url.split("?m=")[0] + "?m=" + running.services.tokens.sign(other_id)
        unknown = ({"vendor": "twilio", "result": "unknown"}, "connector_callbacks_total")
        before = REGISTRY.get_sample_value(unknown[1], unknown[0]) or 0.0
        assert await _callback(running.services, url, "delivered") == 204
        assert REGISTRY.get_sample_value(unknown[1], unknown[0]) == before + 1
        row = await running.services.store.message(message_id)
        assert row is not None and row.status is Status.ACCEPTED

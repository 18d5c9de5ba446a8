"""Exactly once when the original is slow or dead (issue #15 items 1 and 2), on both stores.

Two Senders share one store, as two replicas would. The vendor stands still until the test
answers each call (send, then look-up), so every interleaving is chosen, never slept into;
the wall clock the Senders read is the test's, so "two vendor timeouts later" costs nothing.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from connector import http, sending
from connector.errors import AmbiguousOutcome
from connector.model import Status, StatusUpdate
from connector.sending import Sender
from connector.settings import Settings
from connector.store.base import NewMessage, Store, StoredResponse
from connector.tokens import CallbackTokens
from connector.vendors.infobip import Infobip
from tests.answers import reply
from tests.store.test_store import report_none

INFOBIP = Infobip()
CONFIG = {"base-url": "https://acme.api.infobip.com", "api-key": "infobip-key-" + "k" * 20}
SECRET = "s" * 40
PENDING = {"groupId": 1, "groupName": "PENDING", "id": 26, "name": "PENDING_ACCEPTED"}
T0 = 1_800_000_000.0


class HeldVendor:
    """Stands in for the HttpClient: every call waits until the test answers it."""

    def __init__(self) -> None:
        self.calls: asyncio.Queue[tuple[http.Request, asyncio.Future[http.Response]]] = (
            asyncio.Queue())
        self.methods: list[str] = []

    async def send(self, request: http.Request, timeout: float, *,  # noqa: ASYNC109
                   what: str) -> http.Response:
        answer: asyncio.Future[http.Response] = asyncio.get_running_loop().create_future()
        self.methods.append(request.method)
        await self.calls.put((request, answer))
        return await answer

    async def next(self) -> tuple[http.Request, asyncio.Future[http.Response]]:
        return await asyncio.wait_for(self.calls.get(), 10)


class Watched:
    """The store, telling the test when a waiting repeat has looked at the claim again."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self.polled = asyncio.Event()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    async def poll_claim(self, message_id: str) -> Any:
        found = await self._store.poll_claim(message_id)
        self.polled.set()
        return found


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Iterator[SimpleNamespace]:
    """The wall clock the Senders read; durations and deadlines stay real."""
    fake = SimpleNamespace(now=T0)
    monkeypatch.setattr(sending, "time", SimpleNamespace(
        time=lambda: fake.now, monotonic=time.monotonic, perf_counter=time.perf_counter))
    yield fake


class World:
    def __init__(self, store: Store, tmp_path: Path, policy: str) -> None:
        settings = Settings.from_env({
            "CONNECTOR_DATA_DIR": str(tmp_path), "CONNECTOR_SECRET_KEY": SECRET,
            "CONNECTOR_AMBIGUOUS_POLICY": policy, "CONNECTOR_INFLIGHT_WAIT": "30",
            "CONNECTOR_SUPPRESS_OPT_OUTS": "false"})
        self.settings = settings
        self.vendor = HeldVendor()
        self.store = store
        self.watched = Watched(store)
        tokens = CallbackTokens(SECRET)
        self.original = Sender(store, self.vendor, settings, tokens)  # type: ignore[arg-type]
        self.repeat = Sender(self.watched, self.vendor, settings,  # type: ignore[arg-type]
                             tokens)
        self.tasks: list[asyncio.Future[Any]] = []

    def message(self, at: float = T0) -> NewMessage:
        tenant = self.original.tenants.of(INFOBIP.name, CONFIG)
        return NewMessage(
            id=uuid.uuid4().hex, request_id="r1", vendor=INFOBIP.name, sealed_settings=b"s",
            sender="MyBrand", to_number="+447911123456", custom_data="cd",
            callback_url="https://platform.example/hook", metadata=None, segments=1,
            encoding="gsm7", claimed_until=at + self.original.claim_seconds,
            claim_key=tenant.claim_key("r1"))

    def start(self, sender: Sender) -> asyncio.Task[StoredResponse]:
        task = asyncio.ensure_future(sender.send(INFOBIP, CONFIG, self.message(), "Hello"))
        self.tasks.append(task)
        return task

    async def first_of(self, *waits: asyncio.Future[Any]) -> set[asyncio.Future[Any]]:
        self.tasks.extend(waits)
        done, _ = await asyncio.wait(waits, timeout=10, return_when=asyncio.FIRST_COMPLETED)
        return done


@pytest.fixture(params=["at_most_once", "at_least_once"])
async def world(request: pytest.FixtureRequest, store: Store, tmp_path: Path,
                clock: SimpleNamespace) -> AsyncIterator[World]:
    built = World(store, tmp_path, request.param)
    yield built
    for task in built.tasks:
        task.cancel()
    await asyncio.gather(*built.tasks, return_exceptions=True)


def accepted(vendor_id: str) -> http.Response:
    return reply(200, json={"messages": [{"messageId": vendor_id, "status": PENDING}]})


def found(vendor_id: str) -> http.Response:
    return reply(200, json={"results": [
        {"messageId": vendor_id, "status": PENDING, "messageCount": 1}]})


async def lost_answer(world: World) -> asyncio.Future[http.Response]:
    """The original's send times out unanswered; its reconciling look-up is held."""
    request, answer = await world.vendor.next()
    assert request.method == "POST"
    answer.set_exception(AmbiguousOutcome("infobip: no answer within 10s"))
    request, lookup = await world.vendor.next()
    assert request.method == "GET"
    return lookup


async def test_a_repeat_waits_while_the_original_reconciles(
        world: World, clock: SimpleNamespace) -> None:
    original = world.start(world.original)
    lookup = await lost_answer(world)
    # The longest path: the send's whole timeout, and the look-up's all but run out.
    clock.now = T0 + 2 * world.settings.vendor_timeout
    repeat = world.start(world.repeat)
    resent = asyncio.ensure_future(world.vendor.calls.get())
    polled = asyncio.ensure_future(world.watched.polled.wait())
    assert await world.first_of(resent, polled, repeat) == {polled}  # waiting, not taking over
    lookup.set_result(found("IB-1"))
    first, second = await asyncio.wait_for(asyncio.gather(original, repeat), 10)
    assert first.status == 200 and second == first
    assert json.loads(first.body)["vendor_message_id"] == "IB-1"
    assert world.vendor.methods == ["POST", "GET"]  # sent once


async def test_a_stalled_original_cannot_replace_the_takers_answer(
        world: World, clock: SimpleNamespace) -> None:
    original = world.start(world.original)
    lookup = await lost_answer(world)
    clock.now = T0 + world.original.claim_seconds + 1  # the original stalled past its claim
    taker = world.start(world.repeat)  # takes the claim over
    if world.settings.ambiguous_policy == "at_least_once":
        request, answer = await world.vendor.next()  # and sends again ...
        assert request.method == "POST"
        answer.set_result(accepted("IB-2"))
        taken = await asyncio.wait_for(taker, 10)
        assert taken.status == 200
    else:
        taken = await asyncio.wait_for(taker, 10)
        assert taken.status == 502  # ... or answers that the outcome is unknown
    # The original's look-up fails: it would store 502 (and free the id) over the answer.
    lookup.set_result(reply(500, json={"requestError": {}}))
    late = await asyncio.wait_for(original, 10)
    after = await asyncio.wait_for(world.start(world.repeat), 10)
    assert after == late == taken
    assert world.vendor.methods.count("POST") == (
        2 if world.settings.ambiguous_policy == "at_least_once" else 1)


@pytest.mark.parametrize("world", ["at_most_once"], indirect=True)  # at_least_once resends
async def test_a_late_acceptance_beats_the_takers_ambiguous_answer(
        world: World, clock: SimpleNamespace) -> None:
    assert world.settings.ambiguous_policy == "at_most_once"
    original = world.start(world.original)
    lookup = await lost_answer(world)
    clock.now = T0 + world.original.claim_seconds + 1
    assert (await asyncio.wait_for(world.start(world.repeat), 10)).status == 502
    lookup.set_result(found("IB-1"))
    late = await asyncio.wait_for(original, 10)
    assert late.status == 200
    # The message went out: never 502 again.
    assert await asyncio.wait_for(world.start(world.repeat), 10) == late


async def dead_claim(world: World) -> NewMessage:
    """A sender that claimed, got the vendor's acceptance and died before storing it."""
    message = world.message(at=T0 - 100)
    assert (await world.store.claim(message, T0 - 100)).claimed
    return message


async def answer_without_the_vendor(world: World) -> StoredResponse:
    repeat = world.start(world.repeat)
    called = asyncio.ensure_future(world.vendor.calls.get())
    assert await world.first_of(called, repeat) == {repeat}  # no take-over, no vendor call
    return repeat.result()


@pytest.mark.parametrize("write", ["apply_status", "advance"])
async def test_a_delivered_callback_settles_a_dead_senders_claim(world: World,
                                                                 write: str) -> None:
    message = await dead_claim(world)
    delivered = StatusUpdate(status=Status.DELIVERED, vendor_message_id="IB-1")
    await getattr(world.store, write)(message.id, delivered, T0 - 50, report_none)
    answer = await answer_without_the_vendor(world)
    body = json.loads(answer.body)
    assert answer.status == 200
    assert body["message_id"] == message.id and body["vendor_message_id"] == "IB-1"
    assert body["status"] == "delivered" and body["request_id"] == "r1"


async def test_an_expired_ambiguity_is_not_sent_again(world: World) -> None:
    message = await dead_claim(world)
    assert await world.store.expire_ambiguous(T0, T0 - 10, report_none) == 1
    answer = await answer_without_the_vendor(world)
    body = json.loads(answer.body)
    assert answer.status == 200  # its `failed` report is the outcome the platform acts on
    assert body["message_id"] == message.id and body["status"] == "failed"

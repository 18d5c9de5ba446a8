"""The dispatcher keeps URLs apart: a bad URL, a failing POST or a hung receiver costs only its
own reports, never the others leased beside them."""

from __future__ import annotations

import asyncio
import socket
from urllib.parse import urlsplit

from connector import http
from connector.http import HttpClient
from connector.netcheck import AddressGuard
from connector.outbox import Dispatcher
from connector.store.sqlite import SqliteStore
from tests.fakes.receiver import ReportReceiver
from tests.tcp import TcpServer
from tests.test_netcheck import FakeDns
from tests.test_outbox import delivered, drain, parts, receiver

__all__ = ["parts", "receiver"]  # fixtures, used by name

Parts = tuple[SqliteStore, Dispatcher]


async def test_stored_urls_no_client_can_request_jam_nothing(
        parts: Parts, receiver: ReportReceiver) -> None:
    store, dispatcher = parts
    netloc = urlsplit(receiver.url()).netloc
    # Stored before the send refused such URLs: inserted into the store directly.
    userinfo = await delivered(store, dispatcher, f"http://u:p@{netloc}/reports/r", "bad1")
    tab = await delivered(store, dispatcher, receiver.url("r\t"), "bad2")
    good = await delivered(store, dispatcher, receiver.url("good"), "good")
    await drain(dispatcher)  # before: the round raised, nothing was recorded, forever
    assert [e["custom_data"] for e in receiver.events] == ["good"]
    for message_id in (userinfo, tab):
        (view,) = await store.reports_for(message_id)
        assert view.state == "dead" and "callback_url" in (view.attempts[0].error or "")
    (view,) = await store.reports_for(good)
    assert view.state == "delivered"


class ExplodingHttp(HttpClient):
    """A client with a bug for one URL: whatever it raises must stay that chunk's failure."""

    async def send(self, request: http.Request, timeout: float,  # noqa: ASYNC109
                   *, what: str) -> http.Response:
        if "boom" in str(request.url):
            raise RuntimeError("a bug")
        return await super().send(request, timeout, what=what)


async def test_an_exception_from_one_post_is_that_chunks_failed_attempt(
        parts: Parts, receiver: ReportReceiver) -> None:
    store, dispatcher = parts
    dispatcher.http = ExplodingHttp()
    try:
        boom = await delivered(store, dispatcher, receiver.url("boom"), "boom")
        good = await delivered(store, dispatcher, receiver.url("good"), "good")
        assert await dispatcher.deliver_due()
    finally:
        await dispatcher.http.close()
    (view,) = await store.reports_for(boom)
    assert (view.state, view.attempts[0].outcome) == ("pending", "retry")
    assert view.attempts[0].error == "unexpected RuntimeError"
    assert [v.state for v in await store.reports_for(good)] == ["delivered"]


async def test_a_resolver_failure_backs_off_instead_of_dead_lettering(parts: Parts) -> None:
    store, dispatcher = parts
    dns = FakeDns(socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution"))
    dispatcher.guard = AddressGuard(allow_private=False, allow_http=True, resolve=dns)
    message_id = await delivered(store, dispatcher, "http://hooks.example.com/r", "x")
    assert await dispatcher.deliver_due()
    (view,) = await store.reports_for(message_id)
    assert view.state == "pending" and view.next_attempt_at is not None
    assert [a.outcome for a in view.attempts] == ["retry"]
    assert "cannot be resolved" in (view.attempts[0].error or "")


class HungReceiver:
    """Accepts connections and reads the POST, then never answers until released."""

    def __init__(self) -> None:
        self.requests = 0
        self.got_one = asyncio.Event()
        self.release = asyncio.Event()
        self.server: TcpServer | None = None

    async def start(self) -> str:
        self.server = await TcpServer(self._hang).start()
        return f"http://127.0.0.1:{self.server.port}/hang"

    async def _hang(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        self.requests += 1
        self.got_one.set()
        await self.release.wait()
        writer.transport.abort()


async def test_a_hung_receiver_does_not_delay_another_urls_reports(
        parts: Parts, receiver: ReportReceiver) -> None:
    store, dispatcher = parts
    # Long enough that the hung POST outlasts the test; nothing waits for it.
    dispatcher.settings = dispatcher.settings.replace(report_timeout=120.0)
    hung = HungReceiver()
    hung_url = await hung.start()
    stuck = await delivered(store, dispatcher, hung_url, "stuck")
    task = asyncio.create_task(dispatcher.run())
    try:
        await asyncio.wait_for(hung.got_one.wait(), 10)
        backlog = await delivered(store, dispatcher, hung_url, "backlog")
        good = await delivered(store, dispatcher, receiver.url("good"), "good")
        dispatcher.wake()
        await asyncio.to_thread(receiver.wait_for, 1, 10.0)
        # Delivered and recorded while the hung POST is still open...
        for _ in range(100):
            if [v.state for v in await store.reports_for(good)] == ["delivered"]:
                break
            await asyncio.sleep(0.05)
        assert [v.state for v in await store.reports_for(good)] == ["delivered"]
        assert not hung.release.is_set() and hung.requests == 1
        # ...and the busy URL got no second POST beside the one in flight.
        assert [v.attempts for v in await store.reports_for(backlog)] == [[]]
        assert [v.attempts for v in await store.reports_for(stuck)] == [[]]
    finally:
        hung.release.set()
        dispatcher.stop()
        await task
        assert hung.server is not None
        await hung.server.stop()
    assert [e["custom_data"] for e in receiver.events] == ["good"]


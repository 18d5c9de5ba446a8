"""End-to-end harness: the real `connector serve` process, a fake Twilio and a report
receiver, all on 127.0.0.1 over real HTTP."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fakes.receiver import ReportReceiver
from tests.fakes.twilio import FakeTwilio
from tests.openapi_check import assert_conforms, assert_report_conforms
from tests.ports import listen_port

SID = "AC" + "0123456789abcdef" * 2
TOKEN = "twilio-auth-token-" + "s3cr3t" * 3
REPORT_SECRET = "report-secret-" + "x" * 32


class Connector:
    """One `connector serve` (or `worker`) process with its own data dir and log file."""

    def __init__(self, data_dir: Path, env: dict[str, str], command: str = "serve",
                 args: tuple[str, ...] = ()) -> None:
        self.data_dir = data_dir
        self.args = args
        self.port = listen_port()
        self.command = command
        self.env = {
            **os.environ,
            "CONNECTOR_DATA_DIR": str(data_dir),
            "CONNECTOR_PORT": str(self.port),
            "CONNECTOR_ALLOW_PRIVATE_NETWORKS": "true",
            "CONNECTOR_ALLOW_HTTP": "true",
            "CONNECTOR_VENDOR_HOSTS": "127.0.0.1",
            "CONNECTOR_REPORT_SECRET": REPORT_SECRET,
            "CONNECTOR_REPORT_BACKOFF": "0.2",
            "CONNECTOR_REPORT_LINGER": "0.01",
            "CONNECTOR_LOG_FORMAT": "json",
            **env,
        }
        self.env.pop("PORT", None)
        self.log_path = data_dir / f"{command}.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, attempts: int = 3) -> Connector:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        attempt = 1
        while True:
            log = self.log_path.open("ab")
            written = log.tell()
            self.process = subprocess.Popen(
                [sys.executable, "-m", "connector.cli", self.command, *self.args], env=self.env,
                stdout=log, stderr=subprocess.STDOUT,
            )
            log.close()
            if self.command != "serve":
                return self
            try:
                self._wait_ready()
                return self
            except AssertionError:
                # Another listener took the port after it was chosen: drop that try's lines
                # and go again on a new port. Anything else is the test's to see.
                taken = b"address already in use" in self.log_path.read_bytes()[written:]
                if attempt == attempts or not taken:
                    raise
                attempt += 1
                self.process = None
                os.truncate(self.log_path, written)
                self.port = listen_port()
                self.env["CONNECTOR_PORT"] = str(self.port)

    def _wait_ready(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise AssertionError(f"connector exited: {self.logs()}")
            try:
                if httpx.get(self.url + "/readyz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        raise AssertionError(f"connector not ready in {timeout}s: {self.logs()}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int:
        if self.process is None:
            return 0
        if self.process.poll() is None:
            self.process.send_signal(sig)
        code = self.process.wait(timeout)
        self.process = None
        return code

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def logs(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""


def checked(response: httpx.Response) -> httpx.Response:
    """Hold one real exchange with the connector to openapi.yaml."""
    request = response.request
    assert_conforms(request.method, str(request.url), request.headers, request.content,
                    response.status_code, response.headers, response.content)
    return response


class CheckedTwilio(FakeTwilio):
    """The Twilio fake, with every callback exchange held to openapi.yaml."""

    def send_status(self, *args: Any, **kwargs: Any) -> httpx.Response:
        return checked(super().send_status(*args, **kwargs))


@pytest.fixture
def twilio() -> Iterator[FakeTwilio]:
    fake = CheckedTwilio({SID: TOKEN}).start()
    yield fake
    fake.stop()
    assert fake.contract_violations == [], "against the vendor's own document"
    assert fake.schema_violations == [], "the connector sent a request Twilio's spec forbids"
    assert fake.unused_canned() == [], "a canned Twilio answer was never asked for"


@pytest.fixture
def receiver() -> Iterator[ReportReceiver]:
    fake = ReportReceiver(REPORT_SECRET).start()
    yield fake
    fake.stop()
    assert fake.auth_failures == [], "a report arrived without a valid JWT"
    for post in fake.posts:
        assert_report_conforms(post.headers, json.dumps(post.events).encode())


@pytest.fixture
def start_connector(tmp_path: Path) -> Iterator[Any]:
    started: list[Connector] = []

    def start(data_dir: Path | None = None, command: str = "serve",
              args: tuple[str, ...] = (), **env: str) -> Connector:
        connector = Connector(data_dir or tmp_path / "data", env, command, args).start()
        started.append(connector)
        return connector

    yield start
    for connector in started:
        connector.stop()


@pytest.fixture
def connector(start_connector: Any) -> Connector:
    started: Connector = start_connector()
    return started


def row(connector: Connector, message_id: str) -> dict[str, Any]:
    db = sqlite3.connect(connector.data_dir / "connector.db")
    db.row_factory = sqlite3.Row
    try:
        found = db.execute("SELECT * FROM messages WHERE id = ?", (message_id,)).fetchone()
        return dict(found)
    finally:
        db.close()


def headers(twilio: FakeTwilio, **extra: str) -> dict[str, str]:
    return {"Chan-Account-Sid": SID, "Chan-Auth-Token": TOKEN,
            "Chan-Base-Url": twilio.base_url, **extra}


def send_body(receiver: ReportReceiver, **changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "sender": "MyBrand", "recipient": "00447911123456", "message": "Your code is 1234",
        "request_id": "req-1", "custom_data": "eyJjYW1wYWlnbiI6IjQyIn0=~&é/\"q\"",
        "callback_url": receiver.url(), "metadata": {"campaign": "c1"},
    }
    body.update(changes)
    return body

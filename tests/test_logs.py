"""Logging goes to the stderr of the moment, not the one that was current at configuration."""

from __future__ import annotations

import io
import sys
from pathlib import Path
from typing import Any

import pytest
import structlog

from connector import app as app_module
from connector import logs
from connector.settings import Settings


def test_lines_follow_a_replaced_stderr_and_a_closed_one_is_never_written(
        monkeypatch: pytest.MonkeyPatch) -> None:
    first = io.StringIO()
    monkeypatch.setattr(sys, "stderr", first)
    monkeypatch.setattr(logs, "info_enabled", logs.info_enabled)  # restored after the test
    logs.configure("info", "json")
    try:
        structlog.get_logger("t").warning("one")
        first.close()  # e.g. a finished test's capture, as an in-process CLI call leaves it
        second = io.StringIO()
        monkeypatch.setattr(sys, "stderr", second)
        structlog.get_logger("t").warning("two")  # raised ValueError on the closed stream
        assert '"event": "two"' in second.getvalue()
    finally:
        structlog.reset_defaults()


@pytest.mark.parametrize(("level", "written"), [("info", True), ("warning", False)])
async def test_the_request_line_follows_the_configured_level(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, level: str, written: bool) -> None:
    """Front writes the request line as logs.configure's level says (logs.info_enabled, as
    the lines every message writes): at info every request has its line, at warning none."""
    stream = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stream)
    monkeypatch.setattr(logs, "info_enabled", logs.info_enabled)  # restored after the test
    logs.configure(level, "json")
    monkeypatch.setattr(app_module, "log", structlog.get_logger("connector.http"))  # unbound
    try:
        front = app_module.create_app(Settings.from_env({"CONNECTOR_DATA_DIR": str(tmp_path)}))
        for _ in range(2):
            sent: list[Any] = []

            async def receive() -> dict[str, Any]:
                return {"type": "http.request", "body": b"", "more_body": False}

            async def send(message: Any, sent: list[Any] = sent) -> None:
                sent.append(message)

            await front({"type": "http", "method": "POST", "path": "/callbacks/nope/status",
                         "query_string": b"", "headers": []}, receive, send)
            assert sent[0]["status"] == 404
    finally:
        structlog.reset_defaults()
    assert stream.getvalue().count('"event": "request"') == (2 if written else 0)

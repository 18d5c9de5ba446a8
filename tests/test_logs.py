"""Logging goes to the stderr of the moment, not the one that was current at configuration."""

from __future__ import annotations

import io
import sys

import pytest
import structlog

from connector import logs


def test_lines_follow_a_replaced_stderr_and_a_closed_one_is_never_written(
        monkeypatch: pytest.MonkeyPatch) -> None:
    first = io.StringIO()
    monkeypatch.setattr(sys, "stderr", first)
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

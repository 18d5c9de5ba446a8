"""How `connector serve` starts uvicorn."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from connector import cli
from connector.server import HttpProtocol
from connector.settings import Settings


def test_serve_leaves_proxy_headers_off(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing reads the client address or scheme (CONNECTOR_PUBLIC_URL is the public URL),
    so uvicorn's proxy-header layer is not put around every request (#11)."""
    given: dict[str, Any] = {}

    async def migrated(_settings: Settings) -> None:
        return None

    monkeypatch.setattr(cli, "_migrate", migrated)
    monkeypatch.setattr(cli.uvicorn, "run", lambda *args, **kwargs: given.update(kwargs))
    cli._serve(Settings.from_env({"CONNECTOR_DATA_DIR": str(tmp_path)}), 1)
    assert given["proxy_headers"] is False
    assert given["factory"] is True
    assert given["http"] is HttpProtocol  # the connector's own protocol (connector/server.py)

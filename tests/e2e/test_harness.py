"""The end-to-end harness itself: a port taken between choosing it and the connector's bind
costs a retry on a new port, not the test (CI once failed on exactly that race)."""

from __future__ import annotations

import socket
from pathlib import Path

import httpx

from tests.e2e.conftest import Connector
from tests.ports import _ephemeral_start, listen_port


def test_ports_lie_below_the_range_outgoing_connections_take() -> None:
    ports = {listen_port() for _ in range(20)}
    assert all(10_000 <= port < _ephemeral_start() for port in ports)
    assert len(ports) > 1, "chosen at random, so two sessions seldom meet"


def test_a_taken_port_is_retried_on_another(tmp_path: Path) -> None:
    connector = Connector(tmp_path / "data", {})
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", connector.port))
        squatter.listen()
        taken = connector.port
        try:
            connector.start()
            assert connector.port != taken
            assert httpx.get(connector.url + "/readyz").status_code == 200
            assert "address already in use" not in connector.logs()
            assert connector.logs().count("dispatcher_started") == 1, "the failed try's lines go"
        finally:
            connector.stop()


def test_a_connector_that_fails_otherwise_still_fails_the_test(tmp_path: Path) -> None:
    connector = Connector(tmp_path / "data", {"CONNECTOR_REPORT_SECRET": "short"})
    try:
        connector.start()
    except AssertionError as failed:
        assert "connector exited" in str(failed)
    else:
        connector.stop()
        raise AssertionError("a connector with a bad setting started")

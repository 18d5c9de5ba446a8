"""Schemathesis against the live service: generated requests for every documented operation,
each answer held to openapi.yaml, and never a bare 500."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, settings
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.e2e.conftest import Connector

pytestmark = pytest.mark.e2e

SPEC = Path(__file__).resolve().parents[2] / "openapi.yaml"
schema = schemathesis.openapi.from_path(SPEC)
CHECKS = [status_code_conformance, content_type_conformance, response_headers_conformance,
          response_schema_conformance]


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Connector]:
    connector = Connector(tmp_path_factory.mktemp("fuzz"), {
        "CONNECTOR_ADMIN_KEY": "fuzz-admin-key",
        # keep generated URLs on loopback so no example waits on DNS
        "CONNECTOR_CALLBACK_HOSTS": "127.0.0.1", "CONNECTOR_VENDOR_TIMEOUT": "2",
    }).start()
    yield connector
    connector.stop()


@schema.parametrize()
@settings(max_examples=25, deadline=None, phases=[Phase.explicit, Phase.generate],
          suppress_health_check=list(HealthCheck))
def test_every_answer_matches_the_spec(case: schemathesis.Case, live: Connector) -> None:
    response = case.call(base_url=live.url, timeout=15)
    case.validate_response(response, checks=CHECKS)
    assert response.status_code != 500, response.text

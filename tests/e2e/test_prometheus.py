"""A real Prometheus on loopback scrapes a running `connector serve` carrying messages, and
evaluates every alert and dashboard expression: no errors, no series the connector lacks."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.conftest import Connector, headers, send_body
from tests.fakes.receiver import ReportReceiver
from tests.fakes.twilio import FakeTwilio
from tests.monitoring.expressions import (
    RULES,
    alert_expressions,
    dashboard_expressions,
    series_names,
)
from tests.ports import listen_port

pytestmark = pytest.mark.e2e
WAIT = 40.0  # seconds: the bound on every wait below
# Empty until a vendor fails a send, which this run does not make happen.
MAY_BE_EMPTY = {"Vendor error ratio / A"}


class Prometheus:
    """One `prometheus` process with its own config and data dir, scraping every second."""

    def __init__(self, root: Path, target: str) -> None:
        binary = shutil.which("prometheus")
        assert binary, "prometheus is missing: apt-get install prometheus (.ci/run does)"
        self.port = listen_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = root / "prometheus.yml"
        config.write_text(yaml.safe_dump({
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(RULES)],
            "scrape_configs": [{"job_name": "connector",
                                "static_configs": [{"targets": [target]}]}],
        }))
        self.log = root / "prometheus.log"
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(
                [binary, f"--config.file={config}", f"--storage.tsdb.path={root / 'data'}",
                 f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"],
                stdout=out, stderr=subprocess.STDOUT)

    def wait_ready(self) -> None:
        until(lambda: self._ready(), "Prometheus ready", self)
        # Targets start being scraped a few seconds after ready: see a first scrape, so the
        # counters' values before the traffic are in the data too.
        until(lambda: self.query('up{job="connector"} == 1'), "a first scrape", self)

    def _ready(self) -> bool:
        assert self.process.poll() is None, f"prometheus exited: {self.log.read_text()}"
        try:
            return httpx.get(self.url + "/-/ready", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    def query(self, expr: str) -> list[Any]:
        answer = httpx.get(self.url + "/api/v1/query", params={"query": expr}, timeout=10)
        body = answer.json()
        assert body["status"] == "success", f"{expr}: {body.get('error')}"
        result: list[Any] = body["data"]["result"]
        return result

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)


def until(check: Callable[[], Any], what: str, prometheus: Prometheus | None = None) -> Any:
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.2)
    logs = prometheus.log.read_text() if prometheus else ""
    raise AssertionError(f"{what}: not within {WAIT}s {logs}")


@pytest.fixture
def prometheus(tmp_path: Path, connector: Connector) -> Iterator[Prometheus]:
    root = tmp_path / "prometheus"
    root.mkdir()
    server = Prometheus(root, f"127.0.0.1:{connector.port}")
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


def exported(connector: Connector) -> set[str]:
    """Every series name the connector's /metrics offers, also of families with no sample yet."""
    text = httpx.get(connector.url + "/metrics").text
    names = set()
    suffixes = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_count", "_sum",
                                                                 "_created"), "gauge": ("",)}
    for family in text_string_to_metric_families(text):
        names |= {sample.name for sample in family.samples}
        names |= {family.name + suffix for suffix in suffixes.get(family.type, ("",))}
    return names


def drive(connector: Connector, twilio: FakeTwilio, receiver: ReportReceiver) -> None:
    """Three messages delivered, one forged callback, one report dead-lettered by a 404."""
    for n in range(3):
        answer = httpx.post(connector.url + "/sms/send", headers=headers(twilio),
                            json=send_body(receiver, request_id=f"req-{n}"))
        assert answer.status_code == 200, answer.text
        twilio.send_status(twilio.messages[-1]["sid"], "delivered")
        receiver.wait_for(n + 1, timeout=WAIT)
    twilio.send_status(twilio.messages[-1]["sid"], "sent", signature_override="forged")
    receiver.script([404])
    httpx.post(connector.url + "/sms/send", headers=headers(twilio),
               json=send_body(receiver, request_id="req-dead"))
    twilio.send_status(twilio.messages[-1]["sid"], "delivered")
    until(lambda: any(p.status == 404 for p in receiver.posts), "the 404 answered")


def test_prometheus_evaluates_every_alert_and_dashboard_expression(
        connector: Connector, twilio: FakeTwilio, receiver: ReportReceiver,
        prometheus: Prometheus) -> None:
    drive(connector, twilio, receiver)
    # Prometheus has scraped after the drive once the dead letter shows in its data.
    until(lambda: prometheus.query("connector_dead_letters_total > 0"),
          "a scrape after the traffic", prometheus)
    names = exported(connector)
    dashboard = dashboard_expressions()
    for title, expr in dashboard.items():
        used = series_names(expr)
        assert used and used <= names, f"{title}: {sorted(used - names)} not exported"
        if title not in MAY_BE_EMPTY:  # rates need two scrapes after the traffic
            until(lambda expr=expr: prometheus.query(expr), f"data for {title}", prometheus)
        else:
            prometheus.query(expr)
    for alert, expr in alert_expressions().items():
        used = series_names(expr)
        assert used and used <= names, f"{alert}: {sorted(used - names)} not exported"
        prometheus.query(expr)
    # The dead letter made that alert's condition true in the real thing, too; the store
    # answered every scrape.
    assert prometheus.query(alert_expressions()["ConnectorDeadLetters"])
    assert prometheus.query("connector_store_up == 1")
    assert not prometheus.query(alert_expressions()["ConnectorStoreUnavailable"])

    def evaluated() -> list[Any]:
        groups = httpx.get(prometheus.url + "/api/v1/rules", timeout=10).json()["data"]["groups"]
        rules = [rule for group in groups for rule in group["rules"]]
        done = all(rule["lastEvaluation"] > "2000" for rule in rules)
        return rules if done and len(rules) == len(alert_expressions()) else []

    for rule in until(evaluated, "every rule evaluated", prometheus):
        assert (rule["health"], rule.get("lastError", "")) == ("ok", ""), rule

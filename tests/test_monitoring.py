"""manifests/monitoring: promtool checks and unit-tests the alert rules; the PrometheusRule is
the rules file's twin; the dashboard covers what operators need and reads known series."""

from __future__ import annotations

import importlib.util
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.monitoring.expressions import (
    DASHBOARD,
    MONITORING,
    RULES,
    alert_expressions,
    dashboard,
    dashboard_expressions,
    promtool,
    series_names,
)

_GENERATOR = Path(__file__).resolve().parents[1] / "scripts" / "prometheusrule.py"
_spec = importlib.util.spec_from_file_location("prometheusrule", _GENERATOR)
assert _spec is not None and _spec.loader is not None
prometheusrule = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(prometheusrule)

# What issue #14 asks alerts for, by the name each has here.
ALERTS = {"ConnectorReportsDelayed", "ConnectorDeadLetters", "ConnectorVendorErrors",
          "ConnectorCallbacksForbidden", "ConnectorStoreUnavailable", "ConnectorSendsStopped"}


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([promtool(), *args], cwd=MONITORING, capture_output=True, text=True,
                          timeout=120)


def test_promtool_checks_the_rules() -> None:
    checked = run("check", "rules", str(RULES))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(ALERTS)} rules found" in checked.stdout


def test_promtool_unit_tests_pass() -> None:
    tested = run("test", "rules", "rules.test.yaml")
    assert tested.returncode == 0, tested.stdout + tested.stderr


def test_promtool_unit_tests_can_fail(tmp_path: Path) -> None:
    """The unit tests hold the rules: a threshold moved makes them fail."""
    (tmp_path / "rules.yaml").write_text(RULES.read_text().replace("> 900", "> 9000"))
    (tmp_path / "rules.test.yaml").write_text((MONITORING / "rules.test.yaml").read_text())
    tested = subprocess.run([promtool(), "test", "rules", "rules.test.yaml"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=120)
    assert tested.returncode != 0
    assert "ConnectorReportsDelayed" in tested.stdout + tested.stderr


def test_every_alert_is_there_and_fires_in_a_unit_test() -> None:
    assert set(alert_expressions()) == ALERTS
    tests = yaml.safe_load((MONITORING / "rules.test.yaml").read_text())["tests"]
    fired = {case["alertname"] for test in tests for case in test["alert_rule_test"]
             if case["exp_alerts"]}
    quiet = {case["alertname"] for test in tests for case in test["alert_rule_test"]
             if not case["exp_alerts"]}
    assert fired == ALERTS
    assert quiet == ALERTS


def test_the_prometheus_rule_is_generated_from_the_rules_file() -> None:
    generated = prometheusrule.render(yaml.safe_load(RULES.read_text()))
    assert (MONITORING / "prometheusrule.yaml").read_text() == generated, (
        "prometheusrule.yaml is stale: run .venv/bin/python scripts/prometheusrule.py")
    resource = yaml.safe_load(generated)
    assert (resource["apiVersion"], resource["kind"]) == ("monitoring.coreos.com/v1",
                                                          "PrometheusRule")
    assert resource["spec"]["groups"] == yaml.safe_load(RULES.read_text())["groups"]


def test_the_dashboard_shows_what_operators_need() -> None:
    board = dashboard()
    assert board["uid"] and board["title"]
    names = set().union(*map(series_names, dashboard_expressions().values()))
    for needed in ("connector_vendor_outcomes_total", "connector_vendor_call_seconds_bucket",
                   "connector_callbacks_total", "connector_outbox_depth",
                   "connector_outbox_oldest_age_seconds", "connector_outbox_dead",
                   "connector_dead_letters_total", "connector_requests_total"):
        assert needed in names, needed
    ids = [panel["id"] for panel in board["panels"]]
    assert len(ids) == len(set(ids))
    for panel in board["panels"]:
        assert panel["targets"], panel["title"]


@pytest.mark.parametrize(("expr", "names"), [
    ('sum by (vendor) (rate(a_total{x="b c", y=~"d"}[5m])) / on(vendor) b', {"a_total", "b"}),
    ("histogram_quantile(0.9, sum by (le) (rate(h_bucket[1m])))", {"h_bucket"}),
    ("x - x offset 15m > 0 unless y == bool 1", {"x", "y"}),
])
def test_series_names_are_read_from_expressions(expr: str, names: set[str]) -> None:
    assert series_names(expr) == names


def test_every_file_is_described() -> None:
    assert sorted(p.name for p in MONITORING.iterdir()) == sorted(
        ["rules.yaml", "rules.test.yaml", "prometheusrule.yaml", DASHBOARD.name])

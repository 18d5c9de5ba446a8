"""Write manifests/monitoring/prometheusrule.yaml from rules.yaml, the one source of truth."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml

MONITORING = Path(__file__).resolve().parents[1] / "manifests" / "monitoring"
HEADER = ("# GENERATED from rules.yaml by scripts/prometheusrule.py; edit rules.yaml and run it.\n"
          "# The same alert rules for the Prometheus Operator (monitoring.coreos.com/v1).\n")


def render(rules: dict[str, Any]) -> str:
    resource = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": "channel-api-connector",
                     "labels": {"app.kubernetes.io/name": "channel-api-connector"}},
        "spec": {"groups": rules["groups"]},
    }
    return HEADER + yaml.safe_dump(resource, sort_keys=False, width=100)


def main() -> int:
    rules = yaml.safe_load((MONITORING / "rules.yaml").read_text(encoding="utf-8"))
    (MONITORING / "prometheusrule.yaml").write_text(render(rules), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())

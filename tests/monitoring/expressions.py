"""The PromQL the alert rules and the dashboard use, and the series names each one reads."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any, Final

import yaml

MONITORING: Final = Path(__file__).resolve().parents[2] / "manifests" / "monitoring"
RULES: Final = MONITORING / "rules.yaml"
DASHBOARD: Final = MONITORING / "dashboard.json"
# Grafana fills these in; the values Prometheus gets in the tests.
GRAFANA_VARIABLES: Final = {"$__rate_interval": "30s", "$namespace": ".*"}

_KEYWORDS: Final = {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left",
                    "group_right", "bool", "offset", "inf", "nan"}
_STRINGS: Final = re.compile(r'"(?:[^"\\]|\\.)*"')
_MATCHERS: Final = re.compile(r"\{[^}]*\}")
_RANGES: Final = re.compile(r"\[[^\]]*\]")
_GROUPING: Final = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_OFFSET: Final = re.compile(r"\boffset\s+\w+")
_NAME: Final = re.compile(r"(?<![\w:.])([A-Za-z_:][\w:]*)(?![\w:]|\s*\()")


def promtool() -> str:
    """promtool's path; the monitoring checks fail (never skip) when it is missing."""
    found = shutil.which("promtool")
    assert found, ("promtool is missing: apt-get install prometheus (Debian's package; "
                   ".ci/run installs it)")
    return found


def rules() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    return loaded


def alert_expressions() -> dict[str, str]:
    return {rule["alert"]: rule["expr"] for group in rules()["groups"]
            for rule in group["rules"]}


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return loaded


def dashboard_expressions() -> dict[str, str]:
    """`panel title / refId` -> the expression with Grafana's variables filled in."""
    found = {}
    for panel in dashboard()["panels"]:
        for target in panel["targets"]:
            expr = target["expr"]
            for variable, value in GRAFANA_VARIABLES.items():
                expr = expr.replace(variable, value)
            found[f"{panel['title']} / {target['refId']}"] = expr
    return found


def series_names(expr: str) -> set[str]:
    """Metric names an expression selects: what is left once strings, label matchers,
    ranges, grouping clauses, offsets, functions and numbers are taken out."""
    bare = _STRINGS.sub('""', expr)
    bare = _MATCHERS.sub("", bare)
    bare = _RANGES.sub("", bare)
    bare = _GROUPING.sub("", bare)
    bare = _OFFSET.sub("", bare)
    return {name for name in _NAME.findall(bare) if name.lower() not in _KEYWORDS}

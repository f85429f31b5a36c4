"""The shipped monitoring files read as data: the Grafana dashboard's queries, the alert rules,
their promtool tests, and the metric names the worker's and the API's registries expose.

Shared by the unit tests (names, structure) and the real-Prometheus integration test.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from cdc_worker.api.metrics import ApiMetrics
from cdc_worker.observability.metrics import WorkerMetrics

ROOT = Path(__file__).resolve().parents[1]
DASHBOARD = ROOT / "deploy/grafana/dashboards/ticket-sync.json"
PROMETHEUS_DIR = ROOT / "deploy/prometheus"
PROMETHEUS = PROMETHEUS_DIR / "prometheus.yml"
ALERTS = PROMETHEUS_DIR / "alerts.yml"
RULE_TESTS = sorted((PROMETHEUS_DIR / "tests").glob("*.yml"))
ALERTS_DOC = ROOT / "docs/operations.md"

# Series names each metric type puts on the wire, as suffixes of the family name.
EXPOSED_SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "gauge": ("",),
    "info": ("_info",),
}
# Series Prometheus makes itself for every target.
SCRAPE_SERIES = {"up": "up", "scrape_duration_seconds": "scrape_duration_seconds"}
# A PromQL metric identifier of ours (or a collector's, or Prometheus's `up`); string literals
# are removed before matching.
METRIC_IDENTIFIER = re.compile(
    r"(?<![A-Za-z0-9_:])(?:(?:cdc|process|python)_[A-Za-z0-9_:]*|up|scrape_duration_seconds)"
    r"(?![A-Za-z0-9_:(])"
)
STRING_LITERAL = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
# Grafana's interval variables, as Grafana would expand them for a 1 s scrape interval and a
# short range (what the real-Prometheus test queries).
GRAFANA_VARIABLES = {"$__rate_interval": "10s", "$__interval": "1s", "$__range": "1m"}
PROMTOOL_HINT = (
    "promtool is missing: run scripts/ensure-servers --for-tests (as root it installs "
    "Debian's `prometheus` package, which brings prometheus and promtool) or "
    "`sudo apt-get install -y prometheus`"
)


def metric_families() -> dict[str, str]:
    """Family name to type, over the worker's and the API's registries."""
    families: dict[str, str] = {}
    for registry in (WorkerMetrics().registry, ApiMetrics().registry):
        for family in registry.collect():
            families[family.name] = family.type
    return families


def exposed_series(families: dict[str, str]) -> dict[str, str]:
    """Every series name Prometheus can scrape, to the family it belongs to."""
    series = {
        name + suffix: name
        for name, kind in families.items()
        for suffix in EXPOSED_SUFFIXES.get(kind, ("",))
    }
    return series | SCRAPE_SERIES


def metric_names(expr: str) -> set[str]:
    return set(METRIC_IDENTIFIER.findall(STRING_LITERAL.sub('""', expr)))


def load_yaml(path: Path) -> dict[str, Any]:
    loaded = yaml.safe_load(path.read_text())
    assert isinstance(loaded, dict)
    return loaded


def load_dashboard() -> dict[str, Any]:
    loaded = json.loads(DASHBOARD.read_text())
    assert isinstance(loaded, dict)
    return loaded


def walk_panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from walk_panels(panel.get("panels", []))


def data_panels() -> list[dict[str, Any]]:
    return [p for p in walk_panels(load_dashboard()["panels"]) if p["type"] != "row"]


@dataclass(frozen=True)
class PanelQuery:
    """One query of one dashboard panel."""

    panel: str
    ref_id: str
    expr: str

    def expanded(self) -> str:
        """The query with Grafana's variables replaced, as Prometheus receives it."""
        expr = self.expr
        for variable, value in GRAFANA_VARIABLES.items():
            expr = expr.replace(variable, value)
        assert "$" not in expr, f"panel {self.panel!r} uses an unknown variable: {self.expr}"
        return expr


def panel_queries() -> list[PanelQuery]:
    return [
        PanelQuery(panel["title"], target["refId"], target["expr"])
        for panel in data_panels()
        for target in panel["targets"]
    ]


def alert_rules(path: Path = ALERTS) -> list[dict[str, Any]]:
    return [rule for group in load_yaml(path)["groups"] for rule in group["rules"]]


def alert_exprs() -> list[tuple[str, str]]:
    return [(rule["alert"], str(rule["expr"])) for rule in alert_rules()]


def rule_test_cases() -> list[tuple[str, str, bool]]:
    """(test name, alert name, expected to fire) for every alert check of every rule test."""
    cases: list[tuple[str, str, bool]] = []
    for path in RULE_TESTS:
        for test in load_yaml(path)["tests"]:
            for check in test.get("alert_rule_test", []):
                cases.append((test["name"], check["alertname"], bool(check["exp_alerts"])))
    return cases


def promtool() -> str:
    """The promtool binary; fails (never skips) with how to install it."""
    path = shutil.which("promtool")
    assert path, PROMTOOL_HINT
    return path

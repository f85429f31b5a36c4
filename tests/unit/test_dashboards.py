"""The Grafana dashboard and Prometheus rules only query metrics the worker and API expose."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from cdc_worker.api.metrics import ApiMetrics
from cdc_worker.observability.metrics import WorkerMetrics
from cdc_worker.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy/grafana/dashboards/ticket-sync.json"
PROMETHEUS = ROOT / "deploy/prometheus/prometheus.yml"
ALERTS = ROOT / "deploy/prometheus/alerts.yml"
DATASOURCES = ROOT / "deploy/grafana/provisioning/datasources/prometheus.yml"
DASHBOARD_PROVIDERS = ROOT / "deploy/grafana/provisioning/dashboards/ticket-sync.yml"

# Series names each metric type puts on the wire, as suffixes of the family name.
EXPOSED_SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "gauge": ("",),
}
# A PromQL metric identifier of ours; string literals are removed before matching.
METRIC_IDENTIFIER = re.compile(r"(?<![A-Za-z0-9_:])cdc_[A-Za-z0-9_:]*")
STRING_LITERAL = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')


def metric_families() -> dict[str, str]:
    """Family name to type, over the worker's and the API's registries."""
    families: dict[str, str] = {}
    for registry in (WorkerMetrics().registry, ApiMetrics().registry):
        for family in registry.collect():
            families[family.name] = family.type
    return families


def exposed_series(families: dict[str, str]) -> dict[str, str]:
    """Every series name Prometheus can scrape, to the family it belongs to."""
    return {
        name + suffix: name for name, kind in families.items() for suffix in EXPOSED_SUFFIXES[kind]
    }


FAMILIES = metric_families()
SERIES = exposed_series(FAMILIES)


def metric_names(expr: str) -> set[str]:
    return set(METRIC_IDENTIFIER.findall(STRING_LITERAL.sub('""', expr)))


def unknown_metrics(expr: str) -> set[str]:
    """The ``cdc_`` identifiers of ``expr`` neither registry exposes under that name."""
    return {name for name in metric_names(expr) if name not in SERIES}


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


def panel_exprs() -> list[tuple[str, str]]:
    return [
        (panel["title"], target["expr"]) for panel in data_panels() for target in panel["targets"]
    ]


def alert_rules() -> list[dict[str, Any]]:
    return [rule for group in load_yaml(ALERTS)["groups"] for rule in group["rules"]]


def alert_exprs() -> list[tuple[str, str]]:
    return [(rule["alert"], str(rule["expr"])) for rule in alert_rules()]


def compose_services() -> dict[str, Any]:
    return dict(load_yaml(ROOT / "docker-compose.yml")["services"])


def bind_mounts(service: dict[str, Any]) -> dict[str, str]:
    """Host path (relative to the repo) to container path, for ``./`` bind mounts."""
    mounts: dict[str, str] = {}
    for volume in service.get("volumes", []):
        host, container, *_ = str(volume).split(":")
        if host.startswith("./"):
            mounts[host.removeprefix("./").rstrip("/")] = container.rstrip("/")
    return mounts


def scrape_targets() -> dict[str, list[str]]:
    return {
        job["job_name"]: [t for sc in job["static_configs"] for t in sc["targets"]]
        for job in load_yaml(PROMETHEUS)["scrape_configs"]
    }


def test_the_registries_hold_both_worker_and_api_metrics() -> None:
    assert FAMILIES["cdc_rows"] == "counter"
    assert FAMILIES["cdc_lag_seconds"] == "gauge"
    assert FAMILIES["cdc_apply_duration_seconds"] == "histogram"
    assert FAMILIES["cdc_api_requests"] == "counter"


@pytest.mark.parametrize(("title", "expr"), panel_exprs())
def test_every_dashboard_query_uses_only_exposed_metrics(title: str, expr: str) -> None:
    assert metric_names(expr), f"panel {title!r} queries no cdc_ metric"
    assert not unknown_metrics(expr), f"panel {title!r}: {expr}"


@pytest.mark.parametrize(("alert", "expr"), alert_exprs())
def test_every_alert_uses_only_exposed_metrics(alert: str, expr: str) -> None:
    assert not unknown_metrics(expr), f"alert {alert!r}: {expr}"


@pytest.mark.parametrize(
    "expr",
    [
        "rate(cdc_made_up_total[5m])",
        "cdc_lag_seconds_total",
        "sum(cdc_rows)",
        "histogram_quantile(0.99, rate(cdc_apply_duration_seconds_total[5m]))",
    ],
)
def test_an_unknown_metric_or_wrong_suffix_is_caught(expr: str) -> None:
    assert unknown_metrics(expr)


def test_label_values_and_known_series_are_not_reported() -> None:
    expr = 'sum by (le) (rate(cdc_apply_duration_seconds_bucket{job="cdc_made_up"}[5m]))'
    assert metric_names(expr) == {"cdc_apply_duration_seconds_bucket"}
    assert not unknown_metrics(expr)


def test_the_dashboard_shows_every_worker_and_api_metric() -> None:
    used = {SERIES[name] for _, expr in panel_exprs() for name in metric_names(expr)}
    assert set(FAMILIES) - used == set()


def test_the_dashboard_is_schema_39_on_the_provisioned_datasource() -> None:
    dashboard = load_dashboard()
    assert dashboard["schemaVersion"] == 39
    ids = [panel["id"] for panel in walk_panels(dashboard["panels"])]
    assert len(ids) == len(set(ids))
    datasource_uid = load_yaml(DATASOURCES)["datasources"][0]["uid"]
    assert datasource_uid == "prometheus"
    for panel in data_panels():
        assert panel["datasource"]["uid"] == datasource_uid
        assert panel["targets"]
        assert all(t["datasource"]["uid"] == datasource_uid for t in panel["targets"])
        assert panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24


def test_the_datasource_points_at_the_prometheus_service() -> None:
    datasource = load_yaml(DATASOURCES)["datasources"][0]
    assert datasource["type"] == "prometheus"
    assert datasource["url"] == "http://prometheus:9090"


def test_prometheus_scrapes_the_worker_and_the_api_every_5_seconds() -> None:
    config = load_yaml(PROMETHEUS)
    assert config["global"]["scrape_interval"] == "5s"
    assert scrape_targets() == {"cdc-worker": ["worker:9108"], "cdc-api": ["api:8080"]}


def test_scrape_ports_match_the_settings_defaults() -> None:
    assert Settings.model_fields["worker_http_port"].default == 9108
    assert Settings.model_fields["api_port"].default == 8080


def test_every_alert_has_a_severity_and_a_summary() -> None:
    rules = alert_rules()
    assert rules
    for rule in rules:
        assert rule["labels"]["severity"] in {"warning", "critical"}
        assert rule["annotations"]["summary"]


def test_alerts_cover_lag_silence_dead_letters_reconnects_and_api_errors() -> None:
    used = {SERIES[name] for _, expr in alert_exprs() for name in metric_names(expr)}
    assert {
        "cdc_lag_seconds",
        "cdc_seconds_since_last_event",
        "cdc_dead_letters",
        "cdc_reconnects",
        "cdc_api_requests",
    } <= used


def test_compose_mounts_the_prometheus_config_where_its_rule_files_point() -> None:
    prometheus = compose_services()["prometheus"]
    config_dir = bind_mounts(prometheus)["deploy/prometheus"]
    assert f"--config.file={config_dir}/prometheus.yml" in prometheus["command"]
    for rule_file in load_yaml(PROMETHEUS)["rule_files"]:
        assert rule_file.startswith(f"{config_dir}/")
        assert (ROOT / "deploy/prometheus" / rule_file.removeprefix(f"{config_dir}/")).is_file()
    assert any(str(port).endswith(":9090") for port in prometheus["ports"])


def test_compose_mounts_the_grafana_provisioning_and_dashboards() -> None:
    grafana = compose_services()["grafana"]
    mounts = bind_mounts(grafana)
    assert mounts["deploy/grafana/provisioning"] == "/etc/grafana/provisioning"
    provider = load_yaml(DASHBOARD_PROVIDERS)["providers"][0]
    assert mounts["deploy/grafana/dashboards"] == provider["options"]["path"]
    assert "prometheus" in grafana["depends_on"]
    assert str(grafana["environment"]["GF_AUTH_ANONYMOUS_ENABLED"]).lower() == "true"
    assert grafana["environment"]["GF_AUTH_ANONYMOUS_ORG_ROLE"] == "Viewer"
    assert any(str(port).endswith(":3000") for port in grafana["ports"])


def test_the_worker_listens_on_every_interface_so_it_can_be_scraped() -> None:
    worker = compose_services()["worker"]
    assert worker["environment"]["CDC_WORKER_HTTP_HOST"] == "0.0.0.0"

"""The Grafana dashboard and Prometheus rules only query metrics the worker and API expose."""

from __future__ import annotations

from typing import Any

import pytest

from cdc_worker.settings import Settings
from tests.monitoring import (
    ALERTS,
    PROMETHEUS,
    PROMETHEUS_DIR,
    ROOT,
    alert_exprs,
    alert_rules,
    data_panels,
    exposed_series,
    load_dashboard,
    load_yaml,
    metric_families,
    metric_names,
    panel_queries,
    walk_panels,
)

DATASOURCES = ROOT / "deploy/grafana/provisioning/datasources/prometheus.yml"
DASHBOARD_PROVIDERS = ROOT / "deploy/grafana/provisioning/dashboards/ticket-sync.yml"
FAMILIES = metric_families()
SERIES = exposed_series(FAMILIES)


def unknown_metrics(expr: str) -> set[str]:
    """The metric identifiers of ``expr`` neither registry (nor Prometheus) exposes."""
    return {name for name in metric_names(expr) if name not in SERIES}


def panel_exprs() -> list[tuple[str, str]]:
    return [(query.panel, query.expr) for query in panel_queries()]


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


def test_the_registries_hold_worker_api_and_process_metrics() -> None:
    assert FAMILIES["cdc_rows"] == "counter"
    assert FAMILIES["cdc_source_behind_seconds"] == "gauge"
    assert FAMILIES["cdc_apply_duration_seconds"] == "histogram"
    assert FAMILIES["cdc_api_requests"] == "counter"
    assert FAMILIES["cdc_api_worker_heartbeat_age_seconds"] == "gauge"
    assert FAMILIES["process_resident_memory_bytes"] == "gauge"


@pytest.mark.parametrize(("title", "expr"), panel_exprs())
def test_every_dashboard_query_uses_only_exposed_metrics(title: str, expr: str) -> None:
    assert metric_names(expr), f"panel {title!r} queries no metric of ours"
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
        "cdc_dead_letters_total",
        'cdc_binlog_position{file="mysql-bin.000001"}',
        "process_resident_memory",
    ],
)
def test_an_unknown_metric_or_wrong_suffix_is_caught(expr: str) -> None:
    assert unknown_metrics(expr)


def test_label_values_and_known_series_are_not_reported() -> None:
    expr = 'sum by (le) (rate(cdc_apply_duration_seconds_bucket{job="cdc_made_up"}[5m]))'
    assert metric_names(expr) == {"cdc_apply_duration_seconds_bucket"}
    assert not unknown_metrics(expr)
    expr = 'up{job="cdc-worker"} == 0 or absent(up{job="cdc-worker"}) and group_left_update'
    assert metric_names(expr) == {"up"}
    assert not unknown_metrics('process_cpu_seconds_total{job="cdc-api"} + cdc_api_ready')


def test_the_dashboard_shows_every_worker_and_api_metric() -> None:
    used = {SERIES[name] for _, expr in panel_exprs() for name in metric_names(expr)}
    ours = {name for name in FAMILIES if name.startswith("cdc_")}
    assert ours - used == set()


def test_the_dashboard_shows_memory_cpu_file_descriptors_and_uptime() -> None:
    used = {SERIES[name] for _, expr in panel_exprs() for name in metric_names(expr)}
    assert {
        "process_resident_memory_bytes",
        "process_cpu_seconds",
        "process_open_fds",
        "process_start_time_seconds",
    } <= used


def test_no_query_uses_the_old_status_label_or_per_file_positions() -> None:
    queries = [expr for _, expr in panel_exprs() + alert_exprs()]
    assert not [q for q in queries if "status" in q or "cdc_binlog_position{" in q]


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


def test_every_alert_has_a_severity_a_summary_and_a_runbook() -> None:
    rules = alert_rules()
    assert rules
    for rule in rules:
        assert rule["labels"]["severity"] in {"warning", "critical"}
        assert rule["annotations"]["summary"]
        assert rule["annotations"]["runbook"]


def test_alerts_cover_silence_staleness_lag_dead_letters_resyncs_and_api_errors() -> None:
    used = {SERIES[name] for _, expr in alert_exprs() for name in metric_names(expr)}
    assert {
        "up",
        "cdc_api_worker_heartbeat_age_seconds",
        "cdc_api_ready",
        "cdc_source_behind_seconds",
        "cdc_last_source_contact_timestamp_seconds",
        "cdc_dead_letter_rows",
        "cdc_dead_letters_stream_length",
        "cdc_resyncs",
        "cdc_snapshot_tickets_done",
        "cdc_snapshot_tickets_total",
        "cdc_reconnects",
        "cdc_api_requests",
    } <= used


def test_rule_files_are_relative_so_they_resolve_in_a_checkout_and_in_the_container() -> None:
    prometheus = compose_services()["prometheus"]
    config_dir = bind_mounts(prometheus)["deploy/prometheus"]
    # Prometheus resolves a relative rule file against the config file's folder: that is
    # deploy/prometheus in a checkout and the folder compose mounts it at in the container.
    assert f"--config.file={config_dir}/prometheus.yml" in prometheus["command"]
    rule_files = load_yaml(PROMETHEUS)["rule_files"]
    assert rule_files == [ALERTS.name]
    for rule_file in rule_files:
        assert not rule_file.startswith("/")
        assert (PROMETHEUS_DIR / rule_file).is_file()
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

"""The alert rules' shape: every alert has promtool cases both ways and a documented runbook.

promtool itself runs in tests/integration/test_promtool.py (it is a binary, not a library).
"""

from __future__ import annotations

import re

import pytest

from tests.monitoring import (
    ALERTS,
    ALERTS_DOC,
    RULE_TESTS,
    alert_exprs,
    alert_rules,
    exposed_series,
    load_yaml,
    metric_families,
    metric_names,
    rule_test_cases,
)

ALERT_NAMES = [rule["alert"] for rule in alert_rules()]
PROBES = ("/readyz", "/healthz", "/metrics")


def test_alert_names_are_unique() -> None:
    assert len(ALERT_NAMES) == len(set(ALERT_NAMES))


def test_the_rule_tests_load_the_shipped_rules() -> None:
    assert RULE_TESTS
    for path in RULE_TESTS:
        rule_files = load_yaml(path)["rule_files"]
        assert [(path.parent / f).resolve() for f in rule_files] == [ALERTS.resolve()]


@pytest.mark.parametrize("alert", ALERT_NAMES)
def test_every_alert_has_a_case_where_it_fires_and_one_where_it_stays_quiet(alert: str) -> None:
    outcomes = {fires for _, name, fires in rule_test_cases() if name == alert}
    assert outcomes == {True, False}, f"{alert}: promtool cases expect {outcomes or 'nothing'}"


def test_rule_tests_name_only_existing_alerts() -> None:
    assert {name for _, name, _ in rule_test_cases()} <= set(ALERT_NAMES)


@pytest.mark.parametrize("job", ["cdc-worker", "cdc-api"])
def test_a_target_missing_altogether_counts_as_down(job: str) -> None:
    exprs = [expr for _, expr in alert_exprs()]
    assert any(f'absent(up{{job="{job}"}})' in expr for expr in exprs)


def test_the_api_error_ratio_leaves_the_probes_out() -> None:
    expr = dict(alert_exprs())["CdcApi5xxRateHigh"]
    excluded = re.findall(r'route!~"([^"]+)"', expr)
    assert excluded
    assert all(set(pattern.split("|")) == set(PROBES) for pattern in excluded)
    assert 'code=~"5.."' in expr


def test_counters_are_alerted_on_through_increase_or_rate() -> None:
    families = metric_families()
    series = exposed_series(families)
    for alert, expr in alert_exprs():
        for name in metric_names(expr):
            if families.get(series[name]) == "counter":
                assert re.search(rf"(increase|rate)\({name}\b", expr), f"{alert}: raw {name}"


def test_the_stale_heartbeat_alert_reads_the_apis_gauge() -> None:
    # The API measures the heartbeat's age, so the alert still works while the worker is dead.
    assert "cdc_api_worker_heartbeat_age_seconds" in dict(alert_exprs())["CdcWorkerHeartbeatStale"]


@pytest.mark.parametrize("alert", ALERT_NAMES)
def test_every_alert_has_a_section_in_the_operations_page(alert: str) -> None:
    headings = re.findall(r"^#+ +(\S+)", ALERTS_DOC.read_text(), flags=re.MULTILINE)
    assert alert in headings, f"docs/operations.md has no heading for {alert}"


def test_every_alert_links_its_section_of_the_operations_page() -> None:
    for rule in alert_rules():
        runbook = rule["annotations"]["runbook"]
        assert runbook == f"docs/{ALERTS_DOC.name}#{rule['alert'].lower()}"

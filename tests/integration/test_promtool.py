"""promtool on the shipped Prometheus files: the config, the rules, the rules' unit tests and
every dashboard query parse and pass. Needs Debian's `prometheus` package (scripts/ensure-servers
installs it); a missing promtool fails with how to install it, it never skips."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import yaml

from tests.monitoring import (
    ALERTS,
    PROMETHEUS,
    PROMETHEUS_DIR,
    RULE_TESTS,
    alert_rules,
    panel_queries,
    promtool,
)

TIMEOUT_S = 60


def run_promtool(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [promtool(), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        cwd=cwd,
        check=False,
    )


def test_the_config_passes_check_config_from_any_working_directory(tmp_path: Path) -> None:
    result = run_promtool("check", "config", PROMETHEUS, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in result.stdout + result.stderr


def test_the_config_passes_where_compose_mounts_it(tmp_path: Path) -> None:
    # docker-compose mounts deploy/prometheus as one folder (/etc/prometheus): a copy of the
    # folder anywhere must still find its rule files.
    mounted = tmp_path / "etc/prometheus"
    shutil.copytree(PROMETHEUS_DIR, mounted)
    result = run_promtool("check", "config", mounted / PROMETHEUS.name, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_alert_rules_pass_check_rules() -> None:
    result = run_promtool("check", "rules", ALERTS)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_rules_pass_their_unit_tests() -> None:
    result = run_promtool("test", "rules", *RULE_TESTS)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("SUCCESS") == len(RULE_TESTS)


def test_the_unit_tests_catch_alerts_that_never_fire(tmp_path: Path) -> None:
    # Every alert's expression replaced by one that is never true: each alert's firing case
    # must now fail, so the tests really depend on the rules.
    rules = yaml.safe_load(ALERTS.read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            rule["expr"] = "vector(1) > 2"
    copy = tmp_path / "prometheus"
    shutil.copytree(PROMETHEUS_DIR, copy)
    (copy / ALERTS.name).write_text(yaml.safe_dump(rules))
    result = run_promtool("test", "rules", *sorted((copy / "tests").glob("*.yml")))
    assert result.returncode != 0
    report = result.stdout + result.stderr
    silenced = {rule["alert"] for rule in alert_rules()}
    assert {a for a in silenced if f"alertname: {a}," not in report} == set()


def test_every_dashboard_query_parses(tmp_path: Path) -> None:
    # Each panel query, with Grafana's variables expanded, as a recording rule: check rules
    # parses every one of them as PromQL.
    records = [
        {"record": f"dashboard:query_{i}", "expr": query.expanded()}
        for i, query in enumerate(panel_queries())
    ]
    path = tmp_path / "dashboard-rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": records}]}))
    result = run_promtool("check", "rules", path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(records)} rules found" in result.stdout

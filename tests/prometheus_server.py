"""A private Prometheus for tests: Debian's binary with our config, data folder and free port,
scraping every second, queried through its HTTP API.

The binary comes from Debian's `prometheus` package (`scripts/ensure-servers --for-tests`
installs it); a missing binary fails with how to install it, it never skips.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml

from cdc_worker.devtools.localservers import free_port, stop_process
from tests.monitoring import ALERTS, PROMTOOL_HINT, load_yaml

SCRAPE_INTERVAL = "1s"
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class Evaluation:
    """What Prometheus answered for one query: an error, or series."""

    error: str | None
    series: list[dict[str, Any]]

    def values(self) -> list[float]:
        """Every sample value of every series (instant or range)."""
        samples = [v for s in self.series for v in s.get("values", [s.get("value")]) if v]
        return [float(value) for _, value in samples]


@dataclass
class PrometheusServer:
    """A running Prometheus and a client of its HTTP API."""

    url: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def get(self, path: str, **params: object) -> dict[str, Any]:
        response = httpx.get(f"{self.url}/api/v1/{path}", params=params, timeout=10)
        payload: dict[str, Any] = response.json()
        return payload

    def query(self, expr: str) -> Evaluation:
        """An instant query, now."""
        return self._evaluation(self.get("query", query=expr))

    def query_range(self, expr: str, start_s: float, end_s: float) -> Evaluation:
        """A range query, one point per scrape interval, as a Grafana panel runs it."""
        payload = self.get("query_range", query=expr, start=start_s, end=end_s, step=1)
        return self._evaluation(payload)

    def rules(self) -> list[dict[str, Any]]:
        """Every loaded rule with its health, last error and (for alerts) state."""
        groups = self.get("rules")["data"]["groups"]
        return [rule for group in groups for rule in group["rules"]]

    def alert_states(self) -> dict[str, set[str]]:
        """Alert name to the states (pending, firing) its active alerts are in."""
        states: dict[str, set[str]] = {}
        for alert in self.get("alerts")["data"]["alerts"]:
            states.setdefault(alert["labels"]["alertname"], set()).add(alert["state"])
        return states

    def wait_until(self, what: str, check: Callable[[], bool], timeout_s: float) -> float:
        """Poll ``check`` until it holds; returns the seconds it took."""
        started = time.monotonic()
        while not check():
            assert self.process.poll() is None, f"Prometheus exited; see {self.log_path}"
            assert time.monotonic() - started < timeout_s, f"not within {timeout_s} s: {what}"
            time.sleep(0.25)
        return time.monotonic() - started

    @staticmethod
    def _evaluation(payload: dict[str, Any]) -> Evaluation:
        if payload.get("status") != "success":
            return Evaluation(f"{payload.get('errorType')}: {payload.get('error')}", [])
        return Evaluation(None, list(payload["data"]["result"]))


def prometheus_binary() -> str:
    path = shutil.which("prometheus") or shutil.which("prometheus", path="/usr/bin:/usr/sbin")
    assert path, PROMTOOL_HINT.replace("promtool is missing", "the prometheus binary is missing")
    return path


def rules_with(changes: dict[str, tuple[str, str]]) -> dict[str, Any]:
    """The shipped alert rules with, per alert, one piece of its YAML replaced (a shorter
    threshold or ``for``): each piece must exist, so a changed shipped rule fails loudly."""
    rules = load_yaml(ALERTS)
    changed = set()
    for group in rules["groups"]:
        for rule in group["rules"]:
            if rule["alert"] in changes:
                old, new = changes[rule["alert"]]
                text = yaml.safe_dump(rule, sort_keys=False)
                assert old in text, f"{rule['alert']} has no {old!r} any more: {text}"
                rule.clear()
                rule.update(yaml.safe_load(text.replace(old, new)))
                changed.add(rule["alert"])
    assert changed == set(changes), f"no such alerts: {set(changes) - changed}"
    return rules


def scrape_config(targets: dict[str, str], rule_file: str) -> dict[str, Any]:
    """The shipped job names, our targets (job to host:port), a 1 s scrape and evaluation."""
    return {
        "global": {
            "scrape_interval": SCRAPE_INTERVAL,
            "scrape_timeout": SCRAPE_INTERVAL,
            "evaluation_interval": SCRAPE_INTERVAL,
        },
        "rule_files": [rule_file],
        "scrape_configs": [
            {"job_name": job, "static_configs": [{"targets": [target]}]}
            for job, target in targets.items()
        ],
    }


@contextmanager
def running_prometheus(
    base_dir: Path, targets: dict[str, str], rules: dict[str, Any]
) -> Iterator[PrometheusServer]:
    """Start Prometheus on a free port with its own config and data folder; stop it after."""
    base_dir.mkdir(parents=True, exist_ok=True)
    (base_dir / "alerts.yml").write_text(yaml.safe_dump(rules, sort_keys=False))
    config = base_dir / "prometheus.yml"
    config.write_text(yaml.safe_dump(scrape_config(targets, "alerts.yml"), sort_keys=False))
    port, log_path = free_port(), base_dir / "prometheus.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [
                prometheus_binary(),
                f"--config.file={config}",
                f"--storage.tsdb.path={base_dir / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--log.level=warn",
            ],
            stdout=log,
            stderr=log,
        )
    server = PrometheusServer(f"http://127.0.0.1:{port}", process, log_path)
    try:
        server.wait_until("Prometheus ready", lambda: _ready(server.url), START_TIMEOUT_S)
        yield server
    finally:
        stop_process(process, STOP_TIMEOUT_S)


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/-/ready", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False

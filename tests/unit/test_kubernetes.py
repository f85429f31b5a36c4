"""The Kubernetes manifests name only real settings and probe only real routes."""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry

from cdc_worker.api.app import create_app
from cdc_worker.observability.worker_http import serve
from cdc_worker.settings import ENV_PREFIX, Settings, load_settings

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = ROOT / "deploy" / "kubernetes"


def documents() -> list[dict[str, Any]]:
    found = []
    for path in sorted(MANIFESTS.glob("*.yaml")):
        found += [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    return found


def of_kind(kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in documents() if d.get("kind") == kind}


def containers() -> Iterator[tuple[str, dict[str, Any]]]:
    for name, deployment in of_kind("Deployment").items():
        for container in deployment["spec"]["template"]["spec"]["containers"]:
            yield name, container


def cdc_names() -> set[str]:
    names = set(of_kind("ConfigMap")["ticket-sync"]["data"])
    names |= set(of_kind("Secret")["ticket-sync"]["stringData"])
    names |= {e["name"] for _, c in containers() for e in c.get("env", [])}
    return names


def test_every_cdc_name_in_the_manifests_is_a_setting() -> None:
    fields = {f"{ENV_PREFIX}{name.upper()}" for name in Settings.model_fields}
    assert cdc_names()
    assert {name for name in cdc_names() if name.startswith(ENV_PREFIX)} - fields == set()
    assert all(name.startswith(ENV_PREFIX) for name in cdc_names())


def test_the_configmap_and_secret_values_pass_the_settings_checks() -> None:
    values = {**of_kind("ConfigMap")["ticket-sync"]["data"]}
    values |= of_kind("Secret")["ticket-sync"]["stringData"]
    settings = load_settings(**{k.removeprefix(ENV_PREFIX).lower(): v for k, v in values.items()})
    assert len(settings.sentinels) == 3


def test_passwords_live_in_the_secret_not_the_configmap() -> None:
    public = of_kind("ConfigMap")["ticket-sync"]["data"]
    assert not [name for name in public if "PASSWORD" in name or "URL" in name or "TOKEN" in name]


def test_two_workers_and_an_autoscaled_api() -> None:
    worker = of_kind("Deployment")["ticket-sync-worker"]
    assert worker["spec"]["replicas"] == 2
    hpa = of_kind("HorizontalPodAutoscaler")["ticket-sync-api"]
    assert hpa["spec"]["scaleTargetRef"]["name"] in of_kind("Deployment")
    assert hpa["spec"]["minReplicas"] >= 2


def probes(deployment: str) -> list[tuple[str, int | str]]:
    found = []
    for name, container in containers():
        for probe in ("livenessProbe", "readinessProbe"):
            if name == deployment and probe in container:
                found.append(
                    (container[probe]["httpGet"]["path"], container[probe]["httpGet"]["port"])
                )
    return found


def test_every_api_probe_path_is_a_route_of_the_api() -> None:
    routes = {getattr(route, "path", "") for route in create_app(load_settings()).routes}
    paths = [path for path, _ in probes("ticket-sync-api")]
    assert {"/healthz", "/readyz"} <= set(paths)
    assert set(paths) - routes == set()


@pytest.fixture
def worker_http() -> Iterator[int]:
    server = serve("127.0.0.1", 0, CollectorRegistry(), lambda: None)  # a healthy loop
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def test_every_worker_probe_path_answers_200_on_the_worker_endpoint(worker_http: int) -> None:
    paths = [path for path, _ in probes("ticket-sync-worker")]
    assert paths
    for path in paths:
        with urllib.request.urlopen(f"http://127.0.0.1:{worker_http}{path}", timeout=5) as reply:
            assert reply.status == 200, path


def test_probe_ports_are_the_ports_the_processes_listen_on() -> None:
    for name, container in containers():
        env = {e["name"]: e["value"] for e in container.get("env", [])}
        port_of = {p["name"]: p["containerPort"] for p in container["ports"]}
        listening = env["CDC_WORKER_HTTP_PORT" if "worker" in name else "CDC_API_PORT"]
        for _, port in probes(name):
            assert port_of[str(port)] == int(listening)

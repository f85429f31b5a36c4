"""The demo stack wires every service the way the worker needs (no Docker needed to check)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
BINLOG_FLAGS = (
    "--server-id=1",
    "--log-bin=mysql-bin",
    "--binlog-format=ROW",
    "--binlog-row-image=FULL",
    "--binlog-row-metadata=FULL",
    "--gtid-mode=ON",
    "--enforce-gtid-consistency=ON",
    "--character-set-server=utf8mb4",
    "--collation-server=utf8mb4_unicode_ci",
)
APP_SERVICES = ("migrate", "worker", "api")


@pytest.fixture(scope="module")
def services() -> dict[str, Any]:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return dict(compose["services"])


def environment(service: dict[str, Any]) -> dict[str, str]:
    return {str(key): str(value) for key, value in service["environment"].items()}


@pytest.mark.parametrize("flag", BINLOG_FLAGS)
def test_mysql_runs_with_every_binlog_flag_the_worker_needs(
    services: dict[str, Any], flag: str
) -> None:
    assert flag in services["mysql"]["command"]


@pytest.mark.parametrize("name", APP_SERVICES)
def test_app_services_get_a_mysql_url_and_redis_database_1(
    services: dict[str, Any], name: str
) -> None:
    env = environment(services[name])
    assert env["CDC_MYSQL_URL"].startswith("mysql+pymysql://")
    assert env["CDC_MYSQL_URL"].endswith("@mysql:3306/helpdesk")
    assert env["CDC_REDIS_URL"].endswith("/1")


def test_worker_gets_a_server_id(services: dict[str, Any]) -> None:
    assert "CDC_SERVER_ID" in environment(services["worker"])


def test_worker_and_api_use_the_least_privilege_user(services: dict[str, Any]) -> None:
    for name in ("worker", "api"):
        assert environment(services[name])["CDC_MYSQL_URL"].startswith("mysql+pymysql://cdc:")


def test_passwords_come_from_the_environment(services: dict[str, Any]) -> None:
    mysql_env = environment(services["mysql"])
    assert mysql_env["MYSQL_ROOT_PASSWORD"].startswith("${")
    assert mysql_env["MYSQL_PASSWORD"].startswith("${")


def test_services_run_the_cdc_worker_subcommands(services: dict[str, Any]) -> None:
    assert services["migrate"]["command"] == ["migrate"]
    assert services["worker"]["command"] == ["run"]
    assert services["api"]["command"][:3] == ["api", "--host", "0.0.0.0"]
    assert any(str(port).endswith(":8080") for port in services["api"]["ports"])


def test_init_sql_grants_replication_and_select_only() -> None:
    sql = (ROOT / "docker/mysql-init/01-cdc-user.sql").read_text()
    assert "GRANT REPLICATION SLAVE, REPLICATION CLIENT, RELOAD ON *.* TO 'cdc'@'%'" in sql
    assert "GRANT SELECT ON helpdesk.* TO 'cdc'@'%'" in sql


def test_dockerfile_runs_cdc_worker_as_a_non_root_user() -> None:
    lines = (ROOT / "Dockerfile").read_text().splitlines()
    entrypoint = next(line for line in lines if line.startswith("ENTRYPOINT "))
    assert json.loads(entrypoint.removeprefix("ENTRYPOINT ")) == ["cdc-worker"]
    users = [line.split()[1] for line in lines if line.startswith("USER ")]
    assert users
    assert users[-1] not in {"root", "0"}


def test_the_image_installs_the_versions_make_pins() -> None:
    lines = (ROOT / "Dockerfile").read_text().splitlines()
    installs = [line for line in lines if "pip install" in line]
    assert installs
    assert all("-c requirements.lock" in line for line in installs)
    copied = " ".join(line for line in lines if line.startswith("COPY "))
    assert "requirements.lock" in copied
    lock = (ROOT / "requirements.lock").read_text().splitlines()
    pinned = {line.split("==")[0].lower() for line in lock}
    assert "cryptography" in pinned  # the one package the Dockerfile names besides ours


HA_WORKERS = ("worker-a", "worker-b")


def sentinel_lines(service: dict[str, Any]) -> list[str]:
    """The configuration lines a Sentinel service writes before it starts."""
    script = service["command"][-1]
    return [part.strip("' ") for part in script.split("' '")]


def test_the_ha_profile_runs_two_workers_through_three_sentinels(
    services: dict[str, Any],
) -> None:
    ha = {name for name, s in services.items() if "ha" in s.get("profiles", [])}
    assert {*HA_WORKERS, "redis-ha-primary", "redis-ha-replica", "api-ha"} <= ha
    sentinels = sorted(name for name in ha if name.startswith("redis-sentinel-"))
    assert len(sentinels) == 3
    for name in HA_WORKERS:
        env = environment(services[name])
        assert services[name]["command"] == ["run"]
        listed = [entry.split(":")[0] for entry in env["CDC_REDIS_SENTINELS"].split(",")]
        assert sorted(listed) == sentinels
        assert env["CDC_REDIS_URL"].endswith("/1")
    assert environment(services["api-ha"])["CDC_API_READ_FROM"] == "replica"


def test_the_sentinels_watch_the_pair_under_the_workers_service_name(
    services: dict[str, Any],
) -> None:
    service_name = environment(services["worker-a"])["CDC_REDIS_SENTINEL_SERVICE"]
    replica = services["redis-ha-replica"]["command"]
    assert replica[replica.index("--replicaof") + 1] == "redis-ha-primary"
    for name in ("redis-sentinel-1", "redis-sentinel-2", "redis-sentinel-3"):
        lines = sentinel_lines(services[name])
        assert f"sentinel monitor {service_name} redis-ha-primary 6379 2" in " ".join(lines)


def test_every_cdc_name_in_compose_is_a_setting(services: dict[str, Any]) -> None:
    from cdc_worker.settings import ENV_PREFIX, Settings

    fields = {f"{ENV_PREFIX}{name.upper()}" for name in Settings.model_fields}
    used = {k for s in services.values() for k in s.get("environment", {}) if k.startswith("CDC_")}
    assert used - fields == set()

"""One-shot commands (resync, check, migrate, seed) and the API say in one line what stands
in the way: wrong credentials exit 2, an unreachable server exits 1; never a traceback."""

from __future__ import annotations

import subprocess
import sys

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import make_url
from structlog.testing import capture_logs

from cdc_worker.api.app import create_app
from cdc_worker.devtools.localservers import MariaDBServer, RedisServer, free_port
from cdc_worker.settings import load_settings
from tests.harness import worker_env

CLI = [sys.executable, "-m", "cdc_worker.cli"]
SECRET = "wrong-pass-9c"


def run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    env = {**env, "CDC_LOG_FORMAT": "console"}
    return subprocess.run([*CLI, *args], env=env, capture_output=True, text=True, timeout=60)


def mysql_url(mariadb: MariaDBServer, **parts: object) -> str:
    return make_url(mariadb.root_url).set(**parts).render_as_string(hide_password=False)


@pytest.mark.parametrize(
    ("args", "broken", "code", "says"),
    [
        (["resync", "--ticket", "1"], "redis password", 2, "refused the credentials"),
        (["resync", "--ticket", "1"], "redis down", 1, "is unreachable"),
        (["check"], "redis password", 1, "refused the credentials"),
        (["migrate"], "mysql password", 2, "refused the user and password"),
        (["migrate"], "mysql down", 1, "is unreachable"),
        (["seed", "--tickets", "5"], "mysql password", 2, "refused the user and password"),
        (["seed", "--tickets", "5"], "mysql down", 1, "is unreachable"),
    ],
)
def test_a_one_shot_command_says_in_one_line_what_stands_in_the_way(
    mariadb: MariaDBServer,
    redis_server: RedisServer,
    args: list[str],
    broken: str,
    code: int,
    says: str,
) -> None:
    redis_url = {
        "redis password": f"redis://ghost:{SECRET}@127.0.0.1:{redis_server.port}/1",
        "redis down": f"redis://:{SECRET}@127.0.0.1:{free_port()}/1",
    }.get(broken, redis_server.url)
    admin_url = {
        "mysql password": mysql_url(mariadb, username="cdc", password=SECRET),
        "mysql down": mysql_url(mariadb, password=SECRET, port=free_port()),
    }.get(broken, mariadb.root_url)
    env = worker_env(mariadb.cdc_url, redis_url, CDC_ADMIN_MYSQL_URL=admin_url)
    result = run(args, env)
    output = result.stdout + result.stderr
    assert result.returncode == code, output
    assert "Traceback" not in output
    assert len(output.strip().splitlines()) == 1, output
    assert says in output
    assert ("CDC_REDIS_URL" if "redis" in broken else "CDC_ADMIN_MYSQL_URL") in output
    assert SECRET not in output


def test_the_api_logs_that_redis_refused_its_password(redis_server: RedisServer) -> None:
    url = f"redis://ghost:{SECRET}@127.0.0.1:{redis_server.port}/1"
    settings = load_settings(redis_url=url)
    with capture_logs() as logs, TestClient(create_app(settings)) as client:
        assert client.get("/readyz").json()["reasons"] == [
            "redis refused the credentials of CDC_REDIS_URL"
        ]
        assert client.get("/tickets/1").status_code == 503
    [line] = [entry for entry in logs if "refused the credentials" in entry["event"]]
    assert f"Redis at 127.0.0.1:{redis_server.port}" in line["event"]
    assert line["log_level"] == "error"
    assert SECRET not in str(logs)

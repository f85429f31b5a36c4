"""The worker refuses to start, saying what to change, when results would be wrong."""

from __future__ import annotations

import subprocess
import sys

import pymysql
import pytest
from sqlalchemy import make_url

from cdc_worker.devtools.localservers import MariaDBServer
from tests.harness import worker_env


def run_worker(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cdc_worker.cli", "run"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("flag", "advice"),
    [
        ("--binlog-row-metadata=MINIMAL", "binlog_row_metadata=FULL"),
        ("--binlog-format=STATEMENT", "binlog_format=ROW"),
        ("--binlog-row-image=MINIMAL", "binlog_row_image=FULL"),
        ("--binlog-alter-two-phase=ON", "binlog_alter_two_phase=OFF"),
    ],
)
def test_wrong_binlog_settings_stop_the_worker_with_what_to_set(
    own_mariadb: MariaDBServer, redis_url: str, flag: str, advice: str
) -> None:
    own_mariadb.stop()
    server = own_mariadb.restart([flag])
    result = run_worker(worker_env(server.cdc_url, redis_url))
    assert result.returncode == 2, result.stderr
    assert advice in result.stderr
    assert "cdc-local-secret" not in result.stderr + result.stdout


def test_missing_replication_grants_stop_the_worker_naming_the_privilege(
    mariadb: MariaDBServer, redis_url: str
) -> None:
    with (
        pymysql.connect(host="127.0.0.1", port=mariadb.port, user="root") as conn,
        conn.cursor() as cur,
    ):
        cur.execute("CREATE USER IF NOT EXISTS 'weak'@'127.0.0.1' IDENTIFIED BY 'weak-pass-1'")
        cur.execute(f"GRANT SELECT ON `{mariadb.database}`.* TO 'weak'@'127.0.0.1'")
    url = make_url(mariadb.cdc_url).set(username="weak", password="weak-pass-1")
    result = run_worker(worker_env(url.render_as_string(hide_password=False), redis_url))
    assert result.returncode == 2
    assert "REPLICATION SLAVE" in result.stderr
    assert "REPLICATION CLIENT" in result.stderr
    assert "weak-pass-1" not in result.stderr + result.stdout


def test_an_unreachable_source_is_reported_without_the_password(redis_url: str) -> None:
    env = worker_env("mysql+pymysql://cdc:hunter2-secret@127.0.0.1:1/helpdesk", redis_url)
    result = run_worker(env)
    assert result.returncode == 2
    assert "cannot connect to CDC_MYSQL_URL" in result.stderr
    assert "hunter2-secret" not in result.stderr + result.stdout


@pytest.mark.parametrize(
    ("variable", "value", "named"),
    [
        ("CDC_SERVER_ID", "0", "CDC_SERVER_ID"),
        ("CDC_SERVER_ID", "many", "CDC_SERVER_ID"),
        ("CDC_MYSQL_URL", "postgresql://u:topsecret-pw@h/db", "CDC_MYSQL_URL"),
        ("CDC_MYSQL_URL", "mysql+pymysql://u:topsecret-pw@h", "CDC_MYSQL_URL"),
        ("CDC_REDIS_URL", "http://u:topsecret-pw@h", "CDC_REDIS_URL"),
        ("CDC_BATCH_MAX_ROWS", "-5", "CDC_BATCH_MAX_ROWS"),
        ("CDC_LOG_LEVEL", "loud", "CDC_LOG_LEVEL"),
    ],
)
def test_bad_configuration_exits_2_naming_the_variable_and_hiding_secrets(
    variable: str, value: str, named: str
) -> None:
    env = worker_env("mysql+pymysql://cdc:topsecret-pw@127.0.0.1:1/helpdesk", "redis://x:6379/1")
    env[variable] = value
    result = run_worker(env)
    assert result.returncode == 2
    assert named in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "topsecret-pw" not in result.stderr + result.stdout


def test_a_source_without_the_schema_stops_the_worker_saying_to_migrate(
    mariadb: MariaDBServer, redis_url: str
) -> None:
    _, cdc_url = mariadb.create_database("no_schema_yet")
    result = run_worker(worker_env(cdc_url, redis_url))
    assert result.returncode == 2
    assert "run `cdc-worker migrate`" in result.stderr
    assert "Traceback" not in result.stderr

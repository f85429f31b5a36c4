"""The worker refuses to start, saying what to change, when results would be wrong."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pymysql
import pytest
from sqlalchemy import create_engine, make_url

from cdc_worker.devtools.localservers import MariaDBServer, RedisServer
from cdc_worker.devtools.seed import seed
from cdc_worker.schema.models import Base
from tests.conftest import SourceDatabase
from tests.harness import spawn_worker, wait_synced, worker_env


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


def test_a_wrong_mysql_password_exits_2_at_once_with_one_line(
    mariadb: MariaDBServer, redis_url: str
) -> None:
    url = make_url(mariadb.cdc_url).set(password="wrong-pass-4f")
    result = run_worker(worker_env(url.render_as_string(hide_password=False), redis_url))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    [line] = [line for line in result.stderr.splitlines() if "refused" in line]
    assert f"MySQL at 127.0.0.1:{mariadb.port} refused the user and password" in line
    assert "CDC_MYSQL_URL" in line
    assert "wrong-pass-4f" not in result.stderr + result.stdout


def test_a_wrong_redis_password_exits_2_at_once_with_one_line(
    source_db: SourceDatabase, redis_server: RedisServer
) -> None:
    url = f"redis://ghost:wrong-pass-4f@127.0.0.1:{redis_server.port}/1"
    result = run_worker(worker_env(source_db.cdc_url, url))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    [line] = [line for line in result.stderr.splitlines() if "refused" in line]
    assert f"Redis at 127.0.0.1:{redis_server.port} refused the credentials" in line
    assert "CDC_REDIS_URL" in line
    assert "wrong-pass-4f" not in result.stderr + result.stdout


def test_a_redis_port_out_of_range_exits_2_with_one_line(source_db: SourceDatabase) -> None:
    result = run_worker(worker_env(source_db.cdc_url, "redis://:pw-4f@127.0.0.1:99999/1"))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "cdc-worker: invalid configuration: CDC_REDIS_URL: Value error, its port is not a TCP "
        "port (1-65535)"
    ]


def test_a_database_that_does_not_exist_is_reported_missing_not_unprivileged(
    mariadb: MariaDBServer, redis_url: str
) -> None:
    with (
        pymysql.connect(host="127.0.0.1", port=mariadb.port, user="root") as conn,
        conn.cursor() as cur,
    ):  # a grant on a database nobody created yet
        cur.execute("GRANT SELECT ON `not_created_yet`.* TO 'cdc'@'127.0.0.1'")
    for database in ("not_created_yet", "no_such_db"):
        url = make_url(mariadb.cdc_url).set(database=database)
        result = run_worker(worker_env(url.render_as_string(hide_password=False), redis_url))
        assert result.returncode == 2
        assert f"database `{database}` does not exist on 127.0.0.1:{mariadb.port}" in result.stderr
        assert "lacks privileges" not in result.stderr


def wait_for_line(log: Path, text: str, worker: subprocess.Popen[bytes]) -> str:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        found = [line for line in log.read_text().splitlines() if text in line]
        if found:
            return found[0]
        assert worker.poll() is None, log.read_text()[-2000:]
        time.sleep(0.1)
    raise AssertionError(f"no {text!r} in the log:\n{log.read_text()[-2000:]}")


def stop(worker: subprocess.Popen[bytes]) -> None:
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(30) == 0


def test_the_worker_waits_for_a_mysql_that_is_not_up_yet_then_streams(
    own_mariadb: MariaDBServer, redis_url: str, tmp_path: Path
) -> None:
    engine = create_engine(own_mariadb.root_url)
    Base.metadata.create_all(engine)
    seed(engine, 20, seed=3)
    engine.dispose()
    own_mariadb.stop()
    log = tmp_path / "worker.log"
    worker = spawn_worker(worker_env(own_mariadb.cdc_url, redis_url), log)
    try:
        waiting = wait_for_line(log, f"waiting for MySQL at 127.0.0.1:{own_mariadb.port}", worker)
        assert "cdc:***@" in waiting
        wait_for_line(log, "retry_in_s", worker)
        own_mariadb.restart()
        wait_for_line(log, '"streaming"', worker)
        engine = create_engine(own_mariadb.root_url)
        wait_synced(engine, redis_url)
        engine.dispose()
    finally:
        stop(worker)
    text = log.read_text()
    assert "session ended" not in text
    assert "cdc-local-secret" not in text


def test_the_worker_waits_for_a_redis_that_is_not_up_yet_then_streams(
    source_db: SourceDatabase, own_redis: RedisServer, tmp_path: Path
) -> None:
    seed(source_db.engine, 20, seed=4)
    own_redis.stop()
    log = tmp_path / "worker.log"
    worker = spawn_worker(worker_env(source_db.cdc_url, own_redis.url), log)
    try:
        wait_for_line(log, f"waiting for Redis at 127.0.0.1:{own_redis.port}", worker)
        own_redis.restart()
        wait_for_line(log, '"streaming"', worker)
        wait_synced(source_db.engine, own_redis.url)
    finally:
        stop(worker)
    text = log.read_text()
    assert "session ended" not in text
    assert "cannot start a session" not in text


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

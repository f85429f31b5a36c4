"""The private servers tests and the demo run on start with the settings the worker needs."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pymysql
import pytest
import redis
from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError, ProgrammingError

from cdc_worker.devtools import localservers
from cdc_worker.devtools.localservers import MariaDBServer, RedisServer
from cdc_worker.errors import LocalServerError

if TYPE_CHECKING:
    from tests.conftest import SourceDatabase


def query(url: str, sql: str) -> list[Any]:
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            return list(connection.execute(text(sql)).all())
    finally:
        engine.dispose()


def execute(url: str, *statements: str) -> None:
    engine = create_engine(url)
    try:
        with engine.begin() as connection:
            for statement in statements:
                connection.execute(text(statement))
    finally:
        engine.dispose()


def variable(url: str, name: str) -> Any:
    return query(url, f"SELECT @@{name}")[0][0]


def test_mariadb_writes_a_row_binlog_with_full_images_and_full_metadata(
    mariadb: MariaDBServer,
) -> None:
    assert variable(mariadb.root_url, "log_bin") == 1
    assert variable(mariadb.root_url, "binlog_format") == "ROW"
    assert variable(mariadb.root_url, "binlog_row_image") == "FULL"
    assert variable(mariadb.root_url, "binlog_row_metadata") == "FULL"
    assert variable(mariadb.root_url, "server_id") == 1


def test_mariadb_defaults_to_utf8mb4_and_allows_64_mb_packets(mariadb: MariaDBServer) -> None:
    assert variable(mariadb.root_url, "character_set_server") == "utf8mb4"
    assert variable(mariadb.root_url, "collation_server") == "utf8mb4_unicode_ci"
    assert variable(mariadb.root_url, "max_allowed_packet") == 64 * 1024 * 1024


def test_mariadb_listens_on_its_own_port_on_loopback_only(mariadb: MariaDBServer) -> None:
    assert variable(mariadb.root_url, "port") == mariadb.port
    assert variable(mariadb.root_url, "bind_address") == "127.0.0.1"


def test_cdc_user_has_only_replication_grants_globally_and_select_on_the_database(
    source_db: SourceDatabase,
) -> None:
    grants = [row[0] for row in query(source_db.cdc_url, "SHOW GRANTS FOR CURRENT_USER")]
    on_everything = next(grant for grant in grants if " ON *.* " in grant)
    privileges = re.match(r"GRANT (.+) ON \*\.\* TO", on_everything)
    assert privileges is not None
    # MariaDB shows REPLICATION CLIENT under its newer name, BINLOG MONITOR.
    assert set(privileges.group(1).split(", ")) == {"REPLICATION SLAVE", "BINLOG MONITOR"}
    assert f"GRANT SELECT ON `{source_db.name}`.* TO `cdc`@`127.0.0.1`" in grants


def test_cdc_user_can_select_but_not_insert(source_db: SourceDatabase) -> None:
    assert query(source_db.cdc_url, "SELECT COUNT(*) FROM tickets") == [(0,)]
    with pytest.raises((OperationalError, ProgrammingError), match="INSERT command denied"):
        execute(source_db.cdc_url, "INSERT INTO departments (name, created_at) VALUES ('x', NOW())")


def test_source_db_is_a_fresh_utf8mb4_database_with_the_schema(source_db: SourceDatabase) -> None:
    tables = {row[0] for row in query(source_db.root_url, "SHOW TABLES")}
    assert {"tickets", "departments", "users"} <= tables
    charset = query(source_db.root_url, "SELECT @@character_set_database")[0][0]
    assert charset == "utf8mb4"


def test_mariadb_restart_keeps_data_and_port(own_mariadb: MariaDBServer) -> None:
    execute(
        own_mariadb.root_url,
        "CREATE TABLE kept (id INT PRIMARY KEY)",
        "INSERT INTO kept VALUES (7)",
    )
    own_mariadb.stop()
    restarted = own_mariadb.restart()
    assert restarted.port == own_mariadb.port
    assert restarted.datadir == own_mariadb.datadir
    assert query(restarted.root_url, "SELECT id FROM kept") == [(7,)]


def test_mariadb_comes_back_after_a_kill_with_committed_rows(own_mariadb: MariaDBServer) -> None:
    execute(
        own_mariadb.root_url,
        "CREATE TABLE kept (id INT PRIMARY KEY)",
        "INSERT INTO kept VALUES (1)",
    )
    own_mariadb.kill()
    with pytest.raises(OperationalError):
        query(own_mariadb.root_url, "SELECT 1")
    restarted = own_mariadb.restart()
    assert query(restarted.root_url, "SELECT id FROM kept") == [(1,)]


def test_mariadb_restart_applies_extra_flags(own_mariadb: MariaDBServer) -> None:
    restarted = own_mariadb.restart(["--binlog-row-metadata=MINIMAL"])
    assert variable(restarted.root_url, "binlog_row_metadata") == "MINIMAL"


def test_a_bad_flag_fails_fast_with_the_error_log(tmp_path: Any) -> None:
    with pytest.raises(LocalServerError, match="unknown option '--no-such-flag'"):
        localservers.start_mariadb(tmp_path / "bad", extra_flags=["--no-such-flag"])


def test_missing_binaries_are_reported_with_the_packages_to_install(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(localservers.shutil, "which", lambda *_args, **_kwargs: None)
    install = "apt-get install -y mariadb-server redis-server"
    with pytest.raises(LocalServerError, match=re.escape(install)):
        localservers.start_mariadb(tmp_path / "m")
    with pytest.raises(LocalServerError, match=re.escape(install)):
        localservers.start_redis(tmp_path / "r")


def test_redis_answers_on_database_1(redis_url: str) -> None:
    assert redis_url.endswith("/1")
    with redis.Redis.from_url(redis_url) as client:
        assert client.ping() is True
        client.set("greeting", "hello")
        assert client.get("greeting") == b"hello"


def test_redis_restart_keeps_the_port_and_comes_back_empty(own_redis: RedisServer) -> None:
    with redis.Redis.from_url(own_redis.url) as client:
        client.set("lost", "on restart")
    restarted = own_redis.restart()
    assert restarted.port == own_redis.port
    with redis.Redis.from_url(restarted.url) as client:
        assert client.dbsize() == 0


def test_killed_redis_is_down_until_restarted(own_redis: RedisServer) -> None:
    own_redis.kill()
    with redis.Redis.from_url(own_redis.url) as client, pytest.raises(redis.ConnectionError):
        client.ping()
    restarted = own_redis.restart()
    with redis.Redis.from_url(restarted.url) as client:
        assert client.ping() is True


def test_each_mariadb_keeps_its_temporary_files_in_its_own_directory(
    mariadb: MariaDBServer,
) -> None:
    with (
        pymysql.connect(host="127.0.0.1", port=mariadb.port, user="root") as conn,
        conn.cursor() as cur,
    ):
        cur.execute("SELECT @@tmpdir")
        row = cur.fetchone()
    assert row is not None
    assert str(row[0]).startswith(str(mariadb.base_dir))


def test_up_prints_the_exports_migrate_reads_and_down_stops_the_servers(tmp_path: Path) -> None:
    base = [sys.executable, "-m", "cdc_worker.devtools.localservers"]
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CDC_")}
    up = subprocess.run([*base, "up", str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert up.returncode == 0, up.stderr
    try:
        exports = dict(
            line.removeprefix("export ").replace("'", "").split("=", 1)
            for line in up.stdout.splitlines()
        )
        assert set(exports) == {"CDC_MYSQL_URL", "CDC_REDIS_URL", "CDC_ADMIN_MYSQL_URL"}
        migrated = subprocess.run(
            [sys.executable, "-m", "cdc_worker.cli", "migrate"],
            env={**clean, **exports},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert migrated.returncode == 0, migrated.stderr
        assert "migrated from base (no tables) to 0001" in migrated.stdout
    finally:
        down = subprocess.run([*base, "down", str(tmp_path)], timeout=120)
    assert down.returncode == 0

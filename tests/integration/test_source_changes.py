"""The source's settings changed while the worker streams: nothing lost, skipped or rebuilt."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import orjson
import pymysql
import pytest
import redis
from sqlalchemy import create_engine

from cdc_worker.checkpoint import Checkpoint
from cdc_worker.devtools.loadgen import run_workload
from cdc_worker.devtools.localservers import MariaDBServer, RedisServer, free_port
from cdc_worker.devtools.seed import seed
from cdc_worker.schema.models import Base
from cdc_worker.store import keys
from tests.conftest import SourceDatabase
from tests.harness import spawn_worker, wait_synced, worker_env


@pytest.fixture
def own_source(own_mariadb: MariaDBServer) -> Iterator[SourceDatabase]:
    engine = create_engine(own_mariadb.root_url, pool_pre_ping=True)
    Base.metadata.create_all(engine)
    seed(engine, 40, seed=5)
    yield SourceDatabase("helpdesk", own_mariadb.root_url, own_mariadb.cdc_url, engine)
    engine.dispose()


def root_sql(server: MariaDBServer, *statements: str) -> list[tuple[object, ...]]:
    """Run statements as root; the last one's rows."""
    rows: list[tuple[object, ...]] = []
    with (
        pymysql.connect(host="127.0.0.1", port=server.port, user="root", autocommit=True) as c,
        c.cursor() as cursor,
    ):
        for statement in statements:
            cursor.execute(statement)
            rows = list(cursor.fetchall())
    return rows


def checkpoint(redis_url: str) -> Checkpoint:
    with redis.Redis.from_url(redis_url) as client:
        raw = client.get(keys.CHECKPOINT)
    assert raw is not None
    return Checkpoint.decode(raw)


def assert_checkpoint_names_a_real_file(server: MariaDBServer, redis_url: str) -> Checkpoint:
    stored = checkpoint(redis_url)
    files = [str(row[0]) for row in root_sql(server, "SHOW BINARY LOGS")]
    assert stored.position.log_file in files, f"{stored.position} names no binlog of {files}"
    return stored


def test_switching_binlog_checksum_while_streaming_keeps_positions_exact(
    own_mariadb: MariaDBServer, own_source: SourceDatabase, own_redis: RedisServer, tmp_path: Path
) -> None:
    engine, log = own_source.engine, tmp_path / "worker.log"
    env = worker_env(own_source.cdc_url, own_redis.url)
    worker = spawn_worker(env, log)
    try:
        wait_synced(engine, own_redis.url)
        generation = checkpoint(own_redis.url).generation
        # CRC32 -> NONE: the server rotates; the events of the new files carry no checksum.
        root_sql(own_mariadb, "SET GLOBAL binlog_checksum=NONE")
        run_workload(engine, 20, seed=1)
        root_sql(own_mariadb, "FLUSH BINARY LOGS")  # a rotation inside a checksum-less file
        run_workload(engine, 20, seed=2)
        wait_synced(engine, own_redis.url)
        assert_checkpoint_names_a_real_file(own_mariadb, own_redis.url)
        # NONE -> CRC32 while streaming: the server must go on sending, not refuse.
        root_sql(own_mariadb, "SET GLOBAL binlog_checksum=CRC32")
        run_workload(engine, 20, seed=3)
        wait_synced(engine, own_redis.url)
        assert_checkpoint_names_a_real_file(own_mariadb, own_redis.url)
        root_sql(own_mariadb, "SET GLOBAL binlog_checksum=NONE")
        run_workload(engine, 20, seed=4)
        wait_synced(engine, own_redis.url)
    finally:
        worker.send_signal(signal.SIGKILL)
        worker.wait(10)
    run_workload(engine, 20, seed=6)  # written while no worker runs
    # The resume starts in a checksum-less file while the server now says CRC32.
    root_sql(own_mariadb, "SET GLOBAL binlog_checksum=CRC32")
    run_workload(engine, 20, seed=7)
    worker = spawn_worker(env, log)
    try:
        wait_synced(engine, own_redis.url)
        stored = assert_checkpoint_names_a_real_file(own_mariadb, own_redis.url)
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(30)
    assert stored.generation == generation, "the read model was rebuilt from a snapshot"
    assert "snapshot started" not in log.read_text().split("streaming", 1)[1]


def snapshots_taken(log: Path) -> int:
    return log.read_text().count('"snapshot swapped in"')


@pytest.mark.parametrize("decoder", ["specialized", "library"])
def test_compressed_events_switched_on_while_streaming_are_all_applied(
    own_mariadb: MariaDBServer,
    own_source: SourceDatabase,
    own_redis: RedisServer,
    tmp_path: Path,
    decoder: str,
) -> None:
    engine, log = own_source.engine, tmp_path / "worker.log"
    env = worker_env(own_source.cdc_url, own_redis.url, CDC_ROW_DECODER=decoder)
    worker = spawn_worker(env, log)
    try:
        wait_synced(engine, own_redis.url)
        # Every event of 10 bytes or more compressed: rows of every table, and statements.
        root_sql(
            own_mariadb, "SET GLOBAL log_bin_compress_min_len=10", "SET GLOBAL log_bin_compress=ON"
        )
        run_workload(engine, 60, seed=8)  # inserts, updates, deletes of every tracked table
        root_sql(
            own_mariadb,
            "UPDATE helpdesk.tickets SET title = CONCAT(title, ' (compressed)') WHERE id <= 5",
            "UPDATE helpdesk.tickets SET description = REPEAT('long text ', 2000) WHERE id = 6",
            "DELETE FROM helpdesk.ticket_tags WHERE ticket_id <= 10",
        )
        wait_synced(engine, own_redis.url)
        assert snapshots_taken(log) == 1
        # A compressed statement: TRUNCATE must still be seen (rows change with no row event).
        root_sql(own_mariadb, "TRUNCATE TABLE helpdesk.ticket_tags")
        wait_synced(engine, own_redis.url)
        assert snapshots_taken(log) == 2
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(30)


def test_a_worker_starts_and_streams_on_a_server_compressing_its_binlog(
    own_mariadb: MariaDBServer, own_source: SourceDatabase, own_redis: RedisServer, tmp_path: Path
) -> None:
    own_mariadb.stop()
    own_mariadb.restart(["--log-bin-compress=ON", "--log-bin-compress-min-len=10"])
    engine = own_source.engine
    engine.dispose()
    worker = spawn_worker(worker_env(own_source.cdc_url, own_redis.url), tmp_path / "w.log")
    try:
        wait_synced(engine, own_redis.url)
        run_workload(engine, 30, seed=11)
        wait_synced(engine, own_redis.url)
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(30)
    assert worker.returncode == 0


def test_ddl_on_tables_of_another_database_rebuilds_nothing(
    own_mariadb: MariaDBServer, own_source: SourceDatabase, own_redis: RedisServer, tmp_path: Path
) -> None:
    engine, log = own_source.engine, tmp_path / "worker.log"
    tables = ("tickets", "comments", "ticket_tags")
    root_sql(
        own_mariadb,
        "CREATE DATABASE otherdb",
        *(f"CREATE TABLE otherdb.{table} (id INT PRIMARY KEY)" for table in tables),
    )
    worker = spawn_worker(worker_env(own_source.cdc_url, own_redis.url), log)
    try:
        wait_synced(engine, own_redis.url)
        root_sql(own_mariadb, "USE otherdb", "TRUNCATE TABLE tickets", "DROP TABLE tickets")
        root_sql(own_mariadb, "USE helpdesk", "DROP TABLE IF EXISTS otherdb.comments")
        root_sql(own_mariadb, "RENAME TABLE otherdb.ticket_tags TO otherdb.tags_old")
        for table in tables:  # none of them exists now: logged all the same
            root_sql(own_mariadb, "USE otherdb", f"DROP TABLE IF EXISTS {table}")
        root_sql(own_mariadb, "DROP DATABASE otherdb")
        run_workload(engine, 20, seed=9)
        wait_synced(engine, own_redis.url)
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(30)
    assert snapshots_taken(log) == 1, "DDL of another database rebuilt the read model"


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "cdc_worker.cli", *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=60, check=False)


def halted_metric(port: int) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return next(
        float(line.split()[1]) for line in text.splitlines() if line.startswith("cdc_halted ")
    )


def wait_halted(redis_url: str, timeout_s: float = 30.0) -> tuple[str, str]:
    """The halted worker's reason and name, from its heartbeat."""
    deadline = time.monotonic() + timeout_s
    with redis.Redis.from_url(redis_url) as client:
        while True:
            beat = client.get(keys.HEARTBEAT)
            if beat and orjson.loads(beat).get("halted"):
                halted = orjson.loads(beat)
                return str(halted["halted"]), str(halted.get("worker", ""))
            assert time.monotonic() < deadline, "the worker never said it stopped applying"
            time.sleep(0.1)


def test_an_event_the_worker_cannot_read_halts_it_until_a_full_resync(
    own_mariadb: MariaDBServer, own_source: SourceDatabase, own_redis: RedisServer, tmp_path: Path
) -> None:
    engine, log, port = own_source.engine, tmp_path / "worker.log", free_port()
    env = worker_env(own_source.cdc_url, own_redis.url, CDC_WORKER_HTTP_PORT=str(port))
    rows = tmp_path / "tags.csv"
    rows.write_text("".join(f"loaded-tag-{n}\n" for n in range(5)))
    worker = spawn_worker(env, log)
    try:
        wait_synced(engine, own_redis.url)
        # Statement-based LOAD DATA: its rows reach the binlog as a file and a statement,
        # events the worker cannot read. They must stop it, not be skipped.
        root_sql(
            own_mariadb,
            "SET SESSION binlog_format=STATEMENT",
            f"LOAD DATA INFILE '{rows}' INTO TABLE helpdesk.tags (name)",
        )
        run_workload(engine, 10, seed=10)
        reason, name = wait_halted(own_redis.url)
        assert "LOAD DATA" in reason
        assert name.endswith(f":{worker.pid}")  # which worker stopped, for the operator
        check = cli(env, "check")
        assert check.returncode == 1
        assert "worker stopped applying" in check.stdout
        assert '"stopped applying' in log.read_text()
        assert halted_metric(port) == 1.0
        resync = cli(env, "resync", "--timeout-s", "60")  # waits until the job is done
        assert resync.returncode == 0, resync.stdout + resync.stderr
        wait_synced(engine, own_redis.url)
        assert cli(env, "check").returncode == 0
        assert halted_metric(port) == 0.0
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(30)
    assert snapshots_taken(log) == 2

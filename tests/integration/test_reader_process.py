"""The binlog reader in a child process: same chunks as the thread reader, same errors, and
it never outlives its session."""

from __future__ import annotations

import os
import random
import time
from pathlib import Path

import pymysql
import pytest
from sqlalchemy import text

from cdc_worker.checkpoint import Position
from cdc_worker.devtools.localservers import MariaDBServer
from cdc_worker.devtools.seed import seed
from cdc_worker.errors import CheckpointLost
from cdc_worker.source.binlog import BinlogReader, Chunk
from cdc_worker.source.reader_process import ProcessReader
from cdc_worker.source.stream import SourceConfig
from tests.conftest import SourceDatabase
from tests.harness import spawn_worker, wait_heartbeat, worker_env


def _config(server: MariaDBServer, database: str) -> SourceConfig:
    return SourceConfig(
        "127.0.0.1",
        server.port,
        "root",
        "",
        database,
        random.randint(10_000, 2**31),
        1,
        10,
        500,
        False,
    )


def _position(server: MariaDBServer) -> Position:
    with (
        pymysql.connect(host="127.0.0.1", port=server.port, user="root") as conn,
        conn.cursor() as cur,
    ):
        cur.execute("SHOW MASTER STATUS")
        row = cur.fetchone()
        assert row is not None
        return Position(str(row[0]), int(row[1]))


def _read_all(reader: BinlogReader | ProcessReader, end: Position) -> list[Chunk]:
    chunks: list[Chunk] = []
    reader.start()
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            chunks += reader.next_batch(500, 0.5)
            last = next((c.commit for c in reversed(chunks) if c.commit), None)
            if last and (last.log_file, last.log_pos) >= (end.log_file, end.log_pos):
                return chunks
        raise AssertionError("the reader did not reach the end of the binlog")
    finally:
        reader.stop()


def test_the_child_process_delivers_exactly_the_thread_readers_chunks(
    source_db: SourceDatabase, mariadb: MariaDBServer
) -> None:
    start = _position(mariadb)
    seed(source_db.engine, 60, progress=False)
    with source_db.engine.begin() as conn:
        conn.execute(text("UPDATE tickets SET title = CONCAT(title, ' !') WHERE id % 3 = 0"))
        conn.execute(text("DELETE FROM comments WHERE id % 2 = 0"))
    end = _position(mariadb)
    config = _config(mariadb, source_db.name)
    in_thread = _read_all(BinlogReader(config, start), end)
    in_child = _read_all(ProcessReader(config, start), end)
    assert in_child == in_thread
    assert sum(len(c.changes) for c in in_child) > 500  # several batches of 500 rows


def test_a_purged_checkpoint_reaches_the_parent_as_checkpoint_lost(
    source_db: SourceDatabase, mariadb: MariaDBServer
) -> None:
    reader = ProcessReader(_config(mariadb, source_db.name), Position("mysql-bin.000000", 4))
    reader.start()
    try:
        with pytest.raises(CheckpointLost):
            _drain_for(reader, 30)
    finally:
        reader.stop()


def _drain_for(reader: ProcessReader, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        reader.next_batch(100, 0.5)


def test_the_child_is_gone_after_stop_and_counts_heartbeats_as_events(
    source_db: SourceDatabase, mariadb: MariaDBServer
) -> None:
    reader = ProcessReader(_config(mariadb, source_db.name), _position(mariadb))
    reader.start()
    pid = reader._process.pid
    assert pid is not None
    deadline = time.monotonic() + 10
    while reader.events_seen < 2 and time.monotonic() < deadline:  # idle: heartbeats only
        reader.next_batch(100, 0.5)
    assert reader.events_seen >= 2
    assert reader.seconds_since_last_event() < 2
    reader.stop()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_a_killed_worker_leaves_no_reader_process_behind(
    source_db: SourceDatabase, redis_url: str, tmp_path: Path
) -> None:
    worker = spawn_worker(worker_env(source_db.cdc_url, redis_url), tmp_path / "worker.log")
    try:
        wait_heartbeat(redis_url)
        children = _children(worker.pid)
        assert len(children) == 1  # the binlog reader
    finally:
        worker.kill()
        worker.wait(30)
    deadline = time.monotonic() + 10
    while _alive(children[0]) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(children[0])

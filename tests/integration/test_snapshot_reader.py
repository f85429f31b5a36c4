"""Snapshots read by a child process: the same rows as read in the worker, the same errors,
and no child left behind."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pymysql
import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.exc import ProgrammingError

from cdc_worker.devtools.seed import seed
from cdc_worker.snapshots.chunk_reader import ChunkReader
from cdc_worker.snapshots.snapshot import open_snapshot
from cdc_worker.snapshots.snapshot_reader import open_process_snapshot
from tests.conftest import SourceDatabase


def _everything(snapshot: object, chunk_rows: int) -> tuple[object, ...]:
    refs = [
        [(c.table, c.op, c.after, c.position) for c in changes]
        for changes in snapshot.reference_changes(chunk_rows)  # type: ignore[attr-defined]
    ]
    chunks = [
        (chunk.first_id, chunk.last_id, [(c.table, c.after, c.position) for c in chunk.changes])
        for chunk in snapshot.ticket_chunks(chunk_rows)  # type: ignore[attr-defined]
    ]
    return snapshot.position, snapshot.count_tickets(), refs, chunks  # type: ignore[attr-defined]


def _read_all_in_child(engine: Engine, chunk_rows: int) -> None:
    with open_process_snapshot(engine, chunk_rows) as snapshot:
        _everything(snapshot, chunk_rows)


def test_the_child_reads_exactly_what_the_worker_would(source_db: SourceDatabase) -> None:
    seed(source_db.engine, 120)
    with source_db.engine.begin() as conn:  # an orphan beyond the last ticket: last chunk
        conn.execute(text("SET SESSION FOREIGN_KEY_CHECKS = 0"))
        conn.execute(text("INSERT INTO ticket_tags VALUES (999999, 1)"))
    engine = create_engine(source_db.cdc_url)
    try:
        with open_snapshot(engine) as snapshot:
            here = _everything(snapshot, 50)
        with open_process_snapshot(engine, 50) as snapshot:
            there = _everything(snapshot, 50)
    finally:
        engine.dispose()
    assert there == here
    assert len(here[3]) == 3  # 120 tickets in chunks of 50
    assert any(c[1] == {"ticket_id": 999999, "tag_id": 1} for c in here[3][-1][2])


@contextmanager
def comments_table_gone(source_db: SourceDatabase) -> Iterator[None]:
    """The comments table renamed away (reading it fails) until the block ends."""
    with source_db.engine.begin() as conn:
        conn.execute(text("RENAME TABLE comments TO comments_gone"))
    try:
        yield
    finally:
        with source_db.engine.begin() as conn:
            conn.execute(text("RENAME TABLE comments_gone TO comments"))


def test_a_read_error_in_the_child_is_raised_in_the_worker_as_it_was(
    source_db: SourceDatabase,
) -> None:
    seed(source_db.engine, 5)
    engine = create_engine(source_db.cdc_url)
    try:
        with comments_table_gone(source_db), pytest.raises(ProgrammingError, match="comments"):
            _read_all_in_child(engine, 50)
    finally:
        engine.dispose()


def test_a_killed_child_is_a_connection_error_and_nothing_is_left_behind(
    source_db: SourceDatabase,
) -> None:
    seed(source_db.engine, 300)
    engine = create_engine(source_db.cdc_url)
    try:
        with (  # noqa: PT012 - the child is killed between two reads
            pytest.raises(pymysql.err.OperationalError, match="died"),
            open_process_snapshot(engine, 10) as snapshot,
        ):
            child = snapshot._process  # the test kills it
            next(snapshot.reference_changes(10))
            os.kill(child.pid, signal.SIGKILL)
            started = time.monotonic()
            list(snapshot.reference_changes(10))
            list(snapshot.ticket_chunks(10))
        assert time.monotonic() - started < 30
        assert not child.is_alive()
    finally:
        engine.dispose()


@contextmanager
def chunk_reader(
    source_db: SourceDatabase, chunk_rows: int
) -> Iterator[tuple[Engine, ChunkReader]]:
    """The worker's engine and a chunk reader on it; both closed after."""
    engine = create_engine(source_db.cdc_url)
    reader = ChunkReader(engine, chunk_rows)
    try:
        yield engine, reader
    finally:
        reader.close()
        engine.dispose()


def test_a_resync_chunk_read_ahead_holds_what_the_worker_would_read_and_its_errors(
    source_db: SourceDatabase,
) -> None:
    seed(source_db.engine, 120)
    with chunk_reader(source_db, 50) as (engine, reader):
        reader.request(0)
        first = reader.take()
        reader.request(first.last_id)
        second = reader.take()
        with open_snapshot(engine, gtid=False) as snapshot:  # as the chunk reader opens it
            here = [snapshot.read_chunk(0, 50), snapshot.read_chunk(first.last_id, 50)]
        assert [(c.first_id, c.last_id, c.parts) for c in (first, second)] == [
            (c.first_id, c.last_id, c.parts) for c in here
        ]
        assert first.position == here[0].position  # no write between: the same snapshot
        with comments_table_gone(source_db):
            reader.request(second.last_id)
            with pytest.raises(ProgrammingError, match="comments"):
                reader.take()


def test_a_killed_chunk_reader_is_a_connection_error_not_a_hang(
    source_db: SourceDatabase,
) -> None:
    seed(source_db.engine, 30)
    with chunk_reader(source_db, 10) as (_, reader):
        reader.request(0)
        os.kill(reader._process.pid, signal.SIGKILL)  # type: ignore[arg-type]  # mid-read
        started = time.monotonic()
        with pytest.raises(pymysql.err.OperationalError, match="died"):
            reader.take()
        assert time.monotonic() - started < 30
        reader._process.join(5)
        with pytest.raises(pymysql.err.OperationalError, match="died"):  # dead, asked again
            reader.request(10)


def test_a_snapshot_skips_the_gtid_lookup_only_when_told(source_db: SourceDatabase) -> None:
    seed(source_db.engine, 3)
    engine = create_engine(source_db.cdc_url)
    try:
        with open_snapshot(engine) as with_gtid, open_snapshot(engine, gtid=False) as without:
            assert with_gtid.position.gtid  # the checkpoint of a build needs it
            assert without.position.gtid is None  # BINLOG_GTID_POS reads the binlog file
            assert without.position.log_file == with_gtid.position.log_file
            assert without.position.log_pos == with_gtid.position.log_pos
    finally:
        engine.dispose()

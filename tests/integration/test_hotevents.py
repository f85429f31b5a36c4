"""The hot path (events read off their packets) against the library's events, end to end.

The same binlog range is read twice by the real ``BinlogReader``: with the specialized decoder,
which reads GTID, XID, known table maps and planned row events itself, and with the library
decoder, which takes every event from python-mysql-replication. The chunks must be the same:
changes (table, operation, images, position, foreign-key checks), commit positions, GTIDs,
commit times and DDL. Update before-images are compared on the columns the specialized path
decodes (``UPDATE_BEFORE_COLUMNS``), which must be exactly those.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pymysql.protocol import MysqlPacket

from cdc_worker.checkpoint import Position
from cdc_worker.devtools.localservers import MariaDBServer
from cdc_worker.source.binlog import BinlogReader, Chunk
from cdc_worker.source.hotevents import HotPath, Rows
from cdc_worker.source.rowdecoder import RowDecoder
from cdc_worker.source.stream import ROW_EVENTS, SourceConfig, open_stream
from projections.changes import UPDATE_BEFORE_COLUMNS, RowChange
from tests.integration.test_rowdecoder import (
    EVERY_TYPE,
    EXTREMES,
    ROWS,
    ZEROES,
    _assert_same_images,
    _connect,
    _insert,
    _position,
)

# Tables the reader tracks, with every covered column type (the reader reads tracked tables only)
TICKETS = EVERY_TYPE.replace("TABLE every_type", "TABLE tickets")
TAGS = "CREATE TABLE tags (id INT PRIMARY KEY, name VARCHAR(50), j JSON)"  # JSON: not covered


@pytest.fixture
def database(mariadb: MariaDBServer) -> Iterator[tuple[MariaDBServer, str]]:
    name = f"hot_{uuid.uuid4().hex[:12]}"
    mariadb.create_database(name)
    with _connect(mariadb, name) as conn, conn.cursor() as cur:
        cur.execute(TICKETS)
        cur.execute(TAGS)
    yield mariadb, name
    with _connect(mariadb, name) as conn, conn.cursor() as cur:
        cur.execute(f"DROP DATABASE `{name}`")


def read_chunks(
    server: MariaDBServer, database: str, start: tuple[str, int], end: tuple[str, int], decoder: str
) -> tuple[list[Chunk], BinlogReader]:
    """Every chunk the thread reader hands over from ``start`` until it commits at ``end``."""
    config = SourceConfig(
        "127.0.0.1", server.port, "root", "", database, 9100, 1.0, 30.0, 5000, True, None, decoder
    )
    reader = BinlogReader(replace(config, reader_mode="thread"), Position(*start))
    reader.start()
    chunks: list[Chunk] = []
    deadline = time.monotonic() + 60
    try:
        while not chunks or chunks[-1].commit is None or chunks[-1].commit.precedes(Position(*end)):
            assert time.monotonic() < deadline, "the reader never reached the end"
            chunks += reader.next_batch(5000, 1.0)
    finally:
        reader.stop()
    return chunks, reader


def assert_same_chunks(hot: list[Chunk], library: list[Chunk]) -> None:
    assert [(c.commit, c.committed_at_s, c.ddl) for c in hot] == [
        (c.commit, c.committed_at_s, c.ddl) for c in library
    ]
    for mine, theirs in zip(hot, library, strict=True):
        assert [_identity(c) for c in mine.changes] == [_identity(c) for c in theirs.changes]
        _assert_same_images(
            [(c.before, c.after) for c in mine.changes],
            [_narrowed(c, m) for c, m in zip(theirs.changes, mine.changes, strict=True)],
            "chunk",
        )


def _identity(change: RowChange) -> tuple[Any, ...]:
    return change.table, change.op, change.position, change.foreign_key_checks


def _narrowed(theirs: RowChange, mine: RowChange) -> tuple[Any, Any]:
    """The library's images, its update before-image cut to the columns the hot path reads."""
    wanted = UPDATE_BEFORE_COLUMNS.get(theirs.table)
    if theirs.before is None or theirs.after is None or wanted is None:
        return theirs.before, theirs.after
    assert mine.before is not None
    assert list(mine.before) == list(wanted)
    return {k: theirs.before[k] for k in wanted}, theirs.after


def hot_counts(reader: BinlogReader) -> dict[str, int]:
    hot: HotPath | None = reader._stream._hot
    assert hot is not None, "the stream never took the hot path"
    return dict(hot.events_read)


def compare(server: MariaDBServer, name: str, start: tuple[str, int]) -> dict[str, int]:
    with _connect(server, name) as conn:
        end = _position(conn)
    hot, reader = read_chunks(server, name, start, end, "specialized")
    library, plain = read_chunks(server, name, start, end, "library")
    assert plain._stream._hot is None  # the library decoder mode never takes the hot path
    assert_same_chunks(hot, library)
    return hot_counts(reader)


def test_every_covered_type_and_ddl_read_hot_as_the_library_reads_them(
    database: tuple[MariaDBServer, str],
) -> None:
    server, name = database
    with _connect(server, name) as conn, conn.cursor() as cur:
        start = _position(conn)
        maxima = {"id": 2**64 - 1, **EXTREMES}
        minima = {"id": 0, **{k: v for k, v in EXTREMES.items() if k not in ZEROES}, **ZEROES}
        for n in range(3):  # the first transactions teach the library the table maps
            _insert(conn, "tickets", [{"id": 10 + n}, {"id": 20 + n, "vs": "x" * n}])
        cur.execute("BEGIN")  # one transaction over two tables, one of them not covered
        _insert(conn, "tickets", [maxima, minima])
        _insert(conn, "tags", [{"id": 1, "name": "t", "j": '{"a": 1}'}])
        cur.execute("UPDATE tickets SET vs = 'changed', ti = NULL, dt6 = NOW(6)")
        cur.execute("COMMIT")
        cur.execute("SET SESSION foreign_key_checks = 0")
        cur.execute("DELETE FROM tickets WHERE id = 10")
        cur.execute("SET SESSION foreign_key_checks = 1")
        cur.execute("INSERT INTO tickets (id, t) VALUES (1, 'a'), (2, 'b'), (3, NULL)")  # 1 event
        cur.execute("ALTER TABLE tickets ADD COLUMN added VARCHAR(5) DEFAULT 'new' AFTER id")
        _insert(conn, "tickets", [{"id": 4, "added": None}])
        _insert(conn, "tickets", [{"id": 5, "added": "five"}])
        cur.execute("UPDATE tickets SET added = 'x', e = 'low' WHERE id IN (0, 4, 5)")
        cur.execute("TRUNCATE TABLE tags")
        cur.execute("DELETE FROM tickets")
    counts = compare(server, name, start)
    assert counts["rows"] >= 8
    assert counts["table maps"] >= 8
    assert counts["gtids"] >= 12
    assert counts["xids"] >= 12


@settings(
    max_examples=10,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(rows=st.lists(ROWS, min_size=1, max_size=6))
def test_random_rows_read_hot_as_the_library_reads_them(
    database: tuple[MariaDBServer, str], rows: list[dict[str, Any]]
) -> None:
    server, name = database
    with _connect(server, name) as conn, conn.cursor() as cur:
        cur.execute("DELETE FROM tickets")
        start = _position(conn)
        for n, row in enumerate(rows):
            _insert(conn, "tickets", [{"id": n, **row}])
        cur.execute("UPDATE tickets SET ti = IF(ti IS NULL, 1, NULL), vs = CONCAT(id, '')")
        cur.execute("DELETE FROM tickets WHERE id % 2 = 0")
    counts = compare(server, name, start)
    assert counts["rows"] >= len(rows)  # all but the first of each table map


def test_a_packet_the_hot_path_cannot_read_goes_to_the_library_untouched(
    database: tuple[MariaDBServer, str],
) -> None:
    server, name = database
    with _connect(server, name) as conn:
        start = _position(conn)
        for n in range(3):
            _insert(conn, "tickets", [{"id": n, "t": "text"}])
    config = SourceConfig(
        "127.0.0.1", server.port, "root", "", name, 9101, 1.0, 30.0, 5000, True, None
    )
    stream = open_stream(config, Position(*start))
    decoder = stream.hot_decoder = RowDecoder(True, UPDATE_BEFORE_COLUMNS)
    packets: list[Any] = []
    try:
        events = iter(stream)
        next(events)  # connected now: record what the stream reads from here on
        read_packet = stream._stream_connection._read_packet

        def recorded() -> Any:
            packets.append(read_packet())
            return packets[-1]

        stream._stream_connection._read_packet = recorded
        hot_rows = 0
        for _ in range(40):  # the first transaction's rows come from the library
            event = next(events)
            if isinstance(event, ROW_EVENTS):
                decoder.images(event)  # as the reader does: the plan is compiled here
            hot_rows += isinstance(event, Rows)
            if hot_rows == 2:
                break
        assert hot_rows == 2
    finally:
        stream.close()
    row_packet, hot = packets[-1], stream._hot
    position = stream.log_pos
    data = row_packet._data
    assert hot.read(MysqlPacket(data[:-6], "utf8")) is None  # shorter than its header says
    # Three bytes more rows than the row holds (the header's size agrees): the plan reads a
    # second row out of them and the checksum, and ends past the rows.
    longer = bytearray(data[:-4] + b"\x00\x00\x00" + data[-4:])
    longer[10:14] = (len(longer) - 1).to_bytes(4, "little")
    assert hot.read(MysqlPacket(bytes(longer), "utf8")) is None
    unknown = bytearray(row_packet._data)
    unknown[5] = 0x7F  # an event type the hot path does not read
    assert hot.read(MysqlPacket(bytes(unknown), "utf8")) is None
    assert stream.log_pos == position  # neither moved the stream
    assert isinstance(hot.read(row_packet), Rows)  # the whole packet reads

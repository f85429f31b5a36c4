"""The specialized row decoder against the library's own decoding, on a real binlog.

Every event is decoded twice: first by the compiled decoder (which must not consume it), then
by python-mysql-replication; both must return the same values with the same Python types.
"""

from __future__ import annotations

import datetime
import math
import uuid
from collections.abc import Iterator
from typing import Any

import pymysql
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pymysqlreplication import BinLogStreamReader
from pymysqlreplication.row_event import DeleteRowsEvent, UpdateRowsEvent, WriteRowsEvent

from cdc_worker.checkpoint import Position
from cdc_worker.devtools.localservers import MariaDBServer
from cdc_worker.source.rowdecoder import LIBRARY, SPECIALIZED, RowDecoder, library_images
from cdc_worker.source.stream import ROW_EVENTS, SourceConfig, connect_quietly, open_stream
from tests.conftest import SourceDatabase

EVERY_TYPE = """
CREATE TABLE every_type (
  id BIGINT UNSIGNED PRIMARY KEY,
  ti TINYINT, tiu TINYINT UNSIGNED, flag TINYINT(1),
  si SMALLINT, siu SMALLINT UNSIGNED, mi MEDIUMINT, miu MEDIUMINT UNSIGNED,
  i INT, iu INT UNSIGNED, bi BIGINT, biu BIGINT UNSIGNED,
  f FLOAT, d DOUBLE, y YEAR, day DATE,
  e ENUM('low','normal','high','urgent'),
  c CHAR(10), cw CHAR(255), vs VARCHAR(50), vl VARCHAR(2000),
  tt TINYTEXT, t TEXT, mt MEDIUMTEXT, lt LONGTEXT,
  lat VARCHAR(20) CHARACTER SET latin1, vb VARBINARY(20), bl BLOB,
  dec1 DECIMAL(10,2), dec2 DECIMAL(65,30), dec3 DECIMAL(5,0), dec4 DECIMAL(20,5),
  dt0 DATETIME, dt1 DATETIME(1), dt3 DATETIME(3), dt6 DATETIME(6),
  ts0 TIMESTAMP NULL, ts3 TIMESTAMP(3) NULL, ts6 TIMESTAMP(6) NULL
) CHARACTER SET utf8mb4
"""
EXTREMES = {
    "ti": -128,
    "tiu": 255,
    "flag": 1,
    "si": -32768,
    "siu": 65535,
    "mi": -8388608,
    "miu": 16777215,
    "i": -2147483648,
    "iu": 4294967295,
    "bi": -(2**63),
    "biu": 2**64 - 1,
    "f": -3.5e38,
    "d": 1.7976931348623157e308,
    "y": 2155,
    "day": "9999-12-31",
    "e": "urgent",
    "c": "é" * 10,
    "cw": "\U0001f600" * 255,
    "vs": "",
    "vl": "\U0001f4a9" * 2000,
    "tt": "x" * 255,
    "t": "ü" * 32767,
    "mt": "m" * 1_000_000,
    "lt": "\U0001f600 long",
    "lat": "café",
    "vb": b"\x00\xff\x00",
    "bl": bytes(range(256)),
    "dec1": "-99999999.99",
    "dec2": "-" + "9" * 35 + "." + "9" * 30,
    "dec3": "-99999",
    "dec4": "0.00001",
    "dt0": "1000-01-01 00:00:00",
    "dt1": "9999-12-31 23:59:59.9",
    "dt3": "2026-02-28 12:34:56.789",
    "dt6": "2026-11-22 06:54:04.000001",
    "ts0": "1970-01-01 00:00:01",
    "ts3": "2038-01-19 03:14:07.999",
    "ts6": "2000-02-29 00:00:00.5",
}
ZEROES = {"day": "0000-00-00", "dt0": "0000-00-00 00:00:00", "dt6": "2026-00-00 00:00:00"}
ZEROES |= {"ts0": "0000-00-00 00:00:00", "e": "", "dec2": "0", "vs": "", "f": 0.0, "mi": 0}
UNCOVERED = """
CREATE TABLE uncovered (
  id INT PRIMARY KEY, j JSON, s SET('a','b','c'), tm TIME(3), bits BIT(10), name VARCHAR(10)
)
"""


@pytest.fixture
def database(mariadb: MariaDBServer) -> Iterator[tuple[MariaDBServer, str]]:
    name = f"dec_{uuid.uuid4().hex[:12]}"
    mariadb.create_database(name)
    yield mariadb, name
    with _connect(mariadb, name) as conn, conn.cursor() as cur:
        cur.execute(f"DROP DATABASE `{name}`")


def _connect(server: MariaDBServer, database: str) -> pymysql.Connection[Any]:
    conn = pymysql.connect(
        host="127.0.0.1", port=server.port, user="root", database=database, autocommit=True
    )
    with conn.cursor() as cur:
        cur.execute("SET SESSION sql_mode = '', time_zone = '+00:00'")
    return conn


def _position(conn: pymysql.Connection[Any]) -> tuple[str, int]:
    with conn.cursor() as cur:
        cur.execute("SHOW MASTER STATUS")
        row = cur.fetchone()
        assert row is not None
        return str(row[0]), int(row[1])


def _events(server: MariaDBServer, database: str, start: tuple[str, int]) -> Iterator[Any]:
    stream = BinLogStreamReader(
        connection_settings={"host": "127.0.0.1", "port": server.port, "user": "root"},
        server_id=server.port + 7000,
        blocking=False,
        resume_stream=True,
        log_file=start[0],
        log_pos=start[1],
        only_schemas=[database],
        only_events=[WriteRowsEvent, UpdateRowsEvent, DeleteRowsEvent],
        pymysql_wrapper=connect_quietly,
    )
    try:
        yield from stream
    finally:
        stream.close()


def _same(left: Any, right: Any) -> bool:
    if type(left) is not type(right):
        return False
    if isinstance(left, float) and math.isnan(left):
        return math.isnan(right)
    return bool(left == right)


def _assert_same_images(fast: list[Any], slow: list[Any], where: str) -> None:
    assert len(fast) == len(slow), where
    for (fast_before, fast_after), (slow_before, slow_after) in zip(fast, slow, strict=True):
        for mine, theirs in ((fast_before, slow_before), (fast_after, slow_after)):
            assert (mine is None) == (theirs is None), where
            if mine is None:
                continue
            assert list(mine) == list(theirs), where
            differing = {k: (mine[k], theirs[k]) for k in mine if not _same(mine[k], theirs[k])}
            assert not differing, f"{where}: {differing}"


def compare_stream(server: MariaDBServer, database: str, start: tuple[str, int]) -> RowDecoder:
    """Decode every row event from ``start`` both ways and assert they agree."""
    decoder = RowDecoder()
    for event in _events(server, database, start):
        fast = decoder.images(event)  # must leave the event undecoded for the library
        slow = library_images(event)
        _assert_same_images(fast, slow, f"{event.table} {type(event).__name__}")
    return decoder


def _insert(conn: pymysql.Connection[Any], table: str, rows: list[dict[str, Any]]) -> None:
    with conn.cursor() as cur:
        for row in rows:
            names = ", ".join(f"`{k}`" for k in row)
            marks = ", ".join(["%s"] * len(row))
            cur.execute(f"INSERT INTO {table} ({names}) VALUES ({marks})", list(row.values()))


def test_every_covered_type_decodes_as_the_library_does(
    database: tuple[MariaDBServer, str],
) -> None:
    server, name = database
    with _connect(server, name) as conn, conn.cursor() as cur:
        cur.execute(EVERY_TYPE)
        start = _position(conn)
        nulls = {"id": 1}
        maxima = {"id": 2**64 - 1, **EXTREMES}
        minima = {"id": 0, **{k: v for k, v in EXTREMES.items() if k not in ZEROES}, **ZEROES}
        _insert(conn, "every_type", [nulls, maxima, minima])
        cur.execute("UPDATE every_type SET vs = 'changed', ti = NULL, dt6 = NOW(6)")
        cur.execute("DELETE FROM every_type WHERE id = 1")
        cur.execute("ALTER TABLE every_type ADD COLUMN added VARCHAR(5) DEFAULT 'new' AFTER id")
        cur.execute("ALTER TABLE every_type MODIFY vs VARCHAR(300), DROP COLUMN tt")
        _insert(conn, "every_type", [{"id": 3, "vs": "é" * 300, "added": None}])
        cur.execute("UPDATE every_type SET added = 'x', e = 'low' WHERE id IN (0, 3)")
        cur.execute("DELETE FROM every_type")
    decoder = compare_stream(server, name, start)
    assert decoder.rows_by_decoder[SPECIALIZED] == 3 + 3 + 1 + 1 + 2 + 3
    assert decoder.rows_by_decoder[LIBRARY] == 0


def test_a_row_at_the_mediumtext_limit_spans_protocol_packets(
    database: tuple[MariaDBServer, str],
) -> None:
    server, name = database
    with _connect(server, name) as conn, conn.cursor() as cur:
        cur.execute("CREATE TABLE big (id INT PRIMARY KEY, body MEDIUMTEXT, tail INT)")
        start = _position(conn)
        _insert(conn, "big", [{"id": 1, "body": "z" * (2**24 - 1), "tail": -1}])
        cur.execute("UPDATE big SET tail = 7")
    decoder = compare_stream(server, name, start)
    assert decoder.rows_by_decoder == {SPECIALIZED: 2}


def test_uncovered_column_types_fall_back_to_the_library(
    database: tuple[MariaDBServer, str],
) -> None:
    server, name = database
    with _connect(server, name) as conn, conn.cursor() as cur:
        cur.execute(UNCOVERED)
        start = _position(conn)
        row = {"id": 1, "j": '{"a": [1, 2]}', "s": "a,c", "tm": "-838:59:59.000", "bits": 5}
        _insert(conn, "uncovered", [row, {"id": 2}])
        cur.execute("UPDATE uncovered SET name = 'x'")
    decoder = compare_stream(server, name, start)
    assert decoder.rows_by_decoder == {LIBRARY: 4}


def test_update_before_images_hold_only_the_columns_asked_for(
    database: tuple[MariaDBServer, str],
) -> None:
    server, name = database
    with _connect(server, name) as conn, conn.cursor() as cur:
        cur.execute(EVERY_TYPE)
        _insert(conn, "every_type", [{"id": 5, **EXTREMES}, {"id": 6}])
        start = _position(conn)
        cur.execute("UPDATE every_type SET vs = 'after'")
        cur.execute("DELETE FROM every_type WHERE id = 5")
    decoder = RowDecoder(before_columns={"every_type": ("id", "e")})
    images = []
    for event in _events(server, name, start):
        fast, slow = decoder.images(event), library_images(event)
        images += fast
        for (before, after), (full_before, full_after) in zip(fast, slow, strict=True):
            assert after == full_after
            expected = {k: full_before[k] for k in ("id", "e")} if after else full_before
            assert before == expected
    assert [after["vs"] if after else None for _, after in images] == ["after", "after", None]


TEXT = st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\x00"), max_size=60)
MOMENTS = st.datetimes(datetime.datetime(1000, 1, 1), datetime.datetime(9999, 12, 31, 23, 59, 59))
ROWS = st.fixed_dictionaries(
    {},
    optional={
        "ti": st.integers(-128, 127),
        "tiu": st.integers(0, 255),
        "si": st.integers(-32768, 32767),
        "miu": st.integers(0, 2**24 - 1),
        "i": st.integers(-(2**31), 2**31 - 1),
        "biu": st.integers(0, 2**64 - 1),
        "bi": st.integers(-(2**63), 2**63 - 1),
        "d": st.floats(allow_nan=False, allow_infinity=False),
        "e": st.sampled_from(["low", "normal", "high", "urgent"]),
        "c": TEXT.map(lambda s: s[:10]),
        "vs": TEXT.map(lambda s: s[:50]),
        "vl": TEXT,
        "t": TEXT,
        "mt": TEXT,
        "lat": st.text("abcéèàü ", max_size=20),
        "vb": st.binary(max_size=20),
        "dec1": st.decimals("-99999999.99", "99999999.99", places=2, allow_nan=False),
        "dec4": st.decimals(-(10**15) + 1, 10**15 - 1, places=5, allow_nan=False),
        "day": st.dates(datetime.date(1000, 1, 1)),
        "dt0": MOMENTS.map(lambda m: m.replace(microsecond=0)),
        "dt6": MOMENTS,
        "dt3": MOMENTS.map(lambda m: m.replace(microsecond=m.microsecond // 1000 * 1000)),
        "ts6": st.datetimes(datetime.datetime(1970, 1, 2), datetime.datetime(2038, 1, 18)),
    },
)


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(rows=st.lists(ROWS, min_size=1, max_size=8))
def test_random_rows_decode_as_the_library_does(
    database: tuple[MariaDBServer, str], rows: list[dict[str, Any]]
) -> None:
    server, name = database
    with _connect(server, name) as conn, conn.cursor() as cur:
        cur.execute(EVERY_TYPE.replace("TABLE every_type", "TABLE IF NOT EXISTS every_type_r"))
        cur.execute("DELETE FROM every_type_r")
        start = _position(conn)
        _insert(conn, "every_type_r", [{"id": n, **row} for n, row in enumerate(rows)])
        cur.execute("UPDATE every_type_r SET ti = IF(ti IS NULL, 1, NULL), vs = CONCAT(id, '')")
    decoder = compare_stream(server, name, start)
    assert decoder.rows_by_decoder == {SPECIALIZED: 2 * len(rows)}


@pytest.mark.parametrize(("decoder", "parses"), [("specialized", 2), ("library", 25)])
def test_table_maps_parsed_once_equal_the_library_parse_of_every_event(
    source_db: SourceDatabase, mariadb: MariaDBServer, decoder: str, parses: int
) -> None:
    with _connect(mariadb, source_db.name) as conn, conn.cursor() as cur:
        start = _position(conn)
        for n in range(20):
            cur.execute("INSERT INTO tags (name) VALUES (%s)", [f"tag-{n}"])
        cur.execute("ALTER TABLE tags ADD COLUMN color VARCHAR(10) DEFAULT 'red'")
        for n in range(5):
            cur.execute("INSERT INTO tags (name, color) VALUES (%s, NULL)", [f"late-{n}"])
    plain = [(e.table_map[e.table_id], e.rows) for e in _events(mariadb, source_db.name, start)]
    config = SourceConfig(
        "127.0.0.1", mariadb.port, "root", "", source_db.name, 9, 1, 10, 9, False, None, decoder
    )
    stream = open_stream(config, Position(*start))
    try:
        row_events = (e for e in stream if isinstance(e, ROW_EVENTS))
        # plain first: zip stops at its end before asking the blocking stream for more
        cached = [
            (e.table_map[e.table_id], e.rows) for _, e in zip(plain, row_events, strict=False)
        ]
    finally:
        stream.close()
    assert [rows for _, rows in cached] == [rows for _, rows in plain]
    assert [table for table, _ in cached] == [table for table, _ in plain]  # Table.__eq__: data
    assert len({id(table) for table, _ in plain}) == 25
    # specialized: one parse before the ALTER, one after; library: one per transaction
    assert len({id(table) for table, _ in cached}) == parses

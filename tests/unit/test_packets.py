"""Screening binlog packets: compressed events inflated, unreadable row carriers refused."""

from __future__ import annotations

import struct
import zlib

import orjson
import pytest
from pymysql.protocol import MysqlPacket

from cdc_worker.errors import UnreadableEvent
from cdc_worker.observability.health import verdict
from cdc_worker.source.packets import action, inflate, screen


def packet(kind: int, body: bytes, flags: int = 0, checksum: bytes = b"") -> bytes:
    """An OK byte and a binlog event: 19-byte header, ``body``, optional checksum."""
    size = 19 + len(body) + len(checksum)
    return (
        b"\x00"
        + struct.pack("<IBIIIH", 1_700_000_000, kind, 1, size, 4000, flags)
        + (body + checksum)
    )


def compressed(raw: bytes) -> bytes:
    """MariaDB's layout: 0x80 | n, the length in n big-endian bytes, a zlib stream."""
    return bytes([0x82]) + len(raw).to_bytes(2, "big") + zlib.compress(raw)


@pytest.mark.parametrize(
    ("kind", "why"),
    [
        (0x14, "pre-GA write rows"),
        (0x16, "pre-GA delete rows"),
        (0x1A, "incident: changes may be missing"),
        (0x11, "statement-based LOAD DATA, first half"),
        (0x12, "statement-based LOAD DATA"),
        (0x27, "MySQL partial JSON update rows"),
        (0x28, "MySQL compressed transaction payload"),
        (0x00, "unknown event"),
        (0x50, "a type from a newer server"),
        (0xAC, "a MariaDB type after the compressed ones"),
    ],
)
def test_an_event_type_that_may_carry_rows_is_refused_never_skipped(kind: int, why: str) -> None:
    assert action(kind, 0) == "refuse", why
    with pytest.raises(UnreadableEvent, match=f"type {kind}"):
        screen(MysqlPacket(packet(kind, b"\x00" * 12), "utf8"), 0, "mysql-bin.000001:4000")


def test_an_unknown_type_its_writer_marks_ignorable_is_passed() -> None:
    assert action(0x50, 0x80) == "pass"
    assert action(0x28, 0x80) == "refuse"  # a compressed transaction is never ignorable


@pytest.mark.parametrize("kind", [0x02, 0x10, 0x13, 0x17, 0x18, 0x19, 0x1E, 0x1F, 0x20, 0xA2])
def test_the_types_the_readers_handle_pass(kind: int) -> None:
    assert action(kind, 0) == "pass"


@pytest.mark.parametrize("kind", range(0xA5, 0xAC))
def test_mariadb_compressed_types_are_inflated(kind: int) -> None:
    assert action(kind, 0) == "inflate"


def test_a_compressed_update_v2_becomes_the_plain_event_with_the_same_rows() -> None:
    rows = b"\x00row image before\x00row image after" * 20
    head = b"\x07\x00\x00\x00\x00\x00" + b"\x01\x00" + b"\x04\x00\xaa\xbb"  # V2, 2 extra bytes
    columns = b"\x0b" + b"\xff\x07" + b"\xff\x07"  # 11 columns, two bitmaps of 2 bytes
    crc = b"CRC!"
    inflated = inflate(packet(0xAA, head + columns + compressed(rows), 0x8, crc), 4)
    assert inflated == packet(0x1F, head + columns + rows, 0x8, crc)


def test_a_compressed_query_becomes_the_plain_query() -> None:
    status = b"\x00\x01\x02"
    post = struct.pack("<IIBHH", 9, 0, len(b"helpdesk"), 0, len(status))
    statement = b"TRUNCATE TABLE ticket_tags"
    compressed_event = packet(0xA5, post + status + b"helpdesk\x00" + compressed(statement))
    assert inflate(compressed_event, 0) == packet(0x02, post + status + b"helpdesk\x00" + statement)


def test_a_corrupt_compressed_event_stops_the_stream() -> None:
    body = b"\x01\x00\x00\x00\x00\x00\x00\x00" + b"\x02\x03" + b"\x82\x00\x10not zlib"
    with pytest.raises(UnreadableEvent, match="cannot decompress"):
        screen(MysqlPacket(packet(0xA6, body), "utf8"), 0, "mysql-bin.000001:4000")


def test_a_halted_worker_is_not_ready_and_says_why() -> None:
    beat = orjson.dumps({"at_s": 100.0, "lag_s": 0.0, "halted": "type 40 at mysql-bin.1:4"})
    result = verdict(b"{}", beat, now_s=101.0, max_lag_s=30, max_heartbeat_age_s=15)
    assert not result.ready
    assert result.reasons == ("worker stopped applying: type 40 at mysql-bin.1:4",)

"""Every binlog packet's event type screened before either reader takes it.

Both readers (the library's and ``hotevents``) know a fixed set of event types; the library
silently drops any other. Most of the others are harmless, but some carry row changes:
MariaDB's compressed events (``log_bin_compress=ON``, which an operator can switch on while
the worker runs), MySQL's compressed transactions and partial JSON updates, statement-based
``LOAD DATA``. So every packet's type is looked up once (``PASSED``, a set): a compressed
event is inflated here into the plain event it stands for, which both readers then decode as
usual; an event that may carry rows and that nothing here can read stops the stream
(``UnreadableEvent``): never skipped. A type marked ignorable by its writer
(``LOG_EVENT_IGNORABLE_F``) is passed: the server promises that skipping it is safe.
"""

from __future__ import annotations

import zlib
from typing import Any

from pymysql.protocol import MysqlPacket
from pymysqlreplication.constants import BINLOG

from cdc_worker.errors import UnreadableEvent

TYPE_OFFSET = 5  # the OK byte, the 4-byte timestamp, then the event type
SIZE_OFFSET = 10  # ... the type, the 4-byte server id, then the 4-byte event size
FLAGS_OFFSET = 18
HEADER_END = 20  # the OK byte and the 19-byte event header
LOG_EVENT_IGNORABLE_F = 0x80
QUERY_POST_HEADER = 13  # thread id 4, exec time 4, schema length 1, error code 2, status length 2

QUERY_COMPRESSED_EVENT = 0xA5
# MariaDB's compressed event -> (the plain event it stands for, its fixed post-header length)
COMPRESSED = {
    QUERY_COMPRESSED_EVENT: (BINLOG.QUERY_EVENT, QUERY_POST_HEADER),
    0xA6: (BINLOG.WRITE_ROWS_EVENT_V1, 8),
    0xA7: (BINLOG.UPDATE_ROWS_EVENT_V1, 8),
    0xA8: (BINLOG.DELETE_ROWS_EVENT_V1, 8),
    0xA9: (BINLOG.WRITE_ROWS_EVENT_V2, 10),
    0xAA: (BINLOG.UPDATE_ROWS_EVENT_V2, 10),
    0xAB: (BINLOG.DELETE_ROWS_EVENT_V2, 10),
}
UPDATES = {BINLOG.UPDATE_ROWS_EVENT_V1, BINLOG.UPDATE_ROWS_EVENT_V2}
# Types the readers handle, or that carry no row change (bookkeeping, GTIDs, statement
# context for a QUERY_EVENT that the reader sees itself, XA PREPARE which ends rows seen).
PASSED = frozenset(
    {
        BINLOG.START_EVENT_V3,
        BINLOG.QUERY_EVENT,
        BINLOG.STOP_EVENT,
        BINLOG.ROTATE_EVENT,
        BINLOG.INTVAR_EVENT,
        BINLOG.RAND_EVENT,
        BINLOG.USER_VAR_EVENT,
        BINLOG.FORMAT_DESCRIPTION_EVENT,
        BINLOG.XID_EVENT,
        BINLOG.TABLE_MAP_EVENT,
        BINLOG.WRITE_ROWS_EVENT_V1,
        BINLOG.UPDATE_ROWS_EVENT_V1,
        BINLOG.DELETE_ROWS_EVENT_V1,
        BINLOG.HEARTBEAT_LOG_EVENT,
        BINLOG.IGNORABLE_LOG_EVENT,
        BINLOG.ROWS_QUERY_LOG_EVENT,
        BINLOG.WRITE_ROWS_EVENT_V2,
        BINLOG.UPDATE_ROWS_EVENT_V2,
        BINLOG.DELETE_ROWS_EVENT_V2,
        BINLOG.GTID_LOG_EVENT,
        BINLOG.ANONYMOUS_GTID_LOG_EVENT,
        BINLOG.PREVIOUS_GTIDS_LOG_EVENT,
        0x24,  # TRANSACTION_CONTEXT_EVENT (group replication)
        0x25,  # VIEW_CHANGE_EVENT (group replication)
        BINLOG.XA_PREPARE_EVENT,
        0x29,  # HEARTBEAT_LOG_EVENT_V2
        0x2A,  # GTID_TAGGED_LOG_EVENT (MySQL 8.3)
        BINLOG.MARIADB_ANNOTATE_ROWS_EVENT,
        BINLOG.MARIADB_BINLOG_CHECKPOINT_EVENT,
        BINLOG.MARIADB_GTID_EVENT,
        BINLOG.MARIADB_GTID_GTID_LIST_EVENT,
        BINLOG.MARIADB_START_ENCRYPTION_EVENT,
    }
)
# What to change on the source for the row-carrying types nothing here reads.
ADVICE = {
    0x27: "MySQL's partial JSON updates: set binlog_row_value_options='' on the source",
    0x28: "MySQL's compressed transactions: set binlog_transaction_compression=OFF",
    BINLOG.INCIDENT_EVENT: "the source logged an incident (changes may be missing from its binlog)",
    BINLOG.BEGIN_LOAD_QUERY_EVENT: "statement-based LOAD DATA: keep binlog_format=ROW in "
    "every session",
    BINLOG.EXECUTE_LOAD_QUERY_EVENT: "statement-based LOAD DATA: keep binlog_format=ROW in "
    "every session",
}


def action(kind: int, flags: int) -> str:
    """What to do with an event of type ``kind``: "pass", "inflate" or "refuse"."""
    if kind in PASSED:
        return "pass"
    if kind in COMPRESSED:
        return "inflate"
    if flags & LOG_EVENT_IGNORABLE_F and kind not in ADVICE:
        return "pass"
    return "refuse"


def screen(packet: Any, checksum_bytes: int, where: str) -> Any:
    """The packet (not in ``PASSED``) as the readers may take it: itself, or the plain event
    a compressed one stands for; raises ``UnreadableEvent`` for one that must not be skipped."""
    data: bytes = packet._data
    kind, flags = data[TYPE_OFFSET], int.from_bytes(data[FLAGS_OFFSET:HEADER_END], "little")
    verdict = action(kind, flags)
    if verdict == "pass":
        return packet
    if verdict == "inflate":
        try:
            return MysqlPacket(inflate(data, checksum_bytes), "utf8")
        except (ValueError, IndexError, zlib.error) as exc:
            raise UnreadableEvent(f"cannot decompress the event at {where}: {exc}") from None
    advice = ADVICE.get(kind, "an event type the worker does not know")
    raise UnreadableEvent(
        f"the binlog event at {where} (type {kind}) may change rows and the worker cannot "
        f"read it: {advice}; the worker stops here rather than skip it"
    )


def inflate(data: bytes, checksum_bytes: int) -> bytes:
    """A compressed event's packet rewritten as the plain event it stands for: same header
    (position, timestamp, flags), the plain type, the size of the inflated body."""
    plain, post_header = COMPRESSED[data[TYPE_OFFSET]]
    end = len(data) - checksum_bytes
    if plain == BINLOG.QUERY_EVENT:
        start = _query_text_start(data)
    else:
        start = _rows_start(data, plain, post_header)
    body = data[HEADER_END:start] + decompress(data, start, end)
    size = 19 + len(body) + checksum_bytes
    header = bytearray(data[:HEADER_END])
    header[TYPE_OFFSET] = plain
    header[SIZE_OFFSET : SIZE_OFFSET + 4] = size.to_bytes(4, "little")
    return bytes(header) + body + data[end:]


def decompress(data: bytes, start: int, end: int) -> bytes:
    """MariaDB's compressed block at ``data[start:end]``: a byte ``0x80 | n``, the inflated
    length in ``n`` big-endian bytes, then a zlib stream."""
    head = data[start]
    width = head & 0x07
    if head & 0xE0 != 0x80 or not 1 <= width <= 4:
        raise ValueError(f"not a compressed block (header byte {head:#x})")
    length = int.from_bytes(data[start + 1 : start + 1 + width], "big")
    inflated = zlib.decompress(data[start + 1 + width : end])
    if len(inflated) != length:
        raise ValueError(f"inflated to {len(inflated)} bytes, the header says {length}")
    return inflated


def _query_text_start(data: bytes) -> int:
    """Where a query event's statement starts: after the status variables and the schema."""
    schema_length = data[HEADER_END + 8]
    status_length = int.from_bytes(data[HEADER_END + 11 : HEADER_END + 13], "little")
    return HEADER_END + QUERY_POST_HEADER + status_length + schema_length + 1


def _rows_start(data: bytes, plain: int, post_header: int) -> int:
    """Where a row event's rows start: after the post-header (and a V2 event's extra data),
    the column count and the column bitmaps, which MariaDB leaves uncompressed."""
    pos = HEADER_END + post_header
    if post_header == 10:
        pos += int.from_bytes(data[pos - 2 : pos], "little") - 2
    width, pos = _packed_int(data, pos)
    bitmaps = 2 if plain in UPDATES else 1
    return pos + bitmaps * ((width + 7) // 8)


def _packed_int(data: bytes, pos: int) -> tuple[int, int]:
    """A length-encoded integer and the position after it."""
    first = data[pos]
    if first < 251:
        return first, pos + 1
    width = {252: 2, 253: 3, 254: 8}[first]
    return int.from_bytes(data[pos + 1 : pos + 1 + width], "little"), pos + 1 + width

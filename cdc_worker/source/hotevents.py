"""The stream's hot events read straight off their packets, without the library's event objects.

A catch-up is mostly four kinds of events: a GTID, a table map and a row event per table, an
XID. For each, python-mysql-replication builds a packet wrapper and an event object through
several constructors with a dozen keyword arguments: in a profile of the reader child that was
about 60% of its time, more than reading the socket and decoding the rows together.

Here, once the library has parsed a table map, the same table map again is only looked up
(``tablemaps`` keeps the parse by the event's bytes); once the row decoder has compiled a plan
for it, its row events are read from the packet's bytes by the plan; GTID and XID events are
read by two fixed layouts. Anything else, and anything unexpected in these
(another layout, a table map not seen yet, an unplanned table, any error), goes to the
library's own ``fetchone`` with the packet untouched: it is handed back to the library as the
next packet it reads. So the library still connects, handles rotations, format descriptions,
heartbeats, DDL and every first sight of a table, and the worker's "library" decoder mode
does not take this path at all: the differential tests compare the two end to end.
"""

from __future__ import annotations

import struct
from collections import Counter
from typing import Any, NamedTuple

from pymysqlreplication.constants import BINLOG

from cdc_worker.source.rowdecoder import Images, RowDecoder, row_images
from cdc_worker.source.tablemaps import CACHE_ATTRIBUTE
from projections.changes import Op, RowChange

NO_FOREIGN_KEY_CHECKS_FLAG = 0x0002
HEADER = struct.Struct("<IBIIIH")  # timestamp, type, server id, event size, next position, flags
HEADER_END = 20  # the OK byte, then the 19-byte event header
CHECKSUM_BYTES = 4
_U16 = struct.Struct("<H").unpack_from
_U64_U32_U8 = struct.Struct("<QIB").unpack_from
# Row event type -> (operation, the post-header length this reader knows)
ROW_EVENTS = {
    BINLOG.WRITE_ROWS_EVENT_V1: (Op.INSERT, 8),
    BINLOG.UPDATE_ROWS_EVENT_V1: (Op.UPDATE, 8),
    BINLOG.DELETE_ROWS_EVENT_V1: (Op.DELETE, 8),
    BINLOG.WRITE_ROWS_EVENT_V2: (Op.INSERT, 10),
    BINLOG.UPDATE_ROWS_EVENT_V2: (Op.UPDATE, 10),
    BINLOG.DELETE_ROWS_EVENT_V2: (Op.DELETE, 10),
}


def row_changes(
    table: str, op: Op, images: list[Images], log_file: str, log_pos: int, flags: int
) -> list[RowChange]:
    """A row event's decoded images as row changes, by either path."""
    checks = not (flags & NO_FOREIGN_KEY_CHECKS_FLAG)
    where = f"{log_file}:{log_pos}"
    return [RowChange(table, op, before, after, where, checks) for before, after in images]


class Rows(NamedTuple):
    """A row event's changes, decoded."""

    changes: list[RowChange]


class Gtid(NamedTuple):
    """MariaDB's GTID event: a transaction starts."""

    gtid: str


class Xid(NamedTuple):
    """An XID event: a transaction commits; ``log_pos`` is where the next event starts."""

    log_pos: int
    timestamp: int


HotEvent = Rows | Gtid | Xid
SKIP = object()  # read and applied to the stream's state (a known table map); nothing to return


class HotPath:
    """Reads the hot events of one stream (see the module docstring).

    ``stream`` is the library's reader; its name-mangled settings are read once.
    """

    def __init__(self, stream: Any, decoder: RowDecoder) -> None:
        self.stream = stream
        self.decoder = decoder
        get = stream.__dict__.get
        self.checksum_bytes = CHECKSUM_BYTES if get("_BinLogStreamReader__use_checksum") else 0
        self.only_tables = get("_BinLogStreamReader__only_tables")
        self.only_schemas = get("_BinLogStreamReader__only_schemas")
        # By kind (rows, table maps, gtids, xids): what the tests check took this path.
        self.events_read: Counter[str] = Counter()
        self.usable = not (
            get("_BinLogStreamReader__verify_checksum")
            or get("_BinLogStreamReader__ignored_tables")
            or get("_BinLogStreamReader__ignored_schemas")
            or stream.end_log_pos
            or stream.skip_to_timestamp
        )

    def read(self, packet: Any) -> HotEvent | object | None:
        """The packet's event, ``SKIP``, or None: the library must read this packet."""
        data: bytes = packet._data
        if not self.usable or data[0] != 0 or len(data) < HEADER_END:
            return None
        timestamp, kind, server_id, size, log_pos, _ = HEADER.unpack_from(data, 1)
        if len(data) != 1 + size:  # the event is not the whole packet: not ours to read
            return None
        end = HEADER_END + size - 19 - self.checksum_bytes  # where the body ends
        try:
            if kind in ROW_EVENTS:
                found: HotEvent | object | None = self._rows(data, kind, end, log_pos)
                name = "rows"
            elif kind == BINLOG.TABLE_MAP_EVENT:
                found, name = self._table_map(data, end), "table maps"
            elif kind == BINLOG.XID_EVENT:
                found, name = Xid(log_pos, timestamp), "xids"
            elif kind == BINLOG.MARIADB_GTID_EVENT:
                seq_no, domain_id, _flags = _U64_U32_U8(data, HEADER_END)
                found, name = Gtid(f"{domain_id}-{server_id}-{seq_no}"), "gtids"
            else:
                return None
        except Exception:  # any surprise: the library reads the untouched packet
            return None
        if found is not None:
            self.events_read[name] += 1
            if log_pos:
                self.stream.log_pos = log_pos  # as the library's fetchone does for every event
        return found

    def _declared(self, kind: int, known: int) -> bool:
        lengths = self.stream.__dict__.get("_BinLogStreamReader__post_header_lengths")
        return not lengths or kind - 1 >= len(lengths) or lengths[kind - 1] == known

    def _table_map(self, data: bytes, end: int) -> object | None:
        cache = getattr(self.stream._ctl_connection, CACHE_ATTRIBUTE, None)
        parsed = None if cache is None else cache.get(data[HEADER_END:end])
        if parsed is None:
            return None  # first sight: the library parses it (and caches it)
        if parsed["_processed"]:
            self.stream.table_map[parsed["table_id"]] = parsed["table_obj"]
        return SKIP

    def _rows(self, data: bytes, kind: int, end: int, log_pos: int) -> Rows | None:
        op, known = ROW_EVENTS[kind]
        if not self._declared(kind, known):
            return None
        table = self.stream.table_map.get(int.from_bytes(data[20:26], "little"))
        if table is None or not self._tracked(table):
            return None
        plan = self.decoder.plan_of(table)
        flags = _U16(data, 26)[0]
        pos = 28
        if known == 10:
            if _U16(data, 28)[0] != 2:
                return None  # extra row data: the library reads it
            pos = 30
        images = row_images(plan, data, pos, end, op) if plan else None
        if images is None:
            return None
        self.decoder.count_specialized(len(images))
        return Rows(row_changes(table.table, op, images, self.stream.log_file, log_pos, flags))

    def _tracked(self, table: Any) -> bool:
        return (self.only_tables is None or table.table in self.only_tables) and (
            self.only_schemas is None or table.schema in self.only_schemas
        )

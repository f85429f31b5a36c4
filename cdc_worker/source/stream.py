"""The library's replication stream, owned: one connection, every packet screened, the
checksum setting followed file by file, the hot events read by ``hotevents``."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import pymysql
from pymysqlreplication import BinLogStreamReader
from pymysqlreplication.event import (
    FormatDescriptionEvent,
    GtidEvent,
    HeartbeatLogEvent,
    MariadbGtidEvent,
    QueryEvent,
    RotateEvent,
    XidEvent,
)
from pymysqlreplication.row_event import DeleteRowsEvent, UpdateRowsEvent, WriteRowsEvent

from cdc_worker.checkpoint import Position
from cdc_worker.errors import StreamInterrupted, UnreadableEvent
from cdc_worker.source import packets, tablemaps
from cdc_worker.source.hotevents import CHECKSUM_BYTES, SKIP, HotPath
from cdc_worker.source.packets import HEADER_END, PASSED, TYPE_OFFSET
from cdc_worker.source.rowdecoder import RowDecoder
from projections.changes import TRACKED_TABLES

ROW_EVENTS = (WriteRowsEvent, UpdateRowsEvent, DeleteRowsEvent)
BINLOG_FILE_NAME = re.compile(r".+\.[0-9]{6,}")  # base name, a dot, a sequence number


@dataclass(frozen=True, slots=True)
class SourceConfig:
    """What the reader needs to connect; holds the password, never logged."""

    host: str
    port: int
    user: str
    password: str
    database: str
    server_id: int
    heartbeat_s: float
    stall_timeout_s: float
    batch_max_rows: int
    is_mariadb: bool
    tls: dict[str, Any] | None = None
    row_decoder: str = "specialized"
    reader_mode: str = "process"


class _OwnedReconnectStream(BinLogStreamReader):  # type: ignore[misc]
    """The library's reader, refusing its silent second connect, parsing each distinct
    table map once and, given a decoder (``hot_decoder``), reading the hot events itself
    (``hotevents``)."""

    _connected_once = False
    cache_table_maps = True
    hot_decoder: RowDecoder | None = None
    _hot: HotPath | None = None
    _handed_back: Any = None  # a packet the hot path gives back to the library's fetchone
    _checksum_at_connect = True

    def _BinLogStreamReader__connect_to_ctl(self) -> None:
        super()._BinLogStreamReader__connect_to_ctl()
        if self.cache_table_maps:
            tablemaps.enable(self._ctl_connection)

    def _BinLogStreamReader__checksum_enabled(self) -> bool:
        """Tell the server we handle checksums whatever ``binlog_checksum`` is now (else
        switching it on while we stream makes the server refuse to go on: error 1236), and
        note whether events carry one now; each format description says so from then on."""
        with self._stream_connection.cursor() as cursor:
            cursor.execute("SET @master_binlog_checksum = @@global.binlog_checksum")
            cursor.execute("SELECT @master_binlog_checksum")
            (algorithm,) = cursor.fetchone()
        if isinstance(algorithm, bytes):
            algorithm = algorithm.decode()
        self._checksum_at_connect = str(algorithm or "NONE").upper() != "NONE"
        return False  # the library need not set the variable again

    def _BinLogStreamReader__connect_to_stream(self) -> None:
        if self._connected_once:
            raise StreamInterrupted("replication connection lost")
        self._connected_once = True
        super()._BinLogStreamReader__connect_to_stream()
        self._BinLogStreamReader__use_checksum = self._checksum_at_connect
        connection = self._stream_connection
        read_packet = connection._read_packet

        def next_packet(*args: Any, **kwargs: Any) -> Any:
            packet, self._handed_back = self._handed_back, None
            if packet is not None:
                return packet  # given back by the hot path: screened already
            packet = read_packet(*args, **kwargs)
            try:  # the one per-packet cost: a set lookup of the event type
                screened = packet._data[TYPE_OFFSET] not in PASSED
            except IndexError:  # an EOF packet
                return packet
            return self._screen(packet) if screened else packet

        connection._read_packet = next_packet

    def _screen(self, packet: Any) -> Any:
        """An event of a type the readers do not take as it comes (see ``packets``)."""
        data = packet._data
        if data[0] != 0 or len(data) < HEADER_END:
            return packet  # not an event (the library reads what it is)
        use_checksum = self._BinLogStreamReader__use_checksum
        end = int.from_bytes(data[14:18], "little")
        return packets.screen(
            packet, CHECKSUM_BYTES if use_checksum else 0, f"{self.log_file}:{end}"
        )

    def fetchone(self) -> Any:
        """The next event: a hot one read here, or what the library's fetchone returns."""
        if self.hot_decoder is None or not self._connected_once:
            return self._library_fetchone()  # connects first
        hot = self._hot
        if hot is None:  # connected: the stream's checksum setting is known now
            hot = self._hot = HotPath(self, self.hot_decoder)
        read_packet = self._stream_connection._read_packet
        while True:
            # A lost connection raises here, not in the library's fetchone (which would try
            # to reconnect, refused above): translate_error makes it StreamInterrupted too.
            packet = read_packet()
            found = hot.read(packet)
            if found is None:
                self._handed_back = packet
                return self._library_fetchone()
            if found is not SKIP:
                return found

    def _library_fetchone(self) -> Any:
        """The library's next event, after following a format description's checksum
        setting and checking a rotation's file name."""
        event = super().fetchone()
        kind = type(event)
        if kind is FormatDescriptionEvent:
            # binlog_checksum changed since we connected: events of this file differ. The
            # library keeps the setting it saw at connect and would cut 4 bytes off every
            # event (file names in rotations: "mysql-bin.00"), or read 4 too many.
            use_checksum = event.checksum_algorithm not in (0, 255, None)
            self._BinLogStreamReader__use_checksum = use_checksum
            if self._hot is not None:
                self._hot.checksum_bytes = CHECKSUM_BYTES if use_checksum else 0
        elif kind is RotateEvent and not BINLOG_FILE_NAME.fullmatch(event.next_binlog):
            name = event.next_binlog
            raise UnreadableEvent(f"a rotation names a malformed binlog file: {name!r}")
        return event


def connect_quietly(**settings: Any) -> pymysql.Connection[Any]:
    """pymysql.connect without the deprecated argument names the library still passes."""
    if "db" in settings:
        settings["database"] = settings.pop("db")
    if "passwd" in settings:
        settings["password"] = settings.pop("passwd")
    return pymysql.connect(**settings)


def open_stream(config: SourceConfig, start: Position) -> Any:
    """A blocking replication stream starting right after the commit at ``start``."""
    settings = {
        "host": config.host,
        "port": config.port,
        "user": config.user,
        "password": config.password,
        "read_timeout": max(config.stall_timeout_s, 2 * config.heartbeat_s),
        "connect_timeout": 10,
    }
    if config.tls:
        settings["ssl"] = config.tls
    position: dict[str, Any] = {"log_file": start.log_file, "log_pos": start.log_pos}
    if start.gtid:  # by GTID whenever there is one: file and position are per server
        position = {"auto_position": start.gtid, "is_mariadb": config.is_mariadb}
    stream = _OwnedReconnectStream(
        connection_settings=settings,
        server_id=config.server_id,
        blocking=True,
        resume_stream=True,
        only_schemas=[config.database],
        only_tables=list(TRACKED_TABLES),
        only_events=[
            *ROW_EVENTS,
            QueryEvent,
            XidEvent,
            RotateEvent,
            FormatDescriptionEvent,
            MariadbGtidEvent,
            GtidEvent,
            HeartbeatLogEvent,
        ],
        slave_heartbeat=config.heartbeat_s,
        enable_logging=False,
        pymysql_wrapper=connect_quietly,
        **position,
    )
    stream.cache_table_maps = config.row_decoder == "specialized"  # "library": all theirs
    return stream

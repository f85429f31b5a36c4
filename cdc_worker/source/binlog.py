"""The binlog source: a reader thread that turns binlog events into transaction chunks.

The thread owns the replication connection. It never reconnects by itself (the library's
silent reconnect would re-deliver or skip events): any connection problem ends the thread
with ``StreamInterrupted`` and the worker resumes from its checkpoint.
"""

from __future__ import annotations

import contextlib
import queue
import re
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import pymysql
from pymysqlreplication import BinLogStreamReader
from pymysqlreplication.event import (
    FormatDescriptionEvent,
    HeartbeatLogEvent,
    MariadbGtidEvent,
    QueryEvent,
    RotateEvent,
    XidEvent,
)
from pymysqlreplication.row_event import DeleteRowsEvent, UpdateRowsEvent, WriteRowsEvent

from cdc_worker.checkpoint import Position
from cdc_worker.errors import CheckpointLost, StreamInterrupted, UnreadableEvent
from cdc_worker.source import packets, tablemaps
from cdc_worker.source.hotevents import CHECKSUM_BYTES, SKIP, Gtid, HotPath, Rows, Xid, row_changes
from cdc_worker.source.packets import HEADER_END, PASSED, TYPE_OFFSET
from cdc_worker.source.rowdecoder import RowDecoder
from projections.changes import TRACKED_TABLES, UPDATE_BEFORE_COLUMNS, Op, RowChange

ER_MASTER_FATAL_ERROR_READING_BINLOG = 1236
ROW_EVENTS = (WriteRowsEvent, UpdateRowsEvent, DeleteRowsEvent)
TRUNCATING_DDL = ("TRUNCATE", "DROP", "RENAME")
INCOMPATIBLE_ALTER = {"DROP", "CHANGE", "MODIFY", "RENAME"}
_IDENTIFIER = r"(?:`(?:[^`]|``)+`|[\w$]+)"
NAME = re.compile(rf"(?P<first>{_IDENTIFIER})(?:\s*\.\s*(?P<second>{_IDENTIFIER}))?")
# Comments (not /*! executable */ ones) and string literals name no table ("double quotes"
# may be identifiers: kept).
IGNORED_TEXT = re.compile(r"/\*(?!M?!).*?\*/|'(?:[^'\\]|\\.)*'|#[^\n]*|-- [^\n]*", re.S)
BINLOG_FILE_NAME = re.compile(r".+\.[0-9]{6,}")  # base name, a dot, a sequence number


@dataclass(slots=True)
class Chunk:
    """Row changes of one transaction, or of a slice of a large one.

    ``commit`` is set on the chunk that ends a transaction: a safe checkpoint. ``ddl`` holds
    a statement that changed a tracked table's data outside row events (TRUNCATE, DROP).
    """

    changes: list[RowChange] = field(default_factory=list)
    commit: Position | None = None
    committed_at_s: float = 0.0
    ddl: str | None = None


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
            data = packet._data
            if data[0] == 0 and len(data) >= HEADER_END and data[TYPE_OFFSET] not in PASSED:
                packet = self._screen(packet)
            return packet

        connection._read_packet = next_packet

    def _screen(self, packet: Any) -> Any:
        """An event of a type the readers do not take as it comes (see ``packets``)."""
        use_checksum = self._BinLogStreamReader__use_checksum
        end = int.from_bytes(packet._data[14:18], "little")
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
    if config.is_mariadb and start.gtid:
        position = {"auto_position": start.gtid, "is_mariadb": True}
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
            HeartbeatLogEvent,
        ],
        slave_heartbeat=config.heartbeat_s,
        enable_logging=False,
        pymysql_wrapper=connect_quietly,
        **position,
    )
    stream.cache_table_maps = config.row_decoder == "specialized"  # "library": all theirs
    return stream


class GtidState:
    """MariaDB's GTID position: the last GTID seen per replication domain."""

    def __init__(self, initial: str | None) -> None:
        self.by_domain: dict[str, str] = {}
        for gtid in filter(None, (initial or "").split(",")):
            self.by_domain[gtid.strip().split("-")[0]] = gtid.strip()

    def see(self, gtid: str) -> None:
        """Record a transaction's GTID."""
        self.by_domain[gtid.split("-")[0]] = gtid

    def __str__(self) -> str:
        return ",".join(self.by_domain[d] for d in sorted(self.by_domain, key=int))


def _row_changes(event: Any, log_file: str, decoder: RowDecoder) -> list[RowChange]:
    """Decode a row event (only tracked tables reach here) into row changes."""
    op = (
        Op.UPDATE
        if isinstance(event, UpdateRowsEvent)
        else Op.INSERT
        if isinstance(event, WriteRowsEvent)
        else Op.DELETE
    )
    images = decoder.images(event)
    return row_changes(event.table, op, images, log_file, event.packet.log_pos, event.flags)


def data_changing_ddl(query: str, default_db: str = "", database: str = "") -> bool:
    """TRUNCATE, DROP or RENAME of a tracked table (rows changed with no row events), an
    ALTER of one that does more than add columns or indexes (only a resync is safe then), or
    DROP DATABASE of the tracked one. A table counts when it is in ``database``: named so, or
    unqualified while ``default_db`` (the statement's current database) is it; with no
    ``database`` given, every database counts."""
    text = IGNORED_TEXT.sub(" ", query)
    names = [_name(match, default_db) for match in NAME.finditer(text)]
    if not names:
        return False
    verb, words = names[0][1].upper(), {name.upper() for _, name in names}
    if verb == "DROP" and len(names) > 2 and names[1][1].upper() in ("DATABASE", "SCHEMA"):
        return _same_db(names[-1][1], database)
    if not any(n.lower() in TRACKED_TABLES and _same_db(db, database) for db, n in names[1:]):
        return False
    return verb in TRUNCATING_DDL or (verb == "ALTER" and bool(INCOMPATIBLE_ALTER & words))


def _name(match: re.Match[str], default_db: str) -> tuple[str, str]:
    """(database, name) of a possibly qualified identifier; backquotes removed."""
    first, second = match["first"].strip("`"), match["second"]
    return (first, second.strip("`")) if second else (default_db, first)


def _same_db(name: str, database: str) -> bool:
    return not database or name.casefold() == database.casefold()


def translate_error(exc: BaseException) -> BaseException:
    """Connection problems become ``StreamInterrupted``; a purged position ``CheckpointLost``."""
    if isinstance(exc, pymysql.err.OperationalError):
        code = exc.args[0] if exc.args else None
        if code == ER_MASTER_FATAL_ERROR_READING_BINLOG:
            return CheckpointLost(f"the server cannot serve the checkpoint: {exc.args[-1]}")
        return StreamInterrupted(f"replication connection failed: {exc}")
    if isinstance(exc, pymysql.err.InterfaceError | OSError | EOFError):
        return StreamInterrupted(f"replication connection failed: {exc!r}")
    return exc


class BinlogReader:
    """Reads the binlog on its own thread and hands chunks over through a bounded queue."""

    def __init__(self, config: SourceConfig, start: Position, queue_max_rows: int = 0):
        self.config = config
        self.start_position = start
        self.chunks: queue.Queue[Chunk | BaseException] = queue.Queue()
        # Back-pressure by rows, not chunks: small transactions must batch up to
        # batch_max_rows, large ones must not pile up in memory.
        self.queue_max_rows = queue_max_rows or 4 * config.batch_max_rows
        self._queued_rows = 0
        self._room = threading.Condition()
        self.last_event_monotonic = time.monotonic()
        self.events_seen = 0
        self._stopping = threading.Event()
        self._stream: Any = None
        self._thread = threading.Thread(target=self._run, name="binlog-reader", daemon=True)
        self._pending_error: BaseException | None = None
        specialized = config.row_decoder == "specialized"
        self.decoder = RowDecoder(specialized, UPDATE_BEFORE_COLUMNS)

    def start(self) -> None:
        """Connect and start reading."""
        self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop reading: unblock the socket read and wait for the thread."""
        self._stopping.set()
        connection = getattr(self._stream, "_stream_connection", None)
        sock = getattr(connection, "_sock", None)
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        self._thread.join(timeout_s)

    def seconds_since_last_event(self) -> float:
        """Heartbeats count as events: a silent stream for long means a stalled one."""
        return time.monotonic() - self.last_event_monotonic

    def next_batch(self, max_rows: int, wait_s: float) -> list[Chunk]:
        """Chunks ready now, up to about ``max_rows`` changes; waits ``wait_s`` for the first."""
        if self._pending_error is not None:
            error, self._pending_error = self._pending_error, None
            raise error
        try:
            first = self.chunks.get(timeout=wait_s)
        except queue.Empty:
            return []
        if isinstance(first, BaseException):
            raise first
        batch = self._drain([first], max_rows)
        self._release(sum(len(chunk.changes) for chunk in batch))
        return batch

    def _release(self, rows: int) -> None:
        with self._room:
            self._queued_rows -= rows
            self._room.notify_all()

    def _drain(self, batch: list[Chunk], max_rows: int) -> list[Chunk]:
        rows = len(batch[0].changes)
        while rows < max_rows and batch[-1].ddl is None:
            try:
                item = self.chunks.get_nowait()
            except queue.Empty:
                break
            if isinstance(item, BaseException):
                self._pending_error = item
                break
            batch.append(item)
            rows += len(item.changes)
        return batch

    def _put(self, item: Chunk | BaseException) -> None:
        rows = len(item.changes) if isinstance(item, Chunk) else 0
        with self._room:
            while self._queued_rows > self.queue_max_rows and not self._stopping.is_set():
                self._room.wait(0.2)
            self._queued_rows += rows
        self.chunks.put(item)

    def _run(self) -> None:
        try:
            self._stream = open_stream(self.config, self.start_position)
            if self.decoder.specialized:
                self._stream.hot_decoder = self.decoder
            self._consume(self._stream)
        except BaseException as exc:  # handed to the worker, which decides
            if not self._stopping.is_set():
                self._put(translate_error(exc))
        finally:
            if self._stream is not None:
                self._stream.close()

    def _consume(self, stream: Any) -> None:
        gtids = GtidState(self.start_position.gtid)
        chunk = Chunk()
        for event in stream:
            self.last_event_monotonic = time.monotonic()
            self.events_seen += 1
            if self._stopping.is_set():
                return
            chunk = self._on_event(event, stream, gtids, chunk)

    def _on_event(self, event: Any, stream: Any, gtids: GtidState, chunk: Chunk) -> Chunk:
        kind = type(event)
        if kind is Rows:
            return self._add(chunk, event.changes)
        if kind is Xid:
            return self._commit(stream.log_file, event.log_pos, event.timestamp, gtids, chunk)
        if kind is Gtid or isinstance(event, MariadbGtidEvent):
            gtids.see(event.gtid)
        elif isinstance(event, ROW_EVENTS):
            return self._add(chunk, _row_changes(event, stream.log_file, self.decoder))
        elif isinstance(event, XidEvent) or (
            isinstance(event, QueryEvent) and event.query.strip().upper() != "BEGIN"
        ):
            if isinstance(event, QueryEvent) and self._changes_tracked_data(event):
                chunk.ddl = event.query[:500]
            log_pos, timestamp = event.packet.log_pos, event.timestamp
            return self._commit(stream.log_file, log_pos, timestamp, gtids, chunk)
        return chunk

    def _changes_tracked_data(self, event: QueryEvent) -> bool:
        schema = event.schema.decode(errors="replace") if event.schema else ""
        return data_changing_ddl(event.query, schema, self.config.database)

    def _add(self, chunk: Chunk, changes: list[RowChange]) -> Chunk:
        chunk.changes.extend(changes)
        if len(chunk.changes) >= self.config.batch_max_rows:
            self._put(chunk)
            return Chunk()
        return chunk

    def _commit(
        self, log_file: str, log_pos: int, timestamp: int, gtids: GtidState, chunk: Chunk
    ) -> Chunk:
        gtid = str(gtids) if self.config.is_mariadb and gtids.by_domain else None
        chunk.commit = Position(log_file, log_pos, gtid)
        chunk.committed_at_s = float(timestamp)
        self._put(chunk)
        return Chunk()

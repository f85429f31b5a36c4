"""The binlog source: a reader thread that turns binlog events into transaction chunks.

The thread owns the replication connection. It never reconnects by itself (the library's
silent reconnect would re-deliver or skip events): any connection problem ends the thread
with ``StreamInterrupted`` and the worker resumes from its checkpoint.
"""

from __future__ import annotations

import contextlib
import queue
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import pymysql
from pymysqlreplication.event import GtidEvent, MariadbGtidEvent, QueryEvent, XidEvent
from pymysqlreplication.row_event import UpdateRowsEvent, WriteRowsEvent

from cdc_worker.checkpoint import Position
from cdc_worker.errors import CheckpointLost, StreamInterrupted
from cdc_worker.source.ddl import data_changing_ddl
from cdc_worker.source.gtid import MysqlGtidTracker
from cdc_worker.source.hotevents import Gtid, Rows, Xid, row_changes
from cdc_worker.source.rowdecoder import RowDecoder
from cdc_worker.source.stream import ROW_EVENTS, SourceConfig, open_stream
from projections.changes import UPDATE_BEFORE_COLUMNS, Op, RowChange

ER_MASTER_FATAL_ERROR_READING_BINLOG = 1236


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


Gtids = GtidState | MysqlGtidTracker


def gtid_state(is_mariadb: bool, initial: str | None) -> Gtids:
    """The stream's GTID position: MariaDB's per-domain GTIDs, or MySQL's executed set."""
    return GtidState(initial) if is_mariadb else MysqlGtidTracker(initial)


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

    def queue_depth(self) -> int:
        """Chunks read and waiting for the applier."""
        return self.chunks.qsize()

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
        gtids = gtid_state(self.config.is_mariadb, self.start_position.gtid)
        chunk = Chunk()
        for event in stream:
            self.last_event_monotonic = time.monotonic()
            self.events_seen += 1
            if self._stopping.is_set():
                return
            chunk = self._on_event(event, stream, gtids, chunk)

    def _on_event(self, event: Any, stream: Any, gtids: Gtids, chunk: Chunk) -> Chunk:
        kind = type(event)
        if kind is Rows:
            return self._add(chunk, event.changes)
        if kind is Xid:
            return self._commit(stream.log_file, event.log_pos, event.timestamp, gtids, chunk)
        if kind is Gtid or isinstance(event, MariadbGtidEvent | GtidEvent):
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
        self, log_file: str, log_pos: int, timestamp: int, gtids: Gtids, chunk: Chunk
    ) -> Chunk:
        gtid = str(gtids) or None
        chunk.commit = Position(log_file, log_pos, gtid)
        chunk.committed_at_s = float(timestamp)
        self._put(chunk)
        return Chunk()

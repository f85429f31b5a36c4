"""A consistent snapshot of the source, read in primary-key chunks, as row changes.

One REPEATABLE READ transaction started WITH CONSISTENT SNAPSHOT; on MariaDB its binlog
position comes from ``binlog_snapshot_file``/``binlog_snapshot_position`` (exact, no lock).
Tickets are read by keyset pagination (``id > last ORDER BY id LIMIT n``) and each chunk's
children with one range query per child table: four queries per chunk, never one per ticket.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import DBAPIError

from cdc_worker.checkpoint import Position
from cdc_worker.errors import SourceError
from projections.changes import (
    ATTACHMENTS,
    COMMENTS,
    DEPARTMENTS,
    REFERENCE_TABLES,
    STATUSES,
    TAGS,
    TICKET_TAGS,
    TICKETS,
    USERS,
    Op,
    RowChange,
)

COLUMNS = {
    DEPARTMENTS: "id, name, created_at",
    USERS: "id, email, full_name, department_id, is_active, created_at",
    STATUSES: "id, name, is_closed",
    TAGS: "id, name",
    TICKETS: "id, title, description, status_id, priority, department_id, requester_id, "
    "assignee_id, is_deleted, created_at, updated_at",
    ATTACHMENTS: "id, ticket_id, filename, content_type, size_bytes, created_at",
    TICKET_TAGS: "ticket_id, tag_id",
    COMMENTS: "id, ticket_id, created_at",
}
CHILD_TABLES = (ATTACHMENTS, TICKET_TAGS, COMMENTS)
UNBOUNDED = 2**63 - 1
Rows = list[dict[str, Any]]  # keyed by column
ChunkRows = tuple[int, int, list[tuple[str, Rows]]]  # first id, last id, rows by table


@dataclass(frozen=True, slots=True)
class TicketChunk:
    """One chunk of tickets with their children (rows by table: tickets first), the id range
    it covers, and the snapshot it was read in."""

    parts: list[tuple[str, Rows]]
    first_id: int
    last_id: int
    position: Position  # of the snapshot it was read in

    @property
    def label(self) -> str:
        """Where its rows come from, for dead letters."""
        return snapshot_label(self.position)

    @property
    def changes(self) -> list[RowChange]:
        """The chunk's rows as insert changes, in order."""
        return [c for table, rows in self.parts for c in as_changes(table, rows, self.label)]

    @property
    def tickets(self) -> int:
        """Ticket rows in the chunk."""
        return sum(len(rows) for table, rows in self.parts if table == TICKETS)


def as_changes(table: str, rows: Rows, label: str) -> list[RowChange]:
    """Rows of a table as insert changes."""
    op, new = Op.INSERT, RowChange
    return [new(table, op, None, row, label) for row in rows]


def snapshot_label(position: Position) -> str:
    """The source position of a snapshot's rows, as dead letters show it."""
    return f"snapshot at {position}"


def as_ticket_chunk(chunk: ChunkRows, position: Position) -> TicketChunk:
    """A chunk's rows, with the position of the snapshot they were read in."""
    first_id, last_id, parts = chunk
    return TicketChunk(parts, first_id, last_id, position)


class Snapshot:
    """Reads inside one consistent-snapshot transaction."""

    def __init__(self, connection: Connection, position: Position) -> None:
        self.connection = connection
        self.position = position
        self.label = snapshot_label(position)

    def reference_rows(self, chunk_rows: int) -> Iterator[tuple[str, Rows]]:
        """Reference tables' rows, streamed with a server-side cursor."""
        # Per statement: Connection.execution_options() would switch every later query of
        # this connection to an (unbuffered, slower) server-side cursor too.
        streaming = {"stream_results": True}
        for table in REFERENCE_TABLES:
            sql = f"SELECT {COLUMNS[table]} FROM {table}"
            result = self.connection.exec_driver_sql(sql, execution_options=streaming)
            for rows in result.mappings().partitions(chunk_rows):
                yield table, [dict(row) for row in rows]

    def reference_changes(self, chunk_rows: int) -> Iterator[list[RowChange]]:
        """Reference tables as insert changes."""
        for table, rows in self.reference_rows(chunk_rows):
            yield as_changes(table, rows, self.label)

    def ticket_row_chunks(self, chunk_rows: int, after_id: int = 0) -> Iterator[ChunkRows]:
        """Tickets in id order, ``chunk_rows`` at a time, each with its children, as rows."""
        while True:
            chunk = self.read_chunk_rows(after_id, chunk_rows)
            yield chunk
            if chunk[1] == UNBOUNDED:
                return
            after_id = chunk[1]

    def ticket_chunks(self, chunk_rows: int, after_id: int = 0) -> Iterator[TicketChunk]:
        """Tickets in id order, ``chunk_rows`` at a time, each with its children."""
        for chunk in self.ticket_row_chunks(chunk_rows, after_id):
            yield as_ticket_chunk(chunk, self.position)

    def read_chunk(self, after_id: int, chunk_rows: int) -> TicketChunk:
        """One chunk of ``ticket_chunks``."""
        return as_ticket_chunk(self.read_chunk_rows(after_id, chunk_rows), self.position)

    def read_chunk_rows(self, after_id: int, chunk_rows: int) -> ChunkRows:
        """Tickets with ids in (after_id, last_id] and their children; the last chunk of the
        table reaches to UNBOUNDED so orphaned children beyond the last ticket are read too."""
        lower = after_id if after_id > 0 else -UNBOUNDED
        tickets = self._rows(
            f"SELECT {COLUMNS[TICKETS]} FROM tickets WHERE id > %s ORDER BY id LIMIT %s",
            (lower, chunk_rows),
        )
        upper = tickets[-1]["id"] if len(tickets) == chunk_rows else UNBOUNDED
        parts = [(TICKETS, tickets)]
        for table in CHILD_TABLES:
            sql = f"SELECT {COLUMNS[table]} FROM {table} WHERE ticket_id > %s AND ticket_id <= %s"
            parts.append((table, self._rows(sql, (lower, upper))))
        return lower, upper, parts

    def read_tickets(self, ids: list[int]) -> list[RowChange]:
        """Chosen tickets and their children, for targeted repair."""
        marks = ", ".join(["%s"] * len(ids))
        sql = f"SELECT {COLUMNS[TICKETS]} FROM tickets WHERE id IN ({marks})"
        changes = as_changes(TICKETS, self._rows(sql, tuple(ids)), self.label)
        for table in CHILD_TABLES:
            sql = f"SELECT {COLUMNS[table]} FROM {table} WHERE ticket_id IN ({marks})"
            changes += as_changes(table, self._rows(sql, tuple(ids)), self.label)
        return changes

    def ticket_ids_in_department(self, department_id: int) -> list[int]:
        """Ids of the department's tickets (soft-deleted included)."""
        rows = self._rows("SELECT id FROM tickets WHERE department_id = %s", (department_id,))
        return [int(row["id"]) for row in rows]

    def count_tickets(self) -> int:
        """Tickets in the snapshot, for progress reporting."""
        return int(self.connection.exec_driver_sql("SELECT COUNT(*) FROM tickets").scalar_one())

    def _rows(self, sql: str, params: tuple[Any, ...]) -> list[dict[str, Any]]:
        result = self.connection.exec_driver_sql(sql, params)
        columns = list(result.keys())
        return [dict(zip(columns, row, strict=True)) for row in result.fetchall()]


@contextmanager
def open_snapshot(engine: Engine, gtid: bool = True) -> Iterator[Snapshot]:
    """A consistent snapshot and the exact binlog position it corresponds to.

    ``gtid=False`` leaves the position's GTID out: MariaDB 10.11 finds it by reading the
    binlog file from its start, which a resync chunk or a repair (whose positions are only
    compared with the stream's) need not pay for every time.
    """
    with engine.connect() as connection:
        connection.exec_driver_sql("SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        try:
            if _is_mariadb(connection):
                connection.exec_driver_sql("START TRANSACTION WITH CONSISTENT SNAPSHOT")
                position = snapshot_position(connection, gtid)
            else:
                position = _locked_snapshot_position(connection)
            yield Snapshot(connection, position)
        finally:
            connection.rollback()


def _is_mariadb(connection: Connection) -> bool:
    version = connection.exec_driver_sql("SELECT VERSION()").scalar_one()
    return "mariadb" in str(version).lower()


def _locked_snapshot_position(connection: Connection) -> Position:
    """MySQL 8: no snapshot status variables, so hold a global read lock for an instant
    (needs RELOAD), as mysqldump --single-transaction --source-data does."""
    connection.exec_driver_sql("FLUSH TABLES WITH READ LOCK")
    try:
        connection.exec_driver_sql("START TRANSACTION WITH CONSISTENT SNAPSHOT")
        try:
            row = connection.exec_driver_sql("SHOW BINARY LOG STATUS").first()
        except DBAPIError:
            row = connection.exec_driver_sql("SHOW MASTER STATUS").first()
    finally:
        connection.exec_driver_sql("UNLOCK TABLES")
    if row is None:
        raise SourceError("the server reports no binlog status: is log_bin on?")
    executed = str(row[4]).replace("\n", "") if len(row) > 4 and row[4] else None
    return Position(str(row[0]), int(row[1]), executed)  # with gtid_mode=ON, its GTID set


def snapshot_position(connection: Connection, gtid: bool = True) -> Position:
    """The binlog position of the open consistent snapshot (MariaDB), with its GTID state
    unless ``gtid`` is False."""
    rows = connection.exec_driver_sql(
        "SHOW STATUS WHERE Variable_name IN ('Binlog_snapshot_file', 'Binlog_snapshot_position')"
    )
    status: dict[str, str] = {str(name): str(value) for name, value in rows}
    log_file = status.get("Binlog_snapshot_file")
    log_pos = status.get("Binlog_snapshot_position")
    if not log_file or log_pos is None:
        raise SourceError("the server reports no binlog snapshot position: is log_bin on?")
    if not gtid:
        return Position(str(log_file), int(log_pos))
    state = connection.exec_driver_sql(
        "SELECT BINLOG_GTID_POS(%s, %s)", (log_file, int(log_pos))
    ).scalar_one_or_none()
    return Position(str(log_file), int(log_pos), str(state) if state else None)

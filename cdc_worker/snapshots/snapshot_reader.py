"""A consistent snapshot read by a forked child, so reading and projecting use both cores.

Building a read model costs about as much in reading (pymysql parsing rows, converting
DATETIMEs) as in projecting and writing, and both hold the GIL. Here a child process opens
the snapshot (one transaction, one binlog position, exactly as ``open_snapshot``) and sends
its rows, keyed by column, over a pipe; the parent turns them into row changes and projects
them while the child reads the next chunk. The interface is the part of ``Snapshot``
the snapshotter uses.

The child dies with the thread that forked it, is killed when the snapshot is closed, and
hands its errors to the parent in order (the parent raises them as they were).
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Iterator
from contextlib import contextmanager
from multiprocessing.connection import Connection
from typing import Any

import pymysql
from sqlalchemy import Engine

from cdc_worker.checkpoint import Position
from cdc_worker.snapshots.snapshot import (
    TicketChunk,
    as_changes,
    as_ticket_chunk,
    open_snapshot,
    snapshot_label,
)
from cdc_worker.source.reader_process import portable, prepare_child, start_child, stop_child
from projections.changes import RowChange

WAIT_S = 1.0


class ProcessSnapshot:
    """What the snapshotter reads, from a child process holding the snapshot open."""

    def __init__(self, messages: Any, process: Any, position: Position, tickets: int) -> None:
        self._messages = messages
        self._process = process
        self._ahead: tuple[Any, ...] | None = None
        self.position = position
        self.label = snapshot_label(position)
        self._tickets = tickets

    def count_tickets(self) -> int:
        """Tickets in the snapshot."""
        return self._tickets

    def reference_changes(self, chunk_rows: int) -> Iterator[list[RowChange]]:
        """Reference tables as insert changes (in the child's chunks, ``chunk_rows`` rows)."""
        while self._peek()[0] == "refs":
            _, table, rows = self._take()
            yield as_changes(table, rows, self.label)

    def ticket_chunks(self, chunk_rows: int) -> Iterator[TicketChunk]:
        """Tickets in id order, with their children, as the child read them."""
        while self._peek()[0] == "chunk":
            _, first_id, last_id, parts = self._take()
            yield as_ticket_chunk((first_id, last_id, parts), self.position)
        if (kind := self._take()[0]) != "end":
            raise RuntimeError(f"the snapshot reader sent {kind!r} out of order")

    def _peek(self) -> tuple[Any, ...]:
        if self._ahead is None:
            self._ahead = receive(self._messages, self._process)
        return self._ahead

    def _take(self) -> tuple[Any, ...]:
        message, self._ahead = self._peek(), None
        return message


def receive(messages: Any, process: Any, name: str = "snapshot reader") -> tuple[Any, ...]:
    """The child's next message; its error raised; its death (even mid-message) an error."""
    while not messages.poll(WAIT_S):
        if not process.is_alive():
            break
    try:
        message: tuple[Any, ...] = messages.recv()
    except EOFError:  # the child was the only writer: it is gone
        raise pymysql.err.OperationalError(2013, f"the {name} process died") from None
    if message[0] == "error":
        raise message[1]
    return message


@contextmanager
def open_process_snapshot(engine: Engine, chunk_rows: int) -> Iterator[ProcessSnapshot]:
    """A consistent snapshot read by a child process, ``chunk_rows`` tickets per chunk.

    The rows come over a pipe: the child reads the next chunk while the parent projects
    this one, and waits to send it until the parent asks for it (memory stays bounded).
    """
    messages, sender = multiprocessing.get_context("fork").Pipe(duplex=False)
    process = start_child(_child_main, (engine, chunk_rows, sender, messages), "snapshot-reader")
    sender.close()  # the child's end: closed here, the pipe ends when the child does
    try:
        _, position, tickets = receive(messages, process)
        yield ProcessSnapshot(messages, process, Position(*position), tickets)
    finally:
        stop_child(process)
        messages.close()


def _child_main(engine: Engine, chunk_rows: int, out: Any, parents_end: Connection) -> None:
    prepare_child([parents_end])
    engine.dispose(close=False)  # the parent's pooled connections stay the parent's
    try:
        _read(engine, chunk_rows, out)
    except BaseException as exc:  # handed to the parent, which decides
        out.send(("error", portable(exc, "snapshot reader")))
    out.close()


def _read(engine: Engine, chunk_rows: int, out: Any) -> None:
    with open_snapshot(engine) as snapshot:
        p = snapshot.position
        out.send(("position", (p.log_file, p.log_pos, p.gtid), snapshot.count_tickets()))
        # Keyed by column here: this process has time to spare, the worker has not (building
        # the dicts and pickling them costs 0.9 us a row here; unpickling them 0.8 us there,
        # against 2.3 us for unpickling tuples and zipping them with the columns).
        for table, rows in snapshot.reference_rows(chunk_rows):
            out.send(("refs", table, rows))
        for chunk in snapshot.ticket_row_chunks(chunk_rows):
            out.send(("chunk", *chunk))
        out.send(("end",))

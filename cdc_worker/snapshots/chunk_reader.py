"""A full resync's chunks, read ahead by a forked child while the worker projects the last one.

A resync reads each chunk in a consistent snapshot of its own, and a chunk is only valid if
its snapshot is not older than what the worker has applied when the chunk is committed (see
``resyncer``). So the worker asks for the next chunk only when it will apply no stream batch
before committing it; the child opens that chunk's snapshot at once and reads it while the
worker projects and commits the previous chunk. Reading (pymysql parsing rows) and projecting
each take about one core, so together they use both.

The child serves one request at a time, dies with the thread that forked it, is killed when
closed, and hands its errors to the worker (raised there as they were).
"""

from __future__ import annotations

import multiprocessing
import os
from multiprocessing.connection import Connection

import pymysql
from sqlalchemy import Engine

from cdc_worker.checkpoint import Position
from cdc_worker.snapshots.snapshot import TicketChunk, as_ticket_chunk, open_snapshot
from cdc_worker.snapshots.snapshot_reader import receive
from cdc_worker.source.reader_process import portable, prepare_child, start_child, stop_child

NAME = "resync chunk reader"


class ChunkReader:
    """Reads one chunk at a time in a child process: ``request``, then ``take``."""

    def __init__(self, engine: Engine, chunk_rows: int) -> None:
        context = multiprocessing.get_context("fork")
        child_requests, self._requests = context.Pipe(duplex=False)
        self._replies, child_replies = context.Pipe(duplex=False)
        ends = (child_requests, child_replies, (self._requests, self._replies), os.getpid())
        self._process = start_child(_child_main, (engine, chunk_rows, *ends), "resync-chunk-reader")
        child_requests.close()  # the child's ends: the pipes end when the child does
        child_replies.close()
        self.in_flight = False

    def request(self, after_id: int) -> None:
        """Ask for the chunk after ``after_id``; its snapshot is opened now."""
        if self.in_flight:
            raise RuntimeError("one chunk at a time: take the one asked for first")
        try:
            self._requests.send(after_id)
        except OSError:  # the child is gone: as if it died reading
            raise pymysql.err.OperationalError(2013, f"the {NAME} process died") from None
        self.in_flight = True

    def take(self) -> TicketChunk:
        """The requested chunk, labelled with its snapshot's position (waits for it)."""
        if not self.in_flight:
            raise RuntimeError("no chunk was asked for")
        self.in_flight = False
        _, position, rows = receive(self._replies, self._process, NAME)
        return as_ticket_chunk(rows, Position(*position))

    def close(self) -> None:
        """Kill the child (a chunk in flight is dropped)."""
        stop_child(self._process)
        self._process.close()
        self._requests.close()
        self._replies.close()
        self.in_flight = False


def _child_main(
    engine: Engine,
    chunk_rows: int,
    requests: Connection,
    replies: Connection,
    parents_ends: tuple[Connection, Connection],
    parent_pid: int,
) -> None:
    prepare_child(parents_ends)
    engine.dispose(close=False)  # the parent's pooled connections stay the parent's
    try:
        while (after_id := _next_request(requests, parent_pid)) is not None:
            with open_snapshot(engine, gtid=False) as snapshot:
                p = snapshot.position
                rows = snapshot.read_chunk_rows(after_id, chunk_rows)
            replies.send(("chunk", (p.log_file, p.log_pos, p.gtid), rows))
    except EOFError:  # the worker closed its end: done
        pass
    except BaseException as exc:  # handed to the worker, which decides
        replies.send(("error", portable(exc, NAME)))
    replies.close()


def _next_request(requests: Connection, parent_pid: int) -> int | None:
    """The next chunk asked for; None once the worker is gone (a backstop: the child is
    normally killed with it)."""
    while not requests.poll(1.0):
        if os.getppid() != parent_pid:
            return None
    after_id: int = requests.recv()
    return after_id

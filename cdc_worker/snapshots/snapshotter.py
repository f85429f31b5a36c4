"""Building a whole read model from a consistent snapshot, beside the live one, then swapping.

The new generation's state is written under keys nobody reads yet and its documents into a
staging hash; one Lua step swaps the staging hash in and stores the checkpoint, so readers
see the old read model until the instant they see the complete new one.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

import structlog
from sqlalchemy import Engine
from sqlalchemy.exc import ProgrammingError

from cdc_worker.checkpoint import Checkpoint
from cdc_worker.errors import SourceError
from cdc_worker.observability.metrics import WorkerMetrics
from cdc_worker.observability.progress import Progress
from cdc_worker.observability.reporting import record_dead_letters
from cdc_worker.snapshots.snapshot import Snapshot, open_snapshot
from cdc_worker.snapshots.snapshot_reader import ProcessSnapshot, open_process_snapshot
from cdc_worker.store.interface import FenceLost
from cdc_worker.store.redis_store import RedisStore
from projections.fresh import project_fresh
from projections.projector import StoreOps, project
from projections.state import Refs


class Snapshotter:
    """Builds generation N+1 from a snapshot and swaps it in."""

    def __init__(
        self,
        engine: Engine,
        store: RedisStore,
        metrics: WorkerMetrics,
        chunk_rows: int,
        read_in_child: bool = True,
    ) -> None:
        self.engine = engine
        self.store = store
        self.metrics = metrics
        self.chunk_rows = chunk_rows
        self.read_in_child = read_in_child  # reading beside projecting: both cores
        self.staged_writes = 0
        self.token = ""  # of the build in progress: owns its generation number
        self.on_progress: Callable[[], None] = lambda: None  # after every staged write
        self.log: Any = structlog.get_logger("cdc_worker.snapshot")

    def build(
        self, previous: Checkpoint | None, reason: str, stopping: threading.Event
    ) -> tuple[Checkpoint, Refs] | None:
        """The new checkpoint and references, or None if asked to stop midway."""
        self.token = uuid.uuid4().hex
        generation = self.store.new_generation(previous.generation if previous else 0, self.token)
        started, self.staged_writes = time.monotonic(), 0
        self.log.info("snapshot started", reason=reason, generation=generation)
        try:
            with self._open() as snapshot:
                refs = self._load_refs(snapshot, generation)
                tickets = self._load_tickets(snapshot, generation, refs, stopping, reason)
                position = snapshot.position
        except ProgrammingError as exc:  # 1146: a table is missing, 1142: no SELECT on it
            raise SourceError(
                f"cannot read the source schema ({exc.orig}): run `cdc-worker migrate` and "
                "grant the worker's user SELECT on the database"
            ) from None
        if tickets is None:
            self.log.info("snapshot abandoned: stopping")
            return None
        checkpoint = Checkpoint(generation, position, time.time())
        try:
            self.store.swap_in(checkpoint, previous, self.staged_writes, self.token)
        except FenceLost:  # another builder won, or Redis lost writes: ours is garbage
            if self.store.owns(generation, self.token):  # else the number is someone else's
                self.store.drop_generation(generation)
            raise
        if previous is not None:
            self.store.drop_generation(previous.generation)
        elapsed_s = time.monotonic() - started
        self.metrics.snapshots.labels(reason=reason).inc()
        self.metrics.snapshot_seconds.observe(elapsed_s)
        self.log.info(
            "snapshot swapped in",
            tickets=tickets,
            seconds=round(elapsed_s, 2),
            position=str(position),
            generation=generation,
        )
        return checkpoint, refs

    def _open(self) -> AbstractContextManager[Snapshot | ProcessSnapshot]:
        if self.read_in_child:
            return open_process_snapshot(self.engine, self.chunk_rows)
        return open_snapshot(self.engine)

    def _write(self, generation: int, ops: StoreOps) -> None:
        self.store.write_staged(generation, self.token, ops)
        self.staged_writes += 1
        record_dead_letters(ops, self.metrics, self.log)
        self.on_progress()

    def _load_refs(self, snapshot: Snapshot | ProcessSnapshot, generation: int) -> Refs:
        refs = Refs()
        for changes in snapshot.reference_changes(self.chunk_rows):
            self._write(generation, project(changes, refs, {}))
        return refs

    def _load_tickets(
        self,
        snapshot: Snapshot | ProcessSnapshot,
        generation: int,
        refs: Refs,
        stopping: threading.Event,
        reason: str,
    ) -> int | None:
        # Counted in the same consistent snapshot the chunks are read in: done ends == total.
        progress = Progress(self.metrics, self.log, reason, snapshot.count_tickets())
        for chunk in snapshot.ticket_chunks(self.chunk_rows):
            if stopping.is_set():
                return None
            self._write(generation, project_fresh(chunk.parts, refs, chunk.label))
            progress.advance(chunk.tickets)
        progress.finish()
        return progress.done

"""Resync jobs, run inside the worker between stream batches, so one process writes.

A full resync copies the source into generation N+1 chunk by chunk, each chunk in its own
consistent snapshot, while streaming goes on into both generations (see ``Shadow``). Why the
copy ends consistent: a chunk read at binlog position P >= S (S: what the worker has applied)
already contains every change up to P; the stream then re-delivers the changes in (S, P], and
re-applying them is a no-op because every state change sets or deletes a row by key (the
property crash recovery relies on). Progress is stored with each chunk's writes, so a worker
killed halfway resumes at the next chunk.
"""

from __future__ import annotations

import time
from typing import Any

import structlog
from sqlalchemy import Engine

from cdc_worker.checkpoint import Checkpoint, Position
from cdc_worker.errors import StreamInterrupted
from cdc_worker.observability.metrics import WorkerMetrics
from cdc_worker.observability.progress import Progress
from cdc_worker.observability.reporting import record_dead_letters
from cdc_worker.pipeline import Shadow
from cdc_worker.snapshots.chunk_reader import ChunkReader
from cdc_worker.snapshots.snapshot import UNBOUNDED, TicketChunk, open_snapshot
from cdc_worker.store import keys
from cdc_worker.store.jobs import Job
from cdc_worker.store.jobs import load as load_job
from cdc_worker.store.redis_store import RedisStore
from projections.changes import TICKETS
from projections.fresh import project_fresh
from projections.projector import StoreOps, project, replace_tickets
from projections.state import DEPARTMENT, Refs

REPAIR_CHUNK = 1000
MAX_CLAIMED_SKIPPED = 100  # finished or expired jobs dropped from the claim list per call


class FullResync:
    """A full resync in progress: its job, its shadow generation and its chunk reader."""

    def __init__(self, job: Job, shadow: Shadow, progress: Progress) -> None:
        self.job = job
        self.shadow = shadow
        self.progress = progress
        self.reader: ChunkReader | None = None

    @property
    def reading_ahead(self) -> bool:
        """True while the next chunk is being read: until it is committed, no stream batch
        may be applied (the chunk's snapshot must not be older than what was applied)."""
        return self.reader is not None and self.reader.in_flight

    def close(self) -> None:
        """Stop the chunk reader, if any (a chunk read ahead is dropped: it was not applied)."""
        if self.reader is not None:
            self.reader.close()
            self.reader = None


class Resyncer:
    """Starts, advances, resumes and finishes resync jobs."""

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
        self.read_in_child = read_in_child  # and ahead, when the worker allows it
        self.log: Any = structlog.get_logger("cdc_worker.resync")

    def next_job(self) -> Job | None:
        """The job to run now: the one a previous active worker claimed and did not finish,
        else the next queued one, claimed in the same step (LMOVE to ``RESYNC_CLAIMED``), so
        a worker killed between taking a job and finishing it loses none; finished jobs left
        claimed are dropped."""
        client = self.store.client
        for _ in range(MAX_CLAIMED_SKIPPED):
            job_id = client.lindex(keys.RESYNC_CLAIMED, 0)
            if job_id is None:
                job_id = client.lmove(keys.RESYNC_QUEUE, keys.RESYNC_CLAIMED, "LEFT", "RIGHT")
            if job_id is None:
                return None
            job = load_job(client, _text(job_id))
            if job is not None and job.state in ("queued", "running"):
                return job
            client.lrem(keys.RESYNC_CLAIMED, 0, _text(job_id))
        return None

    def start_full(self, job: Job, checkpoint: Checkpoint) -> FullResync:
        """Begin building generation N+1 beside the live one."""
        generation = self.store.new_generation(checkpoint.generation, job.id)
        total = self._count_tickets()
        job = job.with_(
            state="running", generation=generation, started_at_s=time.time(), tickets_total=total
        )
        pipe = self.store.client.pipeline(transaction=True)
        pipe.set(keys.resync_job(job.id), job.encode())
        pipe.set(keys.RESYNC_ACTIVE, job.id)
        pipe.execute()
        self.metrics.resync_running.set(1)
        self.log.info("resync started", job=job.id, generation=generation, tickets=total)
        return FullResync(job, Shadow(generation, Refs()), self._progress(job))

    def resume(self, checkpoint: Checkpoint) -> FullResync | None:
        """The full resync a previous worker left running, if it still fits the checkpoint."""
        job_id = self.store.client.get(keys.RESYNC_ACTIVE)
        job = None if job_id is None else load_job(self.store.client, _text(job_id))
        if job is None or job.state != "running":
            return None
        if job.generation <= checkpoint.generation:  # swapped in already, or superseded
            self._finish(job, "done" if job.generation == checkpoint.generation else "failed")
            return None
        refs = self.store.load_refs(job.generation) if job.refs_done else Refs()
        self.metrics.resync_running.set(1)
        self.log.info(
            "resync resumed", job=job.id, after_id=job.last_id, tickets_done=job.tickets_done
        )
        shadow = Shadow(job.generation, refs, job.last_id, job.refs_done)
        return FullResync(job, shadow, self._progress(job))

    def _progress(self, job: Job) -> Progress:
        return Progress(
            self.metrics, self.log, "resync", job.tickets_total, job.tickets_done, label="resync"
        )

    def abandon_full(self, why: str) -> None:
        """Give up the full resync in progress, if any: after a switch of source server its
        chunks' binlog positions and the checkpoint's belong to different servers."""
        job_id = self.store.client.get(keys.RESYNC_ACTIVE)
        job = None if job_id is None else load_job(self.store.client, _text(job_id))
        if job is None or job.state != "running":
            return
        self._finish(job, "failed")
        self.store.drop_generation(job.generation)
        self.log.warning("resync abandoned; request it again", job=job.id, reason=why)

    def step(self, run: FullResync, checkpoint: Checkpoint, read_ahead_until_s: float = 0) -> bool:
        """Copy the references or one chunk of tickets; True when the copy is complete.

        Before ``read_ahead_until_s`` (monotonic), the next chunk's snapshot is opened once
        this chunk is in, and read while this one is projected: the caller must then apply
        no stream batch before the next step (``run.reading_ahead`` says so).
        """
        if not run.shadow.refs_done:
            self._copy_refs(run, checkpoint)
            return False
        self._copy_chunk(run, checkpoint, read_ahead_until_s)
        return run.shadow.last_id == UNBOUNDED

    def finish_full(self, run: FullResync, checkpoint: Checkpoint) -> Checkpoint:
        """Swap generation N+1 in, with the same position; returns the new checkpoint."""
        new = Checkpoint(run.shadow.generation, checkpoint.position, checkpoint.committed_at_s)
        run.close()
        run.progress.finish()
        run.job = run.job.with_(tickets_total=run.job.tickets_done)
        self.store.swap_in(new, checkpoint)
        self.store.drop_generation(checkpoint.generation)
        self._finish(run.job, "done")
        self.metrics.snapshots.labels(reason="resync").inc()
        self.log.info(
            "resync swapped in",
            job=run.job.id,
            tickets=run.job.tickets_done,
            rate_per_s=round(run.job.rate_per_s()),
        )
        return new

    def _copy_refs(self, run: FullResync, checkpoint: Checkpoint) -> None:
        ops = StoreOps()
        with open_snapshot(self.engine, gtid=False) as snapshot:
            for changes in snapshot.reference_changes(self.chunk_rows):
                _merge(ops, project(changes, run.shadow.refs, {}))
        job = run.job.with_(refs_done=True)
        self._commit(checkpoint, run.shadow.generation, ops, job)
        run.job, run.shadow.refs_done = job, True

    def _copy_chunk(
        self, run: FullResync, checkpoint: Checkpoint, read_ahead_until_s: float
    ) -> None:
        chunk = self._read_chunk(run, read_ahead_until_s)
        if chunk.position.precedes(checkpoint.position):  # never, unless the loop is wrong
            raise StreamInterrupted(
                f"a resync chunk read at {chunk.position} is older than the applied "
                f"{checkpoint.position}: changes between would be lost; reading it again"
            )
        ops = project_fresh(chunk.parts, run.shadow.refs, chunk.label)
        ops.dead_letters.clear()  # the live generation has reported these rows already
        tickets = chunk.tickets
        # Tickets created since the count make the copy longer: the total rises with them.
        done = run.job.tickets_done + tickets
        total = max(run.job.tickets_total, done)
        job = run.job.with_(last_id=chunk.last_id, tickets_done=done, tickets_total=total)
        self._commit(checkpoint, run.shadow.generation, ops, job)
        run.job, run.shadow.last_id = job, chunk.last_id
        run.progress.advance(tickets)
        self.metrics.resync_tickets.labels(kind="full").inc(tickets)

    def _read_chunk(self, run: FullResync, read_ahead_until_s: float) -> TicketChunk:
        """The chunk after ``last_id``, each in a snapshot of its own opened no earlier than
        the last stream batch; before ``read_ahead_until_s``, the next one is asked for at
        once."""
        if not self.read_in_child:
            with open_snapshot(self.engine, gtid=False) as snapshot:
                return snapshot.read_chunk(run.shadow.last_id, self.chunk_rows)
        if run.reader is None:
            run.reader = ChunkReader(self.engine, self.chunk_rows)
        if not run.reader.in_flight:
            run.reader.request(run.shadow.last_id)
        chunk = run.reader.take()
        if time.monotonic() < read_ahead_until_s and chunk.last_id != UNBOUNDED:
            run.reader.request(chunk.last_id)
        return chunk

    def _commit(self, checkpoint: Checkpoint, generation: int, ops: StoreOps, job: Job) -> None:
        with self.store.batch(checkpoint) as tx:
            tx.commit(StoreOps(), None, (generation, ops), job)

    def repair(self, job: Job, refs: Refs, checkpoint: Checkpoint) -> dict[int, Position]:
        """Rebuild chosen tickets in the live read model from the database, now.

        Returns each repaired ticket's snapshot position: the stream's changes to it up to
        there are already in the repair and must not be applied again (they are older).
        """
        repaired: dict[int, Position] = {}
        job = job.with_(
            state="running", started_at_s=time.time(), tickets_done=0, missing=(), removed=()
        )
        ids = self._repair_ids(job, checkpoint)
        for start in range(0, len(ids), REPAIR_CHUNK):
            part = ids[start : start + REPAIR_CHUNK]
            with open_snapshot(self.engine, gtid=False) as snapshot:
                changes = snapshot.read_tickets(part)
                repaired.update(dict.fromkeys(part, snapshot.position))
            last = start + REPAIR_CHUNK >= len(ids)
            job = self._repair_part(job, checkpoint, refs, part, changes, len(ids), last)
        self._finish(job, "done")
        self.log.info(
            "repair done", job=job.id, kind=job.kind, tickets=len(ids), missing=len(job.missing)
        )
        return repaired

    def _repair_part(
        self,
        job: Job,
        checkpoint: Checkpoint,
        refs: Refs,
        part: list[int],
        changes: list[Any],
        total: int,
        last: bool,
    ) -> Job:
        """Rewrite ``part`` from its fresh rows; the job notes the tickets the database lacks
        (and which of those Redis held, whose documents this removes). The ``last`` part
        marks the job done in the same write: a worker taking over never runs it again."""
        found = {int(c.after["id"]) for c in changes if c.table == TICKETS and c.after}
        with self.store.batch(checkpoint) as tx:
            states = tx.load_states(part)
            ops = replace_tickets(changes, refs, states, part)
            missing = [i for i in part if i not in found]
            job = job.with_(
                tickets_done=job.tickets_done + len(part),
                tickets_total=total,
                missing=(*job.missing, *missing),
                removed=(*job.removed, *(i for i in missing if states.get(i) is not None)),
            )
            if last:
                job = job.with_(state="done", finished_at_s=time.time())
            tx.commit(ops, None, None, job)
        record_dead_letters(ops, self.metrics, self.log)
        self.metrics.resync_tickets.labels(kind=job.kind).inc(len(part))
        return job

    def _repair_ids(self, job: Job, checkpoint: Checkpoint) -> list[int]:
        if job.kind == "tickets":
            return sorted(set(job.targets))
        department = job.targets[0]
        with open_snapshot(self.engine, gtid=False) as snapshot:
            found = set(snapshot.ticket_ids_in_department(department))
        key = (DEPARTMENT, department)
        with self.store.batch(checkpoint) as tx:  # tickets the read model thinks are there
            found |= tx.link_sets([key])[key]
        return sorted(found)

    def finish(self, job: Job, state: str) -> None:
        """Record a job's end (``done`` or ``failed``) when another path did its work."""
        self._finish(job, state)

    def _finish(self, job: Job, state: str) -> None:
        finished = job.with_(state=state, finished_at_s=time.time())
        pipe = self.store.client.pipeline(transaction=True)
        pipe.set(keys.resync_job(job.id), finished.encode(), ex=86_400)
        if job.kind == "full":
            pipe.delete(keys.RESYNC_ACTIVE)
        pipe.lrem(keys.RESYNC_CLAIMED, 0, job.id)
        pipe.execute()
        self.metrics.resyncs.labels(kind=job.kind, outcome=state).inc()
        if job.started_at_s:
            self.metrics.resync_seconds.labels(kind=job.kind).observe(
                finished.finished_at_s - job.started_at_s
            )
        if job.kind == "full":
            self.metrics.resync_running.set(0)
            # Over, whatever the outcome: nothing is left to copy (no "stalled" copy remains).
            self.metrics.snapshot_tickets_done.labels(reason="resync").set(job.tickets_done)
            self.metrics.snapshot_tickets_total.labels(reason="resync").set(job.tickets_done)

    def _count_tickets(self) -> int:
        with open_snapshot(self.engine, gtid=False) as snapshot:
            return snapshot.count_tickets()


def _merge(into: StoreOps, ops: StoreOps) -> None:
    """Fold reference chunks into one write."""
    into.refs_put.update({k: {**into.refs_put.get(k, {}), **v} for k, v in ops.refs_put.items()})
    into.lookups_put.update(
        {k: {**into.lookups_put.get(k, {}), **v} for k, v in ops.lookups_put.items()}
    )


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)

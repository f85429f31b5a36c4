"""The worker loop: snapshot when needed, then read -> project -> apply atomically -> record.

Connection problems end a *session*; the loop backs off and starts a new one from the
stored checkpoint, so the library's own reconnects never re-deliver or skip anything.
"""

from __future__ import annotations

import contextlib
import threading
import time
from typing import Any

import structlog

from cdc_worker.checkpoint import Checkpoint
from cdc_worker.errors import CheckpointLost, StreamInterrupted, UnreadableEvent
from cdc_worker.observability.metrics import WorkerMetrics
from cdc_worker.observability.reporting import record_dead_letters
from cdc_worker.observability.telemetry import LoopTelemetry
from cdc_worker.pipeline import PhaseTimes, apply_changes
from cdc_worker.settings import STATE_CACHE_TICKETS
from cdc_worker.snapshots.resyncer import FullResync, Resyncer
from cdc_worker.snapshots.snapshotter import Snapshotter
from cdc_worker.source.binlog import Chunk
from cdc_worker.source.stream import SourceConfig
from cdc_worker.source_guard import DIVERGED, SourceGuard
from cdc_worker.store.interface import ReadModelLost
from cdc_worker.store.jobs import Job
from cdc_worker.store.lease import Lease, LeaseLost
from cdc_worker.store.redis_store import RedisStore
from cdc_worker.store.state_cache import StateCache
from cdc_worker.worker.leadership import Leadership
from cdc_worker.worker.recording import BatchRecorder
from cdc_worker.worker.recovery import RECOVERABLE, Recovery, reconnect_reasons
from cdc_worker.worker.session import ResyncNeeded, Session, open_reader

IDLE_WAIT_S = 0.5
# A full resync reads its next chunk while projecting this one, and holds stream batches back
# meanwhile (see resyncer): it asks for no chunk ahead once this long has passed since the
# stream was let through, which is then given up to RESYNC_STREAM_BUDGET_S to catch up.
RESYNC_STREAM_EVERY_S = 1.0
RESYNC_STREAM_BUDGET_S = 0.5
IDLE_CHECKPOINT_EVERY_S = 1.0
HEARTBEAT_EVERY_S = 1.0
HEARTBEAT_TTL_S = 30


def now_s_due(last_s: float) -> bool:
    """True once a heartbeat period has passed since ``last_s`` (monotonic)."""
    return time.monotonic() - last_s >= HEARTBEAT_EVERY_S


class Worker:
    """Keeps the read model in step with the source until asked to stop."""

    def __init__(
        self,
        store: RedisStore,
        snapshotter: Snapshotter,
        resyncer: Resyncer,
        source: SourceConfig,
        metrics: WorkerMetrics,
        backoff_max_s: float,
        fan_out_step_tickets: int = 2000,
        state_cache_tickets: int = STATE_CACHE_TICKETS,
        stopping: threading.Event | None = None,
        liveness_timeout_s: float = 30.0,
        head_poll_s: float = 2.0,
        lease: Lease | None = None,
        guard: SourceGuard | None = None,
    ) -> None:
        self.store = store
        self.fan_out_step_tickets = fan_out_step_tickets
        self.state_cache_tickets = state_cache_tickets
        self.snapshotter = snapshotter
        self.resyncer = resyncer
        self.source = source
        self.metrics = metrics
        self.stopping = stopping or threading.Event()
        self.streamed = False  # whether the current attempt got as far as streaming
        self.resync_reason: str | None = None
        self._halt_job: Job | None = None
        self.log: Any = structlog.get_logger("cdc_worker")
        self._last_heartbeat_s = 0.0
        self.recorder = BatchRecorder(metrics)
        self.telemetry = LoopTelemetry(metrics, liveness_timeout_s)
        self.recovery = Recovery(metrics, self.telemetry, backoff_max_s, self.log)
        metrics.initialise_reconnect_reasons(reconnect_reasons())
        snapshotter.on_progress = self.telemetry.progressed
        self.leadership = Leadership(
            lease, metrics, self.telemetry, lambda: self.source, head_poll_s, self.log
        )
        self.guard = guard  # None: one source server, no failover nor divergence check

    def request_stop(self) -> None:
        """Finish the batch in hand, then return from ``run``."""
        self.stopping.set()

    def run(self) -> int:
        """Stream until stopped; recover from every connection problem. Returns 0."""
        try:
            self._run()
        finally:
            self.leadership.step_down("stopping")
            self.telemetry.liveness.expected = False
        self.log.info("worker stopped")
        return 0

    def _run(self) -> None:
        failures = 0
        while not self.stopping.is_set():
            if not self.leadership.become_active(self.stopping):
                break
            self.streamed = False
            try:
                self._session()
                failures = 0
            except UnreadableEvent as exc:
                self._halt(str(exc))
            except LeaseLost as exc:
                self.leadership.step_down(str(exc))
            except ReadModelLost as exc:
                self.log.warning("read model vanished from Redis; full resync", error=str(exc))
                self.resync_reason = "read_model_lost"
            except RECOVERABLE as exc:
                failures += 1
                self._recover(exc, failures, self._follow_source())
            except CheckpointLost as exc:
                self.log.warning("checkpoint gone from the server; full resync", error=str(exc))
                self.resync_reason = "checkpoint_lost"

    def _halt(self, reason: str) -> None:
        """Stop applying at an event that cannot be read (skipping it could lose changes):
        stay not ready, saying why, until stopped or a full resync is requested, which
        rebuilds the read model from a snapshot taken after the event."""
        self.log.error(
            "stopped applying: the binlog holds an event the worker cannot read; change "
            "what the reason says on the source, then request a full resync "
            "(`cdc-worker resync`), which rebuilds the read model from a new snapshot",
            reason=reason,
        )
        self.metrics.halted.set(1)
        while not self.stopping.is_set():
            self.telemetry.progressed()  # alive (/healthz), not ready (/readyz)
            with contextlib.suppress(*RECOVERABLE):
                behind_s = self.telemetry.lag.behind_s()
                self.store.beat_halted(reason, HEARTBEAT_TTL_S, behind_s, self.leadership.name)
                job = self.resyncer.next_job()
                if job is not None and job.kind == "full":
                    self._halt_job, self.resync_reason = job, "unreadable_event"
                    return
                if job is not None:  # a repair needs the stream: it cannot run now
                    self.resyncer.finish(job, "failed")
                    self.log.warning("repair refused: the worker stopped applying", job=job.id)
            self.stopping.wait(HEARTBEAT_EVERY_S)

    def _recover(self, exc: BaseException, failures: int, switched: bool = False) -> None:
        pause_s = self.recovery.pause_s(exc, failures, self.streamed, self.guard, switched)
        self.stopping.wait(pause_s)

    def _follow_source(self) -> bool:
        """After a failed session: switch servers once the one in use stays unreachable."""
        if self.guard is None:
            return False
        try:
            new = self.guard.after_failure(self.source)
        except RECOVERABLE as exc:
            self.log.warning("source failover check failed", error=str(exc)[:300])
            return False
        if new is not None:
            self.source = new
        return new is not None

    def _session(self) -> None:
        if self.guard is not None:
            self.guard.before_session()
        checkpoint = self.store.load_checkpoint()
        if checkpoint is not None and not self.store.index_format_current(checkpoint.generation):
            # Written by an older version (ids as sorted-set scores, inexact above 2^53): the
            # API refuses to list it until this rebuild swaps in the current encoding.
            self.log.warning("read model indexes in an older format; full resync")
            self.resync_reason = self.resync_reason or "index_format"
        if checkpoint is None or self.resync_reason is not None:
            reason = self.resync_reason or "no_checkpoint"
            checkpoint_refs = self.snapshotter.build(checkpoint, reason, self.stopping)
            self.resync_reason = None
            if checkpoint_refs is None:
                return
            if self._halt_job is not None:  # the full resync asked for while halted
                self.resyncer.finish(self._halt_job, "done")
                self._halt_job = None
                self.metrics.halted.set(0)
            checkpoint, refs = checkpoint_refs
            if self.guard is not None:
                self.guard.trust_current()
        elif self.guard is not None and self.guard.diverged(checkpoint, self.source.is_mariadb):
            self.resync_reason = DIVERGED
            return
        else:
            refs = self.store.load_refs(checkpoint.generation)
        structlog.contextvars.bind_contextvars(position=str(checkpoint.position))
        self.log.info("streaming", generation=checkpoint.generation)
        self.streamed = True
        self.telemetry.applied(checkpoint)
        reader = open_reader(self.source, checkpoint.position)
        self.recorder.new_session()
        reader.start()
        try:
            resync = self.resyncer.resume(checkpoint)
            cache = StateCache(self.state_cache_tickets)
            self.telemetry.session(reader, cache)
            self._stream(Session(reader, checkpoint, refs, resync=resync, cache=cache))
        except ResyncNeeded as exc:
            self.log.warning("full resync needed", reason=str(exc))
            self.resync_reason = "ddl"
        finally:
            self.telemetry.session(None, None)
            if self.stopping.is_set():
                self.leadership.step_down("stopping")  # its last batch is in: a standby may start
            reader.stop()

    def _stream(self, session: Session) -> None:
        read_ahead_until_s = 0.0
        try:
            while not self.stopping.is_set():
                if session.resync is None:
                    self._stream_batch(session, IDLE_WAIT_S)
                elif not session.resync.reading_ahead:
                    self._let_stream_through(session)
                    read_ahead_until_s = time.monotonic() + RESYNC_STREAM_EVERY_S
                if session.resync is not None:
                    self._resync_step(session, session.resync, read_ahead_until_s)
                self._idle_duties(session)
            self._flush_pending(session)
        finally:
            if session.resync is not None:
                session.resync.close()

    def _stream_batch(self, session: Session, wait_s: float) -> bool:
        """Apply the reader's next batch, if one comes within ``wait_s``; True if one did."""
        chunks = session.reader.next_batch(self.source.batch_max_rows, wait_s)
        if chunks:
            self.telemetry.took(next((c.committed_at_s for c in chunks if c.commit), None))
            self._apply(session, chunks)
            if session.reader.queue_depth() == 0:
                self.telemetry.drained()
        else:
            self.telemetry.drained()
        return bool(chunks)

    def _let_stream_through(self, session: Session) -> None:
        """During a resync: apply what the reader has ready, for at most a time budget (the
        resync's chunks wait meanwhile, and the stream waits while they are read ahead)."""
        until_s = time.monotonic() + RESYNC_STREAM_BUDGET_S
        while self._stream_batch(session, 0.0) and time.monotonic() < until_s:
            pass

    def _apply(self, session: Session, chunks: list[Chunk]) -> None:
        started = time.perf_counter()
        changes = [change for chunk in chunks for change in chunk.changes]
        if session.repaired:
            changes = [change for change in changes if not session.superseded(change)]
        commits = [chunk for chunk in chunks if chunk.commit is not None]
        new = session.checkpoint
        if commits:
            last = commits[-1]
            assert last.commit is not None
            new = session.checkpoint.advanced(last.commit, last.committed_at_s)
        if changes or self._checkpoint_due(session):
            self._commit(session, changes, new if new != session.checkpoint else None)
        elif new != session.checkpoint:
            session.pending = new
        self.recorder.batch(changes, commits, time.perf_counter() - started)
        ddl = next((chunk.ddl for chunk in chunks if chunk.ddl), None)
        if ddl:
            raise ResyncNeeded(f"tracked table changed by DDL: {ddl[:120]}")

    def _commit(self, session: Session, changes: list[Any], new: Checkpoint | None) -> None:
        target = new or session.pending
        if not changes and target is None:
            return
        shadow = session.resync.shadow if session.resync else None
        times = PhaseTimes()
        ops = apply_changes(
            self.store,
            session.refs,
            changes,
            session.checkpoint,
            target,
            shadow,
            self.fan_out_step_tickets,
            session.cache,
            times,
        )
        self.recorder.phases(times)
        if ops.dead_letters:  # rare: the identities are built only then
            own = {change.identity() for change in changes}
            record_dead_letters(ops, self.metrics, self.log, own)
        self.telemetry.progressed()
        if target is not None:
            self.telemetry.applied(target)
            session.checkpoint, session.pending = target, None
            if session.repaired:
                session.forget_repairs_before(target.position)
            session.pending_since_s = time.monotonic()
            structlog.contextvars.bind_contextvars(position=str(target.position))

    def _checkpoint_due(self, session: Session) -> bool:
        return time.monotonic() - session.pending_since_s >= IDLE_CHECKPOINT_EVERY_S

    def _flush_pending(self, session: Session) -> None:
        if session.pending is not None:
            self._commit(session, [], None)

    def _idle_duties(self, session: Session) -> None:
        if session.pending is not None and self._checkpoint_due(session):
            self._commit(session, [], None)
        age_s = session.reader.seconds_since_last_event()
        self.metrics.last_event_age.set(age_s)
        if age_s > self.source.stall_timeout_s:
            raise StreamInterrupted(f"no event nor heartbeat for {age_s:.0f} s")
        self.recorder.totals(session.reader, session.cache)
        if now_s_due(self._last_heartbeat_s):
            self.leadership.confirm()  # a worker paused past its lease takes no job
            if session.resync is None:
                self._take_job(session)
            self._beat(session)

    def _beat(self, session: Session) -> None:
        self._last_heartbeat_s = time.monotonic()
        # The worst lag applied since the last beat; 0 when nothing was applied (idle).
        lag_s, behind_s = self.recorder.take_lag(), self.telemetry.lag.behind_s()
        source = self.guard.name if self.guard else None
        size, dead_letters = self.store.beat(
            session.checkpoint, lag_s, HEARTBEAT_TTL_S, behind_s, self.leadership.name, source
        )
        self.telemetry.progressed()
        self.metrics.documents.set(size)
        self.metrics.dead_letters_stream_length.set(dead_letters)

    def _take_job(self, session: Session) -> None:
        job = self.resyncer.next_job()
        if job is None:
            return
        if job.kind == "full":
            session.resync = self.resyncer.start_full(job, session.checkpoint)
        else:
            repaired = self.resyncer.repair(job, session.refs, session.checkpoint)
            session.cache.forget(repaired)
            session.repaired.update(repaired)

    def _resync_step(self, session: Session, run: FullResync, read_ahead_until_s: float) -> None:
        if not self.resyncer.step(run, session.checkpoint, read_ahead_until_s):
            return
        self._flush_pending(session)
        session.checkpoint = self.resyncer.finish_full(run, session.checkpoint)
        session.refs, session.resync = run.shadow.refs, None
        session.cache.clear()  # a new live generation

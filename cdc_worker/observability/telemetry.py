"""What the loop tells its metrics beyond counts: where it is, how far behind, whether alive.

The gauges computed here are read at scrape time from the metrics server's threads, so they
keep moving (behind growing, contact aging) while the loop is stuck.
"""

from __future__ import annotations

import time
from collections.abc import Sized
from typing import Protocol

from cdc_worker.checkpoint import Checkpoint
from cdc_worker.observability.lag import LagTracker, Liveness, binlog_file_number
from cdc_worker.observability.metrics import WorkerMetrics


class ReaderStats(Protocol):
    """What a binlog reader (thread or child process) tells about itself."""

    def seconds_since_last_event(self) -> float:
        """Seconds since the stream sent anything (heartbeats included)."""

    def queue_depth(self) -> int:
        """Batches read and waiting for the applier."""


class LoopTelemetry:
    """Lag, liveness and position of one worker loop, exported on ``metrics``."""

    def __init__(self, metrics: WorkerMetrics, liveness_timeout_s: float) -> None:
        self.metrics = metrics
        self.lag = LagTracker()
        self.liveness = Liveness(liveness_timeout_s)
        self.reader: ReaderStats | None = None
        self.cache: Sized | None = None
        self._last_contact_s = 0.0
        metrics.source_behind_seconds.set_function(self.lag.behind_s)
        metrics.source_behind_bytes.set_function(lambda: self.lag.behind_bytes)
        metrics.last_source_contact.set_function(self.last_contact_s)
        metrics.reader_queue_depth.set_function(self._queue_depth)
        metrics.state_cache_tickets.set_function(lambda: len(self.cache or ()))

    def session(self, reader: ReaderStats | None, cache: Sized | None) -> None:
        """A streaming session began (or, with None, ended)."""
        self.reader, self.cache = reader, cache

    def last_contact_s(self) -> float:
        """Unix time the source last sent something (0 before the first session)."""
        reader = self.reader
        if reader is not None:
            self._last_contact_s = time.time() - reader.seconds_since_last_event()
        return self._last_contact_s

    def _queue_depth(self) -> int:
        reader = self.reader
        return reader.queue_depth() if reader is not None else 0

    def took(self, first_commit_s: float | None) -> None:
        """The loop took a batch whose first commit was at ``first_commit_s``."""
        self.lag.took_batch(first_commit_s)

    def drained(self) -> None:
        """The loop asked its reader for more and got nothing."""
        self.lag.drained()

    def applied(self, checkpoint: Checkpoint) -> None:
        """A checkpoint was stored: the loop made progress to there."""
        position = checkpoint.position
        self.lag.applied_at(position)
        self.liveness.progressed()
        if checkpoint.committed_at_s:
            self.metrics.last_applied_commit.set(checkpoint.committed_at_s)
        self.metrics.binlog_file_number.set(binlog_file_number(position.log_file))
        self.metrics.binlog_position.set(position.log_pos)

    def progressed(self) -> None:
        """A heartbeat or a snapshot chunk was written."""
        self.liveness.progressed()

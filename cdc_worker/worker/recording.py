"""The worker's metrics of each batch and each turn of the loop, counted from the totals the
reader and the state cache keep, and the worst lag since the last heartbeat."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from typing import Any

from cdc_worker.observability.metrics import WorkerMetrics
from cdc_worker.pipeline import PhaseTimes
from cdc_worker.source.binlog import BinlogReader, Chunk
from cdc_worker.source.reader_process import ProcessReader
from cdc_worker.store.state_cache import StateCache


class BatchRecorder:
    """Turns batches and running totals into metric increments."""

    def __init__(self, metrics: WorkerMetrics) -> None:
        self.metrics = metrics
        self.lag_s = 0.0  # the worst commit-to-apply lag since the last heartbeat
        self.new_session()

    def new_session(self) -> None:
        """A new reader and cache count from zero."""
        self._events_counted = 0
        self._decoded_counted: dict[str, int] = {}
        self._cache_counted = (0, 0)  # hits, misses already exported

    def batch(self, changes: Sequence[Any], commits: Sequence[Chunk], elapsed_s: float) -> None:
        """One applied batch: its rows by table and op, transactions, size, time and lag."""
        for (table, op), count in Counter((c.table, c.op.value) for c in changes).items():
            self.metrics.rows.labels(table=table, op=op).inc(count)
        self.metrics.transactions.inc(len(commits))
        self.metrics.batch_rows.observe(len(changes))
        self.metrics.apply_seconds.observe(elapsed_s)
        if commits and commits[-1].committed_at_s:
            lag_s = max(0.0, time.time() - commits[-1].committed_at_s)
            self.lag_s = max(self.lag_s, lag_s)
            self.metrics.lag_seconds.set(lag_s)

    def phases(self, times: PhaseTimes) -> None:
        """The read, project and write times of one atomic apply."""
        phases = self.metrics.batch_phase_seconds
        phases.labels(phase="read").observe(times.read_s)
        phases.labels(phase="project").observe(times.project_s)
        phases.labels(phase="write").observe(times.write_s)

    def totals(self, reader: BinlogReader | ProcessReader, cache: StateCache) -> None:
        """What the session's reader and cache counted since the last call."""
        seen = reader.events_seen
        self.metrics.events.inc(seen - self._events_counted)
        self._events_counted = seen
        for decoder, total in list(reader.decoder.rows_by_decoder.items()):
            counted = self._decoded_counted.get(decoder, 0)
            self.metrics.decoded_rows.labels(decoder=decoder).inc(total - counted)
            self._decoded_counted[decoder] = total
        hits, misses = self._cache_counted
        self.metrics.state_cache_reads.labels(result="hit").inc(cache.hits - hits)
        self.metrics.state_cache_reads.labels(result="miss").inc(cache.misses - misses)
        self._cache_counted = (cache.hits, cache.misses)

    def take_lag(self) -> float:
        """The worst lag since the last call (0 when nothing was applied: idle), reset."""
        lag_s, self.lag_s = self.lag_s, 0.0
        self.metrics.lag_seconds.set(lag_s)
        return lag_s

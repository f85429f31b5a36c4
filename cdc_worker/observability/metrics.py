"""Every Prometheus metric of the worker, defined once, prefix ``cdc_``.

Recorded at the loop, never in the core. Labels are low-cardinality (table, op, kind), and
every label value known in advance has its series from start-up, at 0.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from importlib import metadata

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.gc_collector import GCCollector

from projections.changes import TRACKED_TABLES, Op

BATCH_ROWS_BUCKETS = (1, 5, 10, 50, 100, 500, 1000, 5000, 10000, 50000)
APPLY_SECONDS_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)
LAG_SECONDS_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300)
SNAPSHOT_SECONDS_BUCKETS = (0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 3600)
PHASE_SECONDS_BUCKETS = (0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5)

# Label values known in advance: their series exist at 0 from start-up, so the first event of
# each kind is an increase Prometheus sees (a series born at 1 shows no increase).
DECODERS = ("specialized", "library")
CACHE_RESULTS = ("hit", "miss")
# Why a whole read model is copied: the worker's reasons, and "resync" for a requested one.
SNAPSHOT_REASONS = (
    "no_checkpoint",
    "checkpoint_lost",
    "read_model_lost",
    "ddl",
    "unreadable_event",
    "index_format",
    "source_diverged",
    "resync",
)
RESYNC_KINDS = ("full", "tickets", "department")
RESYNC_OUTCOMES = ("done", "failed")
BATCH_PHASES = ("read", "project", "write")


def build_version() -> str:
    """The installed package's version ("unknown" when run from a bare source tree)."""
    try:
        return metadata.version("ticket-sync")
    except metadata.PackageNotFoundError:
        return "unknown"


def add_process_collectors(registry: CollectorRegistry) -> None:
    """prometheus-client's process (memory, CPU, fds, start time), platform and GC metrics."""
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)


class WorkerMetrics:
    """The worker's metrics, on their own registry so tests and processes don't collide."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        add_process_collectors(self.registry)
        self._stream_metrics()
        self._source_metrics()
        self._apply_metrics()
        self._snapshot_metrics()
        self._resync_metrics()
        self._store_metrics()
        self.initialise_series()

    def _stream_metrics(self) -> None:
        r = self.registry
        self.build_info = Gauge(
            "cdc_build_info", "Always 1; the worker's version as a label", ["version"], registry=r
        )
        self.events = Counter(
            "cdc_events_total", "Binlog events read (heartbeats included)", registry=r
        )
        self.rows = Counter("cdc_rows_total", "Row changes read", ["table", "op"], registry=r)
        self.decoded_rows = Counter(
            "cdc_decoded_rows_total",
            "Row changes decoded, by decoder (specialized, or the library's as a fallback)",
            ["decoder"],
            registry=r,
        )
        self.transactions = Counter(
            "cdc_transactions_total", "Source transactions applied", registry=r
        )
        self.reconnects = Counter(
            "cdc_reconnects_total", "Stream restarts from the checkpoint", ["reason"], registry=r
        )
        self.halted = Gauge(
            "cdc_halted",
            "1 while the worker stopped applying at a binlog event it cannot read",
            registry=r,
        )
        self.reader_queue_depth = Gauge(
            "cdc_reader_queue_depth",
            "Batches read from the binlog and waiting for the applier",
            registry=r,
        )

    def _source_metrics(self) -> None:
        r = self.registry
        self.lag_seconds = Gauge(
            "cdc_lag_seconds", "Source commit time to applied, last batch", registry=r
        )
        self.last_event_age = Gauge(
            "cdc_seconds_since_last_event", "Seconds since the stream sent anything", registry=r
        )
        self.last_applied_commit = Gauge(
            "cdc_last_applied_commit_timestamp_seconds",
            "Source commit time (unix seconds) of the last applied transaction",
            registry=r,
        )
        self.last_source_contact = Gauge(
            "cdc_last_source_contact_timestamp_seconds",
            "When the worker last received anything from the source (events or heartbeats)",
            registry=r,
        )
        self.source_behind_seconds = Gauge(
            "cdc_source_behind_seconds",
            "Age of the oldest transaction the source committed and the worker has not applied",
            registry=r,
        )
        self.source_behind_bytes = Gauge(
            "cdc_source_behind_bytes",
            "Binlog bytes between the source's head and the applied position, across files",
            registry=r,
        )
        self.binlog_file_number = Gauge(
            "cdc_binlog_file_number", "Number of the applied position's binlog file", registry=r
        )
        self.binlog_position = Gauge(
            "cdc_binlog_position_bytes",
            "Byte offset of the applied position in its binlog file",
            registry=r,
        )

    def _apply_metrics(self) -> None:
        r = self.registry
        self.batch_rows = Histogram(
            "cdc_apply_batch_rows",
            "Row changes per atomic apply",
            buckets=BATCH_ROWS_BUCKETS,
            registry=r,
        )
        self.apply_seconds = Histogram(
            "cdc_apply_duration_seconds",
            "Time of one atomic apply (read, project, write)",
            buckets=APPLY_SECONDS_BUCKETS,
            registry=r,
        )
        self.batch_phase_seconds = Histogram(
            "cdc_batch_phase_seconds",
            "Time of one phase of a batch: read (Redis reads), project, write (MULTI/EXEC)",
            ["phase"],
            buckets=PHASE_SECONDS_BUCKETS,
            registry=r,
        )
        self.dead_letter_rows = Counter(
            "cdc_dead_letter_rows_total",
            "Bad rows dead-lettered, once per (table, primary key, position)",
            ["table"],
            registry=r,
        )

    def _snapshot_metrics(self) -> None:
        r = self.registry
        self.snapshots = Counter(
            "cdc_snapshots_total", "Full snapshots taken", ["reason"], registry=r
        )
        self.snapshot_seconds = Histogram(
            "cdc_snapshot_duration_seconds",
            "Time of one full snapshot",
            buckets=SNAPSHOT_SECONDS_BUCKETS,
            registry=r,
        )
        self.snapshot_tickets_done = Gauge(
            "cdc_snapshot_tickets_done",
            "Tickets copied by the snapshot or full resync running (or last run) for a reason",
            ["reason"],
            registry=r,
        )
        self.snapshot_tickets_total = Gauge(
            "cdc_snapshot_tickets_total",
            "Tickets the snapshot or full resync for a reason will copy",
            ["reason"],
            registry=r,
        )

    def _resync_metrics(self) -> None:
        r = self.registry
        self.resync_running = Gauge(
            "cdc_resync_running", "1 while a full resync is being built", registry=r
        )
        self.resync_tickets = Counter(
            "cdc_resync_tickets_total", "Tickets rebuilt by resyncs", ["kind"], registry=r
        )
        self.resyncs = Counter(
            "cdc_resyncs_total", "Resync jobs finished", ["kind", "outcome"], registry=r
        )
        self.resync_seconds = Histogram(
            "cdc_resync_duration_seconds",
            "Time of one resync job",
            ["kind"],
            buckets=SNAPSHOT_SECONDS_BUCKETS,
            registry=r,
        )

    def _store_metrics(self) -> None:
        r = self.registry
        self.state_cache_reads = Counter(
            "cdc_state_cache_reads_total",
            "Ticket states a batch needed, served from the worker's memory (hit) or Redis (miss)",
            ["result"],
            registry=r,
        )
        self.state_cache_tickets = Gauge(
            "cdc_state_cache_tickets", "Ticket states held in the worker's memory", registry=r
        )
        self.source_in_use = Gauge(
            "cdc_source_in_use",
            "1 for the source server the worker reads (host:port), 0 for the others of its list",
            ["server"],
            registry=r,
        )
        self.source_switches = Counter(
            "cdc_source_switches_total", "Switches to another source server", registry=r
        )
        self.documents = Gauge(
            "cdc_read_model_documents", "Documents in the read model", registry=r
        )
        self.dead_letters_stream_length = Gauge(
            "cdc_dead_letters_stream_length", "Entries in the dead-letter stream", registry=r
        )
        self.fence_conflicts = Counter(
            "cdc_fence_conflicts_total",
            "Writes refused because the checkpoint in Redis was not the worker's",
            registry=r,
        )
        self.redis_write_errors = Counter(
            "cdc_redis_write_errors_total",
            "Redis errors (connection, timeout, out of memory) that ended a session",
            registry=r,
        )
        self.worker_active = Gauge(
            "cdc_worker_active", "1 while this worker holds the lease and streams", registry=r
        )
        self.leader_changes = Counter(
            "cdc_leader_changes_total",
            "Times this worker took the lease (became active)",
            registry=r,
        )

    def initialise_series(self) -> None:
        """Create every labelled series whose label values are known in advance, at 0."""
        self.build_info.labels(version=build_version()).set(1)
        for table in TRACKED_TABLES:
            self.dead_letter_rows.labels(table=table)
            for op in Op:
                self.rows.labels(table=table, op=op.value)
        _touch(self.decoded_rows.labels, "decoder", DECODERS)
        _touch(self.state_cache_reads.labels, "result", CACHE_RESULTS)
        _touch(self.snapshots.labels, "reason", SNAPSHOT_REASONS)
        _touch(self.snapshot_tickets_done.labels, "reason", SNAPSHOT_REASONS)
        _touch(self.snapshot_tickets_total.labels, "reason", SNAPSHOT_REASONS)
        _touch(self.resync_tickets.labels, "kind", RESYNC_KINDS)
        _touch(self.resync_seconds.labels, "kind", RESYNC_KINDS)
        _touch(self.batch_phase_seconds.labels, "phase", BATCH_PHASES)
        for kind in RESYNC_KINDS:
            for outcome in RESYNC_OUTCOMES:
                self.resyncs.labels(kind=kind, outcome=outcome)

    def initialise_reconnect_reasons(self, reasons: Iterable[str]) -> None:
        """The reasons a session can end with, known to the loop, at 0."""
        _touch(self.reconnects.labels, "reason", reasons)


def _touch(labels: Callable[..., object], name: str, values: Iterable[str]) -> None:
    for value in values:
        labels(**{name: value})

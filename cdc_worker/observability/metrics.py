"""Every Prometheus metric of the worker, defined once, prefix ``cdc_``.

Recorded at the loop, never in the core. Labels are low-cardinality (table, op, kind).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

BATCH_ROWS_BUCKETS = (1, 5, 10, 50, 100, 500, 1000, 5000, 10000, 50000)
APPLY_SECONDS_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)
LAG_SECONDS_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300)
SNAPSHOT_SECONDS_BUCKETS = (0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 3600)


class WorkerMetrics:
    """The worker's metrics, on their own registry so tests and processes don't collide."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
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
        self.lag_seconds = Gauge(
            "cdc_lag_seconds", "Source commit time to applied, last batch", registry=r
        )
        self.last_event_age = Gauge(
            "cdc_seconds_since_last_event", "Seconds since the stream sent anything", registry=r
        )
        self.position = Gauge(
            "cdc_binlog_position", "Binlog position of the checkpoint", ["file"], registry=r
        )
        self.halted = Gauge(
            "cdc_halted",
            "1 while the worker stopped applying at a binlog event it cannot read",
            registry=r,
        )
        self.reconnects = Counter(
            "cdc_reconnects_total", "Stream restarts from the checkpoint", ["reason"], registry=r
        )
        self.dead_letters = Counter(
            "cdc_dead_letters_total", "Rows dead-lettered", ["table"], registry=r
        )
        self.snapshots = Counter(
            "cdc_snapshots_total", "Full snapshots taken", ["reason"], registry=r
        )
        self.snapshot_seconds = Histogram(
            "cdc_snapshot_duration_seconds",
            "Time of one full snapshot",
            buckets=SNAPSHOT_SECONDS_BUCKETS,
            registry=r,
        )
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
        self.state_cache_reads = Counter(
            "cdc_state_cache_reads_total",
            "Ticket states a batch needed, served from the worker's memory (hit) or Redis (miss)",
            ["result"],
            registry=r,
        )
        self.documents = Gauge(
            "cdc_read_model_documents", "Documents in the read model", registry=r
        )

"""The one composition root: builds every client from the settings. Nothing connects at import."""

from __future__ import annotations

import gc
from dataclasses import dataclass
from typing import Any

import pymysql
import redis
from sqlalchemy import Engine, create_engine
from sqlalchemy.dialects.mysql.pymysql import MySQLDialect_pymysql

from cdc_worker.errors import SourceError
from cdc_worker.observability.metrics import WorkerMetrics
from cdc_worker.settings import Settings
from cdc_worker.snapshots.resyncer import Resyncer
from cdc_worker.snapshots.snapshotter import Snapshotter
from cdc_worker.source.checks import ServerInfo, check_source
from cdc_worker.source.stream import SourceConfig
from cdc_worker.store.redis_store import RedisStore
from cdc_worker.worker import Worker

# The worker's heap is large and long-lived (its imports, the references, up to
# state_cache_tickets ticket states) and its batches allocate millions of small objects, few
# of them in cycles. With CPython's default thresholds (700, 10, 10) a 202,000-row catch-up
# spent 4.9 s of 25 s in the cyclic collector, 3.9 s of it in 19 full collections walking
# that heap; with start-up frozen and a first threshold of 10,000, 0.9 s. The count that
# triggers a young collection is the growth of tracked objects (allocations less frees): at
# 10,000 a batch's own live objects (rows, states, documents under way) set it off hundreds
# of times per catch-up, each walk finding them alive and promoting them. At 100,000 the
# young collections of the benchmark's catch-up took 0.16 s instead of 0.69 s, it ran 1.05x
# faster (3 alternating pairs), and its peak RSS stayed at 216-218 MiB.
GC_THRESHOLDS = (100_000, 20, 20)


@dataclass
class App:
    """Everything a worker process uses, built once."""

    settings: Settings
    redis_client: redis.Redis
    engine: Engine
    metrics: WorkerMetrics
    worker: Worker

    def close(self) -> None:
        """Release every connection."""
        self.redis_client.close()
        self.engine.dispose()


def redis_client(settings: Settings) -> redis.Redis:
    """A pooled client for the read model's Redis."""
    return redis.Redis.from_url(
        settings.redis_url.get_secret_value(), socket_timeout=30, health_check_interval=30
    )


def mysql_engine(settings: Settings) -> Engine:
    """The SQLAlchemy engine for snapshots (the worker's least-privilege user)."""
    return create_engine(settings.mysql, pool_pre_ping=True, pool_size=2, max_overflow=2)


def mysql_tls(settings: Settings) -> dict[str, Any] | None:
    """pymysql's ``ssl`` options from the URL's ``ssl_ca``/``ssl_cert``/``ssl_key``/
    ``ssl_check_hostname`` parameters, read the way SQLAlchemy reads them for snapshots."""
    _, options = MySQLDialect_pymysql().create_connect_args(settings.mysql)
    tls = options.get("ssl")
    return dict(tls) if tls else None


def inspect_source(settings: Settings) -> ServerInfo:
    """Connect once and check binlog settings and grants; raises with what to change."""
    url = settings.mysql
    try:
        connection = pymysql.connect(
            host=url.host or "127.0.0.1",
            port=url.port or 3306,
            user=url.username or "",
            password=url.password or "",
            connect_timeout=10,
            ssl=mysql_tls(settings),
        )
    except pymysql.err.MySQLError as exc:
        where = f"{url.username}@{url.host}:{url.port or 3306}"
        raise SourceError(f"cannot connect to CDC_MYSQL_URL ({where}): {exc}") from None
    try:
        return check_source(connection, url.database or "")
    finally:
        connection.close()


def source_config(settings: Settings, info: ServerInfo) -> SourceConfig:
    """What the binlog reader needs, from the settings and the server."""
    url = settings.mysql
    return SourceConfig(
        host=url.host or "127.0.0.1",
        port=url.port or 3306,
        user=url.username or "",
        password=url.password or "",
        database=url.database or "",
        server_id=settings.server_id,
        heartbeat_s=settings.heartbeat_s,
        stall_timeout_s=settings.stall_timeout_s,
        batch_max_rows=settings.batch_max_rows,
        row_decoder=settings.row_decoder,
        reader_mode=settings.binlog_reader,
        is_mariadb=info.is_mariadb,
        tls=mysql_tls(settings),
    )


def bootstrap(settings: Settings, info: ServerInfo) -> App:
    """Wire the worker: Redis store, snapshotter, binlog source, metrics."""
    client = redis_client(settings)
    engine = mysql_engine(settings)
    metrics = WorkerMetrics()
    store = RedisStore(client, settings.dead_letter_max_len)
    snapshotter = Snapshotter(
        engine,
        store,
        metrics,
        settings.snapshot_chunk_rows,
        read_in_child=settings.binlog_reader == "process",
    )
    resyncer = Resyncer(
        engine,
        store,
        metrics,
        settings.snapshot_chunk_rows,
        read_in_child=settings.binlog_reader == "process",
    )
    worker = Worker(
        store,
        snapshotter,
        resyncer,
        source_config(settings, info),
        metrics,
        settings.reconnect_backoff_max_s,
        settings.fan_out_step_tickets,
        settings.state_cache_tickets,
        settings.liveness_timeout_s,
        settings.source_head_poll_s,
    )
    settle_heap()
    return App(settings, client, engine, metrics, worker)


def settle_heap() -> None:
    """Leave what start-up built out of the cyclic collector's walks (reference counting
    still frees it), and collect young objects less often. Process-wide: the worker's
    process is built here, once."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)

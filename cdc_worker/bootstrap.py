"""The one composition root: builds every client from the settings. Nothing connects at import."""

from __future__ import annotations

import gc
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, TypeVar

import pymysql
import redis
import sqlalchemy.exc
import structlog
from sqlalchemy import Engine, create_engine, make_url

from cdc_worker.errors import CdcError, ServerUnreachable
from cdc_worker.observability.metrics import WorkerMetrics
from cdc_worker.settings import Settings
from cdc_worker.snapshots.resyncer import Resyncer
from cdc_worker.snapshots.snapshotter import Snapshotter
from cdc_worker.source.checks import ServerInfo, connect_error
from cdc_worker.source.failover import SourceList, config_for, inspect_server, tls_options
from cdc_worker.source.stream import SourceConfig
from cdc_worker.source_guard import SourceGuard
from cdc_worker.store import connect
from cdc_worker.store.connection import redis_address, redis_error
from cdc_worker.store.lease import Lease
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
# Waiting for an unreachable server at start-up: 0.5, 1, 2, 4 ... s, capped by
# CDC_RECONNECT_BACKOFF_MAX_S.
FIRST_RETRY_S = 0.5
T = TypeVar("T")


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


def mysql_engine(settings: Settings) -> Engine:
    """The SQLAlchemy engine for snapshots (the worker's least-privilege user)."""
    return create_engine(settings.mysql, pool_pre_ping=True, pool_size=2, max_overflow=2)


def mysql_tls(settings: Settings) -> dict[str, Any] | None:
    """pymysql's ``ssl`` options from the URL's ``ssl_ca``/``ssl_cert``/``ssl_key``/
    ``ssl_check_hostname`` parameters, read the way SQLAlchemy reads them for snapshots."""
    return tls_options(settings.mysql)


def inspect_source(settings: Settings) -> ServerInfo:
    """Connect and check binlog settings and grants; raises with what to change. With
    failover URLs, an unreachable server is passed over for the next one, in order; when
    none answers, ServerUnreachable (worth waiting for)."""
    urls = settings.source_urls
    first_error: ServerUnreachable | None = None
    for index, url in enumerate(urls):
        label = "CDC_MYSQL_URL" if index == 0 else "CDC_MYSQL_FAILOVER_URLS"
        try:
            info = inspect_server(url, label, needs_gtid=len(urls) > 1)
        except ServerUnreachable as exc:
            first_error = first_error or exc
            continue
        return replace(info, source_index=index)
    assert first_error is not None
    if len(urls) > 1:
        raise ServerUnreachable(f"{first_error}; no server of CDC_MYSQL_FAILOVER_URLS answered")
    raise first_error


def server_problem(exc: BaseException, settings: Settings, admin: bool) -> CdcError | None:
    """One line for a Redis or MySQL failure of a one-shot command (``admin``: it used the
    admin URL); None for anything else."""
    if isinstance(exc, redis.RedisError):
        return redis_error(exc, settings.redis_url.get_secret_value())
    if isinstance(exc, sqlalchemy.exc.DBAPIError):
        exc = exc.orig  # type: ignore[assignment]
    if not isinstance(exc, pymysql.err.MySQLError):
        return None
    url = make_url(settings.admin_url) if admin else settings.mysql
    variable = "CDC_ADMIN_MYSQL_URL" if admin and settings.admin_mysql_url else "CDC_MYSQL_URL"
    where = f"{url.username}@{url.host or '127.0.0.1'}:{url.port or 3306}"
    return connect_error(exc, where, url.database or "", variable)


def wait_for_servers(settings: Settings, stopping: threading.Event) -> ServerInfo | None:
    """Check MySQL then Redis, waiting for either while it is unreachable; raise at once on
    a misconfiguration. None when asked to stop while waiting."""
    url = settings.mysql
    where = f"{url.host or '127.0.0.1'}:{url.port or 3306}"
    info = _wait_for("MySQL", where, settings, stopping, lambda: inspect_source(settings))
    if info is None:
        return None
    redis_url = settings.redis_url.get_secret_value()
    where = redis_address(redis_url)
    if settings.sentinels:
        where = f"the primary of {settings.redis_sentinel_service} ({settings.redis_sentinels})"
    ready = _wait_for("Redis", where, settings, stopping, lambda: connect.ping(settings))
    return None if ready is None else info


def _wait_for(
    server: str, where: str, settings: Settings, stopping: threading.Event, attempt: Callable[[], T]
) -> T | None:
    """``attempt()`` until it stops raising ServerUnreachable, backing off exponentially."""
    log: Any = structlog.get_logger("cdc_worker")
    delay_s = FIRST_RETRY_S
    while not stopping.is_set():
        try:
            return attempt()
        except ServerUnreachable as exc:
            log.warning(
                f"waiting for {server} at {where}",
                server=server,
                address=where,
                config=settings.masked()["redis_url" if server == "Redis" else "mysql_url"],
                error=str(exc)[:300],
                retry_in_s=round(delay_s, 2),
            )
            stopping.wait(delay_s)
            delay_s = min(settings.reconnect_backoff_max_s, delay_s * 2)
    return None


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


def bootstrap(settings: Settings, info: ServerInfo, stopping: threading.Event | None = None) -> App:
    """Wire the worker: Redis store, snapshotter, binlog source, metrics; ``stopping`` (set
    by a signal) makes the worker return."""
    client = connect.redis_client(settings)  # the primary, through Sentinel when set
    urls = settings.source_urls
    sources = SourceList(urls, settings.source_failover_after_s, info.source_index)
    engine = sources.follow(mysql_engine(settings))
    metrics = WorkerMetrics()
    lease = Lease(client, settings.leader_lease_s)
    feed_max_len = settings.changes_max_len if settings.changes else None
    store = RedisStore(client, settings.dead_letter_max_len, lease, feed_max_len)
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
        config_for(source_config(settings, info), sources.url, info),
        metrics,
        settings.reconnect_backoff_max_s,
        settings.fan_out_step_tickets,
        settings.state_cache_tickets,
        stopping,
        settings.liveness_timeout_s,
        settings.source_head_poll_s,
        lease,
        SourceGuard(sources, metrics, resyncer),
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

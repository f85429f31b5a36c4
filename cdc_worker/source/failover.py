"""The source servers of one replication topology: which one the worker reads, when to leave
it for the next, and whether a checkpoint is part of a server's history.

The worker reads one server at a time (``CDC_MYSQL_URL`` first). It leaves it only after it
has been unreachable for ``failover_after_s``, for the first of the other servers, in list
order, that passes the start-up checks; it never goes back while the new one works (no
flapping). Snapshots follow: the SQLAlchemy engine connects to whichever server is current.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace
from typing import Any

import pymysql
import structlog
from sqlalchemy import Engine, event
from sqlalchemy.dialects.mysql.pymysql import MySQLDialect_pymysql
from sqlalchemy.engine import URL

from cdc_worker.checkpoint import Position
from cdc_worker.errors import CdcError
from cdc_worker.source.checks import ServerInfo, check_source, connect_error
from cdc_worker.source.gtid import lost_transactions
from cdc_worker.source.stream import SourceConfig

PROBE_TIMEOUT_S = 2
log: Any = structlog.get_logger("cdc_worker.source")


def server_name(url: URL) -> str:
    """``host:port``: how logs, the heartbeat and metrics name a server (no credentials)."""
    return f"{url.host or '127.0.0.1'}:{url.port or 3306}"


def connect_args(url: URL) -> dict[str, Any]:
    """pymysql's arguments for ``url``, read the way SQLAlchemy reads them (TLS included)."""
    _, options = MySQLDialect_pymysql().create_connect_args(url)
    return dict(options)


def tls_options(url: URL) -> dict[str, Any] | None:
    """pymysql's ``ssl`` options from the URL's ``ssl_*`` parameters, if any."""
    tls = connect_args(url).get("ssl")
    return dict(tls) if tls else None


def connect(url: URL, timeout_s: float) -> pymysql.Connection[Any]:
    """A plain connection to the server, for checks and probes."""
    return pymysql.connect(
        host=url.host or "127.0.0.1",
        port=url.port or 3306,
        user=url.username or "",
        password=url.password or "",
        connect_timeout=timeout_s,
        read_timeout=max(timeout_s, 10),
        ssl=tls_options(url),
    )


def inspect_server(url: URL, label: str, needs_gtid: bool = False) -> ServerInfo:
    """Connect once and run the start-up checks; raises ServerUnreachable when the server is
    not there, a SourceError saying what to change when it is wrong."""
    try:
        connection = connect(url, 10)
    except pymysql.err.MySQLError as exc:
        where = f"{url.username}@{server_name(url)}"
        raise connect_error(exc, where, url.database or "", label) from None
    try:
        return check_source(connection, url.database or "", server_name(url), needs_gtid)
    finally:
        connection.close()


def reachable(url: URL) -> bool:
    """True when the server accepts a connection and answers a query."""
    try:
        connection = connect(url, PROBE_TIMEOUT_S)
    except pymysql.err.MySQLError:
        return False
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        return True
    except pymysql.err.MySQLError:
        return False
    finally:
        connection.close()


def server_gtid_state(url: URL, is_mariadb: bool) -> str:
    """Every GTID the server's history holds: MariaDB's ``gtid_binlog_state`` (last GTID of
    each domain and server), MySQL's ``gtid_executed``."""
    variable = "gtid_binlog_state" if is_mariadb else "gtid_executed"
    connection = connect(url, PROBE_TIMEOUT_S)
    try:
        with connection.cursor() as cursor:
            cursor.execute(f"SELECT @@GLOBAL.{variable}")
            row = cursor.fetchone()
    finally:
        connection.close()
    return str(row[0] or "") if row else ""


def config_for(config: SourceConfig, url: URL, info: ServerInfo) -> SourceConfig:
    """The binlog reader's settings for another server of the list."""
    return replace(
        config,
        host=url.host or "127.0.0.1",
        port=url.port or 3306,
        user=url.username or "",
        password=url.password or "",
        is_mariadb=info.is_mariadb,
        tls=tls_options(url),
    )


@dataclass(frozen=True, slots=True)
class Switch:
    """A change of source server, for the worker to record."""

    old: str
    new: str
    info: ServerInfo
    unreachable_s: float


class SourceList:
    """The servers, the one in use, and since when it has been failing."""

    def __init__(self, urls: list[URL], failover_after_s: float, current: int = 0) -> None:
        self.urls = urls
        self.failover_after_s = failover_after_s
        self.index = current
        self.failing_since_s: float | None = None
        self.due_at_s = math.inf  # when to try the other servers (again)
        # Set at a switch until a checkpoint was checked against the new server: a position
        # without a GTID must then not be resumed (file and position are per server).
        self.switched = False
        self._engines: list[Engine] = []

    @property
    def url(self) -> URL:
        """The server in use (holds the password: never log it)."""
        return self.urls[self.index]

    @property
    def name(self) -> str:
        """The server in use, as ``host:port``."""
        return server_name(self.url)

    @property
    def names(self) -> list[str]:
        """Every server, in order."""
        return [server_name(url) for url in self.urls]

    def follow(self, engine: Engine) -> Engine:
        """Make ``engine`` connect to the server in use (its pool is emptied at a switch)."""

        @event.listens_for(engine, "do_connect")
        def _current_server(_dialect: Any, _record: Any, _args: Any, params: Any) -> None:
            params.pop("ssl", None)
            params.update(connect_args(self.url))

        self._engines.append(engine)
        return engine

    def seconds_until_due(self, now_s: float | None = None) -> float:
        """How long until a failover is due (inf when the server in use is not failing):
        the worker's back-off never sleeps past it."""
        now_s = time.monotonic() if now_s is None else now_s
        return max(0.0, self.due_at_s - now_s)

    def after_failure(self, now_s: float | None = None) -> Switch | None:
        """Called when a session ended in error: probe the server in use; once it has been
        unreachable for ``failover_after_s``, switch to the first other server in list order
        that passes the start-up checks. Returns the switch made, if any."""
        now_s = time.monotonic() if now_s is None else now_s
        if reachable(self.url):
            self.failing_since_s, self.due_at_s = None, math.inf
            return None
        if self.failing_since_s is None:
            self.failing_since_s = now_s
            self.due_at_s = now_s + self.failover_after_s if len(self.urls) > 1 else math.inf
        if now_s < self.due_at_s:
            return None
        self.due_at_s = now_s + self.failover_after_s  # if no other server is usable either
        return self._switch_to_first_usable(now_s - self.failing_since_s)

    def _switch_to_first_usable(self, unreachable_s: float) -> Switch | None:
        for index in (i for i in range(len(self.urls)) if i != self.index):
            try:
                info = inspect_server(self.urls[index], "a failover source", needs_gtid=True)
            except (CdcError, pymysql.err.MySQLError) as exc:
                log.warning("failover source not usable", server=self.names[index], error=str(exc))
                continue
            old = self.name
            self.index, self.failing_since_s, self.switched = index, None, True
            self.due_at_s = math.inf
            for engine in self._engines:
                engine.dispose()
            return Switch(old, self.name, info, unreachable_s)
        return None

    def lost(self, position: Position, is_mariadb: bool) -> list[str] | None:
        """The checkpoint's transactions the server in use never had ([] if none). None when
        the position cannot be checked: no GTID, after a switch (only a rebuild is safe)."""
        if not position.gtid:
            return None if self.switched else []
        state = server_gtid_state(self.url, is_mariadb)
        self.switched = False
        return lost_transactions(position.gtid, state, is_mariadb)

    def trust_current(self) -> None:
        """A checkpoint of the server in use was just stored (a snapshot of it)."""
        self.switched = False

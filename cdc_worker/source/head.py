"""The source's binlog head, polled on a thread of its own: ``SHOW BINARY LOGS`` lists every
binlog file with its size, the last one being written (its size is the head's offset). One
cheap statement every few seconds on one connection; needs REPLICATION CLIENT (BINLOG
MONITOR on MariaDB), which the worker's user has for its start-up checks anyway."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from typing import Any

import pymysql

from cdc_worker.source.stream import SourceConfig

BinlogFiles = list[tuple[str, int]]
TIMEOUT_S = 5


def connect(config: SourceConfig) -> pymysql.Connection[Any]:
    """A plain connection for polling, with short timeouts (a hung source must not hang it)."""
    return pymysql.connect(
        host=config.host,
        port=config.port,
        user=config.user,
        password=config.password,
        connect_timeout=TIMEOUT_S,
        read_timeout=TIMEOUT_S,
        write_timeout=TIMEOUT_S,
        ssl=config.tls,
    )


def binlog_files(connection: Any) -> BinlogFiles:
    """(name, size) of every binlog file on the server, oldest first."""
    with connection.cursor() as cursor:
        cursor.execute("SHOW BINARY LOGS")
        return [(str(row[0]), int(row[1])) for row in cursor.fetchall()]


class HeadPoller:
    """Calls ``on_head(files)`` every ``every_s`` from a daemon thread until stopped; a failed
    poll (source down) is skipped silently: the stream's own errors report that."""

    def __init__(
        self,
        connect: Callable[[], Any],
        on_head: Callable[[BinlogFiles], None],
        every_s: float,
    ) -> None:
        self.connect = connect
        self.on_head = on_head
        self.every_s = every_s
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="binlog-head", daemon=True)

    def start(self) -> None:
        """Start polling."""
        self._thread.start()

    def stop(self) -> None:
        """Stop polling (returns at once; the thread ends within one poll)."""
        self._stopping.set()

    def _run(self) -> None:
        connection = None
        while not self._stopping.wait(self.every_s):
            try:
                connection = connection or self.connect()
                self.on_head(binlog_files(connection))
            except (pymysql.err.MySQLError, OSError):
                if connection is not None:
                    with contextlib.suppress(Exception):
                        connection.close()
                connection = None
        if connection is not None:
            with contextlib.suppress(Exception):
                connection.close()

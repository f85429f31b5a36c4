"""The catch-up benchmark's baseline: a bare python-mysql-replication loop that decodes the
backlog's row events and does nothing else.

It runs in a fresh interpreter, as a user's script would: the library's imports only,
CPython's default garbage collector settings, none of the benchmark process's heap (its saved
read model and expected documents) and none of the worker's tuning (see ``settle_heap``).

    python -m bench.bare_loop PORT DATABASE LOG_FILE LOG_POS   # prints {"rows", "seconds"}
"""

from __future__ import annotations

import json
import random
import sys
import time
from typing import Any

from pymysqlreplication import BinLogStreamReader
from pymysqlreplication.row_event import DeleteRowsEvent, UpdateRowsEvent, WriteRowsEvent

from projections.changes import TRACKED_TABLES


def backlog_stream(port: int, database: str, log_file: str, log_pos: int) -> Any:
    """The tracked tables' row events from a position to the end of the binlog, as root; the
    same stream for every reader the catch-up benchmark compares."""
    return BinLogStreamReader(
        connection_settings={"host": "127.0.0.1", "port": port, "user": "root", "password": ""},
        server_id=random.randint(10_000, 2**31),
        blocking=False,
        resume_stream=True,
        log_file=log_file,
        log_pos=log_pos,
        only_schemas=[database],
        only_tables=list(TRACKED_TABLES),
        only_events=[WriteRowsEvent, UpdateRowsEvent, DeleteRowsEvent],
    )


def decode(port: int, database: str, log_file: str, log_pos: int) -> tuple[int, float]:
    """Rows decoded by the library alone, from the position to the end, and the seconds."""
    stream = backlog_stream(port, database, log_file, log_pos)
    rows, started = 0, time.perf_counter()
    for event in stream:
        rows += len(event.rows)
    elapsed = time.perf_counter() - started
    stream.close()
    return rows, elapsed


def main(argv: list[str]) -> None:
    port, database, log_file, log_pos = argv
    rows, seconds = decode(int(port), database, log_file, int(log_pos))
    print(json.dumps({"rows": rows, "seconds": seconds}))


if __name__ == "__main__":
    main(sys.argv[1:])

"""The steady-state baseline: a bare BinLogStreamReader that prints, for every marked ticket
update it receives, the marker and the CLOCK_MONOTONIC time it saw the row event. Run as its
own process by ``bench.latency`` (so it shares no interpreter lock with the load writer).

    .venv/bin/python -m bench.arrival --port 3306 --database helpdesk --log-file F --log-pos P
"""

from __future__ import annotations

import argparse
import random
import sys
import time

from pymysqlreplication import BinLogStreamReader
from pymysqlreplication.row_event import UpdateRowsEvent

MARKER = "lat-"


def marker_seq(title: object) -> int | None:
    """The sequence number in a ``lat-<n>`` title, None for any other title."""
    if isinstance(title, str) and title.startswith(MARKER):
        return int(title[len(MARKER) :])
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--database", required=True)
    parser.add_argument("--log-file", required=True)
    parser.add_argument("--log-pos", type=int, required=True)
    args = parser.parse_args()
    stream = BinLogStreamReader(
        connection_settings={"host": "127.0.0.1", "port": args.port, "user": "root"},
        server_id=random.randint(10_000, 2**31),
        blocking=True,
        resume_stream=True,
        log_file=args.log_file,
        log_pos=args.log_pos,
        only_schemas=[args.database],
        only_tables=["tickets"],
        only_events=[UpdateRowsEvent],
    )
    for event in stream:
        seen_s = time.monotonic()
        for row in event.rows:
            seq = marker_seq(row["after_values"].get("title"))
            if seq is not None:
                sys.stdout.write(f"{seq} {seen_s}\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()

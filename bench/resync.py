"""Full resync rate vs. a bare SQL read of the same rows, side by side in one run.

.venv/bin/python -m bench.resync --tickets 100000 --repeats 3
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import redis
from sqlalchemy import create_engine

from cdc_worker import migrate
from cdc_worker.bootstrap import bootstrap, inspect_source
from cdc_worker.localservers import start_mariadb, start_redis
from cdc_worker.resync_jobs import enqueue, load, new_job
from cdc_worker.seed import seed
from cdc_worker.settings import load_settings
from cdc_worker.snapshot import CHILD_TABLES, COLUMNS, UNBOUNDED
from projections.changes import REFERENCE_TABLES, TICKETS

CHUNK_ROWS = 2000


def bare_read(engine: Any) -> tuple[int, float]:
    """The snapshot's own queries (keyset chunks of tickets, range queries for children),
    rows fetched as tuples and dropped: what reading alone costs."""
    started, tickets, lower = time.perf_counter(), 0, -UNBOUNDED
    with engine.connect() as conn:
        for table in REFERENCE_TABLES:
            conn.exec_driver_sql(f"SELECT {COLUMNS[table]} FROM {table}").fetchall()
        while True:
            rows = conn.exec_driver_sql(
                f"SELECT {COLUMNS[TICKETS]} FROM tickets WHERE id > %s ORDER BY id LIMIT %s",
                (lower, CHUNK_ROWS),
            ).fetchall()
            upper = rows[-1][0] if len(rows) == CHUNK_ROWS else UNBOUNDED
            for table in CHILD_TABLES:
                conn.exec_driver_sql(
                    f"SELECT {COLUMNS[table]} FROM {table} "
                    "WHERE ticket_id > %s AND ticket_id <= %s",
                    (lower, upper),
                ).fetchall()
            tickets += len(rows)
            if upper == UNBOUNDED:
                return tickets, time.perf_counter() - started
            lower = upper


def snapshot_build(app: Any) -> tuple[int, float]:
    """The initial-snapshot path: read, project, write generation N+1, swap."""
    checkpoint = app.worker.store.load_checkpoint()
    started = time.perf_counter()
    app.worker.snapshotter.build(checkpoint, "bench", threading.Event())
    return app.worker.store.document_count(), time.perf_counter() - started


def resync_job(app: Any, client: redis.Redis) -> tuple[int, float]:
    """The incremental resync a user asks for, run by the streaming worker."""
    job = enqueue(client, new_job("full"))
    while (current := load(client, job.id)) is None or current.state not in ("done", "failed"):
        time.sleep(0.05)
    return current.tickets_done, current.finished_at_s - current.started_at_s


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tickets", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="bench-resync-"))
    mariadb, redis_server = start_mariadb(base / "mariadb"), start_redis(base / "redis")
    try:
        migrate.upgrade(mariadb.root_url)
        engine = create_engine(mariadb.root_url)
        report = seed(engine, args.tickets, progress=False)
        print(
            f"seeded {report.total_rows:,} rows in {report.seconds:.1f} s "
            f"({report.rows_per_s:,.0f} rows/s)"
        )
        run(args, mariadb, redis_server, engine)
    finally:
        mariadb.stop()
        redis_server.stop()


def run(args: argparse.Namespace, mariadb: Any, redis_server: Any, engine: Any) -> None:
    settings = load_settings(
        mysql_url=mariadb.cdc_url,
        redis_url=redis_server.url,
        worker_http_port=0,
        snapshot_chunk_rows=CHUNK_ROWS,
    )
    app = bootstrap(settings, inspect_source(settings))
    app.worker.snapshotter.build(None, "bench-initial", threading.Event())
    thread = threading.Thread(target=app.worker.run, daemon=True)
    thread.start()
    rates: dict[str, list[float]] = {"bare SQL read": [], "snapshot build": [], "resync job": []}
    for _ in range(args.repeats):
        for name, measure in (
            ("bare SQL read", lambda: bare_read(app.engine)),
            ("resync job", lambda: resync_job(app, app.redis_client)),
        ):
            tickets, seconds = measure()
            rates[name].append(tickets / seconds)
            print(f"{name}: {tickets:,} tickets in {seconds:.2f} s")
    app.worker.request_stop()
    thread.join(30)
    for _ in range(args.repeats):
        tickets, seconds = snapshot_build(app)
        rates["snapshot build"].append(tickets / seconds)
        print(f"snapshot build: {tickets:,} documents in {seconds:.2f} s")
    base = statistics.median(rates["bare SQL read"])
    for name, values in rates.items():
        rate = statistics.median(values)
        print(
            f"{name:15} median {rate:9,.0f} tickets/s  runs {[round(v) for v in values]}  "
            f"ratio {rate / base:.2f}"
        )
    app.close()


if __name__ == "__main__":
    main()

"""Full resync rate vs. a bare SQL read of the same rows, side by side in one run.

.venv/bin/python -m bench.resync --tickets 100000 --repeats 3

The resync job is what ``cdc-worker resync`` asks of the running worker; the snapshot build
is the initial-snapshot path (read, project, write generation N+1, swap).
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from sqlalchemy import create_engine

from bench.common import Spread, log, ratio, servers
from cdc_worker.bootstrap import bootstrap, inspect_source
from cdc_worker.devtools.localservers import MariaDBServer, RedisServer
from cdc_worker.devtools.seed import seed
from cdc_worker.schema import migrate
from cdc_worker.settings import load_settings
from cdc_worker.snapshots.snapshot import CHILD_TABLES, COLUMNS, UNBOUNDED
from cdc_worker.store.jobs import enqueue, load, new_job
from projections.changes import REFERENCE_TABLES, TICKETS

CHUNK_ROWS = 2000
BARE, JOB = "bare SQL read", "resync job (full)"
INITIAL, BUILD = "initial snapshot (empty Redis)", "snapshot build"


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


def ticket_count(engine: Any) -> int:
    """Tickets in the source, soft-deleted ones included: every rebuild reads them all."""
    with engine.connect() as conn:
        return int(conn.exec_driver_sql("SELECT COUNT(*) FROM tickets").scalar_one())


def snapshot_build(app: Any) -> tuple[int, float]:
    """The initial-snapshot path: read, project, write generation N+1, swap."""
    checkpoint = app.worker.store.load_checkpoint()
    started = time.perf_counter()
    app.worker.snapshotter.build(checkpoint, "bench", threading.Event())
    return ticket_count(app.engine), time.perf_counter() - started


def resync_job(app: Any) -> tuple[int, float]:
    """The incremental resync a user asks for, run by the streaming worker."""
    client = app.redis_client
    job = enqueue(client, new_job("full"))
    while (current := load(client, job.id)) is None or current.state not in ("done", "failed"):
        time.sleep(0.05)
    return current.tickets_done, current.finished_at_s - current.started_at_s


@dataclass
class ResyncResult:
    """Tickets per second of each way to rebuild the read model, and of the bare read."""

    tickets: int
    seeded_rows: int
    seed_seconds: float
    repeats: int
    snapshot_repeats: int
    tickets_per_s: dict[str, dict[str, Any]] = field(default_factory=dict)
    ratios: dict[str, float | None] = field(default_factory=dict)


def measure(
    mariadb: MariaDBServer,
    redis_server: RedisServer,
    tickets: int,
    repeats: int,
    snapshot_repeats: int | None = None,
) -> ResyncResult:
    """Seed ``tickets`` tickets with children, then time the rebuilds against the bare read.
    The initial snapshot (into an empty Redis) is timed too; ``snapshot_repeats`` (default:
    ``repeats``) more snapshot builds follow the resync jobs."""
    migrate.upgrade(mariadb.root_url)
    engine = create_engine(mariadb.root_url)
    report = seed(engine, tickets, progress=False)
    engine.dispose()
    log(f"resync: seeded {report.total_rows:,} rows in {report.seconds:.0f} s")
    builds = repeats if snapshot_repeats is None else snapshot_repeats
    result = ResyncResult(tickets, report.total_rows, report.seconds, repeats, builds)
    spreads = run(mariadb, redis_server, repeats, result.snapshot_repeats)
    result.tickets_per_s = {name: s.summary() for name, s in spreads.items() if s.runs}
    bare = result.tickets_per_s[BARE]
    for name, summary in result.tickets_per_s.items():
        if name != BARE:
            result.ratios[f"{name} / {BARE}"] = ratio(summary, bare)
    return result


def run(
    mariadb: MariaDBServer, redis_server: RedisServer, repeats: int, snapshot_repeats: int
) -> dict[str, Spread]:
    settings = load_settings(
        mysql_url=mariadb.cdc_url,
        redis_url=redis_server.url,
        worker_http_port=0,
        snapshot_chunk_rows=CHUNK_ROWS,
    )
    app = bootstrap(settings, inspect_source(settings))
    spreads = {name: Spread() for name in (BARE, INITIAL, JOB, BUILD)}
    started = time.perf_counter()
    app.worker.snapshotter.build(None, "bench-initial", threading.Event())
    spreads[INITIAL].add(ticket_count(app.engine) / (time.perf_counter() - started))
    thread = threading.Thread(target=app.worker.run, daemon=True)
    thread.start()
    for _ in range(repeats):
        for name in (BARE, JOB):
            tickets, seconds = bare_read(app.engine) if name == BARE else resync_job(app)
            spreads[name].add(tickets / seconds)
            log(f"resync: {name}: {tickets:,} tickets in {seconds:.1f} s")
    app.worker.request_stop()
    thread.join(30)
    for _ in range(snapshot_repeats):
        tickets, seconds = snapshot_build(app)
        spreads[BUILD].add(tickets / seconds)
        log(f"resync: {BUILD}: {tickets:,} tickets in {seconds:.1f} s")
    app.close()
    return spreads


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tickets", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--snapshot-repeats", type=int, default=None)
    args = parser.parse_args()
    with servers("resync") as (mariadb, redis_server):
        result = measure(mariadb, redis_server, args.tickets, args.repeats, args.snapshot_repeats)
    print(json.dumps(asdict(result), indent=2))


if __name__ == "__main__":
    main()

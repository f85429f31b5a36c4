"""Catch-up: the worker applying a binlog backlog vs. a bare python-mysql-replication loop
that only decodes the same events. Both run in one process, alternating, on one backlog.

    .venv/bin/python -m bench.catchup --transactions 20000 --repeats 3
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import pymysql
import redis
from pymysqlreplication.row_event import DeleteRowsEvent, UpdateRowsEvent, WriteRowsEvent
from sqlalchemy import create_engine

from bench.naive import backlog_stream, naive_catchup
from cdc_worker import keys, migrate
from cdc_worker.bootstrap import bootstrap, inspect_source
from cdc_worker.checkpoint import Checkpoint
from cdc_worker.loadgen import run_workload
from cdc_worker.localservers import start_mariadb, start_redis
from cdc_worker.seed import seed
from cdc_worker.settings import load_settings

ROW_EVENTS = [WriteRowsEvent, UpdateRowsEvent, DeleteRowsEvent]


def master_position(port: int) -> tuple[str, int]:
    with pymysql.connect(host="127.0.0.1", port=port, user="root") as conn, conn.cursor() as cur:
        cur.execute("SHOW MASTER STATUS")
        row = cur.fetchone()
        assert row is not None
        return str(row[0]), int(row[1])


def bare_decode(port: int, database: str, start: Checkpoint) -> tuple[int, float]:
    """Rows decoded per second by the library alone, from the checkpoint to the end."""
    stream = backlog_stream(port, database, start)
    rows, started = 0, time.perf_counter()
    for event in stream:
        rows += len(event.rows)
    elapsed = time.perf_counter() - started
    stream.close()
    return rows, elapsed


def snapshot_redis(client: redis.Redis) -> dict[bytes, bytes]:
    return {key: client.dump(key) for key in client.scan_iter(count=1000)}  # type: ignore[misc]


def restore_redis(client: redis.Redis, saved: dict[bytes, bytes]) -> None:
    client.flushdb()
    pipe = client.pipeline(transaction=False)
    for key, payload in saved.items():
        pipe.restore(key, 0, payload)
    pipe.execute()


def worker_catchup(settings: Any, end: tuple[str, int]) -> tuple[int, float]:
    """Rows applied per second by the real worker until its checkpoint reaches ``end``."""
    app = bootstrap(settings, inspect_source(settings))
    thread = threading.Thread(target=app.worker.run, daemon=True)
    started = time.perf_counter()
    thread.start()
    while True:
        checkpoint = app.worker.store.load_checkpoint()
        if checkpoint is None:
            time.sleep(0.01)
            continue
        position = (checkpoint.position.log_file, checkpoint.position.log_pos)
        if position >= end:
            break
        time.sleep(0.01)
    elapsed = time.perf_counter() - started
    rows = int(
        sum(
            s.value
            for m in app.metrics.rows.collect()
            for s in m.samples
            if s.name.endswith("_total")
        )
    )
    app.worker.request_stop()
    thread.join(30)
    app.close()
    return rows, elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--transactions", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="bench-catchup-"))
    mariadb, redis_server = start_mariadb(base / "mariadb"), start_redis(base / "redis")
    try:
        run(mariadb, redis_server, args.transactions, args.repeats)
    finally:
        mariadb.stop()
        redis_server.stop()


def run(mariadb: Any, redis_server: Any, transactions: int, repeats: int) -> None:
    migrate.upgrade(mariadb.root_url)
    engine = create_engine(mariadb.root_url)
    seed(engine, 1000, progress=False)
    settings = load_settings(
        mysql_url=mariadb.cdc_url,
        redis_url=redis_server.url,
        worker_http_port=0,
        server_id=random.randint(10_000, 2**31),
    )
    client = redis.Redis.from_url(redis_server.url)
    worker_catchup(settings, master_position(mariadb.port))  # initial snapshot
    start = Checkpoint.decode(client.get(keys.CHECKPOINT))  # type: ignore[arg-type]
    saved = snapshot_redis(client)
    run_workload(engine, transactions, seed=1)
    end = master_position(mariadb.port)
    bare, applied, naive = [], [], []
    for _ in range(repeats):
        rows, seconds = bare_decode(mariadb.port, mariadb.database, start)
        bare.append(rows / seconds)
        rows_n, seconds_n = naive_catchup(mariadb.port, mariadb.database, start, redis_server.url)
        naive.append(rows_n / seconds_n)
        restore_redis(client, saved)
        _, seconds_w = worker_catchup(settings, end)
        rows_w = rows  # the same backlog; the worker's counter may lag its last batch
        applied.append(rows_w / seconds_w)
        print(
            f"bare decode {rows} rows in {seconds:.2f} s; worker {rows_w} rows in {seconds_w:.2f} s"
        )
    b, w = statistics.median(bare), statistics.median(applied)
    print(f"backlog: {transactions} transactions, {rows} row changes")
    print(f"bare library decode loop: median {b:,.0f} rows/s (runs: {[round(x) for x in bare]})")
    print(f"worker catch-up:          median {w:,.0f} rows/s (runs: {[round(x) for x in applied]})")
    n = statistics.median(naive)
    print(f"naive projector:          median {n:,.0f} rows/s (runs: {[round(x) for x in naive]})")
    print(f"ratio worker / bare decode: {w / b:.2f}")
    print(f"ratio worker / naive projector: {w / n:.2f}")
    engine.dispose()
    client.close()


if __name__ == "__main__":
    main()

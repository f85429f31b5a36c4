"""Catch-up: the worker applying a binlog backlog vs. a bare python-mysql-replication loop
that only decodes the same events, and vs. a naive projector. All read one backlog, in one
process, alternating within each repeat. The worker runs twice per repeat: with the library's
row decoder (before) and with the specialized one (after).

    .venv/bin/python -m bench.catchup --transactions 50000 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import redis
from sqlalchemy import create_engine

from bench.common import (
    Spread,
    log,
    master_position,
    peak_rss_mb,
    ratio,
    restore_redis,
    servers,
    snapshot_redis,
    wait_checkpoint,
    worker_process,
)
from bench.naive import naive_catchup
from bench.profile import start_recording, stop_recording, summarize
from cdc_worker.bootstrap import bootstrap, inspect_source
from cdc_worker.checkpoint import Checkpoint
from cdc_worker.devtools.loadgen import run_workload
from cdc_worker.devtools.localservers import MariaDBServer, RedisServer
from cdc_worker.devtools.seed import seed
from cdc_worker.schema import migrate
from cdc_worker.settings import Settings, load_settings
from cdc_worker.store import keys
from tests.harness import read_model
from tests.oracle import diff_documents, expected_documents

DECODERS = ("library", "specialized")
BARE, NAIVE = "bare library decode loop", "naive projector"
WORKER = {d: f"worker, {d} decoder" for d in DECODERS}
SEED_TICKETS = 1000
CATCHUP_TIMEOUT_S = 1800
# The in-process worker shares its GIL with the thread polling its checkpoint: at 5 ms, the
# poll held 3.4% of the GIL samples of a catch-up. At 20 ms the end is seen at most 20 ms
# late, 0.1% of a 20 s catch-up.
CATCHUP_POLL_S = 0.02


@dataclass
class CatchupResult:
    """Rows per second of each reader on one backlog, and the worker subprocess's memory."""

    transactions: int
    row_changes: int
    naive_max_rows: int | None
    repeats: int
    rows_per_s: dict[str, dict[str, Any]]
    ratios: dict[str, float | None]
    peak_rss_mb: dict[str, float] = field(default_factory=dict)
    # After each worker run, the read model against an SQL computation of every document.
    documents_checked: int = 0
    differences: dict[str, int] = field(default_factory=dict)
    profile: dict[str, Any] | None = None


def bare_decode(port: int, database: str, start: Checkpoint) -> tuple[int, float]:
    """Rows decoded by the library alone, from the checkpoint to the end, and the seconds:
    ``bench.bare_loop`` in a fresh interpreter (see there why)."""
    position = start.position
    args = [str(port), database, position.log_file, str(position.log_pos)]
    command = [sys.executable, "-m", "bench.bare_loop", *args]
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run(command, capture_output=True, text=True, check=True, cwd=root)
    found = json.loads(done.stdout)
    return int(found["rows"]), float(found["seconds"])


def worker_catchup(settings: Settings, end: tuple[str, int]) -> float:
    """Seconds the real worker (in this process) takes until its checkpoint reaches ``end``."""
    app = bootstrap(settings, inspect_source(settings))
    thread = threading.Thread(target=app.worker.run, daemon=True)
    started = time.perf_counter()
    thread.start()
    finished = wait_checkpoint(app.redis_client, end, CATCHUP_TIMEOUT_S, CATCHUP_POLL_S)
    app.worker.request_stop()
    thread.join(30)
    app.close()
    return finished - started


@dataclass
class Backlog:
    """A seeded source, the read model at the backlog's start, and the backlog's end."""

    mariadb: MariaDBServer
    redis_url: str
    start: Checkpoint
    end: tuple[str, int]
    saved: dict[bytes, bytes]
    expected: dict[str, dict[str, object]]

    def settings(self, decoder: str) -> Settings:
        return load_settings(
            mysql_url=self.mariadb.cdc_url,
            redis_url=self.redis_url,
            worker_http_port=0,
            server_id=random.randint(10_000, 2**31),
            row_decoder=decoder,
        )


def make_backlog(mariadb: MariaDBServer, redis_url: str, transactions: int) -> Backlog:
    """Seed, snapshot with the worker, then commit ``transactions`` loadgen transactions."""
    migrate.upgrade(mariadb.root_url)
    engine = create_engine(mariadb.root_url)
    seed(engine, SEED_TICKETS, progress=False)
    client = redis.Redis.from_url(redis_url)
    first = load_settings(mysql_url=mariadb.cdc_url, redis_url=redis_url, worker_http_port=0)
    worker_catchup(first, master_position(mariadb.port))  # the initial snapshot
    start = Checkpoint.decode(client.get(keys.CHECKPOINT))  # type: ignore[arg-type]
    saved = snapshot_redis(client)
    started = time.perf_counter()
    run_workload(engine, transactions, seed=1)
    log(f"catch-up: {transactions:,} transactions in {time.perf_counter() - started:.0f} s")
    end = master_position(mariadb.port)
    expected = expected_documents(engine)
    engine.dispose()
    client.close()
    return Backlog(mariadb, redis_url, start, end, saved, expected)


def differences(backlog: Backlog, client: redis.Redis) -> int:
    """How many lines the read model differs from the database by (0: equal)."""
    found = diff_documents(backlog.expected, read_model(client))
    for line in found[:5]:
        log(f"catch-up: read model != database: {line}")
    return len(found)


def one_repeat(
    backlog: Backlog, index: int, naive_max_rows: int | None
) -> tuple[int, dict[str, float], dict[str, int]]:
    """Every reader once over the backlog; the decoders' order alternates between repeats."""
    port, database = backlog.mariadb.port, backlog.mariadb.database
    rows, seconds = bare_decode(port, database, backlog.start)
    rates = {BARE: rows / seconds}
    rows_n, seconds_n = naive_catchup(
        port, database, backlog.start, backlog.redis_url, naive_max_rows
    )
    rates[NAIVE] = rows_n / seconds_n
    client = redis.Redis.from_url(backlog.redis_url)
    diffs = {}
    for decoder in DECODERS if index % 2 == 0 else DECODERS[::-1]:
        restore_redis(client, backlog.saved)
        # The same backlog: the bare loop's row count is the worker's too.
        rates[WORKER[decoder]] = rows / worker_catchup(backlog.settings(decoder), backlog.end)
        diffs[WORKER[decoder]] = differences(backlog, client)
    client.close()
    log("catch-up repeat: " + ", ".join(f"{k} {v:,.0f} rows/s" for k, v in rates.items()))
    return rows, rates, diffs


def subprocess_peak_rss(backlog: Backlog, decoder: str, work_dir: Path) -> float:
    """Peak RSS (VmHWM, MiB) of ``cdc-worker run`` catching up the whole backlog."""
    client = redis.Redis.from_url(backlog.redis_url)
    restore_redis(client, backlog.saved)
    with worker_process(
        backlog.mariadb,
        backlog.redis_url,
        work_dir / f"worker-{decoder}.log",
        CDC_ROW_DECODER=decoder,
    ) as worker:
        wait_checkpoint(client, backlog.end, CATCHUP_TIMEOUT_S)
        peak = peak_rss_mb(worker.pid)
    client.close()
    return peak


def profile_catchup(backlog: Backlog, out: Path, work_dir: Path) -> dict[str, Any]:
    """A py-spy profile of the worker subprocess (default decoder) while it catches up."""
    client = redis.Redis.from_url(backlog.redis_url)
    restore_redis(client, backlog.saved)
    log_path = work_dir / "worker-profiled.log"
    with worker_process(backlog.mariadb, backlog.redis_url, log_path) as worker:
        deadline = time.monotonic() + 60
        while b'"streaming"' not in log_path.read_bytes():  # start-up and imports excluded
            assert time.monotonic() < deadline, "the profiled worker never started streaming"
            time.sleep(0.01)
        recorder = start_recording(worker.pid, out)
        wait_checkpoint(client, backlog.end, CATCHUP_TIMEOUT_S)
        stop_recording(recorder)
    client.close()
    return summarize(out)


def measure(
    mariadb: MariaDBServer,
    redis_server: RedisServer,
    transactions: int,
    repeats: int,
    naive_max_rows: int | None = None,
    profile_out: Path | None = None,
) -> CatchupResult:
    """The whole scenario on running servers; see the module docstring."""
    backlog = make_backlog(mariadb, redis_server.url, transactions)
    spreads: dict[str, Spread] = {name: Spread() for name in (BARE, NAIVE, *WORKER.values())}
    rows, worst = 0, dict.fromkeys(WORKER.values(), 0)
    for index in range(repeats):
        rows, rates, diffs = one_repeat(backlog, index, naive_max_rows)
        for name, rate in rates.items():
            spreads[name].add(rate)
        worst = {name: max(worst[name], diffs[name]) for name in worst}
    summaries = {name: spread.summary() for name, spread in spreads.items()}
    result = CatchupResult(
        transactions, rows, naive_max_rows, repeats, summaries, catchup_ratios(summaries)
    )
    result.documents_checked, result.differences = len(backlog.expected), worst
    work_dir = redis_server.base_dir
    for decoder in DECODERS:
        result.peak_rss_mb[WORKER[decoder]] = subprocess_peak_rss(backlog, decoder, work_dir)
    if profile_out is not None:
        result.profile = profile_catchup(backlog, profile_out, work_dir)
    return result


def catchup_ratios(summaries: dict[str, dict[str, Any]]) -> dict[str, float | None]:
    """Each worker run against the bare loop and the naive projector; after vs. before."""
    found: dict[str, float | None] = {}
    for decoder in DECODERS:
        worker = summaries[WORKER[decoder]]
        found[f"{WORKER[decoder]} / {BARE}"] = ratio(worker, summaries[BARE])
        found[f"{WORKER[decoder]} / {NAIVE}"] = ratio(worker, summaries[NAIVE])
    found["specialized / library decoder"] = ratio(
        summaries[WORKER["specialized"]], summaries[WORKER["library"]]
    )
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--transactions", type=int, default=50_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--naive-max-rows", type=int, default=None)
    args = parser.parse_args()
    with servers("catchup") as (mariadb, redis_server):
        result = measure(
            mariadb, redis_server, args.transactions, args.repeats, args.naive_max_rows
        )
    print(json.dumps(asdict(result), indent=2))


if __name__ == "__main__":
    main()

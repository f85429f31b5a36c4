"""Memory: the worker subprocess's peak RSS while it applies one large transaction (N rows
inserted by one INSERT ... SELECT, as tests/integration/test_large_transaction.py does), once
per row decoder. The peak (VmHWM) is reset to the current RSS just before the transaction.
The peak during catch-up is measured by ``bench.catchup``.

    .venv/bin/python -m bench.memory --rows 200000
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import redis
from sqlalchemy import create_engine, text

from bench.catchup import DECODERS, WORKER
from bench.common import (
    log,
    master_position,
    peak_rss_mb,
    reset_peak_rss,
    rss_mb,
    servers,
    wait_checkpoint,
    worker_process,
)
from cdc_worker.devtools.localservers import MariaDBServer, RedisServer
from cdc_worker.devtools.seed import seed
from cdc_worker.schema import migrate

SEED_TICKETS = 20
TIMEOUT_S = 1800.0
INSERT_SQL = (
    "INSERT INTO tickets (title, description, status_id, department_id, requester_id, "
    "created_at, updated_at) "
    "SELECT CONCAT('bulk ', seq), REPEAT('x', 200), (SELECT MIN(id) FROM ticket_statuses), "
    "(SELECT MIN(id) FROM departments), (SELECT MIN(id) FROM users), NOW(6), NOW(6) "
    "FROM seq_1_to_{rows}"
)


@dataclass
class MemoryResult:
    """Per decoder: RSS before, peak RSS during, and seconds from COMMIT to applied."""

    rows: int
    by_decoder: dict[str, dict[str, Any]] = field(default_factory=dict)
    peak_reset: bool = True


def large_transaction(
    mariadb: MariaDBServer, redis_url: str, rows: int, decoder: str, result: MemoryResult
) -> dict[str, Any]:
    """One ``rows``-row transaction applied by a fresh worker subprocess."""
    engine = create_engine(mariadb.root_url)
    client = redis.Redis.from_url(redis_url)
    log_path = mariadb.base_dir / f"worker-{decoder}.log"
    with worker_process(mariadb, redis_url, log_path, CDC_ROW_DECODER=decoder) as worker:
        wait_checkpoint(client, master_position(mariadb.port), TIMEOUT_S)
        time.sleep(1)  # settle after start-up (imports, snapshot)
        result.peak_reset &= reset_peak_rss(worker.pid)
        before_mb = rss_mb(worker.pid)
        with engine.begin() as conn:
            conn.execute(text(INSERT_SQL.format(rows=int(rows))))
        committed = time.perf_counter()
        applied = wait_checkpoint(client, master_position(mariadb.port), TIMEOUT_S)
        peak_mb = peak_rss_mb(worker.pid)
    client.close()
    engine.dispose()
    return {"rss_before_mb": before_mb, "peak_rss_mb": peak_mb, "seconds": applied - committed}


def measure(mariadb: MariaDBServer, redis_server: RedisServer, rows: int) -> MemoryResult:
    """The whole scenario on running servers; see the module docstring."""
    migrate.upgrade(mariadb.root_url)
    engine = create_engine(mariadb.root_url)
    seed(engine, SEED_TICKETS, progress=False)
    engine.dispose()
    result = MemoryResult(rows)
    for decoder in DECODERS:
        found = large_transaction(mariadb, redis_server.url, rows, decoder, result)
        result.by_decoder[WORKER[decoder]] = found
        log(f"memory: {rows:,}-row transaction, {decoder} decoder: {found}")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000)
    args = parser.parse_args()
    with servers("memory") as (mariadb, redis_server):
        result = measure(mariadb, redis_server, args.rows)
    print(json.dumps(asdict(result), indent=2))


if __name__ == "__main__":
    main()

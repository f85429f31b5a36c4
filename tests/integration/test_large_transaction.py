"""One 200,000-row transaction is applied whole and correctly, in bounded worker memory."""

from __future__ import annotations

import signal
from pathlib import Path

from sqlalchemy import text

from cdc_worker.devtools.seed import seed
from tests.conftest import SourceDatabase
from tests.harness import spawn_worker, wait_heartbeat, wait_synced, worker_env

ROWS = 200_000
# Measured here: +102 MB with the default CDC_BATCH_MAX_ROWS, +3.3 GB with slicing turned
# off (CDC_BATCH_MAX_ROWS=1000000), so this bound fails if large transactions are held whole.
PEAK_GROWTH_LIMIT_MB = 250


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM in /proc")


def test_a_200k_row_transaction_is_applied_in_bounded_memory(
    source_db: SourceDatabase, redis_url: str, tmp_path: Path
) -> None:
    seed(source_db.engine, 20)
    env = worker_env(source_db.cdc_url, redis_url)
    worker = spawn_worker(env, tmp_path / "w.log")
    try:
        wait_synced(source_db.engine, redis_url)
        wait_heartbeat(redis_url)
        before_mb = peak_rss_mb(worker.pid)
        with source_db.engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO tickets (title, description, status_id, department_id, "
                    "requester_id, created_at, updated_at) "
                    "SELECT CONCAT('bulk ', seq), REPEAT('x', 200), "
                    "(SELECT MIN(id) FROM ticket_statuses), (SELECT MIN(id) FROM departments), "
                    "(SELECT MIN(id) FROM users), NOW(6), NOW(6) FROM seq_1_to_" + str(ROWS)
                )
            )
        wait_synced(source_db.engine, redis_url, timeout_s=240)
        growth_mb = peak_rss_mb(worker.pid) - before_mb
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(30)
    print(f"worker peak RSS grew {growth_mb:.0f} MB over {before_mb:.0f} MB for {ROWS} rows")
    assert growth_mb < PEAK_GROWTH_LIMIT_MB

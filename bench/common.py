"""What every benchmark shares: private servers, spreads of repeated runs, positions, memory."""

from __future__ import annotations

import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pymysql
import redis

from cdc_worker.checkpoint import Checkpoint
from cdc_worker.devtools.localservers import (
    MariaDBServer,
    RedisServer,
    start_mariadb,
    start_redis,
    stop_process,
)
from cdc_worker.store import keys
from tests.harness import spawn_worker, worker_env

POLL_S = 0.005
WORKER_STOP_TIMEOUT_S = 30


@dataclass
class Spread:
    """Repeated measurements of one figure: every run, and their median, min and max."""

    runs: list[float] = field(default_factory=list)

    def add(self, value: float) -> None:
        self.runs.append(value)

    def summary(self) -> dict[str, Any]:
        """The JSON form the report reads."""
        if not self.runs:
            return {"runs": [], "median": None, "min": None, "max": None}
        return {
            "runs": self.runs,
            "median": statistics.median(self.runs),
            "min": min(self.runs),
            "max": max(self.runs),
        }


def ratio(numerator: dict[str, Any], denominator: dict[str, Any]) -> float | None:
    """Ratio of two summaries' medians (None when either is missing or zero)."""
    top, bottom = numerator.get("median"), denominator.get("median")
    return top / bottom if top is not None and bottom else None


@contextmanager
def servers(prefix: str) -> Iterator[tuple[MariaDBServer, RedisServer]]:
    """A private MariaDB and Redis in a fresh directory; stopped and removed on exit."""
    base = Path(tempfile.mkdtemp(prefix=f"bench-{prefix}-"))
    mariadb = start_mariadb(base / "mariadb")
    try:
        redis_server = start_redis(base / "redis")
        try:
            yield mariadb, redis_server
        finally:
            redis_server.stop()
    finally:
        mariadb.stop()
        shutil.rmtree(base, ignore_errors=True)


def master_position(port: int) -> tuple[str, int]:
    """The source's binlog file and end position right now."""
    with pymysql.connect(host="127.0.0.1", port=port, user="root") as conn, conn.cursor() as cur:
        cur.execute("SHOW MASTER STATUS")
        row = cur.fetchone()
        assert row is not None
        return str(row[0]), int(row[1])


def checkpoint_position(client: redis.Redis) -> tuple[str, int] | None:
    """The read model's checkpoint as (file, position), None before the first snapshot."""
    raw = client.get(keys.CHECKPOINT)
    if raw is None:
        return None
    position = Checkpoint.decode(raw).position
    return position.log_file, position.log_pos


def wait_checkpoint(
    client: redis.Redis, end: tuple[str, int], timeout_s: float, poll_s: float = POLL_S
) -> float:
    """Wait until the checkpoint reaches ``end``; return the perf_counter time it was seen."""
    deadline = time.monotonic() + timeout_s
    while (position := checkpoint_position(client)) is None or position < end:
        if time.monotonic() > deadline:
            raise TimeoutError(f"checkpoint {position} never reached {end}")
        time.sleep(poll_s)
    return time.perf_counter()


def status_kb(pid: int, field_name: str) -> int:
    """A ``VmHWM``/``VmRSS`` line of /proc/PID/status, in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field_name}:"):
            return int(line.split()[1])
    raise LookupError(f"no {field_name} for pid {pid}")


def peak_rss_mb(pid: int) -> float:
    """The process's peak resident set size so far (VmHWM), in MiB."""
    return status_kb(pid, "VmHWM") / 1024


def reset_peak_rss(pid: int) -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0, needs ptrace rights); False if refused."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def rss_mb(pid: int) -> float:
    """The process's resident set size now, in MiB."""
    return status_kb(pid, "VmRSS") / 1024


@contextmanager
def worker_process(
    mariadb: MariaDBServer, redis_url: str, log_path: Path, **env: str
) -> Iterator[subprocess.Popen[bytes]]:
    """``cdc-worker run`` as a subprocess (the way it runs in production); stopped on exit."""
    process = spawn_worker(worker_env(mariadb.cdc_url, redis_url, **env), log_path)
    try:
        yield process
    finally:
        stop_process(process, WORKER_STOP_TIMEOUT_S)


def snapshot_redis(client: redis.Redis) -> dict[bytes, bytes]:
    """Every key, DUMPed: restore_redis puts the read model back exactly."""
    return {key: client.dump(key) for key in client.scan_iter(count=1000)}  # type: ignore[misc]


def restore_redis(client: redis.Redis, saved: dict[bytes, bytes]) -> None:
    """Replace the database's content with a snapshot_redis result."""
    client.flushdb()
    pipe = client.pipeline(transaction=False)
    for key, payload in saved.items():
        pipe.restore(key, 0, payload)
    pipe.execute()


def log(message: str) -> None:
    """Progress on stdout, flushed (the all-in-one run takes a while)."""
    print(message, flush=True)

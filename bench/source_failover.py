"""Source failover time: from the promotion of the replica to the first transaction the
worker applies from the new primary.

.venv/bin/python -m bench.source_failover --failovers 12 --failover-after-s 1

A primary and a GTID replica; ``cdc-worker run`` reads the primary with the replica in
``CDC_MYSQL_FAILOVER_URLS``. Each round commits a few transactions, SIGKILLs the primary
once the replica has them, promotes the replica, commits one marker transaction on it and
times until the worker's checkpoint holds the marker's GTID; the dead primary then rejoins as
a replica of the new one, so the next round fails over the other way. At the end the read
model is compared with the SQL oracle and the worker's metrics must show one switch per
round and no rebuild.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import tempfile
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import redis
from prometheus_client.parser import text_string_to_metric_families

from bench.common import Spread, log, worker_process
from cdc_worker.devtools.localservers import MariaDBServer, free_port, start_redis
from cdc_worker.devtools.replicas import (
    gtid_binlog_pos,
    promote,
    rejoin_as_replica,
    wait_caught_up,
)
from cdc_worker.store import keys
from tests.harness import wait_synced
from tests.replication import Topology, Workload, engine_of, start_topology, stored_checkpoint

TRANSACTIONS_PER_ROUND = 20
APPLIED_TIMEOUT_S = 120.0
POLL_S = 0.005


@dataclass
class FailoverResult:
    """Seconds from promotion to the first transaction applied from the new primary."""

    failovers: int
    failover_after_s: float
    seconds: dict[str, Any]
    p50_s: float
    p99_s: float
    switches: float
    snapshots_by_reason: dict[str, float]
    read_model_exact: bool
    notes: list[str] = field(default_factory=list)


def percentile(values: list[float], share: float) -> float:
    """Nearest-rank percentile (with fewer than 100 values, p99 is the slowest)."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(share * len(ordered)) - 1)]


def wait_applied(redis_url: str, gtid: str) -> float:
    """Poll the checkpoint until it holds ``gtid``; returns the time.time() it was seen."""
    deadline = time.monotonic() + APPLIED_TIMEOUT_S
    while True:
        checkpoint = stored_checkpoint(redis_url)
        if checkpoint is not None and checkpoint.position.gtid == gtid:
            return time.time()
        if time.monotonic() > deadline:
            raise TimeoutError(f"the worker never applied {gtid}")
        time.sleep(POLL_S)


def one_failover(topology: Topology, workload: Workload, redis_url: str) -> float:
    """Kill the primary, promote the replica, time the marker; swap the roles."""
    workload.run(TRANSACTIONS_PER_ROUND)
    last = gtid_binlog_pos(topology.primary)
    wait_caught_up(topology.replica, topology.primary)  # else the kill loses transactions
    wait_applied(redis_url, last)
    killed_id = int(last.split("-")[1])  # the primary's own last transaction: its server id
    topology.primary.kill()
    promoted_at = promote(topology.replica)
    workload.move_to(topology.replica.root_url)
    workload.run(1)  # the marker
    applied_at = wait_applied(redis_url, gtid_binlog_pos(topology.replica))
    rejoined = rejoin_as_replica(topology.primary, topology.replica, server_id=killed_id)
    topology.primary, topology.replica = topology.replica, rejoined
    return applied_at - promoted_at


def worker_metrics(port: int) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """The worker's /metrics, by sample name and labels."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    found: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return found


def measure(failovers: int, failover_after_s: float, tickets: int = 500) -> FailoverResult:
    """Run ``failovers`` rounds; the servers live in a fresh directory removed at the end."""
    base = Path(tempfile.mkdtemp(prefix="bench-source-failover-"))
    topology = start_topology(base, tickets)
    redis_server = start_redis(base / "redis")
    try:
        return _rounds(topology, redis_server.url, base, failovers, failover_after_s)
    finally:
        redis_server.stop()
        topology.stop()
        shutil.rmtree(base, ignore_errors=True)


def _rounds(
    topology: Topology, redis_url: str, base: Path, failovers: int, failover_after_s: float
) -> FailoverResult:
    http_port = free_port()
    env = {
        "CDC_MYSQL_FAILOVER_URLS": topology.replica.cdc_url,
        "CDC_SOURCE_FAILOVER_AFTER_S": str(failover_after_s),
        "CDC_WORKER_HTTP_PORT": str(http_port),
    }
    seconds = Spread()
    workload = Workload(topology.primary.root_url)
    with worker_process(topology.primary, redis_url, base / "worker.log", **env):
        _wait_checkpoint(redis_url)
        for round_number in range(failovers):
            seconds.add(one_failover(topology, workload, redis_url))
            log(f"failover {round_number + 1}/{failovers}: {seconds.runs[-1]:.3f} s")
        exact = _read_model_exact(topology.primary, redis_url)
        metrics = worker_metrics(http_port)
    workload.engine.dispose()
    counted = metrics.get("cdc_snapshots_total", {}).items()
    snapshots = {dict(k)["reason"]: v for k, v in counted if v}
    return FailoverResult(
        failovers=failovers,
        failover_after_s=failover_after_s,
        seconds=seconds.summary(),
        p50_s=percentile(seconds.runs, 0.5),
        p99_s=percentile(seconds.runs, 0.99),
        switches=metrics.get("cdc_source_switches_total", {}).get((), 0.0),
        snapshots_by_reason=snapshots,
        read_model_exact=exact,
    )


def _wait_checkpoint(redis_url: str) -> None:
    deadline = time.monotonic() + APPLIED_TIMEOUT_S
    with redis.Redis.from_url(redis_url) as client:
        while not client.exists(keys.CHECKPOINT):
            if time.monotonic() > deadline:
                raise TimeoutError("the worker never stored a checkpoint")
            time.sleep(0.05)


def _read_model_exact(primary: MariaDBServer, redis_url: str) -> bool:
    engine = engine_of(primary)
    try:
        wait_synced(engine, redis_url)
    except AssertionError:
        return False
    finally:
        engine.dispose()
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--failovers", type=int, default=12)
    parser.add_argument("--failover-after-s", type=float, default=1.0)
    args = parser.parse_args()
    result = measure(args.failovers, args.failover_after_s)
    print(json.dumps(asdict(result), indent=2))


if __name__ == "__main__":
    main()

"""High availability: worker take-over time after SIGKILL and SIGTERM of the active worker
(p50/p99 over many hand-overs), and Redis failover time to the first transaction applied on
the promoted replica, next to Sentinel's own promotion time in the same run. Every run ends
with the SQL oracle: the read model must equal the database (nothing lost nor doubled).

.venv/bin/python -m bench.ha --handovers 20 --failovers 3
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import tempfile
import time
from pathlib import Path
from typing import Any

import redis
from sqlalchemy import create_engine

from bench.common import log
from cdc_worker.devtools.localservers import MariaDBServer, start_mariadb, start_redis
from cdc_worker.devtools.redis_ha import start_redis_group
from cdc_worker.devtools.seed import seed
from cdc_worker.schema.models import Base
from cdc_worker.store import keys
from tests.chaos import Writer
from tests.ha import Fleet, checkpoint_of, percentile, wait_takeover
from tests.harness import wait_synced

TICKETS = 500
LEASE_S = 3.0


def figures(runs: list[float]) -> dict[str, Any]:
    """Every run with its p50, p99, min and max (nearest rank)."""
    if not runs:
        return {"runs": [], "p50": None, "p99": None, "min": None, "max": None}
    return {
        "runs": runs,
        "p50": percentile(runs, 50),
        "p99": percentile(runs, 99),
        "min": min(runs),
        "max": max(runs),
    }


def takeovers(mariadb: MariaDBServer, base: Path, handovers: int) -> dict[str, Any]:
    """``handovers`` SIGKILLs and as many SIGTERMs of the active worker of three."""
    redis_server = start_redis(base / "redis")
    engine = create_engine(mariadb.root_url, pool_pre_ping=True)
    env = {"CDC_LEADER_LEASE_S": str(LEASE_S)}
    fleet = Fleet(mariadb.cdc_url, redis_server.url, base, env)
    writer = Writer(engine, 7)
    found: dict[str, list[float]] = {"SIGKILL": [], "SIGTERM": []}
    try:
        fleet.spawn_ready(3)
        fleet.wait_leader()
        writer.start()
        with fleet.client() as client:
            for n in range(2 * handovers):
                signum = signal.SIGKILL if n % 2 == 0 else signal.SIGTERM
                found[signum.name].append(_hand_over(fleet, client, signum))
                log(f"take-over after {signum.name}: {found[signum.name][-1]:.2f} s")
        writer.stop.set()
        writer.join(60)
        wait_synced(engine, redis_server.url, timeout_s=120)  # nothing lost, nothing doubled
    finally:
        writer.stop.set()
        fleet.stop()
        redis_server.stop()
        engine.dispose()
    return {
        "lease_s": LEASE_S,
        "transactions": writer.committed,
        "oracle": "read model equal to the database",
        **{f"takeover_after_{name.lower()}_s": figures(runs) for name, runs in found.items()},
    }


def _hand_over(fleet: Fleet, client: redis.Redis, signum: signal.Signals) -> float:
    time.sleep(0.5)
    old, at_s = fleet.signal_leader(signum)
    _, took_s = wait_takeover(client, old, at_s)
    fleet.reap(old)
    fleet.spawn_ready()  # after the take-over: a start-up would compete for the cores
    return took_s


def failovers(mariadb: MariaDBServer, base: Path, count: int) -> dict[str, Any]:
    """``count`` SIGKILLs of the Redis primary under a workload (one fresh replica each)."""
    group = start_redis_group(base / "group", count, down_after_ms=2000, failover_timeout_ms=4000)
    engine = create_engine(mariadb.root_url, pool_pre_ping=True)
    env = {"CDC_REDIS_SENTINELS": group.sentinel_list}
    fleet = Fleet(mariadb.cdc_url, group.url(), base, env)
    writer = Writer(engine, 8)
    applied: list[float] = []
    try:
        fleet.spawn_ready(2)
        fleet.wait_leader()
        with fleet.client() as client:  # the first snapshot is in: failovers hit streaming
            while not client.exists(keys.HEARTBEAT):
                time.sleep(0.05)
        writer.start()
        for _ in range(count):
            time.sleep(2)
            applied.append(_fail_over(group))
            promoted_s = group.promotion_times_s[-1]
            log(f"failover: promoted {promoted_s:.2f} s, applied {applied[-1]:.2f} s")
        writer.stop.set()
        writer.join(60)
        wait_synced(engine, f"redis://127.0.0.1:{group.primary_port()}/1", timeout_s=120)
    finally:
        writer.stop.set()
        fleet.stop()
        group.stop()
        engine.dispose()
    return {
        "down_after_ms": 2000,
        "transactions": writer.committed,
        "oracle": "read model equal to the database",
        "sentinel_promotion_s": figures(group.promotion_times_s),
        "first_applied_transaction_s": figures(applied),
        "snapshots": fleet.log_events()["snapshot started"],
    }


def _fail_over(group: Any) -> float:
    port, killed_at_s = group.kill_primary()
    group.wait_promoted(port, killed_at_s)
    with redis.Redis(port=group.primary_port(), db=1, socket_timeout=5) as client:
        held = checkpoint_of(client)
        while checkpoint_of(client) == held:
            assert time.monotonic() - killed_at_s < 120, "nothing applied after the failover"
            time.sleep(0.005)
    took_s = time.monotonic() - killed_at_s
    group.restart_as_replica(port)
    return took_s


def measure(handovers: int, failover_count: int) -> dict[str, Any]:
    """Both parts, each on fresh servers."""
    base = Path(tempfile.mkdtemp(prefix="bench-ha-"))
    mariadb = start_mariadb(base / "mariadb")
    try:
        engine = create_engine(mariadb.root_url)
        Base.metadata.create_all(engine)
        seed(engine, TICKETS)
        engine.dispose()
        return {
            "standby": takeovers(mariadb, base / "standby", handovers),
            "sentinel": failovers(mariadb, base / "sentinel", failover_count),
        }
    finally:
        mariadb.stop()
        shutil.rmtree(base, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--handovers", type=int, default=20, help="of each kind")
    parser.add_argument("--failovers", type=int, default=3)
    args = parser.parse_args()
    print(json.dumps(measure(args.handovers, args.failovers), indent=2))


if __name__ == "__main__":
    main()

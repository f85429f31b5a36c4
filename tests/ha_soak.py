"""High-availability soak: three workers behind one lease and Redis behind three Sentinels,
under a live workload, with the active worker SIGKILLed, SIGSTOPped past its lease or
SIGTERMed and the Redis primary SIGKILLed, in rounds; each round ends with the SQL oracle.

    .venv/bin/python -m tests.ha_soak --minutes 10 [--seed N]      (make ha-soak MINUTES=10)
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import tempfile
import time
from collections import Counter
from pathlib import Path

from sqlalchemy import create_engine

from cdc_worker.devtools.localservers import start_mariadb
from cdc_worker.devtools.redis_ha import RedisGroup, start_redis_group
from cdc_worker.devtools.seed import seed
from cdc_worker.schema.models import Base
from tests.chaos import Writer
from tests.ha import Fleet, percentile, wait_takeover
from tests.harness import wait_synced

FAULTS_PER_ROUND = 8
FAILOVER_GAP_S = 10.0  # more than twice the Sentinels' failover timeout (4 s)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--seed", type=int, default=int(time.time()))
    args = parser.parse_args()
    rng = random.Random(args.seed)
    base = Path(tempfile.mkdtemp(prefix="ha-soak-"))
    mariadb = start_mariadb(base / "mariadb")
    group = start_redis_group(base / "redis", 2, down_after_ms=1000, failover_timeout_ms=4000)
    engine = create_engine(mariadb.root_url, pool_pre_ping=True)
    Base.metadata.create_all(engine)
    seed(engine, 1000, seed=args.seed, progress=False)
    fleet = Fleet(mariadb.cdc_url, group.url(), base, {"CDC_REDIS_SENTINELS": group.sentinel_list})
    times: dict[str, list[float]] = {}
    deadline, rounds = time.monotonic() + args.minutes * 60, 0
    try:
        fleet.spawn_ready(3)
        while time.monotonic() < deadline:
            rounds += 1
            writer = Writer(engine, rng.randrange(2**31))
            writer.start()
            for _ in range(FAULTS_PER_ROUND):
                name, took_s = fault(fleet, group, rng)
                times.setdefault(name, []).append(took_s)
                time.sleep(rng.uniform(0.2, 2.0))
            writer.stop.set()
            writer.join(60)
            wait_synced(engine, f"redis://127.0.0.1:{group.primary_port()}/1", timeout_s=300)
            print(f"round {rounds}: read model equal to the database; seed {args.seed}")
    finally:
        fleet.stop()
        group.stop()
        mariadb.stop()
    summary(times, rounds)


def fault(fleet: Fleet, group: RedisGroup, rng: random.Random) -> tuple[str, float]:
    """One fault, chosen from the seed; its name and the seconds until streaming resumed."""
    if time.monotonic() - getattr(fault, "last_failover_s", 0.0) > FAILOVER_GAP_S and (
        rng.random() < 0.25
    ):
        fault.last_failover_s = time.monotonic()  # type: ignore[attr-defined]
        port, killed_at_s = group.kill_primary()
        group.wait_promoted(port, killed_at_s)
        group.restart_as_replica(port, priority=100)
        return "redis primary SIGKILL (promotion)", group.promotion_times_s[-1]
    signum = rng.choice([signal.SIGKILL, signal.SIGKILL, signal.SIGTERM, signal.SIGSTOP])
    old, at_s = fleet.signal_leader(signum)
    replacement = fleet.spawn() if signum != signal.SIGSTOP else None
    with fleet.client() as client:
        _, took_s = wait_takeover(client, old, at_s)
    if signum == signal.SIGSTOP:
        time.sleep(1)
        os.kill(old, signal.SIGCONT)
    else:
        fleet.reap(old)
        fleet.wait_ready([replacement] if replacement else [])
    return f"worker {signum.name}", took_s


def summary(times: dict[str, list[float]], rounds: int) -> None:
    counted = Counter({name: len(runs) for name, runs in times.items()})
    print(f"{rounds} rounds, {sum(counted.values())} faults, zero mismatches")
    for name, runs in sorted(times.items()):
        p50, p99 = percentile(runs, 50), percentile(runs, 99)
        print(f"  {len(runs):4d}  {name}: p50 {p50:.2f} s, p99 {p99:.2f} s, max {max(runs):.2f} s")


if __name__ == "__main__":
    main()

"""Soak mode: the chaos harness for a given duration, in rounds, then a summary table.

    .venv/bin/python -m tests.soak --minutes 30 [--seed N]

Each round injects faults under a live workload and then checks the whole read model against
the SQL oracle; any mismatch stops the soak with the differences and the seed to replay.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections import Counter
from pathlib import Path

from sqlalchemy import create_engine

from cdc_worker.devtools.localservers import start_mariadb, start_redis
from cdc_worker.devtools.seed import seed
from cdc_worker.schema.models import Base
from tests.chaos import Chaos, Writer

FAULTS_PER_ROUND = 20


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--minutes", type=float, default=30)
    parser.add_argument("--seed", type=int, default=int(time.time()))
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="soak-"))
    mariadb, redis_server = start_mariadb(base / "mariadb"), start_redis(base / "redis")
    engine = create_engine(mariadb.root_url, pool_pre_ping=True)
    Base.metadata.create_all(engine)
    seed(engine, 1000, seed=args.seed, progress=False)
    chaos = Chaos(mariadb, redis_server, engine, base, args.seed)
    totals: Counter[str] = Counter()
    deadline, rounds, started = time.monotonic() + args.minutes * 60, 0, time.monotonic()
    chaos.start_worker()
    chaos.watch_memory()
    try:
        while time.monotonic() < deadline:
            rounds += 1
            writer = Writer(engine, args.seed + rounds)
            writer.start()
            try:
                chaos.inject(FAULTS_PER_ROUND)
            finally:
                writer.stop.set()
                writer.join(60)
            chaos.current_fault = "catching up after the round"
            try:
                chaos.settle()  # raises with the differences on any mismatch
            except AssertionError as exc:
                totals["mismatches"] = count_differences(str(exc))
                raise
            totals["transactions"] += writer.committed
            print(f"round {rounds}: {writer.committed} transactions, 0 mismatches", flush=True)
    finally:
        report(chaos, totals, rounds, time.monotonic() - started)
        chaos.stop_worker()
        mariadb.stop()
        redis_server.stop()


def count_differences(message: str) -> int:
    """The number of differences ``wait_synced`` reported (it lists the first ones)."""
    listed = [line for line in message.splitlines()[1:] if not line.startswith("... and ")]
    more = [line for line in message.splitlines() if line.startswith("... and ")]
    return len(listed) + sum(int(line.split()[2]) for line in more)


def report(chaos: Chaos, totals: Counter[str], rounds: int, seconds: float) -> None:
    print(
        f"\nsoak: seed {chaos.seed}, {seconds / 60:.1f} minutes, {rounds} rounds, each ending "
        "with the whole read model compared to the database"
    )
    print(f"{'':2}{'count':>8}  what")
    print(f"{'':2}{totals['transactions']:>8}  transactions committed by the workload")
    for name, count in sorted(chaos.faults.items()):
        print(f"{'':2}{count:>8}  fault: {name}")
    for name, count in sorted(chaos.recoveries().items()):
        print(f"{'':2}{count:>8}  {name}")
    print(f"{'':2}{totals['mismatches']:>8}  mismatched documents (a mismatch stops the soak)")
    print(f"{'':2}{chaos.peak_worker_rss_mb:>8.0f}  peak worker RSS, MB")
    for name, rss_mb in sorted(chaos.peak_rss_by_fault_mb.items(), key=lambda kv: -kv[1]):
        print(f"{'':2}{rss_mb:>8.0f}  peak worker RSS (MB) while or after: {name}")


if __name__ == "__main__":
    main()

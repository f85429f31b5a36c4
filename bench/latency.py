"""Steady state: commit-to-visible latency at fixed commit rates, vs. bare binlog arrival.

Each marked transaction updates one ticket's title to ``lat-<seq>`` (see ``latency_probe``).
The clock starts right after COMMIT returns to the writer. Worker phases: ``cdc-worker run``
(a subprocess) applies the stream, and the clock stops when an HMGET of the ``tickets`` hash,
woken by Redis keyspace notifications, returns the new title. Baseline phases: the worker is
stopped and a bare python-mysql-replication reader (another subprocess) stops the clock when
it yields the row event. Phases alternate at the same rate; the ratio of their percentiles,
and their difference, is what the worker adds. The highest sustainable rate is found first,
stepping up by 1.5x while the writer keeps the rate and the worker's p99 stays bounded.

    .venv/bin/python -m bench.latency --seconds 10 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine

from bench.common import Spread, log, master_position, servers, wait_checkpoint, worker_process
from bench.latency_probe import ArrivalReader, Observer, VisibilityWatcher, Writer, wait_seen
from cdc_worker.devtools.localservers import MariaDBServer, RedisServer
from cdc_worker.devtools.seed import seed
from cdc_worker.schema import migrate

FIXED_RATES_PER_S = (100, 1000)
FIRST_STEP_PER_S = 1000
STEP_FACTOR = 1.5
MAX_STEP_PER_S = 50_000
SUSTAINED_RATE_SHARE = 0.95
SUSTAINED_P99_MS = 500.0
DRAIN_TIMEOUT_S = 30.0
SYNC_TIMEOUT_S = 300.0
DECODER = "specialized"
MEANINGFUL_BARE_MS = 0.05
PERCENTILES = {"p50": 49, "p95": 94, "p99": 98}


@dataclass
class Phase:
    """One paced run observed by one observer."""

    target_per_s: float
    achieved_per_s: float
    commits: int
    unseen: int
    latency_ms: dict[str, float]


@dataclass
class LatencyResult:
    """Latency percentiles per rate, for the worker and the bare reader, and the step-up."""

    phase_seconds: float
    repeats: int
    decoder: str
    tickets: int
    writer_connections: int
    steps: list[dict[str, Any]] = field(default_factory=list)
    max_sustainable_per_s: float = 0.0
    limited_by: str = ""
    rates: list[dict[str, Any]] = field(default_factory=list)


def percentiles(latencies_ms: list[float]) -> dict[str, float]:
    """p50/p95/p99 of the latencies (inclusive method; zeros when there are none)."""
    if len(latencies_ms) < 2:
        return dict.fromkeys(PERCENTILES, latencies_ms[0] if latencies_ms else 0.0)
    cuts = statistics.quantiles(latencies_ms, n=100, method="inclusive")
    return {name: cuts[index] for name, index in PERCENTILES.items()}


def run_phase(writer: Writer, observer: Observer, rate_per_s: float, seconds: float) -> Phase:
    """A warm-up commit (waited for), then ``seconds`` of paced commits, then the drain."""
    seq, ticket_id, _ = writer.commit_one()
    observer.expect(seq, ticket_id)
    if not wait_seen(observer, [seq], SYNC_TIMEOUT_S):
        raise TimeoutError("the observer never saw the warm-up commit")
    committed: dict[int, float] = {}

    def on_commit(seq: int, ticket_id: int, committed_s: float) -> None:
        committed[seq] = committed_s
        observer.expect(seq, ticket_id)

    started_s = writer.paced(rate_per_s, seconds, on_commit)
    achieved = len(committed) / (max(committed.values()) - started_s) if committed else 0.0
    wait_seen(observer, list(committed), DRAIN_TIMEOUT_S)
    latencies = [(observer.seen[s] - t) * 1000 for s, t in committed.items() if s in observer.seen]
    unseen = len(committed) - len(latencies)
    return Phase(rate_per_s, achieved, len(committed), unseen, percentiles(latencies))


def sustained(phase: Phase) -> bool:
    """The writer kept the rate, every commit became visible, and p99 stayed bounded."""
    kept = phase.achieved_per_s >= SUSTAINED_RATE_SHARE * phase.target_per_s
    return kept and phase.unseen == 0 and phase.latency_ms["p99"] <= SUSTAINED_P99_MS


class Bench:
    """The servers, the writer and the watcher of one run."""

    def __init__(self, mariadb: MariaDBServer, redis_url: str, work_dir: Path) -> None:
        self.mariadb, self.redis_url, self.work_dir = mariadb, redis_url, work_dir
        self.writer = Writer(mariadb.port, mariadb.database)
        self.watcher = VisibilityWatcher(redis_url)

    def worker_phases(self, rates: list[float], seconds: float) -> list[Phase]:
        """A worker subprocess, caught up first, observed through the read model."""
        log_path = self.work_dir / "worker.log"
        with worker_process(self.mariadb, self.redis_url, log_path, CDC_ROW_DECODER=DECODER):
            end = master_position(self.mariadb.port)
            wait_checkpoint(self.watcher.client, end, SYNC_TIMEOUT_S)
            return [run_phase(self.writer, self.watcher, r, seconds) for r in rates]

    def bare_phase(self, rate_per_s: float, seconds: float) -> Phase:
        """The bare reader alone (no worker running)."""
        reader = ArrivalReader(self.mariadb.port, self.mariadb.database)
        try:
            return run_phase(self.writer, reader, rate_per_s, seconds)
        finally:
            reader.close()

    def close(self) -> None:
        self.watcher.close()
        self.writer.close()


def step_up(bench: Bench, seconds: float) -> tuple[list[Phase], float, str]:
    """Raise the rate by STEP_FACTOR from FIRST_STEP_PER_S until it is not sustained (halve
    instead if the first step fails). Returns the steps, the highest sustained rate and what
    stopped the climb: the writer (it could not commit faster) or the worker."""
    steps: list[Phase] = []
    factor = STEP_FACTOR
    rate = float(FIRST_STEP_PER_S)
    while 10 <= rate <= MAX_STEP_PER_S:
        steps.append(bench.worker_phases([rate], seconds)[0])
        phase = steps[-1]
        log(f"step {rate:,.0f}/s: achieved {phase.achieved_per_s:,.0f}/s, {phase.latency_ms}")
        climbing, ok = factor > 1, sustained(phase)
        if (climbing and not ok and len(steps) > 1) or (not climbing and ok):
            break
        if climbing and not ok:
            factor = 0.5  # even the first step failed: come down
        rate = round(rate * factor)
    best = max((p.target_per_s for p in steps if sustained(p)), default=0.0)
    failed = [p for p in steps if not sustained(p) and p.target_per_s > best]
    if not failed:
        return steps, best, f"nothing up to {MAX_STEP_PER_S:,}/s"
    kept = failed[0].achieved_per_s >= SUSTAINED_RATE_SHARE * failed[0].target_per_s
    return steps, best, "the worker" if kept else "the writer"


def compare(bench: Bench, rate: float, seconds: float, repeats: int) -> dict[str, Any]:
    """Worker and bare phases alternating at one rate; medians and spreads of each."""
    spreads: dict[str, dict[str, Spread]] = {
        who: {name: Spread() for name in [*PERCENTILES, "achieved_per_s"]}
        for who in ("worker", "bare")
    }
    unseen = 0
    for index in range(repeats):
        order = ("worker", "bare") if index % 2 == 0 else ("bare", "worker")
        for who in order:
            phase = (
                bench.worker_phases([rate], seconds)[0]
                if who == "worker"
                else bench.bare_phase(rate, seconds)
            )
            unseen += phase.unseen
            for name in PERCENTILES:
                spreads[who][name].add(phase.latency_ms[name])
            spreads[who]["achieved_per_s"].add(phase.achieved_per_s)
            log(f"{rate:,.0f}/s {who}: {phase.latency_ms}")
    found = {who: {k: v.summary() for k, v in s.items()} for who, s in spreads.items()}
    return {"target_per_s": rate, "unseen": unseen, **found, **latency_ratios(found)}


def latency_ratios(found: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Worker over bare per percentile, and the milliseconds the worker adds."""
    out: dict[str, Any] = {"ratio": {}, "added_ms": {}}
    for name in PERCENTILES:
        worker, bare = found["worker"][name]["median"], found["bare"][name]["median"]
        # Arrival can precede COMMIT's reply (latency <= 0): no ratio means anything then.
        out["ratio"][name] = worker / bare if bare > MEANINGFUL_BARE_MS else None
        out["added_ms"][name] = worker - bare
    return out


def measure(
    mariadb: MariaDBServer, redis_server: RedisServer, seconds: float, repeats: int, tickets: int
) -> LatencyResult:
    """The whole scenario on running servers; see the module docstring."""
    migrate.upgrade(mariadb.root_url)
    engine = create_engine(mariadb.root_url)
    seed(engine, tickets, progress=False)
    engine.dispose()
    bench = Bench(mariadb, redis_server.url, redis_server.base_dir)
    result = LatencyResult(seconds, repeats, DECODER, tickets, len(bench.writer.conns))
    try:
        steps, result.max_sustainable_per_s, result.limited_by = step_up(bench, seconds)
        result.steps = [asdict(step) | {"sustained": sustained(step)} for step in steps]
        for rate in sorted({*FIXED_RATES_PER_S, result.max_sustainable_per_s} - {0.0}):
            result.rates.append(compare(bench, rate, seconds, repeats))
    finally:
        bench.close()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--tickets", type=int, default=10_000)
    args = parser.parse_args()
    with servers("latency") as (mariadb, redis_server):
        result = measure(mariadb, redis_server, args.seconds, args.repeats, args.tickets)
    print(json.dumps(asdict(result), indent=2))


if __name__ == "__main__":
    main()

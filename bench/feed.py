"""The change feed's cost and speed.

1. Catch-up with the feed on vs. off: the worker applying the same backlog (bench.catchup's),
   alternating within each repeat; the read model is checked against SQL after every run.
2. Delivery latency: from COMMIT returning in MariaDB to an SSE client of ``cdc-worker api``
   receiving the event, with 1 and with 1,000 concurrent subscribers (all in this process,
   on asyncio; the worker and the API in their own processes).

    .venv/bin/python -m bench.feed --transactions 5000 --repeats 3 --probes 30
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pymysql
import redis
from sqlalchemy import create_engine

from bench.api import serve, wait_up
from bench.catchup import Backlog, differences, make_backlog, worker_catchup
from bench.common import (
    Spread,
    log,
    master_position,
    ratio,
    restore_redis,
    servers,
    wait_checkpoint,
    worker_process,
)
from cdc_worker.devtools.localservers import MariaDBServer, RedisServer, free_port
from cdc_worker.devtools.seed import seed
from cdc_worker.schema import migrate

ON, OFF = "feed on", "feed off"
SUBSCRIBERS = (1, 1000)
LATENCY_TICKETS = 2000
DELIVERY_TIMEOUT_S = 30.0


@dataclass
class FeedResult:
    """Catch-up rates with the feed on and off, and delivery latencies by subscriber count."""

    transactions: int
    repeats: int
    transactions_per_s: dict[str, dict[str, Any]]
    on_off_ratio: float | None
    documents_checked: int = 0
    differences: dict[str, int] = field(default_factory=dict)
    latency_ms: dict[str, dict[str, float]] = field(default_factory=dict)
    # on/off within each repeat (the two runs back to back): less exposed to the machine's
    # load drifting between repeats than the ratio of medians.
    pair_ratios: list[float] = field(default_factory=list)
    # CPU seconds of this process (the worker's thread, mostly) per catch-up: less exposed
    # than wall time to other jobs on the machine.
    cpu_s: dict[str, dict[str, Any]] = field(default_factory=dict)


def catchup_on_off(backlog: Backlog, transactions: int, repeats: int) -> FeedResult:
    spreads = {ON: Spread(), OFF: Spread()}
    cpu = {ON: Spread(), OFF: Spread()}
    worst = {ON: 0, OFF: 0}
    client = redis.Redis.from_url(backlog.redis_url)
    for index in range(repeats):
        for name in (ON, OFF) if index % 2 == 0 else (OFF, ON):
            restore_redis(client, backlog.saved)
            settings = backlog.settings("specialized").model_copy(update={"changes": name == ON})
            cpu_started = time.process_time()
            seconds = worker_catchup(settings, backlog.end)
            cpu[name].add(time.process_time() - cpu_started)
            spreads[name].add(transactions / seconds)
            worst[name] = max(worst[name], differences(backlog, client))
        log(
            f"feed catch-up repeat {index}: "
            + ", ".join(f"{n} {s.runs[-1]:,.0f} tx/s" for n, s in spreads.items())
        )
    client.close()
    summaries = {name: spread.summary() for name, spread in spreads.items()}
    result = FeedResult(transactions, repeats, summaries, ratio(summaries[ON], summaries[OFF]))
    result.documents_checked, result.differences = len(backlog.expected), worst
    result.cpu_s = {name: spread.summary() for name, spread in cpu.items()}
    result.pair_ratios = [
        on / off for on, off in zip(spreads[ON].runs, spreads[OFF].runs, strict=True)
    ]
    return result


async def subscriber(port: int, arrivals: dict[int, list[float]], ready: asyncio.Event) -> None:
    """One SSE client: notes when each probe's event arrives."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=2**20)
    writer.write(
        b"GET /tickets/events HTTP/1.1\r\nHost: bench\r\nAccept: text/event-stream\r\n\r\n"
    )
    await writer.drain()
    status = await reader.readline()
    if b" 200 " not in status:
        raise RuntimeError(f"event stream refused: {status!r}")
    while (line := await reader.readline()) and not line.startswith(b"retry:"):
        pass  # headers, then the stream's first line: it is registered from here on
    ready.set()
    marker = b'"title":"probe-'
    while line := await reader.readline():
        at = line.find(marker)
        if at >= 0:
            number = int(line[at + len(marker) : line.index(b'"', at + len(marker))])
            arrivals.setdefault(number, []).append(time.perf_counter())


def commit_probe(port: int, database: str, number: int) -> float:
    """UPDATE one ticket's title; the perf_counter time COMMIT returned."""
    with pymysql.connect(host="127.0.0.1", port=port, user="root", database=database) as conn:
        with conn.cursor() as cur:
            cur.execute("UPDATE tickets SET title=%s WHERE id=1", (f"probe-{number}",))
        conn.commit()
        return time.perf_counter()


async def probe_latency(
    mariadb: MariaDBServer, api_port: int, subscribers: int, probes: int, offset: int
) -> list[float]:
    arrivals: dict[int, list[float]] = {}
    tasks = []
    for _ in range(subscribers):
        ready = asyncio.Event()
        task = asyncio.create_task(subscriber(api_port, arrivals, ready))
        tasks.append(task)
        waiting = asyncio.create_task(ready.wait())
        await asyncio.wait([task, waiting], return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            task.result()  # the stream was refused: say why
    latencies: list[float] = []
    for number in range(offset, offset + probes):
        committed = await asyncio.to_thread(commit_probe, mariadb.port, mariadb.database, number)
        deadline = time.monotonic() + DELIVERY_TIMEOUT_S
        while len(arrivals.get(number, [])) < subscribers:
            if time.monotonic() > deadline:
                raise TimeoutError(f"probe {number}: {len(arrivals.get(number, []))} deliveries")
            await asyncio.sleep(0.001)
        latencies += [(at - committed) * 1000 for at in arrivals[number]]
        await asyncio.sleep(0.1)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return latencies


def percentiles(samples: list[float]) -> dict[str, float]:
    cuts = statistics.quantiles(samples, n=100, method="inclusive")
    return {"p50": cuts[49], "p99": cuts[98], "max": max(samples), "samples": len(samples)}


def delivery_latency(mariadb: MariaDBServer, redis_url: str, probes: int) -> dict[str, Any]:
    migrate.upgrade(mariadb.root_url)
    engine = create_engine(mariadb.root_url)
    seed(engine, LATENCY_TICKETS, progress=False)
    engine.dispose()
    found: dict[str, Any] = {}
    log_path = Path(tempfile.mkdtemp(prefix="bench-feed-")) / "worker.log"
    with worker_process(mariadb, redis_url, log_path):
        client = redis.Redis.from_url(redis_url)
        wait_checkpoint(client, master_position(mariadb.port), 300)
        client.close()
        port = free_port()
        env = {**_env(redis_url), "CDC_API_PORT": str(port), "CDC_API_MAX_STREAMS": "2000"}
        api = serve([sys.executable, "-m", "cdc_worker.cli", "api", "--port", str(port)], env)
        try:
            wait_up(f"http://127.0.0.1:{port}/healthz")
            for n, count in enumerate(SUBSCRIBERS):
                samples = asyncio.run(probe_latency(mariadb, port, count, probes, n * 10_000))
                found[f"{count} subscribers"] = percentiles(samples)
                log(f"feed latency, {count} subscribers: {found[f'{count} subscribers']}")
        finally:
            api.terminate()
            api.wait(60)
    return found


def _env(redis_url: str) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CDC_")}
    return {**clean, "CDC_REDIS_URL": redis_url, "CDC_LOG_FORMAT": "json"}


def measure(
    mariadb: MariaDBServer,
    redis_server: RedisServer,
    transactions: int,
    repeats: int,
    probes: int,
    latency_servers: tuple[MariaDBServer, RedisServer] | None = None,
) -> FeedResult:
    """Both parts; the latency part on its own servers when given (a fresh, idle source)."""
    backlog = make_backlog(mariadb, redis_server.url, transactions)
    result = catchup_on_off(backlog, transactions, repeats)
    if latency_servers is not None:
        source, target = latency_servers
        result.latency_ms = delivery_latency(source, target.url, probes)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--transactions", type=int, default=5000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--probes", type=int, default=30)
    parser.add_argument("--latency-only", action="store_true")
    args = parser.parse_args()
    if args.latency_only:
        with servers("feed-latency") as (mariadb, redis_server):
            print(json.dumps(delivery_latency(mariadb, redis_server.url, args.probes), indent=2))
        return
    with servers("feed") as (mariadb, redis_server), servers("feed-latency") as latency:
        result = measure(
            mariadb, redis_server, args.transactions, args.repeats, args.probes, latency
        )
    print(json.dumps(asdict(result), indent=2))


if __name__ == "__main__":
    main()

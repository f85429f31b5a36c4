"""Fan-out: a department holding N tickets is renamed; time from the rename's COMMIT until all
its documents in the ``tickets`` hash show the new name, and the worker's peak RSS meanwhile.

The worker applies a large fan-out in atomic steps and moves its checkpoint with the last one,
so the clock stops when the checkpoint passes the rename; every document is then checked
(untimed) and, should any still show the old name, the clock runs on until none does. Baselines, in
the same run: a plain SQL SELECT of those tickets joined with the department (what a naive
re-read costs at least) and HSETs of N precomputed documents (what writing them costs).

    .venv/bin/python -m bench.fanout --tickets 50000 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import orjson
import pymysql
import redis
from sqlalchemy import create_engine

from bench.common import (
    Spread,
    log,
    master_position,
    peak_rss_mb,
    ratio,
    reset_peak_rss,
    rss_mb,
    servers,
    wait_checkpoint,
    worker_process,
)
from cdc_worker.devtools.localservers import MariaDBServer, RedisServer
from cdc_worker.devtools.seed import seed
from cdc_worker.schema import migrate
from cdc_worker.store import keys

OTHER_TICKETS_SHARE = 0.2  # tickets in other departments beside the renamed one
HSET_CHUNK = 1000
SCRATCH_KEY = "bench:fanout-hset"
TIMEOUT_S = 1800.0
SQL, HSET = "SQL SELECT ... JOIN", "HSET precomputed documents"
BOTH = "SELECT + HSET (a naive re-read, at least)"
JOIN_SQL = """
SELECT t.id, t.title, t.description, t.priority, t.status_id, t.department_id, t.requester_id,
       t.assignee_id, t.is_deleted, t.created_at, t.updated_at, d.name
FROM tickets t JOIN departments d ON d.id = t.department_id WHERE t.department_id = %s
"""


@dataclass
class FanoutResult:
    """Seconds per rename for the worker and the baselines, and the worker's memory."""

    tickets: int
    documents: int
    repeats: int
    seconds: dict[str, dict[str, Any]] = field(default_factory=dict)
    ratios: dict[str, float | None] = field(default_factory=dict)
    peak_rss_mb: dict[str, Any] = field(default_factory=dict)
    rss_before_mb: dict[str, Any] = field(default_factory=dict)
    peak_reset: bool = True


def prepare(mariadb: MariaDBServer, tickets: int) -> tuple[int, list[int]]:
    """Seed, then move the first ``tickets`` tickets into a new department; its id and the
    ids of its live (not soft-deleted) tickets, which have documents."""
    migrate.upgrade(mariadb.root_url)
    engine = create_engine(mariadb.root_url)
    seed(engine, int(tickets * (1 + OTHER_TICKETS_SHARE)), progress=False)
    engine.dispose()
    with connect(mariadb) as conn, conn.cursor() as cur:
        cur.execute("INSERT INTO departments (name, created_at) VALUES ('Fan-out', NOW(6))")
        department_id = int(cur.lastrowid)
        cur.execute(
            "UPDATE tickets SET department_id = %s WHERE id <= %s", (department_id, tickets)
        )
        cur.execute(
            "SELECT id FROM tickets WHERE department_id = %s AND is_deleted = 0", (department_id,)
        )
        return department_id, [int(row[0]) for row in cur.fetchall()]


def connect(mariadb: MariaDBServer) -> pymysql.Connection[Any]:
    return pymysql.connect(
        host="127.0.0.1", port=mariadb.port, user="root", database=mariadb.database, autocommit=True
    )


def stale_documents(client: redis.Redis, ids: list[int], name: str) -> int:
    """How many of the documents do not show ``name`` as their department's name."""
    stale = 0
    for start in range(0, len(ids), HSET_CHUNK * 5):
        chunk = [str(i) for i in ids[start : start + HSET_CHUNK * 5]]
        for raw in client.hmget(keys.DOCUMENTS, chunk):
            stale += raw is None or orjson.loads(raw)["department_name"] != name
    return stale


def rename_and_wait(
    mariadb: MariaDBServer, client: redis.Redis, department_id: int, ids: list[int], name: str
) -> float:
    """Seconds from the rename's COMMIT until every document shows ``name``."""
    with connect(mariadb) as conn, conn.cursor() as cur:
        cur.execute("UPDATE departments SET name = %s WHERE id = %s", (name, department_id))
        committed = time.perf_counter()
    done = wait_checkpoint(client, master_position(mariadb.port), TIMEOUT_S)
    while stale_documents(client, ids, name):  # not expected: the apply is atomic
        log("fan-out: documents still stale after the checkpoint moved")
        done = time.perf_counter()
    return done - committed


def sql_read_s(mariadb: MariaDBServer, department_id: int) -> float:
    """Seconds to SELECT the department's tickets joined with it, every row fetched."""
    with connect(mariadb) as conn, conn.cursor() as cur:
        started = time.perf_counter()
        cur.execute(JOIN_SQL, (department_id,))
        cur.fetchall()
        return time.perf_counter() - started


def hset_s(client: redis.Redis, ids: list[int]) -> float:
    """Seconds to HSET the current documents (read and encoded beforehand) into a scratch
    hash, pipelined in chunks; the hash is deleted afterwards."""
    fields = [str(i) for i in ids]
    documents = dict(zip(fields, client.hmget(keys.DOCUMENTS, fields), strict=True))
    chunks = [fields[i : i + HSET_CHUNK] for i in range(0, len(fields), HSET_CHUNK)]
    started = time.perf_counter()
    pipe = client.pipeline(transaction=False)
    for chunk in chunks:
        pipe.hset(SCRATCH_KEY, mapping={f: documents[f] for f in chunk})  # type: ignore[misc]
    pipe.execute()
    elapsed = time.perf_counter() - started
    client.delete(SCRATCH_KEY)
    return elapsed


def measure(
    mariadb: MariaDBServer, redis_server: RedisServer, tickets: int, repeats: int
) -> FanoutResult:
    """The whole scenario on running servers; see the module docstring."""
    department_id, ids = prepare(mariadb, tickets)
    client = redis.Redis.from_url(redis_server.url)
    spreads = {name: Spread() for name in ("worker", SQL, HSET, BOTH)}
    peaks, before = Spread(), Spread()
    result = FanoutResult(tickets, len(ids), repeats)
    log_path = redis_server.base_dir / "worker.log"
    with worker_process(mariadb, redis_server.url, log_path) as worker:
        wait_checkpoint(client, master_position(mariadb.port), TIMEOUT_S)
        for index in range(repeats):
            result.peak_reset &= reset_peak_rss(worker.pid)
            before.add(rss_mb(worker.pid))
            spreads["worker"].add(rename_and_wait(mariadb, client, department_id, ids, f"R{index}"))
            peaks.add(peak_rss_mb(worker.pid))
            spreads[SQL].add(sql_read_s(mariadb, department_id))
            spreads[HSET].add(hset_s(client, ids))
            spreads[BOTH].add(spreads[SQL].runs[-1] + spreads[HSET].runs[-1])
            log(
                f"fan-out {index}: "
                + ", ".join(f"{k} {v.runs[-1]:.2f} s" for k, v in spreads.items())
            )
    client.close()
    result.seconds = {name: spread.summary() for name, spread in spreads.items()}
    result.peak_rss_mb, result.rss_before_mb = peaks.summary(), before.summary()
    worker_s = result.seconds["worker"]
    for name in (SQL, HSET, BOTH):
        result.ratios[f"worker / {name}"] = ratio(worker_s, result.seconds[name])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tickets", type=int, default=50_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with servers("fanout") as (mariadb, redis_server):
        result = measure(mariadb, redis_server, args.tickets, args.repeats)
    print(json.dumps(asdict(result), indent=2))


if __name__ == "__main__":
    main()

"""A primary with a GTID replica, and a workload that follows the primary across a failover."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import orjson
import redis
from sqlalchemy import Engine, create_engine

from cdc_worker.checkpoint import Checkpoint
from cdc_worker.devtools.loadgen import Ids, run_transaction
from cdc_worker.devtools.localservers import MariaDBServer, start_mariadb
from cdc_worker.devtools.replicas import start_mariadb_replica, wait_caught_up
from cdc_worker.devtools.seed import seed
from cdc_worker.schema.models import Base
from cdc_worker.store import keys

WORKLOAD_PAUSE_S = 0.01


@dataclass
class Topology:
    """A primary (server id 1) and its replica (server id 2), both with the schema and data."""

    primary: MariaDBServer
    replica: MariaDBServer

    def stop(self) -> None:
        """Stop both servers, whatever state they are in."""
        self.primary.stop()
        self.replica.stop()


def start_topology(base_dir: Path, tickets: int = 200) -> Topology:
    """Start a primary, create the schema, seed it, start a replica caught up with it."""
    primary = start_mariadb(base_dir / "primary")
    engine = create_engine(primary.root_url)
    try:
        Base.metadata.create_all(engine)
        seed(engine, tickets, seed=22, progress=False)
    finally:
        engine.dispose()
    replica = start_mariadb_replica(base_dir / "replica", primary, server_id=2)
    wait_caught_up(replica, primary)
    return Topology(primary, replica)


class Workload:
    """Helpdesk transactions on a thread, against whichever server is the primary.

    ``paused()`` holds it between two transactions, so a test can kill the primary at a
    point where the replica has everything the primary committed (replication is
    asynchronous: a primary killed between commit and shipping loses the transaction, which
    is the divergence test's subject, not the failover test's).
    """

    def __init__(self, root_url: str, seed: int = 22) -> None:
        self.rng = random.Random(seed)
        self.engine = create_engine(root_url)
        self.ids = self._load_ids()
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.committed = 0
        self.thread = threading.Thread(target=self._run, name="workload", daemon=True)

    def _load_ids(self) -> Ids:
        with self.engine.connect() as conn:
            ids = Ids.load(conn)
            conn.commit()
        return ids

    def start(self) -> Workload:
        """Start committing on the thread."""
        self.thread.start()
        return self

    def run(self, transactions: int) -> None:
        """Commit ``transactions`` transactions on the calling thread."""
        with self.engine.connect() as conn:
            for _ in range(transactions):
                run_transaction(conn, self.rng, self.ids)
                conn.commit()
                self.committed += 1

    def _run(self) -> None:
        while not self.stopping.is_set():
            with self.lock:
                self.run(1)
            time.sleep(WORKLOAD_PAUSE_S)

    @contextmanager
    def paused(self) -> Iterator[None]:
        """No transaction runs inside; the one under way, if any, is committed first."""
        with self.lock:
            yield

    def move_to(self, root_url: str) -> None:
        """Write to another server from now on (call while paused)."""
        self.engine.dispose()
        self.engine = create_engine(root_url)
        self.ids = self._load_ids()  # what the lost transactions created does not exist there

    def stop(self) -> int:
        """Stop the thread; returns how many transactions were committed."""
        self.stopping.set()
        self.thread.join(30)
        assert not self.thread.is_alive(), "the workload did not stop"
        self.engine.dispose()
        return self.committed


def stored_checkpoint(redis_url: str) -> Checkpoint | None:
    """The read model's checkpoint, if any."""
    with redis.Redis.from_url(redis_url) as client:
        raw = client.get(keys.CHECKPOINT)
    return None if raw is None else Checkpoint.decode(raw)


def heartbeat_source(redis_url: str) -> str | None:
    """The source server the worker's last heartbeat names."""
    with redis.Redis.from_url(redis_url) as client:
        raw = client.get(keys.HEARTBEAT)
    return None if raw is None else orjson.loads(raw).get("source")


def wait_until(condition: object, what: str, timeout_s: float = 30.0) -> None:
    """Poll ``condition()`` until true; fail naming ``what`` after ``timeout_s``."""
    assert callable(condition)
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def engine_of(server: MariaDBServer) -> Engine:
    """A root engine on the server's database (for the oracle)."""
    return create_engine(server.root_url, pool_pre_ping=True)

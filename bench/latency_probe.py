"""The instruments of the steady-state benchmark: a paced writer, and two observers that
record when each marked commit became visible (the worker's read model) or arrived (a bare
binlog reader). All times are CLOCK_MONOTONIC, which every process on the machine shares.

A marked commit is one transaction: ``UPDATE tickets SET title = 'lat-<seq>' WHERE id = ?``.
"""

from __future__ import annotations

import queue
import subprocess
import sys
import threading
import time
from collections.abc import Callable

import orjson
import pymysql
import redis

from bench.arrival import MARKER, marker_seq
from bench.common import master_position
from cdc_worker.store import keys

FALLBACK_POLL_S = 0.05
WRITER_CONNECTIONS = 4


class Writer:
    """Commits marked updates on ``connections`` connections (one thread each, so the source
    can group-commit and one connection's round trips do not cap the rate), round-robin over
    live tickets: concurrent commits never touch the same row."""

    def __init__(self, port: int, database: str, connections: int = WRITER_CONNECTIONS) -> None:
        # Autocommit: each UPDATE is its own transaction, committed before the reply comes
        # back; one round trip per commit.
        self.conns = [
            pymysql.connect(
                host="127.0.0.1", port=port, user="root", database=database, autocommit=True
            )
            for _ in range(connections)
        ]
        with self.conns[0].cursor() as cur:
            cur.execute("SELECT id FROM tickets WHERE is_deleted = 0 ORDER BY id")
            self.ticket_ids = [int(row[0]) for row in cur.fetchall()]
        self.next_seq = 0

    def commit_one(self, seq: int | None = None, conn: int = 0) -> tuple[int, int, float]:
        """One marked transaction: (seq, ticket id, monotonic time right after it committed)."""
        if seq is None:
            seq, self.next_seq = self.next_seq, self.next_seq + 1
        ticket_id = self.ticket_ids[seq % len(self.ticket_ids)]
        with self.conns[conn].cursor() as cur:
            cur.execute(
                "UPDATE tickets SET title = %s WHERE id = %s", (f"{MARKER}{seq}", ticket_id)
            )
        return seq, ticket_id, time.monotonic()

    def paced(
        self, rate_per_s: float, seconds: float, on_commit: Callable[[int, int, float], None]
    ) -> float:
        """Commit i at start + i / rate (a late commit does not sleep), commit i on connection
        i mod n; calls ``on_commit(seq, ticket_id, committed_s)``. Returns the start time."""
        count, first = int(rate_per_s * seconds), self.next_seq
        self.next_seq += count
        started = time.monotonic()

        def run(conn: int) -> None:
            for index in range(conn, count, len(self.conns)):
                delay_s = started + index / rate_per_s - time.monotonic()
                if delay_s > 0:
                    time.sleep(delay_s)
                on_commit(*self.commit_one(first + index, conn))

        threads = [threading.Thread(target=run, args=(c,)) for c in range(len(self.conns))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return started

    def close(self) -> None:
        for conn in self.conns:
            conn.close()


class VisibilityWatcher:
    """Records when a marked title shows in the ``tickets`` hash. Wakes on keyspace
    notifications of the hash (and every 50 ms regardless), then HMGETs the pending tickets:
    the time taken is when the reply arrived, so it is an upper bound on visibility."""

    def __init__(self, redis_url: str) -> None:
        self.client = redis.Redis.from_url(redis_url)
        self.client.config_set("notify-keyspace-events", "Kh")
        db = self.client.connection_pool.connection_kwargs.get("db", 0)
        self.channel = f"__keyspace@{db}__:{keys.DOCUMENTS}"
        self.incoming: queue.SimpleQueue[tuple[int, int]] = queue.SimpleQueue()
        self.pending: dict[int, list[int]] = {}  # ticket id -> seqs not yet visible
        self.seen: dict[int, float] = {}
        self._stop = threading.Event()
        self._subscribed = threading.Event()
        self._thread = threading.Thread(target=self._run, name="watcher", daemon=True)
        self._thread.start()
        self._subscribed.wait(10)

    def expect(self, seq: int, ticket_id: int) -> None:
        self.incoming.put((seq, ticket_id))

    def _run(self) -> None:
        pubsub = self.client.pubsub(ignore_subscribe_messages=True)  # type: ignore[no-untyped-call]
        pubsub.subscribe(self.channel)
        pubsub.get_message(timeout=1)  # the subscription's confirmation
        self._subscribed.set()
        while not self._stop.is_set():
            if pubsub.get_message(timeout=FALLBACK_POLL_S) is not None:
                while pubsub.get_message(timeout=0) is not None:
                    pass  # one look serves every notification that has arrived
            self._take_incoming()
            if self.pending:
                self._look()
        pubsub.close()

    def _take_incoming(self) -> None:
        while True:
            try:
                seq, ticket_id = self.incoming.get_nowait()
            except queue.Empty:
                return
            self.pending.setdefault(ticket_id, []).append(seq)

    def _look(self) -> None:
        tickets = list(self.pending)
        documents = self.client.hmget(keys.DOCUMENTS, [str(t) for t in tickets])
        now = time.monotonic()
        for ticket_id, raw in zip(tickets, documents, strict=True):
            shown = marker_seq(orjson.loads(raw)["title"]) if raw else None
            if shown is None:
                continue
            # The worker applies commits in order: a later marker means earlier ones landed.
            waiting = self.pending[ticket_id]
            for seq in [s for s in waiting if s <= shown]:
                self.seen[seq] = now
                waiting.remove(seq)
            if not waiting:
                del self.pending[ticket_id]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.client.close()


class ArrivalReader:
    """``bench.arrival`` in its own process, from the current end of the binlog."""

    def __init__(self, port: int, database: str) -> None:
        log_file, log_pos = master_position(port)
        command = [sys.executable, "-m", "bench.arrival", "--port", str(port)]
        command += ["--database", database, "--log-file", log_file, "--log-pos", str(log_pos)]
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
        self.seen: dict[int, float] = {}
        self._thread = threading.Thread(target=self._collect, name="arrivals", daemon=True)
        self._thread.start()

    def expect(self, seq: int, ticket_id: int) -> None:
        """Nothing to do: the reader reports every marker it sees."""

    def _collect(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            seq, seen_s = line.split()
            self.seen[int(seq)] = float(seen_s)

    def close(self) -> None:
        self.process.terminate()
        self.process.wait(10)
        self._thread.join(5)


Observer = VisibilityWatcher | ArrivalReader


def wait_seen(observer: Observer, seqs: list[int], timeout_s: float) -> bool:
    """Wait until the observer has seen every seq; False on timeout."""
    deadline = time.monotonic() + timeout_s
    while not all(seq in observer.seen for seq in seqs):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True

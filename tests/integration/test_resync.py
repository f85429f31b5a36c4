"""Resyncs: zero downtime under writes, resumable after a kill, targeted repair, recovery."""

from __future__ import annotations

import itertools
import multiprocessing
import random
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text

from cdc_worker.api.app import create_app
from cdc_worker.checkpoint import Position
from cdc_worker.devtools.loadgen import run_workload
from cdc_worker.devtools.localservers import MariaDBServer, free_port
from cdc_worker.devtools.seed import seed
from cdc_worker.schema.models import Base
from cdc_worker.settings import load_settings
from cdc_worker.store import keys
from cdc_worker.store.jobs import Job, enqueue, load, new_job
from cdc_worker.worker import loop as worker_loop
from tests.conftest import SourceDatabase
from tests.harness import (
    purge_all_but_the_current_binlog,
    spawn_worker,
    wait_synced,
    worker_env,
    worker_thread,
)

CLI = [sys.executable, "-m", "cdc_worker.cli"]


def wait_job(client: redis.Redis, job_id: str, timeout_s: float = 120) -> Job:
    deadline = time.monotonic() + timeout_s
    while (job := load(client, job_id)) is None or job.state not in ("done", "failed"):
        assert time.monotonic() < deadline, f"job {job_id} still {job and job.state}"
        time.sleep(0.05)
    return job


class Reader(threading.Thread):
    """Reads the hash continuously, recording every moment it looked missing or partial."""

    def __init__(self, redis_url: str, floor: int) -> None:
        super().__init__(daemon=True)
        self.client = redis.Redis.from_url(redis_url)
        self.floor, self.reads, self.problems = floor, 0, []  # type: ignore[var-annotated]
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            pipe = self.client.pipeline(transaction=False)
            pipe.hlen(keys.DOCUMENTS)
            pipe.hrandfield(keys.DOCUMENTS, 1, withvalues=True)
            size, sample = pipe.execute()
            self.reads += 1
            if size < self.floor:
                self.problems.append(f"only {size} documents")
            elif sample and "title" not in orjson.loads(sample[1]):
                self.problems.append("a partial document")
        self.client.close()


def test_a_full_resync_under_writes_never_shows_readers_a_missing_or_partial_model(
    source_db: SourceDatabase, redis_url: str
) -> None:
    seed(source_db.engine, 1500, seed=4)
    with worker_thread(source_db.cdc_url, redis_url, snapshot_chunk_rows=50) as app:
        wait_synced(source_db.engine, redis_url)
        client = app.redis_client
        floor = int(client.hlen(keys.DOCUMENTS) * 0.9)
        reader = Reader(redis_url, floor)
        done = threading.Event()
        writer = threading.Thread(
            target=run_workload, args=(source_db.engine, 10**6, 8, done.is_set)
        )
        reader.start()
        writer.start()
        started = time.monotonic()
        job = enqueue(client, new_job("full"))
        finished = wait_job(client, job.id)
        elapsed = time.monotonic() - started
        done.set()
        writer.join(30)
        wait_synced(source_db.engine, redis_url)
        reader.stop.set()
        reader.join(10)
        checkpoint = app.worker.store.load_checkpoint()
    assert finished.state == "done"
    assert checkpoint is not None
    assert checkpoint.generation == 2
    assert reader.problems == []
    assert reader.reads / elapsed > 50, f"only {reader.reads} reads in {elapsed:.1f} s"
    assert app.metrics.resyncs.labels(kind="full", outcome="done")._value.get() == 1
    # Tickets created during the copy raised the total: done never passed it, and ends equal.
    assert finished.tickets_done == finished.tickets_total > 1500
    value = app.metrics.registry.get_sample_value
    total = value("cdc_snapshot_tickets_total", {"reason": "resync"})
    assert (
        value("cdc_snapshot_tickets_done", {"reason": "resync"}) == total == finished.tickets_done
    )
    assert value("cdc_snapshots_total", {"reason": "resync"}) == 1


def test_reading_chunks_ahead_never_commits_one_older_than_what_the_stream_applied(
    source_db: SourceDatabase, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A chunk read at snapshot P, committed when the stream has applied up to S > P, lost
    the changes between to its tickets: reading ahead must hold stream batches back."""
    monkeypatch.setattr(worker_loop, "RESYNC_STREAM_EVERY_S", 0.3)  # stream often meanwhile
    seed(source_db.engine, 600, seed=5)
    with worker_thread(source_db.cdc_url, redis_url, snapshot_chunk_rows=50) as app:
        wait_synced(source_db.engine, redis_url)
        resyncer = app.worker.resyncer
        read: list[tuple[Position, bool]] = []
        committed: list[tuple[Position, bool, Position]] = []
        read_chunk, commit = resyncer._read_chunk, resyncer._commit

        def reading(run: Any, read_ahead_until_s: float) -> Any:
            chunk = read_chunk(run, read_ahead_until_s)
            read.append((chunk.position, run.reading_ahead))
            if run.reading_ahead:  # change a ticket of the chunk being read, once read
                time.sleep(0.05)
                with source_db.engine.begin() as conn:
                    conn.execute(
                        text(
                            "UPDATE tickets SET title = CONCAT(title, '!') "
                            "WHERE id > :after ORDER BY id LIMIT 1"
                        ),
                        {"after": chunk.last_id},
                    )
                time.sleep(0.1)  # long enough for the binlog reader to have it
            return chunk

        def committing(checkpoint: Any, *args: Any) -> None:
            if read:  # a chunk (not the references)
                committed.append((*read.pop(), checkpoint.position))
            commit(checkpoint, *args)

        resyncer._read_chunk, resyncer._commit = reading, committing  # type: ignore[method-assign]
        job = enqueue(app.redis_client, new_job("full"))
        finished = wait_job(app.redis_client, job.id)
        wait_synced(source_db.engine, redis_url)
        children = [p.name for p in multiprocessing.active_children()]
    assert finished.state == "done"
    assert "resync-chunk-reader" not in children  # stopped with the job
    assert len(committed) == 13  # 600 tickets, 50 a chunk, and the empty end of the table
    assert sum(ahead for _, ahead, _ in committed) >= 3  # chunks asked for the next
    assert len({applied for _, _, applied in committed}) >= 3  # the stream went on
    stale = [(str(p), str(s)) for p, _, s in committed if p.precedes(s)]
    assert stale == []
    refused = app.metrics.reconnects.labels(reason="StreamInterrupted")._value.get()
    assert refused == 0  # no chunk was refused for being older than the checkpoint either


def metric(port: int, name: str) -> float:
    """The sum of the metric's series (each label value's series exists, at 0 if unused)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        lines = response.read().decode().splitlines()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in lines
        if line.startswith(name + "{") or line.startswith(name + " ")
    )


def test_a_resync_killed_halfway_resumes_from_its_last_chunk(
    source_db: SourceDatabase, redis_url: str, tmp_path: Path
) -> None:
    seed(source_db.engine, 4000, seed=6)
    env = worker_env(source_db.cdc_url, redis_url, CDC_SNAPSHOT_CHUNK_ROWS="40")
    client = redis.Redis.from_url(redis_url)
    worker = spawn_worker(env, tmp_path / "w1.log")
    wait_synced(source_db.engine, redis_url)
    job = enqueue(client, new_job("full"))
    deadline = time.monotonic() + 120
    while (current := load(client, job.id)) is None or current.tickets_done < 2000:
        assert time.monotonic() < deadline
        time.sleep(0.005)
    worker.send_signal(signal.SIGKILL)
    worker.wait(10)
    first_run = load(client, job.id)
    assert first_run is not None
    assert first_run.state == "running"
    port = free_port()
    worker = spawn_worker({**env, "CDC_WORKER_HTTP_PORT": str(port)}, tmp_path / "w2.log")
    try:
        finished = wait_job(client, job.id)
        second_run = metric(port, "cdc_resync_tickets_total")
        wait_synced(source_db.engine, redis_url)
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(30)
        client.close()
    print(
        f"first run copied {first_run.tickets_done}, second run {second_run:.0f} of "
        f"{finished.tickets_total}"
    )
    assert finished.state == "done"
    assert second_run < finished.tickets_total - 1500
    assert finished.tickets_done >= finished.tickets_total


def test_targeted_repair_fixes_a_corrupted_document_while_writes_go_on(
    source_db: SourceDatabase, redis_url: str
) -> None:
    seed(source_db.engine, 200, seed=2)
    with worker_thread(source_db.cdc_url, redis_url) as app:
        wait_synced(source_db.engine, redis_url)
        client = app.redis_client
        victim = sorted(int(i) for i in client.hkeys(keys.DOCUMENTS))[5]
        client.hset(keys.DOCUMENTS, str(victim), b'{"corrupted":true}')
        done = threading.Event()
        writer = threading.Thread(
            target=run_workload, args=(source_db.engine, 10**6, 1, done.is_set)
        )
        writer.start()
        result = subprocess.run(
            [*CLI, "resync", "--ticket", str(victim)],
            env=worker_env(source_db.cdc_url, redis_url),
            capture_output=True,
            text=True,
            timeout=60,
        )
        done.set()
        writer.join(30)
        assert result.returncode == 0, result.stderr
        assert "done" in result.stdout
        wait_synced(source_db.engine, redis_url)


def test_a_repair_of_tickets_the_database_lacks_says_so_and_removes_their_documents(
    source_db: SourceDatabase, redis_url: str
) -> None:
    seed(source_db.engine, 30, seed=5)
    with worker_thread(source_db.cdc_url, redis_url) as app:
        wait_synced(source_db.engine, redis_url)
        gone, kept = sorted(int(i) for i in app.redis_client.hkeys(keys.DOCUMENTS))[:2]
        with source_db.engine.begin() as conn:  # behind the binlog's back: Redis keeps it
            conn.execute(text("SET SESSION sql_log_bin = 0"))
            conn.execute(text("DELETE FROM tickets WHERE id = :id"), {"id": gone})
        result = subprocess.run(
            [*CLI, "resync", "--ticket", str(gone), str(kept), "999999"],
            env=worker_env(source_db.cdc_url, redis_url),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr
        assert result.stdout.splitlines()[-1].endswith(
            f": done, 1 ticket rebuilt; not in the database: {gone}, 999999 ({gone} removed "
            "from Redis; 999999 not in Redis either)"
        )
        assert app.redis_client.hget(keys.DOCUMENTS, str(gone)) is None
        assert app.redis_client.hget(keys.DOCUMENTS, str(kept)) is not None


def test_targeted_repair_never_writes_an_older_version_over_a_newer_one(
    source_db: SourceDatabase, redis_url: str
) -> None:
    seed(source_db.engine, 50, seed=2)
    with worker_thread(source_db.cdc_url, redis_url) as app:
        wait_synced(source_db.engine, redis_url)
        client = app.redis_client
        victim = int(sorted(client.hkeys(keys.DOCUMENTS))[0])
        stop, seen, versions = threading.Event(), [], []  # type: ignore[var-annotated]

        def write() -> None:
            with source_db.engine.connect() as conn:
                n = 0
                while not stop.is_set():
                    n += 1
                    conn.execute(
                        text("UPDATE tickets SET title=:t WHERE id=:i"),
                        {"t": f"v{n:08d}", "i": victim},
                    )
                    conn.commit()
                versions.append(n)

        def watch() -> None:
            while not stop.is_set():
                raw = client.hget(keys.DOCUMENTS, str(victim))
                title = orjson.loads(raw)["title"] if raw else ""
                if title.startswith("v"):
                    seen.append(int(title[1:]))

        threads = [threading.Thread(target=write), threading.Thread(target=watch)]
        for thread in threads:
            thread.start()
        for _ in range(15):
            wait_job(client, enqueue(client, new_job("tickets", (victim,))).id)
        stop.set()
        for thread in threads:
            thread.join(30)
        wait_synced(source_db.engine, redis_url)
    regressions = [(a, b) for a, b in itertools.pairwise(seen) if b < a]
    assert len(seen) > 100
    assert regressions == []


def test_changes_after_a_repair_build_on_the_repaired_state_not_an_older_one(
    source_db: SourceDatabase, redis_url: str
) -> None:
    """The stream skips changes a repair already holds; the worker's in-memory ticket states
    must then come from the repair too, or the skipped children are lost for good."""
    seed(source_db.engine, 50, seed=4)
    with worker_thread(source_db.cdc_url, redis_url) as app:
        wait_synced(source_db.engine, redis_url)
        client = app.redis_client
        victim = int(sorted(client.hkeys(keys.DOCUMENTS))[0])
        stop = threading.Event()

        def write() -> None:
            with source_db.engine.connect() as conn:
                for n in itertools.count():
                    if stop.is_set():
                        return
                    conn.execute(
                        text(
                            "INSERT INTO attachments (ticket_id, filename, content_type, "
                            "size_bytes, created_at) VALUES (:i, :f, 'text/plain', 1, NOW(6))"
                        ),
                        {"i": victim, "f": f"a{n}.txt"},
                    )
                    conn.execute(
                        text("UPDATE tickets SET title=:t WHERE id=:i"), {"t": f"v{n}", "i": victim}
                    )
                    conn.commit()

        writer = threading.Thread(target=write)
        writer.start()
        for _ in range(10):
            wait_job(client, enqueue(client, new_job("tickets", (victim,))).id)
        time.sleep(0.5)  # changes after the last repair, applied on its state
        stop.set()
        writer.join(30)
        wait_synced(source_db.engine, redis_url)


def test_a_department_repair_rebuilds_its_tickets(
    source_db: SourceDatabase, redis_url: str
) -> None:
    seed(source_db.engine, 200, seed=9)
    with worker_thread(source_db.cdc_url, redis_url) as app:
        wait_synced(source_db.engine, redis_url)
        client = app.redis_client
        docs = {k: orjson.loads(v) for k, v in client.hgetall(keys.DOCUMENTS).items()}
        department = next(iter(docs.values()))["department_id"]
        for ticket_id, doc in docs.items():
            if doc["department_id"] == department:
                client.hset(keys.DOCUMENTS, ticket_id, orjson.dumps({**doc, "title": "garbage"}))
        wait_job(client, enqueue(client, new_job("department", (department,))).id)
        wait_synced(source_db.engine, redis_url)


def test_truncating_a_tracked_table_leads_to_an_automatic_resync(
    source_db: SourceDatabase, redis_url: str
) -> None:
    seed(source_db.engine, 100)
    with worker_thread(source_db.cdc_url, redis_url) as app:
        wait_synced(source_db.engine, redis_url)
        with source_db.engine.begin() as conn:
            conn.execute(text("TRUNCATE TABLE attachments"))
        wait_synced(source_db.engine, redis_url)
        assert app.metrics.snapshots.labels(reason="ddl")._value.get() == 1


def test_purged_binlogs_past_the_checkpoint_lead_to_an_automatic_resync(
    own_mariadb: MariaDBServer, redis_url: str, tmp_path: Path
) -> None:
    engine = create_engine(own_mariadb.root_url)
    Base.metadata.create_all(engine)
    seed(engine, 100)
    env = worker_env(own_mariadb.cdc_url, redis_url)
    worker = spawn_worker(env, tmp_path / "w.log")
    wait_synced(engine, redis_url)
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(30) == 0
    run_workload(engine, 200, seed=3)
    purge_all_but_the_current_binlog(own_mariadb)
    port = free_port()
    worker = spawn_worker({**env, "CDC_WORKER_HTTP_PORT": str(port)}, tmp_path / "w.log")
    try:
        wait_synced(engine, redis_url)
        assert metric(port, "cdc_snapshots_total") >= 1
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(30)
        engine.dispose()
    assert "checkpoint gone from the server" in (tmp_path / "w.log").read_text()


def test_admin_endpoint_refuses_bad_tokens_and_queues_a_resync_with_the_right_one(
    source_db: SourceDatabase, redis_url: str
) -> None:
    seed(source_db.engine, 60)
    token = f"token-{random.randrange(10**12):012d}"
    settings = load_settings(redis_url=redis_url, admin_token=token)
    with worker_thread(source_db.cdc_url, redis_url), TestClient(create_app(settings)) as api:
        wait_synced(source_db.engine, redis_url)
        url = "/admin/resync"
        assert api.post(url, json={}).status_code == 401
        assert api.post(url, json={}, headers={"Authorization": "Bearer "}).status_code == 401
        assert api.post(url, json={}, headers={"Authorization": "Bearer nope"}).status_code == 403
        accepted = api.post(url, json={"full": True}, headers={"Authorization": f"Bearer {token}"})
        assert accepted.status_code == 202
        job_id = accepted.json()["id"]
        deadline = time.monotonic() + 60
        while (
            state := api.get(
                f"{url}/{job_id}", headers={"Authorization": f"Bearer {token}"}
            ).json()["state"]
        ) != "done":
            assert time.monotonic() < deadline, state
            time.sleep(0.1)
        wait_synced(source_db.engine, redis_url)
    with TestClient(create_app(load_settings(redis_url=redis_url))) as no_admin:
        assert no_admin.post(url, json={}).status_code == 404

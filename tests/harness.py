"""Running the real worker against the test servers, and waiting for it to catch up."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson
import pymysql
import redis
from sqlalchemy import Connection, Engine, text

from cdc_worker.bootstrap import App, bootstrap, inspect_source
from cdc_worker.devtools.localservers import MariaDBServer
from cdc_worker.settings import load_settings
from cdc_worker.store import keys
from tests.hidden_state import diff_hidden_state, expected_hidden_state, stored_hidden_state
from tests.oracle import diff_documents, expected_documents

SYNC_TIMEOUT_S = 60.0
WORKER_ERRORS: list[BaseException] = []


def worker_env(mysql_url: str, redis_url: str, **extra: str) -> dict[str, str]:
    """Environment for a worker subprocess: the test servers, quick heartbeats, no HTTP."""
    return {
        **os.environ,
        "CDC_MYSQL_URL": mysql_url,
        "CDC_REDIS_URL": redis_url,
        "CDC_SERVER_ID": str(random.randint(1000, 2**31)),
        "CDC_WORKER_HTTP_PORT": "0",
        "CDC_HEARTBEAT_S": "1",
        "CDC_STALL_TIMEOUT_S": "10",
        "CDC_RECONNECT_BACKOFF_MAX_S": "1",
        "CDC_LOG_FORMAT": "json",
        **extra,
    }


def spawn_worker(env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    """``cdc-worker run`` as a user runs it, logging to ``log_path``."""
    log = log_path.open("ab")
    try:
        return subprocess.Popen(
            [sys.executable, "-m", "cdc_worker.cli", "run"], env=env, stdout=log, stderr=log
        )
    finally:
        log.close()


@contextmanager
def worker_thread(mysql_url: str, redis_url: str, **overrides: Any) -> Iterator[App]:
    """The real worker, in this process, on a thread; stopped and joined on exit."""
    settings = load_settings(
        mysql_url=mysql_url,
        redis_url=redis_url,
        server_id=random.randint(1000, 2**31),
        worker_http_port=0,
        heartbeat_s=1,
        stall_timeout_s=10,
        reconnect_backoff_max_s=1,
        **overrides,
    )
    app = bootstrap(settings, inspect_source(settings))

    def run() -> None:
        try:
            app.worker.run()
        except BaseException as exc:
            WORKER_ERRORS.append(exc)

    WORKER_ERRORS.clear()
    thread = threading.Thread(target=run, name="worker", daemon=True)
    thread.start()
    try:
        yield app
    finally:
        app.worker.request_stop()
        thread.join(30)
        app.close()
        assert not thread.is_alive(), "the worker did not stop within 30 s"
        if WORKER_ERRORS:
            error = WORKER_ERRORS.pop()
            WORKER_ERRORS.clear()
            raise error


def read_model(client: redis.Redis) -> dict[str, dict[str, Any]]:
    """The whole ``tickets`` hash, decoded."""
    return {k.decode(): orjson.loads(v) for k, v in client.hgetall(keys.DOCUMENTS).items()}


def wait_heartbeat(redis_url: str, timeout_s: float = SYNC_TIMEOUT_S) -> None:
    """Wait until a worker has written its heartbeat (it is streaming)."""
    deadline = time.monotonic() + timeout_s
    with redis.Redis.from_url(redis_url) as client:
        while not client.exists(keys.HEARTBEAT):
            assert time.monotonic() < deadline, "no worker heartbeat"
            time.sleep(0.05)


def wait_streaming(redis_url: str, timeout_s: float = SYNC_TIMEOUT_S) -> None:
    """Wait until the worker has a checkpoint (its first snapshot is swapped in)."""
    deadline = time.monotonic() + timeout_s
    with redis.Redis.from_url(redis_url) as client:
        while not client.exists(keys.CHECKPOINT):
            if WORKER_ERRORS:
                raise AssertionError("the worker crashed") from WORKER_ERRORS[0]
            assert time.monotonic() < deadline, "the worker never stored a checkpoint"
            time.sleep(0.05)


def wait_synced(engine: Engine, redis_url: str, timeout_s: float = SYNC_TIMEOUT_S) -> None:
    """Wait until the read model equals the oracle's documents and the worker's hidden state
    (references, ticket states, link sets, indexes) equals the source's; fail with the
    differences if not."""
    deadline = time.monotonic() + timeout_s
    with redis.Redis.from_url(redis_url) as client:
        while True:
            if WORKER_ERRORS:
                raise AssertionError("the worker crashed") from WORKER_ERRORS[0]
            expected = expected_documents(engine)
            differences = diff_documents(expected, read_model(client))
            if not differences:  # the hidden state is checked once the documents agree
                differences = diff_hidden_state(
                    expected_hidden_state(engine), stored_hidden_state(client)
                )
            if not differences:
                return
            if time.monotonic() > deadline:
                raise AssertionError("read model != database:\n" + "\n".join(differences))
            time.sleep(0.2)


def kill_dump_threads(port: int, wait_s: float = 0.0) -> int:
    """KILL every binlog dump thread on the server (cuts the worker's replication link);
    waits up to ``wait_s`` for one to appear (a worker that just built its snapshot may not
    have connected its stream yet)."""
    deadline = time.monotonic() + wait_s
    with (
        pymysql.connect(host="127.0.0.1", port=port, user="root") as conn,
        conn.cursor() as cur,
    ):
        while True:
            cur.execute(
                "SELECT id FROM information_schema.processlist WHERE command LIKE 'Binlog Dump%'"
            )
            threads = [int(row[0]) for row in cur.fetchall()]
            if threads or time.monotonic() >= deadline:
                break
            time.sleep(0.05)
        for thread_id in threads:
            cur.execute(f"KILL {thread_id}")
    return len(threads)


def purge_all_but_the_current_binlog(server: MariaDBServer) -> None:
    """FLUSH + PURGE; a log a lingering dump thread still reads is skipped, so kill those."""
    with (
        pymysql.connect(host="127.0.0.1", port=server.port, user="root") as conn,
        conn.cursor() as cur,
    ):
        cur.execute("FLUSH BINARY LOGS")
        cur.execute("SHOW MASTER STATUS")
        current = cur.fetchone()[0]  # type: ignore[index]
        deadline = time.monotonic() + 30
        while True:
            kill_dump_threads(server.port)
            cur.execute(f"PURGE BINARY LOGS TO '{current}'")
            cur.execute("SHOW BINARY LOGS")
            logs = [row[0] for row in cur.fetchall()]
            if logs == [current]:
                return
            assert time.monotonic() < deadline, "could not purge the old binlogs"
            time.sleep(0.2)


def insert_orphan_ticket(conn: Connection, ticket_id: int | None = None) -> None:
    """A ticket whose status (999) does not exist, written with FOREIGN_KEY_CHECKS=0: the
    worker cannot render it and dead-letters the row."""
    conn.execute(text("SET SESSION FOREIGN_KEY_CHECKS = 0"))
    conn.execute(
        text(
            "INSERT INTO tickets (id, title, status_id, department_id, requester_id, "
            "created_at, updated_at) VALUES (:id, 'orphan', 999, 1, 1, NOW(6), NOW(6))"
        ),
        {"id": ticket_id},
    )

"""Monitoring that tells the truth when things go wrong, against real MariaDB and Redis."""

from __future__ import annotations

import os
import pty
import re
import select
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import text
from structlog.testing import capture_logs

from cdc_worker.devtools.localservers import RedisServer, free_port
from cdc_worker.devtools.seed import seed
from cdc_worker.observability.metrics import WorkerMetrics
from cdc_worker.observability.worker_http import serve
from cdc_worker.store import keys
from tests.conftest import SourceDatabase
from tests.harness import (
    insert_orphan_ticket,
    wait_heartbeat,
    wait_synced,
    worker_env,
    worker_thread,
)

CLI = [sys.executable, "-m", "cdc_worker.cli"]


def eventually(check: Callable[[], bool], timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.1)


def samples(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        exposition = response.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(exposition)
        for s in family.samples
    }


def value(port: int, name: str, **labels: str) -> float:
    return samples(port)[(name, tuple(sorted(labels.items())))]


def healthz(port: int) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


@contextmanager
def served(registry: object, problem: Callable[[], str | None]) -> Iterator[int]:
    port = free_port()
    server = serve("127.0.0.1", port, registry, problem)  # type: ignore[arg-type]
    try:
        yield port
    finally:
        server.shutdown()
        server.server_close()


def test_every_known_series_is_served_at_zero_from_start_up(
    source_db: SourceDatabase, redis_url: str
) -> None:
    seed(source_db.engine, 20)
    with ExitStack() as stack:
        app = stack.enter_context(worker_thread(source_db.cdc_url, redis_url))
        port = stack.enter_context(
            served(app.metrics.registry, app.worker.telemetry.liveness.problem)
        )
        wait_heartbeat(redis_url)
        found = samples(port)
    zero = [
        ("cdc_dead_letter_rows_total", {"table": "tickets"}),
        ("cdc_dead_letter_rows_total", {"table": "ticket_tags"}),
        ("cdc_resyncs_total", {"kind": "full", "outcome": "failed"}),
        ("cdc_resyncs_total", {"kind": "full", "outcome": "done"}),
        ("cdc_reconnects_total", {"reason": "StreamInterrupted"}),
        ("cdc_reconnects_total", {"reason": "fence"}),
        ("cdc_snapshots_total", {"reason": "checkpoint_lost"}),
        ("cdc_snapshot_tickets_total", {"reason": "resync"}),
        ("cdc_decoded_rows_total", {"decoder": "library"}),
        ("cdc_rows_total", {"table": "comments", "op": "delete"}),
        ("cdc_fence_conflicts_total", {}),
        ("cdc_redis_write_errors_total", {}),
    ]
    assert [(n, lb) for n, lb in zero if found.get((n, tuple(sorted(lb.items())))) != 0] == []
    assert found[("cdc_snapshots_total", (("reason", "no_checkpoint"),))] == 1
    assert found[("cdc_build_info", (("version", "0.1.0"),))] == 1
    assert found[("process_resident_memory_bytes", ())] > 0
    assert found[("cdc_binlog_file_number", ())] >= 1
    assert found[("cdc_last_applied_commit_timestamp_seconds", ())] > 1.7e9
    assert time.time() - found[("cdc_last_source_contact_timestamp_seconds", ())] < 15
    assert found[("cdc_source_behind_seconds", ())] == 0


def freeze(server: RedisServer) -> int:
    pid = int(server.pid_file.read_text())
    os.kill(pid, signal.SIGSTOP)
    return pid


def test_a_frozen_redis_makes_behind_grow_and_liveness_fail_within_its_timeout(
    source_db: SourceDatabase, own_redis: RedisServer
) -> None:
    seed(source_db.engine, 20)
    overrides = {"liveness_timeout_s": 3, "source_head_poll_s": 0.5}
    with ExitStack() as stack:
        app = stack.enter_context(worker_thread(source_db.cdc_url, own_redis.url, **overrides))
        port = stack.enter_context(
            served(app.metrics.registry, app.worker.telemetry.liveness.problem)
        )
        wait_synced(source_db.engine, own_redis.url)
        assert healthz(port)[0] == 200
        eventually(lambda: value(port, "cdc_source_behind_seconds") == 0)
        pid = freeze(own_redis)
        try:
            frozen_at = time.monotonic()
            with source_db.engine.begin() as conn:  # committed, but the worker cannot apply it
                conn.execute(text("UPDATE tickets SET title = 'while frozen' ORDER BY id LIMIT 3"))
            eventually(lambda: healthz(port)[0] == 503, timeout_s=10)
            took_s = time.monotonic() - frozen_at
            status, reason = healthz(port)
            assert status == 503
            eventually(lambda: value(port, "cdc_source_behind_seconds") > 0, timeout_s=5)
            first = value(port, "cdc_source_behind_seconds")
            time.sleep(1.5)
            second = value(port, "cdc_source_behind_seconds")
        finally:
            os.kill(pid, signal.SIGCONT)
        eventually(lambda: healthz(port)[0] == 200)
        wait_synced(source_db.engine, own_redis.url)
        eventually(lambda: value(port, "cdc_source_behind_seconds") == 0)
    assert "no progress" in reason
    assert took_s < 3 + 5  # the timeout, plus at most a heartbeat period and a poll
    assert second >= first + 1.0  # grows with the freeze


def test_a_bad_row_is_counted_once_however_often_renames_re_render_it(
    source_db: SourceDatabase, redis_url: str
) -> None:
    seed(source_db.engine, 10)
    with worker_thread(source_db.cdc_url, redis_url) as app:
        wait_synced(source_db.engine, redis_url)
        with source_db.engine.begin() as conn:
            insert_orphan_ticket(conn)
        wait_synced(source_db.engine, redis_url)
        for n in range(3):  # each rename re-renders the orphan: a dead letter each time
            with source_db.engine.begin() as conn:
                conn.execute(text("UPDATE departments SET name = :n WHERE id = 1"), {"n": f"d{n}"})
            wait_synced(source_db.engine, redis_url)
        entries = app.redis_client.xlen(keys.DEAD_LETTERS)
        metric = app.metrics.registry.get_sample_value
        eventually(lambda: metric("cdc_dead_letters_stream_length") == entries)
        counted = metric("cdc_dead_letter_rows_total", {"table": "tickets"})
    assert entries == 4
    assert counted == 1


def test_a_snapshot_ends_with_done_equal_to_total(
    source_db: SourceDatabase, redis_url: str
) -> None:
    seed(source_db.engine, 300)
    with worker_thread(source_db.cdc_url, redis_url, snapshot_chunk_rows=40) as app:
        wait_synced(source_db.engine, redis_url)
        metric = app.metrics.registry.get_sample_value
        done = metric("cdc_snapshot_tickets_done", {"reason": "no_checkpoint"})
        total = metric("cdc_snapshot_tickets_total", {"reason": "no_checkpoint"})
    assert done == total == 300


def test_loadgen_commits_at_the_asked_rate_and_prints_what_it_achieved(
    source_db: SourceDatabase,
) -> None:
    env = {
        **os.environ,
        "CDC_MYSQL_URL": source_db.cdc_url,
        "CDC_ADMIN_MYSQL_URL": source_db.root_url,
    }
    args = [*CLI, "loadgen", "--rate", "20", "--duration-s", "2", "--seed", "3"]
    empty = subprocess.run(args, env=env, capture_output=True, text=True, timeout=60, check=False)
    seed(source_db.engine, 50)
    with source_db.engine.connect() as conn:
        before = conn.execute(text("SELECT MAX(id) FROM tickets")).scalar_one()
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=60, check=False)
    with source_db.engine.connect() as conn:
        after = conn.execute(text("SELECT MAX(id) FROM tickets")).scalar_one()
    assert empty.returncode == 2
    assert "run `cdc-worker seed` first" in empty.stderr
    assert len(empty.stderr.strip().splitlines()) == 1
    assert done.returncode == 0, done.stderr
    found = re.search(r"(\d+) transactions in ([\d.]+) s: ([\d.]+) transactions/s", done.stdout)
    assert found, done.stdout
    transactions, rate = int(found[1]), float(found[3])
    assert 30 <= transactions <= 41
    assert 15 <= rate <= 21
    assert after > before  # new tickets are the mix's most common operation


def server_threads() -> int:
    return sum(t.name.startswith("worker-http") for t in threading.enumerate())


def test_the_metrics_server_stays_bounded_under_300_idle_connections() -> None:
    metrics = WorkerMetrics()
    with served(metrics.registry, lambda: None) as port:
        threads = server_threads()
        idle = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(300)]
        try:
            time.sleep(0.5)
            held = server_threads()
            started = time.monotonic()
            assert value(port, "cdc_build_info", version="0.1.0") == 1  # a scrape gets through
            scrape_s = time.monotonic() - started
        finally:
            for connection in idle:
                connection.close()
        assert healthz(port) == (200, "ok\n")
    assert threads == held == 5  # the acceptor and 4 handlers, whatever the connections
    assert scrape_s < 2


class HeldCollector:
    """Holds a scrape until the test lets it go, so the scraper can hang up meanwhile."""

    def __init__(self) -> None:
        self.entered, self.release = threading.Event(), threading.Event()

    def collect(self) -> Iterator[GaugeMetricFamily]:
        self.entered.set()
        self.release.wait(10)
        yield GaugeMetricFamily("cdc_test_held", "A scrape held by the test", value=1)


def test_an_aborted_scrape_is_one_log_line_not_a_traceback(
    capfd: pytest.CaptureFixture[str],
) -> None:
    registry, held = CollectorRegistry(), HeldCollector()
    registry.register(held)  # type: ignore[arg-type]
    with served(registry, lambda: None) as port, capture_logs() as logged:
        scraper = socket.create_connection(("127.0.0.1", port), timeout=5)
        scraper.sendall(b"GET /metrics HTTP/1.0\r\n\r\n")
        assert held.entered.wait(5)
        scraper.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        scraper.close()  # the scraper hangs up (a reset) before the reply
        time.sleep(0.2)
        held.release.set()
        eventually(lambda: any(e["event"] == "metrics request failed" for e in logged), 10)
        held.entered.clear()
        assert healthz(port) == (200, "ok\n")  # and the server goes on
    failed = [e for e in logged if e["event"] == "metrics request failed"]
    assert failed[0]["kind"] in {"BrokenPipeError", "ConnectionResetError"}
    assert "Traceback" not in "".join(capfd.readouterr())


def read_until(fd: int, wanted: str, timeout_s: float) -> str:
    seen, deadline = b"", time.monotonic() + timeout_s
    while wanted.encode() not in seen and time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.5)
        if ready:
            try:
                seen += os.read(fd, 65536)
            except OSError:  # the child closed its end
                break
    return seen.decode(errors="replace")


def test_run_on_a_terminal_draws_a_progress_bar_while_it_snapshots(
    source_db: SourceDatabase, redis_url: str
) -> None:
    seed(source_db.engine, 200)
    env = worker_env(
        source_db.cdc_url, redis_url, CDC_LOG_FORMAT="auto", CDC_SNAPSHOT_CHUNK_ROWS="50"
    )
    controller, terminal = pty.openpty()
    worker = subprocess.Popen(
        [*CLI, "run"], env=env, stdin=subprocess.DEVNULL, stdout=terminal, stderr=terminal
    )
    os.close(terminal)
    try:
        shown = read_until(controller, "snapshot swapped in", 60)
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(30)
        os.close(controller)
    assert "snapshot (no_checkpoint) ▕" in shown
    assert "200/200 tickets" in shown
    assert "snapshot progress" not in shown  # the bar replaces the log lines

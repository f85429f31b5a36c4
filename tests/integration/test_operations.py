"""Operators' view: /readyz and `cdc-worker check` agree and heal; every metric moves."""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from typing import Any

from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import text

from cdc_worker.api.app import create_app
from cdc_worker.devtools.localservers import MariaDBServer, RedisServer, free_port
from cdc_worker.devtools.seed import seed
from cdc_worker.observability.worker_http import serve
from cdc_worker.settings import load_settings
from tests.conftest import SourceDatabase
from tests.harness import (
    insert_orphan_ticket,
    kill_dump_threads,
    wait_heartbeat,
    wait_synced,
    worker_env,
    worker_thread,
)


def eventually(check: Callable[[], bool], timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.1)


def check_exit_code(redis_url: str) -> int:
    env = worker_env("mysql+pymysql://u:p@127.0.0.1:1/db", redis_url, CDC_HEARTBEAT_MAX_AGE_S="2")
    return subprocess.run(
        [sys.executable, "-m", "cdc_worker.cli", "check"],
        env=env,
        capture_output=True,
        timeout=30,
        check=False,
    ).returncode


def api(redis_url: str, **overrides: Any) -> TestClient:
    settings = load_settings(redis_url=redis_url, heartbeat_max_age_s=2, **overrides)
    return TestClient(create_app(settings))


def test_readyz_and_check_fail_when_the_worker_stops_and_heal_when_it_returns(
    source_db: SourceDatabase, redis_url: str
) -> None:
    seed(source_db.engine, 50)
    with api(redis_url) as client:
        assert client.get("/readyz").status_code == 503  # nothing yet
        with worker_thread(source_db.cdc_url, redis_url):
            wait_heartbeat(redis_url)
            eventually(lambda: client.get("/readyz").status_code == 200)
            assert check_exit_code(redis_url) == 0
        eventually(lambda: client.get("/readyz").status_code == 503)
        reasons = client.get("/readyz").json()["reasons"]
        assert any("heartbeat" in reason for reason in reasons)
        assert check_exit_code(redis_url) == 1
        with worker_thread(source_db.cdc_url, redis_url):
            eventually(lambda: client.get("/readyz").status_code == 200)


def test_readyz_fails_while_lag_exceeds_the_limit_and_heals(
    source_db: SourceDatabase, redis_url: str
) -> None:
    seed(source_db.engine, 20)
    with worker_thread(source_db.cdc_url, redis_url), api(redis_url, max_lag_s=60) as client:
        eventually(lambda: client.get("/readyz").status_code == 200)
        with source_db.engine.begin() as conn:  # a commit stamped 10 minutes ago
            conn.execute(text("SET TIMESTAMP = UNIX_TIMESTAMP() - 600"))
            conn.execute(text("UPDATE tickets SET title = 'late' ORDER BY id LIMIT 1"))
        eventually(lambda: client.get("/readyz").status_code == 503)
        assert "replication lag" in client.get("/readyz").json()["reasons"][0]
        eventually(lambda: client.get("/readyz").status_code == 200)


def test_redis_down_gives_503s_and_counted_errors_never_a_500(
    source_db: SourceDatabase, own_redis: RedisServer
) -> None:
    seed(source_db.engine, 20)
    with worker_thread(source_db.cdc_url, own_redis.url), api(own_redis.url) as client:
        wait_synced(source_db.engine, own_redis.url)
        own_redis.kill()
        assert client.get("/readyz").json()["reasons"] == ["redis unreachable"]
        assert client.get("/tickets/1").status_code == 503
        assert client.get("/tickets", params={"status_id": 1}).status_code == 503
        assert scrape_client(client)["cdc_api_redis_errors_total"] >= 2
        own_redis.restart()
        eventually(lambda: client.get("/readyz").status_code == 200, 60)


def scrape_client(client: TestClient) -> dict[str, float]:
    return flatten(client.get("/metrics").text)


def flatten(exposition: str) -> dict[str, float]:
    values: dict[str, float] = {}
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            values[sample.name] = values.get(sample.name, 0.0) + sample.value
    return values


def scrape(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        return flatten(response.read().decode())


def test_every_worker_metric_is_served_and_moves_when_its_event_happens(
    source_db: SourceDatabase, redis_url: str, mariadb: MariaDBServer
) -> None:
    seed(source_db.engine, 30)
    port = free_port()
    with worker_thread(source_db.cdc_url, redis_url) as app:
        liveness = app.worker.telemetry.liveness
        server = serve("127.0.0.1", port, app.metrics.registry, liveness.problem)
        try:
            wait_synced(source_db.engine, redis_url)
            before = scrape(port)
            with source_db.engine.begin() as conn:
                conn.execute(text("UPDATE tickets SET title = 'moved' ORDER BY id LIMIT 5"))
                insert_orphan_ticket(conn)
            wait_synced(source_db.engine, redis_url)
            with source_db.engine.begin() as conn:  # the same tickets: states now in memory
                conn.execute(text("UPDATE tickets SET title = 'again' ORDER BY id LIMIT 5"))
            wait_synced(source_db.engine, redis_url)
            kill_dump_threads(mariadb.port)
            eventually(lambda: scrape(port).get("cdc_reconnects_total", 0) >= 1)
            eventually(lambda: scrape(port)["cdc_read_model_documents"] > 0)
            after = scrape(port)
            decoded = app.metrics.registry.get_sample_value
            assert (decoded("cdc_decoded_rows_total", {"decoder": "specialized"}) or 0) > 0
            assert decoded("cdc_decoded_rows_total", {"decoder": "library"}) == 0  # there, at 0
            # the UPDATE of 5 tickets read their states: the snapshot's were not cached
            assert (decoded("cdc_state_cache_reads_total", {"result": "miss"}) or 0) >= 5
            assert (decoded("cdc_state_cache_reads_total", {"result": "hit"}) or 0) >= 5
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as r:
                assert r.status == 200
        finally:
            server.shutdown()
            server.server_close()
    moved = [
        "cdc_events_total",
        "cdc_rows_total",
        "cdc_decoded_rows_total",
        "cdc_transactions_total",
        "cdc_apply_batch_rows_count",
        "cdc_apply_duration_seconds_count",
        "cdc_dead_letter_rows_total",
        "cdc_reconnects_total",
        "cdc_state_cache_reads_total",
    ]
    assert [m for m in moved if after.get(m, 0) <= before.get(m, 0)] == []
    assert after["cdc_snapshots_total"] == 1
    assert after["cdc_snapshot_duration_seconds_count"] == 1
    assert after["cdc_binlog_position_bytes"] > 0
    assert after["cdc_binlog_file_number"] >= 1
    for present in ("cdc_lag_seconds", "cdc_seconds_since_last_event"):
        assert present in after


def test_api_metrics_count_requests_by_route_and_code_leaving_out_probes(
    source_db: SourceDatabase, redis_url: str
) -> None:
    seed(source_db.engine, 10)
    with worker_thread(source_db.cdc_url, redis_url), api(redis_url) as client:
        wait_synced(source_db.engine, redis_url)
        wait_heartbeat(redis_url)
        client.get("/tickets/1")
        client.get("/tickets/999999")
        client.get("/tickets/abc")
        for probe in ("/healthz", "/readyz", "/metrics"):
            client.get(probe)
        body = client.get("/metrics").text
    assert 'cdc_api_requests_total{code="404",route="/tickets/{ticket_id}"} 1.0' in body
    assert 'cdc_api_requests_total{code="422",route="/tickets/{ticket_id}"} 1.0' in body
    assert 'route="/readyz"' not in body
    assert 'route="/metrics"' not in body
    assert 'route="/healthz"' not in body
    assert "cdc_api_ready 1.0" in body
    assert 'cdc_api_build_info{version="' in body
    assert "process_resident_memory_bytes" in body
    assert 'cdc_api_request_duration_seconds_count{route="/tickets/{ticket_id}"} 3.0' in body

"""A real Prometheus (Debian's binary, 1 s scrapes) scrapes a real worker and a real API under
load: every dashboard query and every alert expression evaluates without error, the panels
return data, the first dead-lettered row fires its alert, and a stopped worker turns the stale
heartbeat alert pending. A worker whose Redis freezes fails its liveness probe.
"""

from __future__ import annotations

import math
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import redis

from cdc_worker.devtools.localservers import RedisServer, free_port, stop_process
from cdc_worker.devtools.seed import seed
from cdc_worker.snapshots.resync_client import request
from cdc_worker.store.jobs import load as load_job
from tests.conftest import SourceDatabase
from tests.harness import insert_orphan_ticket, spawn_worker, wait_heartbeat, worker_env
from tests.monitoring import alert_exprs, panel_queries
from tests.prometheus_server import PrometheusServer, rules_with, running_prometheus

TICKETS = 200
LOAD_S = 8.0
LOAD_RATE_PER_S = 20.0
# The test's rules are the shipped ones with these pieces replaced, so that a stopped worker
# shows within seconds; everything else (expressions, labels, other thresholds) is as shipped.
TEST_RULE_CHANGES = {
    # The worker beats every second here (CDC_HEARTBEAT_S=1), not every 5 s: 3 s is stale.
    "CdcWorkerHeartbeatStale": ("> 20", "> 3"),
}
# Dashboard queries allowed to return no series in this run, and why. Every other query must
# return series, and every panel at least one finite value.
NO_DATA_EXPECTED = {
    ("Snapshot time left", "A"): "only while a snapshot or full resync copies; here each "
    "copies 200 tickets in well under the 1 s scrape interval",
}
STOPPED_ALERT_TIMEOUT_S = 20.0
DEAD_LETTER_SERIES = 'cdc_dead_letter_rows_total{table="tickets"}'
LIVENESS_TIMEOUT_S = 2.0
STOP_S = 30.0  # a worker, API or loadgen child finishes its batch and exits within this


def start_api(env: dict[str, str], port: int, log_path: Path) -> subprocess.Popen[bytes]:
    with log_path.open("ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "cdc_worker.cli", "api", "--port", str(port)],
            env=env,
            stdout=log,
            stderr=log,
        )


def wait_ok(url: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, f"{url} never answered 200"
        time.sleep(0.1)


def read_traffic(api_url: str, stopping: threading.Event) -> None:
    """Reads as clients make them (found, missing, lists), about 30 a second."""
    rng = random.Random(7)
    with httpx.Client(base_url=api_url, timeout=5) as client:
        while not stopping.wait(0.03):
            client.get(f"/tickets/{rng.randint(1, TICKETS + 50)}")
            if rng.random() < 0.2:
                client.get("/tickets", params={"limit": 10})


@contextmanager
def under_load(source_db: SourceDatabase, redis_url: str, api_url: str) -> Iterator[None]:
    """`cdc-worker loadgen` on the source and read traffic on the API, for LOAD_S."""
    env = {**os.environ, "CDC_MYSQL_URL": source_db.root_url, "CDC_REDIS_URL": redis_url}
    command = ["loadgen", "--rate", str(LOAD_RATE_PER_S), "--duration-s", str(LOAD_S)]
    loadgen = subprocess.Popen(
        [sys.executable, "-m", "cdc_worker.cli", *command, "--seed", "3"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    stopping = threading.Event()
    reader = threading.Thread(target=read_traffic, args=(api_url, stopping), daemon=True)
    reader.start()
    try:
        yield
        output, _ = loadgen.communicate(timeout=LOAD_S + 30)
        assert loadgen.returncode == 0, output.decode()
        assert b"transactions/s achieved" in output
    finally:
        stopping.set()
        reader.join(10)
        stop_process(loadgen, STOP_S)


def dead_letter_one_row(source_db: SourceDatabase) -> None:
    """A ticket whose status does not exist: the worker cannot render it. Its id is far
    above the load generator's, which picks new ids itself."""
    with source_db.engine.begin() as conn:
        insert_orphan_ticket(conn, 1_000_000)


def run_resyncs(redis_url: str) -> None:
    """A full resync and a two-ticket one, through the job queue, until both are done."""
    with redis.Redis.from_url(redis_url) as client:
        jobs = [request(client, [], None), request(client, [1, 2], None)]
        deadline = time.monotonic() + 30
        for job in jobs:
            while (current := load_job(client, job.id)) is None or current.state not in (
                "done",
                "failed",
            ):
                assert time.monotonic() < deadline, f"resync {job.kind} did not finish"
                time.sleep(0.1)
            assert current.state == "done", current


def assert_dashboard_evaluates(prometheus: PrometheusServer, start_s: float) -> None:
    """Every panel query over the run: no error, series unless listed in NO_DATA_EXPECTED,
    and a finite value in every panel that has a query not listed there."""
    errors, empty = [], []
    panels_with_data, panels_needing_data = set(), set()
    end_s = time.time()
    for query in panel_queries():
        result = prometheus.query_range(query.expanded(), start_s, end_s)
        if result.error:
            errors.append(f"{query.panel} {query.ref_id}: {result.error}")
        if (query.panel, query.ref_id) not in NO_DATA_EXPECTED:
            panels_needing_data.add(query.panel)
            if not result.series:
                empty.append(f"{query.panel} {query.ref_id}: {query.expr}")
        if any(math.isfinite(v) for v in result.values()):
            panels_with_data.add(query.panel)
    assert errors == []
    assert empty == []
    assert panels_needing_data - panels_with_data == set()


def assert_alert_expressions_evaluate(prometheus: PrometheusServer) -> None:
    errors = [f"{a}: {r.error}" for a, e in alert_exprs() if (r := prometheus.query(e)).error]
    assert errors == []
    unhealthy = [r for r in prometheus.rules() if r["health"] != "ok" or r.get("lastError")]
    assert unhealthy == []


def test_a_real_prometheus_evaluates_every_panel_and_alert_and_sees_the_worker_stop(
    source_db: SourceDatabase, redis_url: str, tmp_path: Path
) -> None:
    seed(source_db.engine, TICKETS, seed=1)
    worker_port, api_port = free_port(), free_port()
    api_url = f"http://127.0.0.1:{api_port}"
    targets = {"cdc-worker": f"127.0.0.1:{worker_port}", "cdc-api": f"127.0.0.1:{api_port}"}
    env = worker_env(source_db.cdc_url, redis_url, CDC_WORKER_HTTP_PORT=str(worker_port))
    rules = rules_with(TEST_RULE_CHANGES)
    with running_prometheus(tmp_path / "prometheus", targets, rules) as prometheus:
        start_s = time.time()
        worker = spawn_worker(env, tmp_path / "worker.log")
        api = start_api(env, api_port, tmp_path / "api.log")
        try:
            wait_heartbeat(redis_url)
            wait_ok(f"{api_url}/healthz")
            # A worker meets its first bad row long after its first scrape; here it could be
            # within the first second, before Prometheus saw the counter at 0.
            prometheus.wait_until(
                "a scrape of the dead-letter counter at 0",
                lambda: bool(prometheus.query(f"{DEAD_LETTER_SERIES} == 0").series),
                15,
            )
            with under_load(source_db, redis_url, api_url):
                dead_letter_one_row(source_db)
                run_resyncs(redis_url)
            prometheus.wait_until(
                "the first dead-lettered row fires its alert",
                lambda: "firing" in prometheus.alert_states().get("CdcRowsDeadLettered", set()),
                10,
            )
            assert_dashboard_evaluates(prometheus, start_s)
            assert_alert_expressions_evaluate(prometheus)
            healthy = prometheus.query('ALERTS{alertname=~"CdcWorker.*"}')
            assert healthy.series == [], "a worker alert while the worker ran"

            worker.send_signal(signal.SIGTERM)
            worker.wait(30)
            took_s = prometheus.wait_until(
                "a stopped worker's heartbeat alert goes pending",
                lambda: "CdcWorkerHeartbeatStale" in prometheus.alert_states(),
                STOPPED_ALERT_TIMEOUT_S,
            )
            states = prometheus.alert_states()
            assert states["CdcWorkerHeartbeatStale"] == {"pending"}, took_s
            assert "CdcWorkerDown" in states
        finally:
            stop_process(worker, STOP_S)
            stop_process(api, STOP_S)


def test_a_worker_whose_redis_freezes_fails_its_liveness_probe_and_the_api_says_not_ready(
    source_db: SourceDatabase, own_redis: RedisServer, tmp_path: Path
) -> None:
    seed(source_db.engine, 20, seed=2)
    port = free_port()
    env = worker_env(
        source_db.cdc_url,
        own_redis.url,
        CDC_WORKER_HTTP_PORT=str(port),
        CDC_LIVENESS_TIMEOUT_S=str(LIVENESS_TIMEOUT_S),
    )
    worker = spawn_worker(env, tmp_path / "worker.log")
    api_port = free_port()
    api = start_api(env, api_port, tmp_path / "api.log")
    healthz = f"http://127.0.0.1:{port}/healthz"
    redis_pid = int(own_redis.pid_file.read_text())
    try:
        wait_heartbeat(own_redis.url)
        wait_ok(healthz)
        wait_ok(f"http://127.0.0.1:{api_port}/readyz")
        os.kill(redis_pid, signal.SIGSTOP)
        try:
            started = time.monotonic()
            while (answer := httpx.get(healthz, timeout=2)).status_code == 200:
                assert time.monotonic() - started < 10 * LIVENESS_TIMEOUT_S, "still healthy"
                time.sleep(0.1)
            assert answer.status_code == 503
            assert answer.text.strip(), "a 503 without a reason"
            assert_the_api_scrape_answers_not_ready(api_port)
        finally:
            os.kill(redis_pid, signal.SIGCONT)
        wait_ok(healthz, timeout_s=30)
    finally:
        stop_process(worker, STOP_S)
        stop_process(api, STOP_S)


def assert_the_api_scrape_answers_not_ready(api_port: int) -> None:
    """A frozen Redis must not hold the API's scrape past Prometheus's timeout (its gauges
    would vanish): /metrics answers within 4 s, not ready, with the heartbeat's age."""
    started = time.monotonic()
    scrape = httpx.get(f"http://127.0.0.1:{api_port}/metrics", timeout=4).text
    assert time.monotonic() - started < 4
    assert "cdc_api_ready 0.0" in scrape
    assert "cdc_api_worker_heartbeat_age_seconds " in scrape
    readyz = httpx.get(f"http://127.0.0.1:{api_port}/readyz", timeout=4)
    assert readyz.status_code == 503
    assert "did not answer" in readyz.text

"""The worker reads a replica, follows a primary failover by GTID, rebuilds on divergence."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import make_url
from structlog.testing import capture_logs

from cdc_worker.api.app import create_app
from cdc_worker.bootstrap import App
from cdc_worker.devtools.localservers import MariaDBServer, RedisServer, start_mariadb
from cdc_worker.devtools.replicas import (
    gtid_binlog_pos,
    promote,
    rejoin_as_replica,
    replica_flags,
    replicate_from,
    stop_replication,
    wait_caught_up,
)
from cdc_worker.settings import load_settings
from cdc_worker.source.failover import server_name
from tests.conftest import SourceDatabase
from tests.harness import wait_streaming, wait_synced, worker_env, worker_thread
from tests.replication import (
    Topology,
    Workload,
    engine_of,
    heartbeat_source,
    start_topology,
    stored_checkpoint,
    wait_until,
)

FAILOVER_AFTER_S = 1.0


@pytest.fixture
def topology(tmp_path: Path) -> Iterator[Topology]:
    servers = start_topology(tmp_path)
    yield servers
    servers.stop()


def name(server: MariaDBServer) -> str:
    return f"127.0.0.1:{server.port}"


def sample(app: App, metric: str, **labels: str) -> float:
    return app.metrics.registry.get_sample_value(metric, labels) or 0.0


def snapshots(app: App) -> dict[str, float]:
    found = {}
    for family in app.metrics.registry.collect():
        if family.name == "cdc_snapshots":
            for s in family.samples:
                if s.name == "cdc_snapshots_total" and s.value:
                    found[s.labels["reason"]] = s.value
    return found


def ha_worker(topology: Topology, redis_url: str) -> Any:
    return worker_thread(
        topology.primary.cdc_url,
        redis_url,
        mysql_failover_urls=topology.replica.cdc_url,
        source_failover_after_s=FAILOVER_AFTER_S,
    )


def test_the_worker_tails_a_replica_while_the_workload_writes_to_the_primary(
    topology: Topology, own_redis: RedisServer
) -> None:
    workload = Workload(topology.primary.root_url).start()
    engine = engine_of(topology.primary)
    try:
        # The first snapshot is taken on the replica under the workload: its GTID must
        # match its data, or the final comparison fails.
        with worker_thread(topology.replica.cdc_url, own_redis.url) as app:
            wait_streaming(own_redis.url)
            time.sleep(1.5)
            workload.stop()
            wait_caught_up(topology.replica, topology.primary)
            wait_synced(engine, own_redis.url)
            wait_until(lambda: heartbeat_source(own_redis.url) == name(topology.replica), "beat")
            assert sample(app, "cdc_source_in_use", server=name(topology.replica)) == 1
            with TestClient(create_app(load_settings(redis_url=own_redis.url))) as api:
                assert api.get("/readyz").json()["source"] == name(topology.replica)
        checkpoint = stored_checkpoint(own_redis.url)
        assert checkpoint is not None
        # The replica's binlog carries the primary's GTIDs (server id 1).
        assert checkpoint.position.gtid == gtid_binlog_pos(topology.primary)
        assert workload.committed > 10
    finally:
        if workload.thread.is_alive():
            workload.stop()
        engine.dispose()


def test_a_replica_without_log_slave_updates_is_refused_saying_so(
    topology: Topology, own_redis: RedisServer, tmp_path: Path
) -> None:
    flags = [*replica_flags(3), "--log-slave-updates=OFF"]
    replica = start_mariadb(tmp_path / "bare-replica", extra_flags=flags)
    try:
        replicate_from(replica, topology.primary, "slave_pos")
        wait_caught_up(replica, topology.primary)
        result = subprocess.run(
            [sys.executable, "-m", "cdc_worker.cli", "run"],
            env=worker_env(replica.cdc_url, own_redis.url),
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        replica.stop()
    assert result.returncode == 2, result.stderr
    assert "this server is a replica and log_slave_updates is OFF" in result.stderr
    assert "cdc-local-secret" not in result.stderr + result.stdout


def fail_over(topology: Topology, workload: Workload) -> float:
    """Kill the primary between two workload transactions, promote the replica, move the
    workload to it; returns when the promotion ended (time.time())."""
    with workload.paused():
        wait_caught_up(topology.replica, topology.primary)
        topology.primary.kill()
        promoted_at = promote(topology.replica)
        workload.move_to(topology.replica.root_url)
    return promoted_at


def test_the_worker_follows_a_failover_by_gtid_without_rebuild_and_never_flaps_back(
    topology: Topology, own_redis: RedisServer
) -> None:
    workload = Workload(topology.primary.root_url).start()
    new_primary = engine_of(topology.replica)
    try:
        with ha_worker(topology, own_redis.url) as app:
            wait_streaming(own_redis.url)
            time.sleep(1.0)
            fail_over(topology, workload)
            wait_until(lambda: heartbeat_source(own_redis.url) == name(topology.replica), "switch")
            time.sleep(1.0)  # the workload goes on on the new primary
            assert snapshots(app) == {"no_checkpoint": 1}, "no rebuild at the switch"
            assert sample(app, "cdc_source_switches_total") == 1
            assert sample(app, "cdc_source_in_use", server=name(topology.replica)) == 1
            assert sample(app, "cdc_source_in_use", server=name(topology.primary)) == 0
            # The old primary comes back as a replica of the new one: it is not used.
            with workload.paused():
                topology.primary = rejoin_as_replica(
                    topology.primary, topology.replica, server_id=1
                )
            time.sleep(3 * FAILOVER_AFTER_S)
            workload.stop()
            wait_synced(new_primary, own_redis.url)
            assert heartbeat_source(own_redis.url) == name(topology.replica)
            assert sample(app, "cdc_source_switches_total") == 1
            assert snapshots(app) == {"no_checkpoint": 1}
        checkpoint = stored_checkpoint(own_redis.url)
        assert checkpoint is not None
        # The read model ends on the new primary's own transactions (server id 2).
        assert (checkpoint.position.gtid or "").startswith("0-2-")
    finally:
        if workload.thread.is_alive():
            workload.stop()
        new_primary.dispose()


def test_transactions_lost_in_a_failover_are_detected_logged_and_rebuilt_away(
    topology: Topology, own_redis: RedisServer
) -> None:
    workload = Workload(topology.primary.root_url).start()
    new_primary = engine_of(topology.replica)
    try:
        with capture_logs() as logs, ha_worker(topology, own_redis.url) as app:
            wait_streaming(own_redis.url)
            time.sleep(0.5)
            with workload.paused():
                wait_caught_up(topology.replica, topology.primary)
                stop_replication(topology.replica)
                kept = gtid_binlog_pos(topology.replica)
                workload.run(5)  # on the primary only: these will be lost
                applied = gtid_binlog_pos(topology.primary)
                wait_until(lambda: _checkpoint_gtid(own_redis.url) == applied, "the lost applied")
                topology.primary.kill()
                promote(topology.replica)
                workload.move_to(topology.replica.root_url)
            time.sleep(1.0)
            workload.stop()
            wait_synced(new_primary, own_redis.url)
            assert snapshots(app) == {"no_checkpoint": 1, "source_diverged": 1}
            wait_until(lambda: heartbeat_source(own_redis.url) == name(topology.replica), "beat")
    finally:
        if workload.thread.is_alive():
            workload.stop()
        new_primary.dispose()
    diverged = [entry for entry in logs if entry["event"].startswith("source diverged")]
    for entry in diverged:
        print("divergence log:", {k: entry[k] for k in ("event", "server", "lost_gtids")})
    first_lost = int(kept.split("-")[2]) + 1
    assert [entry["lost_gtids"] for entry in diverged] == [f"0-1-{first_lost}..{applied}"]
    assert diverged[0]["server"] == server_name_of(topology.replica)


def _checkpoint_gtid(redis_url: str) -> str | None:
    checkpoint = stored_checkpoint(redis_url)
    return None if checkpoint is None else checkpoint.position.gtid


def server_name_of(server: MariaDBServer) -> str:
    return server_name(make_url(server.cdc_url))


def test_a_worker_started_while_its_first_server_is_down_reads_the_next_one(
    source_db: SourceDatabase, redis_url: str
) -> None:
    dead = make_url(source_db.cdc_url).set(port=1).render_as_string(hide_password=False)
    with worker_thread(dead, redis_url, mysql_failover_urls=source_db.cdc_url) as app:
        wait_streaming(redis_url)
        wait_until(lambda: heartbeat_source(redis_url) is not None, "a heartbeat")
        assert heartbeat_source(redis_url) == server_name(make_url(source_db.cdc_url))
        assert sample(app, "cdc_source_in_use", server="127.0.0.1:1") == 0

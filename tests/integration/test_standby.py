"""Standby workers: one active worker holds the lease; killed, paused or stopped, a standby
takes over in seconds, and the read model still equals the database (documents and hidden
state) with a workload running throughout."""

from __future__ import annotations

import os
import random
import signal
import socket
import time
from pathlib import Path

import orjson
import pytest
import redis

from cdc_worker.checkpoint import Checkpoint, Position
from cdc_worker.devtools.seed import seed
from cdc_worker.store import jobs, keys
from cdc_worker.store.lease import Lease, LeaseLost
from cdc_worker.store.redis_store import RedisStore
from projections.projector import StoreOps
from tests.chaos import Writer
from tests.conftest import SourceDatabase
from tests.ha import Fleet, checkpoint_of, leader_pid, percentile, wait_takeover
from tests.harness import wait_synced

SIGKILLS = 10
SIGTERMS = 3
KILL_TAKEOVER_MAX_S = 5.0
# The goal is 1 s: 0.24-0.8 s here on the 2-core test machine, p50 0.59 s and p99 1.38 s over
# 20 stops in bench/ha.py (load 5-8; 1.2 s p50 at load 12-14). Below 2 s proves the lease was
# released: a lease left to expire lasts 2-3 s more.
TERM_TAKEOVER_MAX_S = 2.0
LEASE_S = 3.0


def test_a_worker_that_lost_its_lease_cannot_start_a_batch_even_on_an_unchanged_checkpoint(
    redis_url: str,
) -> None:
    """The SIGSTOP case, deterministic: the checkpoint did not move while the old leader
    slept (an idle source), so the checkpoint fence alone would let it write."""
    client = redis.Redis.from_url(redis_url)
    old, new = Lease(client, 0.5), Lease(client, 0.5)
    assert old.try_acquire()
    old._stop_renewing.set()  # paused: renews no more
    store = RedisStore(client, lease=old)
    checkpoint = Checkpoint(1, Position("mysql-bin.000001", 4))
    client.set(keys.CHECKPOINT, checkpoint.encode())
    with store.batch(checkpoint) as tx:  # while the lease is ours
        tx.commit(StoreOps(), checkpoint)
    assert not new.try_acquire()
    time.sleep(0.7)  # the lease expires
    assert new.try_acquire()
    with pytest.raises(LeaseLost), store.batch(checkpoint) as tx:
        tx.commit(StoreOps(docs_put={1: b"{}"}), checkpoint)
    assert client.hlen(keys.DOCUMENTS) == 0
    assert not old.held
    assert new.held
    old.release()  # not ours: must not delete the new holder's key
    assert leader_pid(client) == os.getpid()
    new.release()
    assert client.get(keys.LEADER) is None


def test_workers_hand_over_on_sigkill_sigstop_and_sigterm_without_losing_a_transaction(
    source_db: SourceDatabase, redis_url: str, tmp_path: Path
) -> None:
    rng = random.Random(2121)
    seed(source_db.engine, 600, seed=21)
    fleet = Fleet(
        source_db.cdc_url,
        redis_url,
        tmp_path,
        {"CDC_LEADER_LEASE_S": str(LEASE_S), "CDC_SNAPSHOT_CHUNK_ROWS": "40"},
    )
    client = fleet.client()
    writer = Writer(source_db.engine, 2121)
    kill_s: list[float] = []
    term_s: list[float] = []
    try:
        fleet.spawn_ready(3)
        leader = fleet.wait_leader()
        _standbys_are_healthy_and_the_heartbeat_names_the_leader(fleet, client, leader)
        writer.start()
        full_job = _kill_during_a_full_resync(fleet, client, kill_s)
        repair_job = jobs.enqueue(client, jobs.new_job("tickets", (1, 2, 3, 4, 5)))
        for _ in range(SIGKILLS - 1):
            time.sleep(rng.uniform(0.1, 1.0))
            kill_s.append(_kill_leader(fleet, client))
        _pause_leader_beyond_its_lease(fleet, client)
        for _ in range(SIGTERMS):
            time.sleep(rng.uniform(0.2, 1.0))
            term_s.append(_stop_leader(fleet, client))
        writer.stop.set()
        writer.join(60)
        wait_synced(source_db.engine, redis_url, timeout_s=120)
    finally:
        writer.stop.set()
        fleet.stop()
    print(
        f"take-over after SIGKILL: {sorted(round(s, 2) for s in kill_s)} s, p50 "
        f"{percentile(kill_s, 50):.2f}; after SIGTERM: {[round(s, 2) for s in term_s]} s; "
        f"{writer.committed} transactions; events {dict(fleet.log_events())}"
    )
    assert len(kill_s) == SIGKILLS
    assert max(kill_s) <= KILL_TAKEOVER_MAX_S
    assert len(term_s) == SIGTERMS
    assert max(term_s) <= TERM_TAKEOVER_MAX_S
    _each_job_ran_to_completion_once(fleet, client, full_job, repair_job)
    assert fleet.log_events()["snapshot started"] == 1  # take-overs resume, never rebuild
    assert writer.committed > 100


def _standbys_are_healthy_and_the_heartbeat_names_the_leader(
    fleet: Fleet, client: redis.Redis, leader: int
) -> None:
    deadline = time.monotonic() + 60
    while (beat := client.get(keys.HEARTBEAT)) is None:
        assert time.monotonic() < deadline, "no heartbeat"
        time.sleep(0.05)
    assert orjson.loads(beat)["worker"] == f"{socket.gethostname()}:{leader}"
    for pid in fleet.workers:
        assert fleet.healthz(pid) == 200
        assert fleet.metric(pid, "cdc_worker_active") == (1.0 if pid == leader else 0.0)
    assert fleet.metric(leader, "cdc_leader_changes_total") == 1.0


def _kill_leader(fleet: Fleet, client: redis.Redis) -> float:
    """SIGKILL the active worker, start a new standby; seconds to the first applied
    transaction of the next active worker."""
    old, killed_at_s = fleet.signal_leader(signal.SIGKILL)
    fleet.reap(old)
    _, took_s = wait_takeover(client, old, killed_at_s)
    # Started after the take-over, not during it: a Python start-up competing for one of the
    # two cores made one take-over 5.2 s. The next fault finds two warm standbys.
    fleet.spawn_ready()
    return took_s


def _stop_leader(fleet: Fleet, client: redis.Redis) -> float:
    old, stopped_at_s = fleet.signal_leader(signal.SIGTERM)
    _, took_s = wait_takeover(client, old, stopped_at_s)
    fleet.reap(old)
    fleet.spawn_ready()
    return took_s


def _kill_during_a_full_resync(fleet: Fleet, client: redis.Redis, kill_s: list[float]) -> str:
    """Queue a full resync, SIGKILL the active worker once it has copied a chunk."""
    job = jobs.enqueue(client, jobs.new_job("full"))
    deadline = time.monotonic() + 60
    while (found := jobs.load(client, job.id)) is None or found.last_id == 0:
        assert time.monotonic() < deadline, "the full resync never copied a chunk"
        time.sleep(POLL_S)
    kill_s.append(_kill_leader(fleet, client))
    return job.id


POLL_S = 0.005


def _pause_leader_beyond_its_lease(fleet: Fleet, client: redis.Redis) -> None:
    """SIGSTOP the active worker past its lease; after SIGCONT it must step down."""
    paused, stopped_at_s = fleet.signal_leader(signal.SIGSTOP)
    before = checkpoint_of(client)
    _new, _ = wait_takeover(client, paused, stopped_at_s)
    time.sleep(max(0.0, LEASE_S + 1 - (time.monotonic() - stopped_at_s)))
    os.kill(paused, signal.SIGCONT)
    deadline = time.monotonic() + 10
    while fleet.metric(paused, "cdc_worker_active") != 0.0:
        assert time.monotonic() < deadline, "the woken worker still says it is active"
        time.sleep(0.1)
    assert fleet.workers[paused].poll() is None  # alive, as a standby
    assert leader_pid(client) != paused
    assert checkpoint_of(client) != before
    assert fleet.healthz(paused) == 200


def _each_job_ran_to_completion_once(
    fleet: Fleet, client: redis.Redis, full_job: str, repair_job: jobs.Job
) -> None:
    full = jobs.load(client, full_job)
    repair = jobs.load(client, repair_job.id)
    assert full is not None
    assert full.state == "done"
    assert repair is not None
    assert repair.state == "done"
    assert repair.tickets_done == 5
    assert fleet.job_events("resync started", full_job) == 1
    assert fleet.job_events("resync resumed", full_job) >= 1  # on the next active worker
    live = checkpoint_of(client)
    assert live is not None
    assert live.generation == full.generation  # swapped in, and only once (no other build)
    assert fleet.job_events("resync swapped in", full_job) <= 1  # 0: killed before the log
    assert fleet.job_events("repair done", repair_job.id) <= 1
    assert client.llen(keys.RESYNC_CLAIMED) == 0
    assert client.llen(keys.RESYNC_QUEUE) == 0

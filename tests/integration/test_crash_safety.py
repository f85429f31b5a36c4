"""Crashes and outages lose nothing and apply nothing twice."""

from __future__ import annotations

import random
import signal
import threading
import time
from pathlib import Path

import pytest

from cdc_worker.bootstrap import bootstrap, inspect_source
from cdc_worker.devtools.loadgen import run_workload
from cdc_worker.devtools.localservers import MariaDBServer, RedisServer
from cdc_worker.devtools.seed import seed
from cdc_worker.schema.models import Base
from cdc_worker.settings import load_settings
from cdc_worker.store import keys
from cdc_worker.store.interface import FenceLost
from projections.projector import StoreOps
from tests.conftest import SourceDatabase
from tests.harness import spawn_worker, wait_heartbeat, wait_synced, worker_env, worker_thread

KILLS = 12


def test_sigkill_at_random_moments_loses_and_duplicates_nothing(
    source_db: SourceDatabase, redis_url: str, tmp_path: Path
) -> None:
    seed(source_db.engine, 300, seed=7)
    rng = random.Random(20261122)
    print(f"chaos seed 20261122, kills {KILLS}")
    env = worker_env(source_db.cdc_url, redis_url, CDC_BATCH_MAX_ROWS="50")
    done = threading.Event()
    written: list[int] = []
    writer = threading.Thread(
        target=lambda: written.append(run_workload(source_db.engine, 8000, 3, done.is_set))
    )
    writer.start()
    try:
        for _ in range(KILLS):
            worker = spawn_worker(env, tmp_path / "worker.log")
            time.sleep(rng.uniform(0.8, 2.5))
            worker.send_signal(signal.SIGKILL)
            worker.wait(10)
    finally:
        done.set()
        writer.join(60)
    print(f"transactions written during the kills: {written}")
    assert written
    assert written[0] > 100
    final = spawn_worker(env, tmp_path / "worker.log")
    try:
        wait_synced(source_db.engine, redis_url, timeout_s=120)
    finally:
        final.send_signal(signal.SIGTERM)
        final.wait(30)


def test_sigterm_finishes_the_batch_in_hand_and_exits_zero(
    source_db: SourceDatabase, redis_url: str, tmp_path: Path
) -> None:
    seed(source_db.engine, 50)
    worker = spawn_worker(worker_env(source_db.cdc_url, redis_url), tmp_path / "w.log")
    wait_synced(source_db.engine, redis_url)
    wait_heartbeat(redis_url)
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(30) == 0
    assert "worker stopped" in (tmp_path / "w.log").read_text()


@pytest.fixture
def own_source(own_mariadb: MariaDBServer) -> SourceDatabase:
    from sqlalchemy import create_engine

    engine = create_engine(own_mariadb.root_url, pool_pre_ping=True)
    Base.metadata.create_all(engine)
    return SourceDatabase("helpdesk", own_mariadb.root_url, own_mariadb.cdc_url, engine)


def test_a_mariadb_restart_mid_stream_is_survived_without_restarting_the_worker(
    own_mariadb: MariaDBServer, own_source: SourceDatabase, redis_url: str
) -> None:
    seed(own_source.engine, 100)
    with worker_thread(own_source.cdc_url, redis_url) as app:
        wait_synced(own_source.engine, redis_url)
        run_workload(own_source.engine, 50, seed=1)
        own_mariadb.kill()
        own_source.engine.dispose()
        own_mariadb.restart()
        run_workload(own_source.engine, 50, seed=2)
        wait_synced(own_source.engine, redis_url)
        reconnects = sum(
            s.value
            for m in app.metrics.reconnects.collect()
            for s in m.samples
            if s.name.endswith("_total")
        )
    assert reconnects >= 1
    own_source.engine.dispose()


def test_a_redis_restart_empty_leads_to_a_new_snapshot_and_a_correct_read_model(
    source_db: SourceDatabase, own_redis: RedisServer
) -> None:
    seed(source_db.engine, 100)
    with worker_thread(source_db.cdc_url, own_redis.url) as app:
        wait_synced(source_db.engine, own_redis.url)
        own_redis.kill()
        run_workload(source_db.engine, 30, seed=5)
        own_redis.restart()
        run_workload(source_db.engine, 30, seed=6)
        wait_synced(source_db.engine, own_redis.url)
        snapshots = app.metrics.snapshots.labels(reason="no_checkpoint")._value.get()
    assert snapshots == 2


def test_a_redis_flush_while_streaming_never_leaves_a_partial_read_model(
    source_db: SourceDatabase, redis_url: str
) -> None:
    import redis

    seed(source_db.engine, 100)
    with worker_thread(source_db.cdc_url, redis_url):
        wait_synced(source_db.engine, redis_url)
        with redis.Redis.from_url(redis_url) as client:
            client.flushdb()
        run_workload(source_db.engine, 30, seed=8)
        wait_synced(source_db.engine, redis_url)


def test_a_deleted_documents_hash_is_rebuilt_by_a_resync_even_when_idle(
    source_db: SourceDatabase, redis_url: str
) -> None:
    import redis

    seed(source_db.engine, 60)
    with worker_thread(source_db.cdc_url, redis_url) as app:
        wait_synced(source_db.engine, redis_url)
        with redis.Redis.from_url(redis_url) as client:
            client.delete("tickets")
        wait_synced(source_db.engine, redis_url)
        assert app.metrics.snapshots.labels(reason="read_model_lost")._value.get() == 1


def test_redis_out_of_memory_pauses_the_worker_and_loses_nothing(
    source_db: SourceDatabase, own_redis: RedisServer
) -> None:
    import redis

    seed(source_db.engine, 100)
    with (
        worker_thread(source_db.cdc_url, own_redis.url) as app,
        redis.Redis.from_url(own_redis.url) as client,
    ):
        wait_synced(source_db.engine, own_redis.url)
        used = int(client.info("memory")["used_memory"])
        client.config_set("maxmemory-policy", "noeviction")
        client.config_set("maxmemory", used + 64 * 1024)
        run_workload(source_db.engine, 300, seed=12)
        deadline = time.monotonic() + 30
        while not app.metrics.reconnects.labels(reason="OutOfMemoryError")._value.get():
            assert time.monotonic() < deadline, "the worker never hit the memory limit"
            time.sleep(0.1)
        client.config_set("maxmemory", 0)
        wait_synced(source_db.engine, own_redis.url)


def test_a_second_worker_on_the_same_redis_cannot_corrupt_the_read_model(
    source_db: SourceDatabase, redis_url: str, tmp_path: Path
) -> None:
    seed(source_db.engine, 200)
    env = worker_env(source_db.cdc_url, redis_url)
    first = spawn_worker(env, tmp_path / "first.log")
    second = spawn_worker(worker_env(source_db.cdc_url, redis_url), tmp_path / "second.log")
    try:
        run_workload(source_db.engine, 1500, seed=13)
        wait_synced(source_db.engine, redis_url, timeout_s=120)
    finally:
        for worker in (first, second):
            worker.send_signal(signal.SIGTERM)
            worker.wait(30)


def test_a_redis_lost_midway_through_a_first_snapshot_is_never_swapped_in(
    source_db: SourceDatabase, redis_url: str
) -> None:
    """Found by the soak: Redis restarted empty while a first snapshot was being built; the
    builder's expected checkpoint (none) still matched, and it swapped in a model missing the
    chunks written before the restart."""
    seed(source_db.engine, 300)
    settings = load_settings(
        mysql_url=source_db.cdc_url, redis_url=redis_url, worker_http_port=0, snapshot_chunk_rows=50
    )
    app = bootstrap(settings, inspect_source(settings))
    snapshotter = app.worker.snapshotter
    write = snapshotter._write

    def write_then_lose_redis(generation: int, ops: StoreOps) -> None:
        write(generation, ops)
        if snapshotter.staged_writes == 3:
            app.redis_client.flushall()  # what a restart without persistence leaves

    snapshotter._write = write_then_lose_redis  # type: ignore[method-assign]
    try:
        with pytest.raises(FenceLost, match="no longer ours"):  # at the next chunk
            snapshotter.build(None, "test", threading.Event())
        assert app.redis_client.get(keys.CHECKPOINT) is None
        assert app.redis_client.hlen(keys.DOCUMENTS) == 0  # nothing partial became the read model
    finally:
        app.close()
    with worker_thread(source_db.cdc_url, redis_url):
        wait_synced(source_db.engine, redis_url)


def test_a_builder_whose_generation_number_was_reset_by_a_redis_restart_touches_nothing(
    source_db: SourceDatabase, own_redis: RedisServer
) -> None:
    """A Redis restart resets the generation counter: a builder from before it (a second
    worker, a stalled one) holds a number the new Redis gives out again. Its chunks, its
    swap and its clean-up must not reach the generation that now has the number."""
    seed(source_db.engine, 60)
    settings = load_settings(
        mysql_url=source_db.cdc_url, redis_url=own_redis.url, worker_http_port=0
    )
    stale = bootstrap(settings, inspect_source(settings))
    try:
        stale_generation = stale.worker.store.new_generation(0, "stale-builder")
        own_redis.kill()
        own_redis.restart()
        with worker_thread(source_db.cdc_url, own_redis.url):
            wait_synced(source_db.engine, own_redis.url)
            live = stale.worker.store.load_checkpoint()
            assert live is not None
            assert live.generation == stale_generation  # the number was given out again
            garbage = StoreOps(refs_put={"user": {1: b'["stale@example.com","Stale"]'}})
            with pytest.raises(FenceLost, match="no longer ours"):
                stale.worker.store.write_staged(stale_generation, "stale-builder", garbage)
            with pytest.raises(FenceLost, match="no longer ours"):
                stale.worker.store.swap_in(live, live, 0, "stale-builder")
            assert not stale.worker.store.owns(stale_generation, "stale-builder")
            wait_synced(source_db.engine, own_redis.url)  # hidden state included
    finally:
        stale.close()

"""The change feed's guarantee: a consumer resuming from any entry it read sees every later
document change, in order, with no gap, whatever SIGKILLs the worker took; a resume point
trimmed away is reported, never silently skipped.

The consumer is examples/feed_consumer.py, the documented recipe, unchanged.
"""

from __future__ import annotations

import importlib.util
import signal
import sys
import threading
import time
import uuid
from pathlib import Path
from types import ModuleType
from typing import Any

import orjson
import redis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from sqlalchemy import create_engine, text

from cdc_worker.api.app import create_app
from cdc_worker.devtools.loadgen import run_workload
from cdc_worker.devtools.localservers import MariaDBServer, RedisServer
from cdc_worker.devtools.seed import seed
from cdc_worker.schema.models import Base
from cdc_worker.settings import load_settings
from cdc_worker.store import keys
from tests.harness import spawn_worker, wait_streaming, wait_synced, worker_env, worker_thread
from tests.oracle import diff_documents, expected_documents

ROOT = Path(__file__).resolve().parents[2]
# Small, so the run trims: early resume points are gone by the end. Redis trims an
# approximate MAXLEN by whole nodes of the stream; small nodes make a short run trim.
FEED_MAX_LEN = 20
NODE_MAX_ENTRIES = 8
RESUME_POINTS = 25
TRANSACTIONS = 300


def load_example() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "feed_consumer", ROOT / "examples/feed_consumer.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["feed_consumer"] = module
    spec.loader.exec_module(module)
    return module


FEED = load_example()


class LiveConsumer(threading.Thread):
    """Follows the feed while the worker runs; keeps a copy of its cache after every entry."""

    def __init__(self, url: str) -> None:
        super().__init__(name="feed-consumer", daemon=True)
        self.cache = FEED.FeedCache(redis.Redis.from_url(url))
        self.stop = threading.Event()
        self.copies: list[tuple[str, dict[str, bytes]]] = []
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            while not self.stop.is_set():
                before = self.cache.last_id
                self.cache.poll(block_ms=100, count=1)  # one entry at a time: a copy each
                if self.cache.last_id != before:
                    self.copies.append((self.cache.last_id, dict(self.cache.docs)))
        except BaseException as exc:
            self.error = exc


def decoded(docs: dict[str, bytes]) -> dict[str, dict[str, Any]]:
    return {k: orjson.loads(v) for k, v in docs.items()}


def catch_up(cache: Any) -> None:
    deadline = time.monotonic() + 60
    while cache.poll(block_ms=None, count=500):
        assert time.monotonic() < deadline, "the feed never ran dry"


@settings(
    max_examples=2,
    deadline=None,
    phases=[Phase.generate],  # no shrinking: each example is a whole run of the worker
    suppress_health_check=list(HealthCheck),
)
@given(
    workload_seed=st.integers(0, 2**31),
    kill_after_s=st.lists(st.floats(1.0, 2.5), min_size=2, max_size=3),
    data=st.data(),
)
def test_a_consumer_resuming_from_any_entry_rebuilds_the_read_model_exactly(
    mariadb: MariaDBServer,
    redis_server: RedisServer,
    tmp_path_factory: Any,
    workload_seed: int,
    kill_after_s: list[float],
    data: st.DataObject,
) -> None:
    name = f"t_{uuid.uuid4().hex[:16]}"
    root_url, cdc_url = mariadb.create_database(name)
    engine = create_engine(root_url)
    with redis.Redis.from_url(redis_server.url) as client:
        client.flushall()
        client.config_set("stream-node-max-entries", NODE_MAX_ENTRIES)
    logs = tmp_path_factory.mktemp("feed")
    try:
        Base.metadata.create_all(engine)
        seed(engine, 120, seed=workload_seed)
        consumer = LiveConsumer(redis_server.url)
        consumer.start()
        env = worker_env(
            cdc_url,
            redis_server.url,
            CDC_BATCH_MAX_ROWS="20",
            CDC_CHANGES_MAX_LEN=str(FEED_MAX_LEN),
        )
        run_with_kills(engine, env, logs / "worker.log", workload_seed, kill_after_s)
        consumer.stop.set()
        consumer.join(30)
        assert consumer.error is None, consumer.error
        check_resumes(engine, redis_server.url, consumer, data)
    finally:
        with redis.Redis.from_url(redis_server.url) as client:
            client.config_set("stream-node-max-entries", 100)
        with engine.begin() as conn:
            conn.execute(text(f"DROP DATABASE `{name}`"))
        engine.dispose()


def run_with_kills(
    engine: Any, env: dict[str, str], log: Path, workload_seed: int, kill_after_s: list[float]
) -> None:
    """A workload while the worker is SIGKILLed at the drawn moments; then a final worker
    catches up and the read model is checked against SQL."""
    done = threading.Event()
    writer = threading.Thread(
        target=run_workload, args=(engine, TRANSACTIONS, workload_seed, done.is_set)
    )
    worker = spawn_worker(env, log)
    wait_streaming(env["CDC_REDIS_URL"])  # the first snapshot is in: the rest is streamed
    writer.start()
    try:
        for pause_s in kill_after_s:
            time.sleep(pause_s)
            worker.send_signal(signal.SIGKILL)
            worker.wait(10)
            worker = spawn_worker(env, log)
        writer.join(60)  # all of them, however slow the machine: the feed must trim
    finally:
        done.set()
        writer.join(60)
    try:
        wait_synced(engine, env["CDC_REDIS_URL"], timeout_s=90)
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(30)


def check_resumes(engine: Any, url: str, consumer: LiveConsumer, data: st.DataObject) -> None:
    expected = expected_documents(engine)
    catch_up(consumer.cache)
    assert diff_documents(expected, decoded(consumer.cache.docs)) == []
    client = redis.Redis.from_url(url)
    info = client.xinfo_stream(keys.CHANGES)
    first = info["first-entry"][0].decode()
    assert info["entries-added"] > info["length"], "the run should have trimmed the feed"
    copies = consumer.copies
    assert len(copies) > FEED_MAX_LEN, f"only {len(copies)} entries were read"
    held = [i for i, (e, _) in enumerate(copies) if FEED._pair(e) >= FEED._pair(first)]
    gone = [i for i, (e, _) in enumerate(copies) if FEED._pair(e) < FEED._pair(first)]
    assert held, "no resume point left in the feed"
    assert gone, "no resume point trimmed away"
    picks = [data.draw(st.sampled_from(held)) for _ in range(RESUME_POINTS)]
    picks += [data.draw(st.sampled_from(gone)) for _ in range(RESUME_POINTS // 3)]
    print(f"{len(copies)} entries read, {len(gone)} of them trimmed away by the end")
    for index in [*picks, 0, len(copies) - 1]:
        entry_id, docs = copies[index]
        resumed = FEED.FeedCache(client, docs)
        resumed.last_id = entry_id
        catch_up(resumed)
        trimmed = index in gone
        assert resumed.trimmed_reports == (1 if trimmed else 0), (entry_id, first)
        if not trimmed:  # rebuilt from the feed and HMGETs alone, but for a resync's reset
            resets = [
                f
                for _, f in client.xrange(keys.CHANGES, f"({entry_id}", "+")
                if f[b"kind"] == b"reset"
            ]
            assert resumed.reloads == len(resets)
        assert diff_documents(expected, decoded(resumed.docs)) == [], entry_id


def test_with_the_feed_off_no_entry_is_written_and_the_routes_answer_404(
    source_db: Any, redis_url: str
) -> None:
    seed(source_db.engine, 20, seed=2)
    with worker_thread(source_db.cdc_url, redis_url, changes=False):
        wait_synced(source_db.engine, redis_url)
        with source_db.engine.begin() as conn:
            conn.execute(text("UPDATE tickets SET title='no feed' WHERE id=1"))
        wait_synced(source_db.engine, redis_url)
    with redis.Redis.from_url(redis_url) as client:
        assert client.exists(keys.CHANGES) == 0
    off = load_settings(redis_url=redis_url, changes=False)
    with TestClient(create_app(off)) as api:
        for path in ("/tickets/changes", "/tickets/events", "/board?department_id=1"):
            assert api.get(path).status_code == 404, path

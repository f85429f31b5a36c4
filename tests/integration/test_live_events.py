"""Live changes over HTTP: /tickets/events (SSE) and /tickets/changes, against the real
worker, MariaDB and Redis, served by uvicorn."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
import redis
from sqlalchemy import text

from cdc_worker.devtools.seed import seed
from cdc_worker.settings import load_settings
from cdc_worker.store import keys
from cdc_worker.store.feed import decode_entry
from cdc_worker.store.jobs import enqueue, new_job
from tests.conftest import SourceDatabase
from tests.harness import wait_synced, worker_thread
from tests.live import Event, SseClient, served_api


@dataclass
class Live:
    source: SourceDatabase
    redis_url: str
    base: str

    def sql(self, statement: str, **params: object) -> None:
        with self.source.engine.begin() as conn:
            conn.execute(text(statement), params)

    def events(self, query: str = "", last_event_id: str | None = None) -> SseClient:
        headers = {"Last-Event-ID": last_event_id} if last_event_id else {}
        client = SseClient(f"{self.base}/tickets/events{query}", headers)
        assert client.status == 200
        return client

    def tickets_of(self, department_id: int) -> list[int]:
        with self.source.engine.connect() as conn:
            rows = conn.execute(
                text("SELECT id FROM tickets WHERE department_id=:d AND is_deleted=0 ORDER BY id"),
                {"d": department_id},
            )
            return [int(r[0]) for r in rows]

    def synced(self) -> None:
        wait_synced(self.source.engine, self.redis_url)


@pytest.fixture
def live(source_db: SourceDatabase, redis_url: str) -> Iterator[Live]:
    seed(source_db.engine, 80, seed=11)
    with worker_thread(source_db.cdc_url, redis_url):
        wait_synced(source_db.engine, redis_url)
        settings = load_settings(redis_url=redis_url, api_max_streams=4, api_stream_heartbeat_s=0.5)
        with served_api(settings) as base:
            yield Live(source_db, redis_url, base)


def is_ticket(ticket_id: int, op: str = "upsert") -> object:
    return lambda e: e.data is not None and e.data["ticket_id"] == ticket_id and e.name == op


def test_a_reconnect_with_last_event_id_gets_exactly_the_missed_events(live: Live) -> None:
    first, second, gone = live.tickets_of(1)[:3]
    stream = live.events()
    live.sql("UPDATE tickets SET title='before the drop' WHERE id=:i", i=first)
    seen = stream.next(is_ticket(first))
    assert seen.data is not None
    assert seen.data["document"]["title"] == "before the drop"
    stream.close()
    resume_at = seen.id
    assert resume_at is not None

    live.sql("UPDATE tickets SET title='missed one' WHERE id=:i", i=second)
    live.sql("DELETE FROM tickets WHERE id=:i", i=gone)
    live.sql("UPDATE tickets SET title='missed two' WHERE id=:i", i=second)
    live.synced()
    with redis.Redis.from_url(live.redis_url) as client:
        entries = [decode_entry(i, f) for i, f in client.xrange(keys.CHANGES, f"({resume_at}")]
    expected = [
        ("delete" if t in e.deleted else "upsert", t)
        for e in entries
        for t in sorted({*e.upserted, *e.deleted})
    ]
    assert set(expected) == {("upsert", second), ("delete", gone)}

    resumed = live.events(last_event_id=resume_at)
    got = resumed.drain(quiet_s=1.5)
    resumed.close()
    assert [(e.name, e.data["ticket_id"]) for e in got if e.data] == expected
    assert got[-1].id == entries[-1].entry_id
    titles = [e.data["document"]["title"] for e in got if e.data and e.name == "upsert"]
    assert titles[-1] == "missed two"  # the document as read when sent


def test_the_department_filter_sends_remove_when_a_ticket_leaves(live: Live) -> None:
    leaving, staying = live.tickets_of(1)[:2]
    elsewhere = live.tickets_of(2)[0]
    stream = live.events("?department_id=1")
    live.sql("UPDATE tickets SET title='not on this board' WHERE id=:i", i=elsewhere)
    live.sql("UPDATE tickets SET department_id=2 WHERE id=:i", i=leaving)
    live.sql("UPDATE tickets SET title='still here' WHERE id=:i", i=staying)
    live.sql("UPDATE tickets SET department_id=1 WHERE id=:i", i=elsewhere)
    got: list[Event] = []
    while not any(is_moved_in(e, elsewhere) for e in got):
        got.append(stream.next(lambda e: not e.comment))
    stream.close()
    # Documents are read when sent: an upsert may already show a later state, never an
    # event for a ticket outside the board.
    assert {(e.name, e.data["ticket_id"]) for e in got if e.data} == {
        ("remove", leaving),
        ("upsert", staying),
        ("upsert", elsewhere),  # moved in: it appears
    }
    upserts = [e.data["document"] for e in got if e.data and e.name == "upsert"]
    assert all(doc["department_id"] == 1 for doc in upserts)
    removed = next(e for e in got if e.name == "remove")
    assert removed.data is not None
    assert removed.data["document"] is None


def is_moved_in(event: Event, ticket_id: int) -> bool:
    data = event.data or {}
    return event.name == "upsert" and data["ticket_id"] == ticket_id


def test_a_full_resync_sends_reset(live: Live) -> None:
    stream = live.events("?department_id=1")
    with redis.Redis.from_url(live.redis_url) as client:
        enqueue(client, new_job("full"))
    reset = stream.next(lambda e: e.name == "reset", timeout_s=60)
    stream.close()
    assert reset.id is not None


def test_idle_streams_get_heartbeats_and_the_stream_count_is_capped(live: Live) -> None:
    assert scraped(live, "cdc_api_event_streams_max") == 4
    assert scraped(live, "cdc_api_event_streams") == 0
    streams = [live.events() for _ in range(4)]
    assert streams[0].next(lambda e: e.comment).comment  # ": keep-alive" within 0.5 s
    assert scraped(live, "cdc_api_event_streams") == 4
    refused = httpx.get(f"{live.base}/tickets/events", timeout=5)
    assert refused.status_code == 503
    streams.pop().close()
    deadline = time.monotonic() + 10
    while True:  # a closed stream frees its place once the server sees it gone
        again = SseClient(f"{live.base}/tickets/events")
        if again.status == 200 or time.monotonic() > deadline:
            break
        again.close()
        time.sleep(0.1)
    assert again.status == 200
    for stream in [*streams, again]:
        stream.close()
    deadline = time.monotonic() + 10
    while scraped(live, "cdc_api_event_streams") != 0:  # once the server sees them gone
        assert time.monotonic() < deadline, "closed streams still counted as open"
        time.sleep(0.1)


def scraped(live: Live, name: str) -> float:
    """One unlabelled metric from the API's /metrics."""
    for line in httpx.get(f"{live.base}/metrics", timeout=5).text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in /metrics")


def test_polling_pages_follow_the_feed_and_a_trimmed_point_answers_410(live: Live) -> None:
    ticket = live.tickets_of(3)[0]
    with redis.Redis.from_url(live.redis_url) as client:
        start = client.xrevrange(keys.CHANGES, count=1)[0][0].decode()
    live.sql("UPDATE tickets SET department_id=4 WHERE id=:i", i=ticket)
    live.synced()
    page = httpx.get(
        f"{live.base}/tickets/changes", params={"after": start, "department_id": 3}
    ).json()
    assert [(c["op"], c["ticket_id"]) for c in page["changes"]] == [("remove", ticket)]
    with redis.Redis.from_url(live.redis_url) as client:
        client.xtrim(keys.CHANGES, maxlen=1, approximate=False)
    gone = httpx.get(f"{live.base}/tickets/changes", params={"after": "0-1"})
    assert gone.status_code == 410
    assert gone.json()["last_id"] == page["last_id"]
    for bad in ("x", "1-99999999999999999999"):  # the second overflows a stream id
        answer = httpx.get(f"{live.base}/tickets/changes", params={"after": bad})
        assert answer.status_code == 422
        assert answer.json()["detail"][0]["loc"] == ["query", "after"]

"""The read API against the hostile requests of a security review (issue 20), on real Redis
filled by the real worker from real MariaDB. Each test failed before its fix (seen)."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest
import redis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import text

from cdc_worker.api.app import create_app
from cdc_worker.devtools.seed import seed
from cdc_worker.settings import load_settings
from cdc_worker.store import keys
from tests.conftest import SourceDatabase
from tests.harness import read_model, wait_synced, worker_thread

TOKEN = "a-token-of-24-characters"
# Ids BIGINT allows, many closer together than a double can tell apart (2^53 and up).
BIG_IDS = [
    *(10**14 + k for k in (0, 1, 2, 3, 5)),
    2**53 - 1,
    2**53,
    2**53 + 1,
    2**53 + 2,
    120_000_000_000_000_000,
    120_000_000_000_000_001,
    2**63 - 2,
    2**63 - 1,
]
BIG_DESCRIPTION_BYTES = 40_000


def add_ticket_copies(source: SourceDatabase, ids: list[int], description: str | None) -> None:
    """Tickets with these ids, copies of ticket 1 (same status, department, tags)."""
    with source.engine.begin() as conn:
        for ticket_id in ids:
            conn.execute(
                text(
                    "INSERT INTO tickets (id, title, description, priority, status_id, "
                    "department_id, requester_id, assignee_id, created_at, updated_at) "
                    "SELECT :id, title, COALESCE(:d, description), priority, status_id, "
                    "department_id, requester_id, assignee_id, created_at, updated_at "
                    "FROM tickets WHERE id = 1"
                ),
                {"id": ticket_id, "d": description},
            )
            conn.execute(
                text(
                    "INSERT INTO ticket_tags (ticket_id, tag_id) "
                    "SELECT :id, tag_id FROM ticket_tags WHERE ticket_id = 1"
                ),
                {"id": ticket_id},
            )


Served = tuple[TestClient, SourceDatabase, str]


@pytest.fixture
def served(source_db: SourceDatabase, redis_url: str) -> Iterator[Served]:
    seed(source_db.engine, 120, seed=7)
    add_ticket_copies(source_db, BIG_IDS, None)
    add_ticket_copies(source_db, [5_000, 5_001], "x" * BIG_DESCRIPTION_BYTES)
    with worker_thread(source_db.cdc_url, redis_url):
        wait_synced(source_db.engine, redis_url)
        settings = load_settings(
            redis_url=redis_url,
            admin_token=TOKEN,
            api_max_response_bytes=65_536,
            api_list_scan_budget=40,
        )
        with TestClient(create_app(settings)) as client:
            yield client, source_db, redis_url


def documents(redis_url: str) -> dict[str, dict[str, Any]]:
    with redis.Redis.from_url(redis_url) as r:
        return read_model(r)


def page_all(client: TestClient, limit: int, **params: Any) -> list[int]:
    """Every page's ids; the cursor must advance at every page."""
    seen: list[int] = []
    cursors: list[str] = []
    for _ in range(10_000):
        query = {**params, "limit": limit, **({"cursor": cursors[-1]} if cursors else {})}
        response = client.get("/tickets", params=query)
        assert response.status_code == 200, response.text
        body = response.json()
        seen += [doc["id"] for doc in body["tickets"]]
        if body["next_cursor"] is None:
            return seen
        assert body["next_cursor"] not in cursors, "the cursor did not advance"
        cursors.append(body["next_cursor"])
    raise AssertionError("paging did not end")


def test_big_ids_list_exactly_once_in_order_with_and_without_filters(served: Served) -> None:
    client, _, redis_url = served
    docs = documents(redis_url)
    assert {str(i) for i in BIG_IDS} <= set(docs)
    model = docs["1"]
    every = sorted(int(i) for i in docs)
    same_status = sorted(d["id"] for d in docs.values() if d["status_id"] == model["status_id"])
    assert page_all(client, 2) == every
    assert page_all(client, 2, status_id=model["status_id"]) == same_status
    if model["tags"]:
        tagged = sorted(d["id"] for d in docs.values() if model["tags"][0] in d["tags"])
        both = {"status_id": model["status_id"], "tag": model["tags"][0]}
        assert page_all(client, 3, **both) == sorted(set(tagged) & set(same_status))
    for ticket_id in BIG_IDS[-4:]:
        assert client.get(f"/tickets/{ticket_id}").json()["id"] == ticket_id


@pytest.mark.parametrize(
    "path", ["1_000", "+1", "1.0", "%201", "1%20", "-1", "0x1", "\uff11", "1e3", str(2**63)]
)
def test_an_id_is_ascii_digits_only_everywhere(served: Served, path: str) -> None:
    client, _, _ = served
    response = client.get(f"/tickets/{path}")
    assert response.status_code == 422, response.text
    assert isinstance(response.json()["detail"], list)
    query = path.replace("%20", " ")
    for params in ({"ids": query}, {"ids": f"1,{query}"}, {"status_id": query}, {"limit": query}):
        assert client.get("/tickets", params=params).status_code == 422, params


def test_a_repeated_parameter_is_refused_not_last_wins(served: Served) -> None:
    client, _, _ = served
    for query in ("status_id=1&status_id=2", "ids=1&ids=2", "limit=1&limit=2", "tag=a&tag=a"):
        response = client.get(f"/tickets?{query}")
        assert response.status_code == 422, query
        assert "more than once" in response.json()["detail"][0]["msg"]


def test_email_and_tag_filters_ignore_case_and_accents_as_the_collation_does(
    served: Served,
) -> None:
    client, source, redis_url = served
    docs = documents(redis_url)
    sample = next(d for d in docs.values() if d["tags"])
    mine = sorted(
        d["id"] for d in docs.values() if d["requester_email"] == sample["requester_email"]
    )
    shouted = sample["requester_email"].upper()
    assert page_all(client, 50, requester_email=shouted) == mine
    tagged = sorted(d["id"] for d in docs.values() if sample["tags"][0] in d["tags"])
    assert page_all(client, 50, tag=sample["tags"][0].upper() + "  ") == tagged
    with source.engine.begin() as conn:  # the rename keeps the lookup in step
        conn.execute(
            text("UPDATE users SET email = :e WHERE id = :i"),
            {"e": "Ünïcode.Person@Example.COM", "i": sample["requester_id"]},
        )
    wait_synced(source.engine, redis_url)
    assert page_all(client, 50, requester_email="unicode.person@example.com") == mine
    assert page_all(client, 50, requester_email=sample["requester_email"]) == []


def test_a_lost_read_model_is_a_503_while_rebuilt_not_a_404(served: Served) -> None:
    client, _, redis_url = served
    assert client.get("/tickets/999999").status_code == 404
    with redis.Redis.from_url(redis_url) as r:
        # What a rebuild looks like from the API: the documents hash gone while the live
        # generation still indexes tickets, then no checkpoint at all.
        r.rename(keys.DOCUMENTS, "saved")
        assert client.get("/tickets/1").status_code == 503
        r.rename("saved", keys.DOCUMENTS)
        saved = r.get(keys.CHECKPOINT)
        assert saved is not None
        r.delete(keys.CHECKPOINT)
        r.hdel(keys.DOCUMENTS, "1")
        try:
            assert client.get("/tickets/1").status_code == 503
            assert client.get("/tickets", params={"ids": "1,2"}).status_code == 503
            assert client.get("/tickets").status_code == 503
        finally:
            r.set(keys.CHECKPOINT, saved)


def test_an_old_index_format_is_not_listed(served: Served) -> None:
    client, _, redis_url = served
    with redis.Redis.from_url(redis_url) as r:
        checkpoint = r.get(keys.CHECKPOINT)
        assert checkpoint is not None
        generation = int(orjson.loads(checkpoint)["generation"])
        r.delete(keys.index_format(generation))  # as an older version left it
        response = client.get("/tickets")
        assert response.status_code == 503
        assert "older format" in response.json()["detail"]


def test_ids_are_deduplicated_and_a_response_is_bounded_in_bytes(served: Served) -> None:
    client, _, _ = served
    once = client.get("/tickets", params={"ids": ",".join(["5000"] * 50)})
    assert once.status_code == 200
    assert [d["id"] for d in once.json()["tickets"]] == [5000]
    assert len(once.content) < 2 * BIG_DESCRIPTION_BYTES
    too_big = client.get("/tickets", params={"ids": "5000,5001"})  # 80 KB > 64 KB
    assert too_big.status_code == 413
    assert "fewer ids" in too_big.json()["detail"]
    # A listing pages instead: one 40 KB document a page, and every ticket still comes.
    first = client.get("/tickets", params={"limit": 200, "cursor": _cursor_before(5000)})
    assert [d["id"] for d in first.json()["tickets"]] == [5000]
    assert first.json()["next_cursor"] is not None


def _cursor_before(ticket_id: int) -> str:
    from cdc_worker.api.queries import encode_cursor

    return encode_cursor(ticket_id - 1)


def test_one_listing_call_visits_at_most_the_scan_budget(served: Served) -> None:
    client, _, redis_url = served
    docs = documents(redis_url)
    assert len(docs) > 100
    with redis.Redis.from_url(redis_url) as r:
        r.config_resetstat()
        body = client.get("/tickets", params={"limit": 200}).json()
        stats = r.info("commandstats")
    assert stats["cmdstat_hstrlen"]["calls"] <= 40  # one per index entry visited and kept
    assert len(body["tickets"]) <= 40  # the budget, well under the limit
    assert body["next_cursor"] is not None  # so the page ended early, with a cursor
    status = docs["1"]["status_id"]
    unassigned = {"assignee_id": 0, "status_id": status}
    expected = sorted(
        d["id"] for d in docs.values() if d["assignee_id"] is None and d["status_id"] == status
    )
    assert page_all(client, 200, **unassigned) == expected


def test_admin_checks_the_token_before_the_body_and_wants_an_explicit_request(
    served: Served,
) -> None:
    client, _, _ = served
    url = "/admin/resync"
    assert client.post(url, content=b"{not json").status_code == 401
    assert client.post(url, content=b"x" * 100_000).status_code == 401
    auth = {"Authorization": f"bearer {TOKEN}"}  # any case of the scheme
    assert client.post(url, content=b"x" * 100_000, headers=auth).status_code == 413
    assert client.post(url, json={"tickets": [5]}, headers=auth).status_code == 202
    for refused in (
        {},
        {"ticket": [5]},
        {"departments": 3},
        {"tickets": []},
        {"tickets": ["5"]},
        {"full": False},
        {"tickets": [5], "department": 1},
        {"full": True, "extra": 1},
    ):
        response = client.post(url, json=refused, headers=auth)
        assert response.status_code == 422, refused
        assert isinstance(response.json()["detail"], list)
    accepted = client.post(url, json={"full": True}, headers={"Authorization": f"BEARER {TOKEN}"})
    assert accepted.status_code == 202
    assert accepted.json()["kind"] == "full"
    assert client.post(url, json={"department": 1}, headers=auth).json()["kind"] == "department"


def test_the_openapi_422_is_the_list_the_api_returns_and_limits_follow_settings(
    source_db: SourceDatabase, redis_url: str
) -> None:
    seed(source_db.engine, 20, seed=2)
    with worker_thread(source_db.cdc_url, redis_url):
        wait_synced(source_db.engine, redis_url)
    settings = load_settings(redis_url=redis_url, api_max_ids=1000)
    with TestClient(create_app(settings)) as client:
        schema = client.get("/openapi.json").json()
        for path in ("/tickets", "/tickets/{ticket_id}"):
            invalid = schema["paths"][path]["get"]["responses"]["422"]
            ref = invalid["content"]["application/json"]["schema"]["$ref"]
            assert ref.endswith("/HTTPValidationError")
        assert "413" in schema["paths"]["/tickets"]["get"]["responses"]
        ids = ",".join(str(i) for i in range(1, 1001))
        response = client.get("/tickets", params={"ids": ids})
        assert response.status_code == 200, response.text[:300]
        assert len(response.json()["tickets"]) + len(response.json()["missing"]) == 1000
        combined = client.get("/tickets", params={"ids": "1", "status_id": "1"})
        assert combined.status_code == 422
        assert combined.json()["detail"][0]["loc"] == ["query", "ids"]


def test_a_busy_pool_queues_requests_and_readiness_never_says_unreachable(
    source_db: SourceDatabase, redis_url: str
) -> None:
    seed(source_db.engine, 20, seed=4)
    with worker_thread(source_db.cdc_url, redis_url):
        wait_synced(source_db.engine, redis_url)
        app = create_app(load_settings(redis_url=redis_url))
        statuses = asyncio.run(_concurrent_batches(app, 200))
        assert statuses == {200: 200}
        tight = load_settings(redis_url=redis_url, api_redis_pool_size=1, api_redis_pool_wait_s=1)
        assert asyncio.run(_readiness_while_the_pool_is_held(create_app(tight))) == (
            True,
            200,
            "not unreachable",
            503,
        )


async def _concurrent_batches(app: FastAPI, count: int) -> dict[int, int]:
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
            responses = await asyncio.gather(
                *(client.get("/tickets", params={"ids": "1,2,3"}) for _ in range(count))
            )
    counts: dict[int, int] = {}
    for response in responses:
        counts[response.status_code] = counts.get(response.status_code, 0) + 1
    return counts


async def _readiness_while_the_pool_is_held(app: FastAPI) -> tuple[bool, int, str, int]:
    """Hold the pool's only connection: /board (which reads the pool; ticket reads go on the
    pipelined connection) waits for it, /readyz is not "unreachable", and a request that
    outwaits CDC_API_REDIS_POOL_WAIT_S gets a 503 rather than hanging."""
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
            pool = app.state.redis.connection_pool
            held = await pool.get_connection()
            ready = await client.get("/readyz")
            board = asyncio.ensure_future(client.get("/board", params={"department_id": 1}))
            await asyncio.sleep(0.2)
            waiting = not board.done()
            await pool.release(held)
            board_status = (await board).status_code
            reasons = " ".join(ready.json()["reasons"])
            verdict = "unreachable" if "unreachable" in reasons else "not unreachable"
            held = await pool.get_connection()
            try:
                outwaited = await client.get("/board", params={"department_id": 1})
            finally:
                await pool.release(held)
    return waiting, board_status, verdict, outwaited.status_code


def test_random_ids_near_the_top_of_bigint_page_exactly(
    source_db: SourceDatabase, redis_url: str
) -> None:
    seed(source_db.engine, 10, seed=9)
    rng = random.Random(20)
    top = sorted({2**63 - 1 - rng.randrange(2**12) for _ in range(40)})
    add_ticket_copies(source_db, top, None)
    with worker_thread(source_db.cdc_url, redis_url):
        wait_synced(source_db.engine, redis_url)
        with TestClient(create_app(load_settings(redis_url=redis_url))) as client:
            listed = page_all(client, 3)
    assert listed[-len(top) :] == top
    assert len(listed) == len(set(listed))


def test_the_worker_rebuilds_a_read_model_left_in_the_old_index_format(
    source_db: SourceDatabase, redis_url: str
) -> None:
    seed(source_db.engine, 20, seed=6)
    with worker_thread(source_db.cdc_url, redis_url):
        wait_synced(source_db.engine, redis_url)
    with redis.Redis.from_url(redis_url) as r:  # as an older version wrote it: score = id
        generation = int(orjson.loads(r.get(keys.CHECKPOINT) or b"{}")["generation"])
        for name in r.scan_iter(match=keys.generation_prefix(generation) + "idx:*"):
            members = r.zrange(name, 0, -1)
            r.delete(name)
            r.zadd(name, {str(int(m)): int(m) for m in members})
        r.delete(keys.index_format(generation))
        with TestClient(create_app(load_settings(redis_url=redis_url))) as client:
            assert client.get("/tickets").status_code == 503  # refused, not misread
            with worker_thread(source_db.cdc_url, redis_url) as app:
                deadline = time.monotonic() + 60
                while orjson.loads(r.get(keys.CHECKPOINT) or b"{}").get("generation") == generation:
                    assert time.monotonic() < deadline, "no rebuild"
                    time.sleep(0.05)
                wait_synced(source_db.engine, redis_url)
                rebuilt = app.metrics.snapshots.labels(reason="index_format")._value.get()
                assert rebuilt == 1
                assert page_all(client, 7) == sorted(int(i) for i in documents(redis_url))

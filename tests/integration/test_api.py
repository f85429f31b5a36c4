"""The read API against real Redis filled by the real worker from real MariaDB."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient
from sqlalchemy import text

from cdc_worker.api.app import create_app
from cdc_worker.devtools.seed import seed
from cdc_worker.settings import load_settings
from tests.conftest import SourceDatabase
from tests.harness import read_model, wait_synced, worker_thread

Docs = dict[str, dict[str, Any]]


@pytest.fixture
def served(
    source_db: SourceDatabase, redis_url: str
) -> Iterator[tuple[TestClient, SourceDatabase, str]]:
    seed(source_db.engine, 400, seed=3)
    with worker_thread(source_db.cdc_url, redis_url):
        wait_synced(source_db.engine, redis_url)
        settings = load_settings(redis_url=redis_url, api_max_ids=50, api_max_limit=100)
        with TestClient(create_app(settings)) as client:
            yield client, source_db, redis_url


def documents(redis_url: str) -> Docs:
    with redis.Redis.from_url(redis_url) as r:
        return read_model(r)


def page_all(client: TestClient, limit: int = 7, **params: Any) -> list[dict[str, Any]]:
    seen, cursor = [], None
    while True:
        query = {**params, "limit": limit, **({"cursor": cursor} if cursor else {})}
        response = client.get("/tickets", params=query)
        assert response.status_code == 200, response.text
        body = response.json()
        seen += body["tickets"]
        cursor = body["next_cursor"]
        if cursor is None:
            return seen


def test_one_ticket_is_served_byte_for_byte_as_stored(served: Any) -> None:
    client, _, redis_url = served
    with redis.Redis.from_url(redis_url) as r:
        ticket_id, raw = next(iter(r.hgetall("tickets").items()))
    response = client.get(f"/tickets/{ticket_id.decode()}")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.content == raw


@pytest.mark.parametrize("bad", ["abc", "0", "-1", "1.5", str(2**63), "9" * 40])
def test_a_malformed_id_is_a_422(served: Any, bad: str) -> None:
    client, _, _ = served
    assert client.get(f"/tickets/{bad}").status_code == 422


def test_an_absent_ticket_is_a_404_with_a_clear_body(served: Any) -> None:
    client, _, _ = served
    response = client.get("/tickets/999999")
    assert response.status_code == 404
    assert response.json() == {"detail": "ticket 999999 not found"}


def test_a_batch_comes_back_in_the_order_asked_with_missing_ids_reported(served: Any) -> None:
    client, _, redis_url = served
    ids = sorted(int(i) for i in documents(redis_url))[:3]
    asked = [ids[2], 999999, ids[0], ids[1]]
    response = client.get("/tickets", params={"ids": ",".join(map(str, asked))})
    assert response.status_code == 200
    body = response.json()
    assert [doc["id"] for doc in body["tickets"]] == [ids[2], ids[0], ids[1]]
    assert body["missing"] == [999999]


@pytest.mark.parametrize(
    "params",
    [
        {"ids": ",".join(str(i) for i in range(1, 52))},
        {"ids": "1,x"},
        {"ids": ""},
        {"ids": "1", "status_id": "1"},
        {"limit": "0"},
        {"limit": "101"},
        {"cursor": "not-a-cursor"},
        {"cursor": "djE6dGlja2V0LXN5bmM6Y2hlY2twb2ludA"},  # base64 of v1:ticket-sync:checkpoint
    ],
)
def test_malformed_listings_are_a_422(served: Any, params: dict[str, str]) -> None:
    client, _, _ = served
    response = client.get("/tickets", params=params)
    assert response.status_code == 422
    assert "detail" in response.json()


def expected_ids(docs: Docs, **filters: Any) -> list[int]:
    def keep(doc: dict[str, Any]) -> bool:
        return all(
            (doc["assignee_id"] or 0) == value
            if name == "assignee_id"
            else value in doc["tags"]
            if name == "tag"
            else doc[name] == value
            for name, value in filters.items()
        )

    return sorted(doc["id"] for doc in docs.values() if keep(doc))


def test_every_filter_and_their_combinations_match_the_documents(served: Any) -> None:
    client, _, redis_url = served
    docs = documents(redis_url)
    sample = next(d for d in docs.values() if d["tags"] and d["assignee_id"])
    cases = [
        {},
        {"status_id": sample["status_id"]},
        {"department_id": sample["department_id"]},
        {"requester_email": sample["requester_email"]},
        {"assignee_id": sample["assignee_id"]},
        {"assignee_id": 0},
        {"tag": sample["tags"][0]},
        {"status_id": sample["status_id"], "department_id": sample["department_id"]},
        {
            "department_id": sample["department_id"],
            "tag": sample["tags"][0],
            "assignee_id": sample["assignee_id"],
        },
        {"requester_email": "nobody@example.com"},
        {"tag": "no-such-tag"},
    ]
    for case in cases:
        got = [doc["id"] for doc in page_all(client, **case)]
        assert got == expected_ids(docs, **case), case


def test_email_to_department_to_attachments_takes_two_calls(served: Any) -> None:
    client, _, redis_url = served
    docs = documents(redis_url)
    email = next(d["requester_email"] for d in docs.values() if d["attachment_count"])
    mine = client.get("/tickets", params={"requester_email": email}).json()["tickets"]
    department = mine[0]["department_id"]
    theirs = page_all(client, limit=100, department_id=department)
    assert all("attachments" in doc for doc in theirs)
    assert [d["id"] for d in theirs] == expected_ids(docs, department_id=department)


def churn_every_third_ticket(source: SourceDatabase, stop: threading.Event) -> None:
    """Soft-delete, restore and move tickets whose id is a multiple of 3; add new ones."""
    with source.engine.connect() as conn:
        while not stop.is_set():
            conn.execute(text("UPDATE tickets SET is_deleted = 1 - is_deleted WHERE id % 3 = 0"))
            conn.execute(text("UPDATE tickets SET status_id = 1 + status_id % 3 WHERE id % 3 = 0"))
            conn.execute(
                text(
                    "INSERT INTO tickets (title, status_id, department_id, requester_id, "
                    "created_at, updated_at) SELECT 'new', status_id, department_id, "
                    "requester_id, created_at, updated_at FROM tickets ORDER BY id LIMIT 3"
                )
            )
            conn.commit()
            time.sleep(0.005)


def test_paging_while_writes_happen_has_no_duplicates_or_gaps_for_unchanged_tickets(
    served: Any,
) -> None:
    client, source, redis_url = served
    unchanged = {int(i) for i in documents(redis_url) if int(i) % 3 != 0}
    stop = threading.Event()
    writer = threading.Thread(target=churn_every_third_ticket, args=(source, stop))
    writer.start()
    try:
        ids = [doc["id"] for doc in page_all(client, limit=10)]
    finally:
        stop.set()
        writer.join(60)
    assert len(ids) == len(set(ids)), "a ticket was listed twice"
    assert unchanged - set(ids) == set(), "an unchanged ticket was skipped"
    assert ids == sorted(ids)
    wait_synced(source.engine, redis_url)


def test_the_openapi_schema_documents_models_limits_and_examples(served: Any) -> None:
    client, _, _ = served
    schema = client.get("/openapi.json").json()
    assert {"TicketDocument", "TicketBatch", "TicketPage"} <= set(schema["components"]["schemas"])
    params = {p["name"]: p for p in schema["paths"]["/tickets"]["get"]["parameters"]}
    assert params["limit"]["schema"]["maximum"] == 100
    assert "example" in schema["components"]["schemas"]["TicketDocument"]

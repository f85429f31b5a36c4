"""The oracle computes, from the source tables alone, the exact read-model documents."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
import redis
from sqlalchemy import Connection, text

from cdc_worker.checkpoint import Checkpoint
from cdc_worker.devtools.seed import seed
from cdc_worker.schema.models import Base
from cdc_worker.store import keys
from cdc_worker.store.index_encoding import index_member
from tests import factories as f
from tests.conftest import SourceDatabase
from tests.harness import wait_synced, worker_thread
from tests.hidden_state import diff_hidden_state, expected_hidden_state, stored_hidden_state
from tests.oracle import diff_documents, expected_documents

T0 = f.T0  # 2026-11-22 09:05:03.000120
T0_ISO = "2026-11-22T09:05:03.000120Z"
HOUR = dt.timedelta(hours=1)


def _insert(conn: Connection, table: str, *rows: dict[str, Any]) -> None:
    conn.execute(Base.metadata.tables[table].insert(), list(rows))


def _insert_references(conn: Connection) -> None:
    _insert(conn, "departments", f.department(1, "Support"), f.department(2, "Billing"))
    _insert(conn, "ticket_statuses", f.status(1, "open"), f.status(2, "resolved", is_closed=1))
    _insert(
        conn,
        "users",
        f.user(1, "ann@example.com", full_name="Ann Ärger"),
        f.user(2, "bob@example.com", full_name="Bob Agent", department_id=1),
    )
    _insert(conn, "tags", f.tag(1, "zeta"), f.tag(2, "alpha"), f.tag(3, "Mid"))


def _insert_tickets(conn: Connection) -> None:
    _insert(
        conn,
        "tickets",
        f.ticket(10, title="Printer on fire 🔥", description="Smoke.", status_id=2,
                 priority="urgent", department_id=2, assignee_id=2, updated_at=T0 + 3 * HOUR),
        f.ticket(11),
        f.ticket(12, is_deleted=1),
    )  # fmt: skip
    _insert(conn, "ticket_tags", f.ticket_tag(10, 1), f.ticket_tag(10, 2), f.ticket_tag(10, 3))
    _insert(conn, "attachments", f.attachment(7, 10), f.attachment(3, 10, filename="a.pdf"))
    _insert(conn, "attachments", f.attachment(8, 12))
    _insert(conn, "comments", f.comment(201, 10, T0 + 2 * HOUR), f.comment(200, 10, T0 + HOUR))
    _insert(conn, "comments", f.comment(202, 12, T0 + 5 * HOUR))


def _insert_orphan_ticket(conn: Connection) -> None:
    """Ticket 13 points at a status, department and users that do not exist."""
    conn.execute(text("SET SESSION foreign_key_checks = 0"))
    orphan = f.ticket(13, status_id=99, department_id=98, requester_id=97, assignee_id=96)
    _insert(conn, "tickets", orphan)
    conn.execute(text("SET SESSION foreign_key_checks = 1"))


@pytest.fixture
def documents(source_db: SourceDatabase) -> dict[str, dict[str, object]]:
    with source_db.engine.begin() as conn:
        _insert_references(conn)
        _insert_tickets(conn)
        _insert_orphan_ticket(conn)
    return expected_documents(source_db.engine)


def test_documents_are_keyed_by_the_decimal_ids_of_tickets_not_soft_deleted(
    documents: dict[str, dict[str, object]],
) -> None:
    assert sorted(documents) == ["10", "11", "13"]


def test_a_full_ticket_gets_every_field_exactly(documents: dict[str, dict[str, object]]) -> None:
    assert documents["10"] == {
        "id": 10,
        "title": "Printer on fire 🔥",
        "description": "Smoke.",
        "priority": "urgent",
        "status_id": 2,
        "status_name": "resolved",
        "is_closed": True,
        "department_id": 2,
        "department_name": "Billing",
        "requester_id": 1,
        "requester_email": "ann@example.com",
        "requester_name": "Ann Ärger",
        "assignee_id": 2,
        "assignee_email": "bob@example.com",
        "assignee_name": "Bob Agent",
        "tags": ["Mid", "alpha", "zeta"],  # Python's sort, not the collation's
        "attachments": [
            {"id": 3, "filename": "a.pdf", "content_type": "image/png", "size_bytes": 300},
            {"id": 7, "filename": "file7.png", "content_type": "image/png", "size_bytes": 700},
        ],
        "attachment_count": 2,
        "comment_count": 2,
        "last_comment_at": "2026-11-22T11:05:03.000120Z",
        "created_at": T0_ISO,
        "updated_at": "2026-11-22T12:05:03.000120Z",
    }


def _pick(document: dict[str, object], like: dict[str, object]) -> dict[str, object]:
    return {name: document[name] for name in like}


def test_an_unassigned_ticket_without_children_has_empty_fields(
    documents: dict[str, dict[str, object]],
) -> None:
    empty: dict[str, object] = {
        "assignee_id": None,
        "assignee_email": None,
        "assignee_name": None,
        "description": None,
        "tags": [],
        "attachments": [],
        "attachment_count": 0,
        "comment_count": 0,
        "last_comment_at": None,
    }

    assert _pick(documents["11"], empty) == empty


def test_a_ticket_whose_parents_are_missing_still_appears_without_their_names(
    documents: dict[str, dict[str, object]],
) -> None:
    orphaned: dict[str, object] = {
        "status_id": 99,
        "status_name": None,
        "is_closed": False,
        "department_id": 98,
        "department_name": None,
        "requester_id": 97,
        "requester_email": None,
        "requester_name": None,
        "assignee_id": 96,
        "assignee_email": None,
        "assignee_name": None,
    }

    assert _pick(documents["13"], orphaned) == orphaned


def _document(**fields: object) -> dict[str, object]:
    return {"id": 1, "title": "t", "is_closed": False, "tags": [], **fields}


def test_identical_documents_have_no_differences() -> None:
    assert diff_documents({"1": _document()}, {"1": _document()}) == []


def test_differences_name_missing_extra_and_differing_fields() -> None:
    expected = {"1": _document(), "2": _document(id=2), "10": _document(id=10)}
    actual = {"1": _document(is_closed=0, tags=["x"]), "10": _document(id=10), "3": _document()}
    del actual["10"]["title"]

    assert diff_documents(expected, actual) == [
        "missing ticket 2",
        "extra ticket 3",
        "ticket 1: is_closed expected False, got 0",
        "ticket 1: tags expected [], got ['x']",
        "ticket 10: field 'title' missing (expected 't')",
    ]


def test_differences_are_capped_at_fifty_lines() -> None:
    expected = {str(i): _document(id=i) for i in range(1, 201)}

    lines = diff_documents(expected, {})

    assert len(lines) == 51
    assert lines[-1] == "... and 150 more differences"


def test_the_hidden_state_oracle_notices_what_no_document_shows_yet(
    source_db: SourceDatabase, redis_url: str
) -> None:
    """A wrong reference, a wrong state, a stale index entry, a missing link: each is latent
    (no document shows it until a later change) and each is reported."""
    seed(source_db.engine, 30)
    with worker_thread(source_db.cdc_url, redis_url):
        wait_synced(source_db.engine, redis_url)
    with redis.Redis.from_url(redis_url) as client:
        assert (
            diff_hidden_state(expected_hidden_state(source_db.engine), stored_hidden_state(client))
            == []
        )
        g = Checkpoint.decode(client.get(keys.CHECKPOINT)).generation  # type: ignore[arg-type]
        client.hset(keys.refs(g, "user"), "1", b'["someone@else","Someone"]')
        client.hdel(keys.states(g), "2")
        client.zadd(keys.index(g, "status", 999), {index_member(3): 0})
        client.srem(keys.link(g, "tag", 1), *client.smembers(keys.link(g, "tag", 1)))
        found = diff_hidden_state(
            expected_hidden_state(source_db.engine), stored_hidden_state(client)
        )
    text_ = "\n".join(found)
    assert "user 1: expected" in text_
    assert "state of ticket 2:" in text_
    assert "idx:status:999: missing tickets [], extra tickets [3]" in text_
    assert "link:tag:1: missing tickets" in text_

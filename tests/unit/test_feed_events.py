"""What one feed entry means for a view: the events /tickets/events and /tickets/changes send."""

from __future__ import annotations

import orjson

from cdc_worker.api.feed import View, events_of, sse_block
from cdc_worker.api.feed_hub import Document, Item, reset_item
from cdc_worker.store.feed import FeedEntry


def doc(ticket_id: int, department: int, status: int = 1, assignee: int | None = None) -> Document:
    raw = orjson.dumps({"id": ticket_id, "department_id": department, "status_id": status})
    return Document(raw, (department, status, assignee))


def item(**kw: object) -> Item:
    docs = kw.pop("docs", {})
    return Item(FeedEntry("5-0", "changes", "f:9", **kw), docs)  # type: ignore[arg-type]


def names(item_: Item, view: View) -> list[tuple[str, int | None]]:
    return [(name, ticket_id) for name, ticket_id, _ in events_of(item_, view)]


def test_every_ticket_view_gets_upserts_with_documents_and_deletes() -> None:
    entry = item(upserted=(1, 3), deleted=(2,), docs={1: doc(1, 1), 3: doc(3, 2)})
    assert names(entry, View()) == [("upsert", 1), ("delete", 2), ("upsert", 3)]
    data = orjson.loads(events_of(entry, View())[0][2])
    assert data == {
        "op": "upsert",
        "ticket_id": 1,
        "position": "f:9",
        "document": {"id": 1, "department_id": 1, "status_id": 1},
    }


def test_a_department_view_sees_its_tickets_and_removes_one_that_moved_away() -> None:
    entry = item(
        upserted=(1, 2, 3),
        deleted=(4, 5),
        left={("department", 7): frozenset({2, 4})},
        docs={1: doc(1, 7), 2: doc(2, 8), 3: doc(3, 8)},
    )
    assert names(entry, View(department_id=7)) == [("upsert", 1), ("remove", 2), ("delete", 4)]
    assert names(entry, View(department_id=8)) == [("upsert", 2), ("upsert", 3)]


def test_an_upsert_whose_document_is_gone_since_is_left_to_the_later_delete() -> None:
    assert names(item(upserted=(1,), docs={1: None}), View()) == []


def test_assignee_zero_means_unassigned() -> None:
    entry = item(upserted=(1, 2), docs={1: doc(1, 1, assignee=None), 2: doc(2, 1, assignee=3)})
    assert names(entry, View(assignee_id=0)) == [("upsert", 1)]
    assert names(entry, View(assignee_id=3)) == [("upsert", 2)]


def test_the_entry_id_goes_on_the_last_event_or_alone() -> None:
    entry = item(upserted=(1, 2), docs={1: doc(1, 1), 2: doc(2, 1)})
    first, second, end = sse_block(entry, View()).decode().split("\n\n")
    assert "id:" not in first  # a reconnect after the first event gets the entry again
    assert second.startswith("id: 5-0\nevent: upsert\n")
    assert end == ""
    assert sse_block(entry, View(department_id=9)) == b"id: 5-0\n\n"
    assert sse_block(reset_item("6-0"), View(department_id=9)).startswith(b"id: 6-0\nevent: reset")

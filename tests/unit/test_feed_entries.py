"""The change feed's entries: what a batch writes, decoded back, and the resume check."""

from __future__ import annotations

import pytest

from cdc_worker.store.feed import (
    KIND_CHANGES,
    decode_entry,
    entry_fields,
    parse_entry_id,
    resume_is_trimmed,
    trimmed_from_info,
)
from projections.changes import DEPARTMENTS, STATUSES, TICKETS, USERS, delete, insert, update
from projections.projector import StoreOps
from tests import factories as f
from tests.unit.test_projection import Harness


def base() -> Harness:
    h = Harness()
    h.apply(
        insert(DEPARTMENTS, f.department(1, "Support")),
        insert(DEPARTMENTS, f.department(2, "Billing")),
        insert(STATUSES, f.status(1, "open")),
        insert(USERS, f.user(1, "req@example.com")),
    )
    return h


def test_a_batch_that_writes_no_document_adds_no_entry() -> None:
    assert entry_fields(StoreOps(), "f:1") is None
    assert base().store.changes == []


def test_one_entry_per_batch_lists_upserts_deletes_and_the_commit_position() -> None:
    h = base()
    h.apply(
        insert(TICKETS, f.ticket(10)), insert(TICKETS, f.ticket(11)), insert(TICKETS, f.ticket(12))
    )
    h.apply(delete(TICKETS, f.ticket(11)), update(TICKETS, f.ticket(12), f.ticket(12, title="x")))
    first, second = (decode_entry(f"1-{n}", e) for n, e in enumerate(h.store.changes))
    assert (first.kind, first.upserted, first.deleted) == (KIND_CHANGES, (10, 11, 12), ())
    assert first.position == "mysql-bin.000001:6"
    assert (second.upserted, second.deleted) == ((12,), (11,))
    assert second.left[("department", 1)] == frozenset({11})  # a deleted ticket leaves too


def test_a_ticket_moved_to_another_department_is_listed_as_leaving_the_old_one() -> None:
    h = base()
    h.apply(insert(TICKETS, f.ticket(10, department_id=1)))
    h.apply(update(TICKETS, f.ticket(10, department_id=1), f.ticket(10, department_id=2)))
    entry = decode_entry("5-0", h.store.changes[-1])
    assert entry.upserted == (10,)
    assert entry.left == {("department", 1): frozenset({10})}


def test_a_rename_lists_every_re_rendered_ticket_and_the_reference() -> None:
    h = base()
    h.apply(*(insert(TICKETS, f.ticket(i, department_id=2)) for i in range(1, 6)))
    h.apply(update(DEPARTMENTS, f.department(2, "Billing"), f.department(2, "Money")))
    entry = decode_entry("6-0", h.store.changes[-1])
    assert entry.upserted == (1, 2, 3, 4, 5)
    assert entry.refs == (("department", 2),)
    assert entry.left == {}


def test_a_fan_out_applied_in_steps_writes_one_entry_per_step() -> None:
    h = Harness(step_tickets=2)
    h.apply(insert(DEPARTMENTS, f.department(2, "Billing")), insert(STATUSES, f.status(1, "open")))
    h.apply(*(insert(TICKETS, f.ticket(i, department_id=2)) for i in range(1, 6)))
    h.apply(update(DEPARTMENTS, f.department(2, "Billing"), f.department(2, "Money")))
    steps = [decode_entry("7-0", e) for e in h.store.changes[1:]]
    assert sorted(i for s in steps for i in s.upserted) == [1, 2, 3, 4, 5]
    assert [bool(s.position) for s in steps] == [False, False, True]  # the last one commits


@pytest.mark.parametrize(
    ("after", "first", "trimmed_any", "expected"),
    [
        ("5-0", "3-0", True, False),  # at or past the first entry held: nothing missing
        ("3-0", "3-0", True, False),
        ("2-9", "3-0", True, True),  # the entry after it may be gone
        ("0", "3-0", False, False),  # nothing ever trimmed
        ("0-0", "3-0", True, True),
    ],
)
def test_a_resume_point_older_than_the_first_entry_held_is_reported_trimmed(
    after: str, first: str, trimmed_any: bool, expected: bool
) -> None:
    assert resume_is_trimmed(after, first, trimmed_any) is expected


def test_xinfo_reply_tells_trimmed_and_recreated_streams() -> None:
    info = {
        b"length": 100,
        b"entries-added": 300,
        b"first-entry": [b"10-5", {}],
        b"last-generated-id": b"20-0",
    }
    assert trimmed_from_info("10-4", info)
    assert not trimmed_from_info("10-5", info)
    assert trimmed_from_info("21-0", info)  # beyond the last id: a different stream


@pytest.mark.parametrize("text", ["", "x", "1-", "-1", "1-2-3", "99999999999999999999999"])
def test_malformed_entry_ids_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="stream entry id"):
        parse_entry_id(text)

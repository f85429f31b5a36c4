"""The bulk projection of snapshot chunks gives exactly what the general projector gives."""

from __future__ import annotations

import datetime as dt
from dataclasses import fields
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from projections.changes import ATTACHMENTS, COMMENTS, TICKET_TAGS, TICKETS, insert
from projections.fresh import TableRows, project_fresh
from projections.projector import StoreOps, plan_reads, project
from projections.state import Person, Refs, Status
from tests import factories as f
from tests.properties import examples

POSITION = "snapshot at mysql-bin.000001:4"


def refs() -> Refs:
    return Refs(
        departments={1: "Support", 2: "Billing"},
        statuses={1: Status("open", False), 2: Status("closed", True)},
        users={1: Person("a@example.com", "A"), 2: Person("b@example.com", "B")},
        tags={1: "urgent", 2: "vip"},
    )


def general(parts: list[TableRows], known: Refs) -> StoreOps:
    """What the worker's general projector makes of the same rows."""
    changes = [insert(table, row, POSITION) for table, rows in parts for row in rows]
    return project(changes, known, dict.fromkeys(plan_reads(changes).ticket_ids))


def as_fields(ops: StoreOps) -> dict[str, Any]:
    return {field.name: getattr(ops, field.name) for field in fields(ops)}


def test_a_chunk_with_children_orphans_soft_deletes_and_missing_refs_matches() -> None:
    parts: list[TableRows] = [
        (
            TICKETS,
            [
                f.ticket(1, assignee_id=2),
                f.ticket(2, is_deleted=1),
                f.ticket(3, status_id=9, department_id=7, requester_id=8, assignee_id=6),
            ],
        ),
        (ATTACHMENTS, [f.attachment(10, 1), f.attachment(11, 1), f.attachment(12, 99)]),
        (TICKET_TAGS, [f.ticket_tag(1, 1), f.ticket_tag(2, 2), f.ticket_tag(3, 5)]),
        (
            COMMENTS,
            [f.comment(20, 1), f.comment(21, 3, dt.datetime(2027, 1, 1)), f.comment(22, 98)],
        ),
    ]
    fresh = project_fresh(parts, refs(), POSITION)
    assert as_fields(fresh) == as_fields(general(parts, refs()))
    assert set(fresh.docs_put) == {1, 3}
    assert fresh.docs_deleted == {2, 98, 99}
    assert set(fresh.states_put) == {1, 2, 3, 98, 99}
    assert len(fresh.dead_letters) == 1
    assert "unknown status_id 9" in fresh.dead_letters[0].reason


def test_bad_rows_are_dead_lettered_alike_and_change_nothing() -> None:
    parts: list[TableRows] = [
        (TICKETS, [f.ticket(1), f.ticket(2, title=None), {"id": 3}, f.ticket(4, created_at="x")]),
        (ATTACHMENTS, [f.attachment(10, 1, size_bytes="big"), {**f.attachment(11, 5), "id": "x"}]),
        (TICKET_TAGS, [f.ticket_tag(1, None), f.ticket_tag("y", 1)]),  # type: ignore[arg-type]
        (COMMENTS, [f.comment(20, 1, created_at=None), f.comment(21, 1)]),
    ]
    fresh = project_fresh(parts, refs(), POSITION)
    assert as_fields(fresh) == as_fields(general(parts, refs()))
    assert len(fresh.dead_letters) == 8
    assert 5 in fresh.states_deleted  # the ticket a bad attachment id touched first


ids = st.integers(min_value=1, max_value=12)
maybe_bad = st.one_of(ids, st.none(), st.just("x"))
EPOCH = dt.datetime(1970, 1, 2)
MICROSECONDS = (dt.datetime(2100, 1, 1) - EPOCH) // dt.timedelta(microseconds=1)
# Every datetime from 1970-01-02 to 2100 in one draw: st.datetimes() makes seven (year, month,
# ..., microsecond), and those draws were most of this test's time.
stamps = st.one_of(
    st.integers(0, MICROSECONDS).map(lambda us: EPOCH + dt.timedelta(microseconds=us)), st.none()
)


@st.composite
def chunks(draw: Any) -> list[TableRows]:
    tickets = [
        f.ticket(
            draw(maybe_bad),
            status_id=draw(st.integers(1, 3)),
            department_id=draw(st.integers(1, 3)),
            requester_id=draw(st.integers(1, 3)),
            assignee_id=draw(st.one_of(st.none(), st.integers(1, 3))),
            is_deleted=draw(st.integers(0, 1)),
            updated_at=draw(stamps),
            title=draw(st.one_of(st.text(max_size=5), st.none(), st.binary(max_size=3))),
        )
        for _ in range(draw(st.integers(0, 8)))
    ]
    attachments = [
        {**f.attachment(1, 1), "id": draw(maybe_bad), "ticket_id": draw(maybe_bad)}
        | {"size_bytes": draw(maybe_bad)}
        for _ in range(draw(st.integers(0, 8)))
    ]
    tags = [f.ticket_tag(draw(maybe_bad), draw(maybe_bad)) for _ in range(draw(st.integers(0, 8)))]
    comments = [
        f.comment(draw(maybe_bad), draw(maybe_bad), draw(stamps))
        for _ in range(draw(st.integers(0, 8)))
    ]
    return [
        (TICKETS, tickets),
        (ATTACHMENTS, attachments),
        (TICKET_TAGS, tags),
        (COMMENTS, comments),
    ]


@settings(max_examples=examples(300), deadline=None)
@given(chunks())
def test_random_chunks_project_exactly_as_the_general_projector(parts: list[TableRows]) -> None:
    assert as_fields(project_fresh(parts, refs(), POSITION)) == as_fields(general(parts, refs()))

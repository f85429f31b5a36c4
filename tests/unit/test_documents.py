"""Rendering a document in parts gives the bytes of encoding the whole dict."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from projections.documents import build_document, encode_document, render_document
from projections.state import AttachmentInfo, Person, Refs, Status, TicketState
from tests.properties import examples

TEXT = st.text(max_size=12)  # any code point, 4-byte UTF-8 and JSON escapes included
IDS = st.integers(1, 4)
TIMESTAMP = st.sampled_from(["2026-11-22T09:05:03.000120Z", "1970-01-01T00:00:00.000000Z"])


def refs_strategy() -> st.SearchStrategy[Refs]:
    """Reference tables with gaps, so some ids a ticket shows are missing."""
    return st.builds(
        Refs,
        departments=st.dictionaries(IDS, TEXT, max_size=3),
        statuses=st.dictionaries(IDS, st.builds(Status, TEXT, st.booleans()), max_size=3),
        users=st.dictionaries(IDS, st.builds(Person, TEXT, TEXT), max_size=3),
        tags=st.dictionaries(IDS, TEXT, max_size=3),
    )


def row_strategy() -> st.SearchStrategy[dict[str, Any] | None]:
    row = st.fixed_dictionaries(
        {
            "id": IDS,
            "title": TEXT,
            "description": st.none() | TEXT,
            "status_id": IDS,
            "priority": st.sampled_from(["low", "normal", "high", "urgent"]),
            "department_id": IDS,
            "requester_id": IDS,
            "assignee_id": st.none() | IDS,
            "is_deleted": st.sampled_from([0, 1]),
            "created_at": TIMESTAMP,
            "updated_at": TIMESTAMP,
        }
    )
    return st.none() | row


def state_strategy() -> st.SearchStrategy[TicketState]:
    attachment = st.builds(AttachmentInfo, TEXT, TEXT, st.integers(0, 2**63 - 1))
    return st.builds(
        TicketState,
        id=st.integers(1, 2**31),
        row=row_strategy(),
        attachments=st.dictionaries(st.integers(1, 99), attachment, max_size=3),
        tag_ids=st.sets(IDS, max_size=3),
        comments=st.dictionaries(st.integers(1, 99), TIMESTAMP, max_size=3),
    )


def whole(state: TicketState, refs: Refs) -> tuple[bytes | None, list[str]]:
    doc, problems = build_document(state, refs)
    return (None if doc is None else encode_document(doc)), problems


@settings(max_examples=examples(300), deadline=None)
@given(state_strategy(), refs_strategy(), refs_strategy())
def test_rendering_in_parts_is_encoding_the_whole_document(
    state: TicketState, refs: Refs, renamed: Refs
) -> None:
    assert render_document(state, refs) == whole(state, refs)
    # Rendered again against other references (a rename): the kept parts serve, the
    # references are the new ones.
    kept = state.rendered
    assert render_document(state, renamed) == whole(state, renamed)
    assert state.rendered is kept


def test_a_changed_copy_renders_afresh_and_the_original_keeps_its_parts() -> None:
    refs = Refs({1: "Support"}, {1: Status("open", False)}, {1: Person("a@x.org", "A")})
    row = {"title": "old", "description": None, "priority": "low", "status_id": 1}
    row |= {"department_id": 1, "requester_id": 1, "assignee_id": None, "is_deleted": 0}
    row |= {"created_at": "2026-11-22T09:05:03.000120Z", "updated_at": None}
    original = TicketState(7, row)
    before, _ = render_document(original, refs)
    changed = original.copy()
    assert changed.rendered is None
    assert changed == original
    changed.row["title"] = "new"  # type: ignore[index]
    after, _ = render_document(changed, refs)
    assert before is not None
    assert b'"title":"old"' in before
    assert after is not None
    assert b'"title":"new"' in after
    assert render_document(original, refs)[0] == before

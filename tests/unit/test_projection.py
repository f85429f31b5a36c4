"""The projector, driven through the in-memory store: documents follow every change."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, fields
from typing import Any

import orjson
import pytest

from cdc_worker.checkpoint import Checkpoint, Position
from cdc_worker.pipeline import apply_changes
from cdc_worker.store.interface import MemoryStore
from cdc_worker.store.state_cache import StateCache
from projections.changes import (
    ATTACHMENTS,
    COMMENTS,
    DEPARTMENTS,
    STATUSES,
    TAGS,
    TICKET_TAGS,
    TICKETS,
    UPDATE_BEFORE_COLUMNS,
    USERS,
    Op,
    RowChange,
    delete,
    insert,
    update,
)
from projections.projector import project, replace_tickets
from projections.state import Refs
from tests import factories as f


def key_only_before(change: RowChange) -> RowChange:
    """An update as the binlog source hands it over: a before-image of keys only."""
    columns = UPDATE_BEFORE_COLUMNS.get(change.table)
    if change.op != Op.UPDATE or columns is None or change.before is None:
        return change
    before = {column: change.before[column] for column in columns}
    return RowChange(change.table, change.op, before, change.after, change.position)


class Harness:
    """A store plus in-memory references, applying batches like the worker does.

    With ``key_only_before``, update before-images hold only what the source decodes. With
    ``cache_tickets``, ticket states come from a small ``StateCache`` where it holds them.
    """

    def __init__(
        self, key_only_before: bool = False, step_tickets: int = 2_000, cache_tickets: int = 0
    ) -> None:
        self.key_only_before = key_only_before
        self.step_tickets = step_tickets
        self.cache = StateCache(cache_tickets) if cache_tickets else None
        self.store = MemoryStore(checkpoint=Checkpoint(0, Position("mysql-bin.000001", 4)))
        self.refs = Refs()
        self.store_pos = 4

    def apply(self, *changes: RowChange) -> None:
        checkpoint = Checkpoint(0, Position("mysql-bin.000001", self.store_pos + 1))
        if self.key_only_before:
            changes = tuple(key_only_before(c) for c in changes)
        apply_changes(
            self.store,
            self.refs,
            list(changes),
            self.store.checkpoint,
            checkpoint,
            step_tickets=self.step_tickets,
            cache=self.cache,
        )
        self.store_pos += 1

    def doc(self, ticket_id: int) -> dict[str, Any] | None:
        raw = self.store.documents.get(str(ticket_id))
        return None if raw is None else orjson.loads(raw)


@pytest.fixture(
    params=["full before-images", "key-only before-images", "key-only, 3 cached states"]
)
def world(request: pytest.FixtureRequest) -> Harness:
    cached = 3 if "cached" in request.param else 0
    h = Harness(key_only_before=request.param.startswith("key-only"), cache_tickets=cached)
    h.apply(
        insert(DEPARTMENTS, f.department(1, "Support")),
        insert(DEPARTMENTS, f.department(2, "Billing")),
        insert(STATUSES, f.status(1, "open")),
        insert(STATUSES, f.status(2, "closed", is_closed=1)),
        insert(USERS, f.user(1, "req@example.com", full_name="Rita Requester")),
        insert(USERS, f.user(2, "agent@example.com", full_name="Andy Agent")),
        insert(TAGS, f.tag(1, "vip")),
        insert(TAGS, f.tag(2, "bug")),
    )
    return h


def test_a_new_ticket_gets_a_full_document(world: Harness) -> None:
    world.apply(
        insert(TICKETS, f.ticket(10, assignee_id=2, title="Printer 🔥")),
        insert(ATTACHMENTS, f.attachment(5, 10)),
        insert(ATTACHMENTS, f.attachment(3, 10)),
        insert(TICKET_TAGS, f.ticket_tag(10, 2)),
        insert(TICKET_TAGS, f.ticket_tag(10, 1)),
        insert(COMMENTS, f.comment(1, 10, dt.datetime(2026, 1, 1, 0, 0, 0, 5))),
    )
    doc = world.doc(10)
    assert doc == {
        "id": 10,
        "title": "Printer 🔥",
        "description": None,
        "priority": "normal",
        "status_id": 1,
        "status_name": "open",
        "is_closed": False,
        "department_id": 1,
        "department_name": "Support",
        "requester_id": 1,
        "requester_email": "req@example.com",
        "requester_name": "Rita Requester",
        "assignee_id": 2,
        "assignee_email": "agent@example.com",
        "assignee_name": "Andy Agent",
        "tags": ["bug", "vip"],
        "attachments": [
            {"id": 3, "filename": "file3.png", "content_type": "image/png", "size_bytes": 300},
            {"id": 5, "filename": "file5.png", "content_type": "image/png", "size_bytes": 500},
        ],
        "attachment_count": 2,
        "comment_count": 1,
        "last_comment_at": "2026-01-01T00:00:00.000005Z",
        "created_at": "2026-11-22T09:05:03.000120Z",
        "updated_at": "2026-11-22T09:05:03.000120Z",
    }


def test_renaming_a_department_fans_out_to_its_tickets_only(world: Harness) -> None:
    world.apply(insert(TICKETS, f.ticket(1)), insert(TICKETS, f.ticket(2, department_id=2)))
    world.apply(update(DEPARTMENTS, f.department(1, "Support"), f.department(1, "Helpdesk")))
    assert world.doc(1)["department_name"] == "Helpdesk"  # type: ignore[index]
    assert world.doc(2)["department_name"] == "Billing"  # type: ignore[index]


def test_closing_a_status_and_renaming_a_user_and_tag_fan_out(world: Harness) -> None:
    world.apply(
        insert(TICKETS, f.ticket(1, assignee_id=2)), insert(TICKET_TAGS, f.ticket_tag(1, 1))
    )
    world.apply(
        update(STATUSES, f.status(1, "open"), f.status(1, "done", is_closed=1)),
        update(USERS, f.user(2, "agent@example.com"), f.user(2, "a2@example.com", full_name="A")),
        update(TAGS, f.tag(1, "vip"), f.tag(1, "gold")),
    )
    doc = world.doc(1)
    assert doc is not None
    assert (doc["status_name"], doc["is_closed"]) == ("done", True)
    assert (doc["assignee_email"], doc["assignee_name"]) == ("a2@example.com", "A")
    assert doc["tags"] == ["gold"]


def test_deleting_a_ticket_removes_it_and_its_children_state(world: Harness) -> None:
    world.apply(insert(TICKETS, f.ticket(1)), insert(ATTACHMENTS, f.attachment(1, 1)))
    world.apply(delete(TICKETS, f.ticket(1)))
    assert world.doc(1) is None
    assert 1 not in world.store.states
    assert world.store.links.get(("department", 1)) == set()


def test_deleting_a_tag_cascades_to_every_ticket_including_soft_deleted(world: Harness) -> None:
    world.apply(
        insert(TICKETS, f.ticket(1)),
        insert(TICKETS, f.ticket(2, is_deleted=1)),
        insert(TICKET_TAGS, f.ticket_tag(1, 1)),
        insert(TICKET_TAGS, f.ticket_tag(2, 1)),
    )
    world.apply(delete(TAGS, f.tag(1, "vip")))
    world.apply(update(TICKETS, f.ticket(2, is_deleted=1), f.ticket(2, is_deleted=0)))
    assert world.doc(1)["tags"] == []  # type: ignore[index]
    assert world.doc(2)["tags"] == []  # type: ignore[index]


def test_deleting_an_assignee_nulls_the_assignee_but_keeps_requesters(world: Harness) -> None:
    world.apply(insert(USERS, f.user(3)), insert(TICKETS, f.ticket(1, assignee_id=3)))
    world.apply(delete(USERS, f.user(3)))
    doc = world.doc(1)
    assert doc is not None
    assert (doc["assignee_id"], doc["assignee_email"], doc["assignee_name"]) == (None, None, None)


def test_soft_delete_hides_the_ticket_and_restore_brings_children_back(world: Harness) -> None:
    world.apply(insert(TICKETS, f.ticket(1)), insert(ATTACHMENTS, f.attachment(1, 1)))
    world.apply(update(TICKETS, f.ticket(1), f.ticket(1, is_deleted=1)))
    assert world.doc(1) is None
    world.apply(insert(COMMENTS, f.comment(9, 1)))
    world.apply(update(TICKETS, f.ticket(1, is_deleted=1), f.ticket(1)))
    doc = world.doc(1)
    assert doc is not None
    assert (doc["attachment_count"], doc["comment_count"]) == (1, 1)


def test_deleting_the_latest_comment_recomputes_last_comment_at(world: Harness) -> None:
    early, late = dt.datetime(2026, 1, 1), dt.datetime(2026, 2, 1)
    world.apply(
        insert(TICKETS, f.ticket(1)),
        insert(COMMENTS, f.comment(1, 1, early)),
        insert(COMMENTS, f.comment(2, 1, late)),
    )
    world.apply(delete(COMMENTS, f.comment(2, 1, late)))
    doc = world.doc(1)
    assert doc is not None
    assert (doc["comment_count"], doc["last_comment_at"]) == (1, "2026-01-01T00:00:00.000000Z")


def test_moving_an_attachment_between_tickets_updates_both(world: Harness) -> None:
    world.apply(
        insert(TICKETS, f.ticket(1)),
        insert(TICKETS, f.ticket(2)),
        insert(ATTACHMENTS, f.attachment(7, 1)),
    )
    world.apply(update(ATTACHMENTS, f.attachment(7, 1), f.attachment(7, 2)))
    assert world.doc(1)["attachment_count"] == 0  # type: ignore[index]
    assert world.doc(2)["attachment_count"] == 1  # type: ignore[index]


def test_a_ticket_with_an_unknown_status_is_written_and_dead_lettered(world: Harness) -> None:
    world.apply(
        RowChange(
            TICKETS,
            insert(TICKETS, f.ticket(1, status_id=99)).op,
            None,
            f.ticket(1, status_id=99),
            "mysql-bin.000001:400",
            False,
        )
    )
    doc = world.doc(1)
    assert doc is not None
    assert (doc["status_id"], doc["status_name"]) == (99, None)
    [letter] = world.store.dead_letters
    assert letter.identity == "tickets:1"
    assert letter.position == "mysql-bin.000001:400"
    assert "unknown status_id 99" in letter.reason


def test_a_malformed_row_is_dead_lettered_and_the_batch_goes_on(world: Harness) -> None:
    bad = {k: v for k, v in f.ticket(2).items() if k != "title"}
    world.apply(insert(TICKETS, bad, "pos-1"), insert(TICKETS, f.ticket(3)))
    assert world.doc(2) is None
    assert world.doc(3) is not None
    [letter] = world.store.dead_letters
    assert (letter.identity, letter.position) == ("tickets:2", "pos-1")
    assert "title" in letter.reason


def test_replaying_a_batch_changes_nothing(world: Harness) -> None:
    batch = [
        insert(TICKETS, f.ticket(1)),
        insert(ATTACHMENTS, f.attachment(1, 1)),
        insert(COMMENTS, f.comment(1, 1)),
        delete(ATTACHMENTS, f.attachment(1, 1)),
    ]
    world.apply(*batch)
    before = dict(world.store.documents)
    world.apply(*batch)
    assert world.store.documents == before


def live_index(world: Harness) -> dict[tuple[str, int], set[int]]:
    return {key: ids for key, ids in world.store.index.items() if ids}


def test_filter_indexes_hold_live_tickets_only_and_follow_moves(world: Harness) -> None:
    world.apply(
        insert(TICKETS, f.ticket(1, assignee_id=2)),
        insert(TICKETS, f.ticket(2, department_id=2)),
        insert(TICKET_TAGS, f.ticket_tag(1, 1)),
    )
    world.apply(
        update(TICKETS, f.ticket(2, department_id=2), f.ticket(2, department_id=2, is_deleted=1)),
        update(TICKETS, f.ticket(1, assignee_id=2), f.ticket(1, assignee_id=None, status_id=2)),
    )
    assert live_index(world) == {
        ("all", 0): {1},
        ("status", 2): {1},
        ("department", 1): {1},
        ("requester", 1): {1},
        ("assignee", 0): {1},
        ("tag", 1): {1},
    }


def test_email_and_tag_name_lookups_follow_renames_and_deletes(world: Harness) -> None:
    world.apply(
        update(USERS, f.user(1, "req@example.com"), f.user(1, "new@example.com")),
        update(TAGS, f.tag(2, "bug"), f.tag(2, "defect")),
        delete(TAGS, f.tag(1, "vip")),
    )
    assert world.store.lookups["user-email"] == {"agent@example.com": 2, "new@example.com": 1}
    assert world.store.lookups["tag-name"] == {"defect": 2}


def test_a_scoped_projection_ignores_tickets_not_copied_yet(world: Harness) -> None:
    states = {1: None}
    ops = project(
        [
            insert(TICKETS, f.ticket(1)),
            insert(TICKETS, f.ticket(9)),
            insert(ATTACHMENTS, f.attachment(4, 9)),
        ],
        world.refs,
        states,
        (),
        in_scope=lambda ticket_id: ticket_id <= 5,
    )
    assert set(ops.docs_put) == {1}
    assert set(ops.states_put) == {1}


def test_replacing_tickets_rewrites_documents_and_drops_what_the_rows_no_longer_have(
    world: Harness,
) -> None:
    world.apply(insert(TICKETS, f.ticket(1)), insert(ATTACHMENTS, f.attachment(1, 1)))
    world.store.documents["1"] = b'{"corrupted":true}'
    stored = world.store.load_states([1, 2])
    ops = replace_tickets([insert(TICKETS, f.ticket(1, title="fresh"))], world.refs, stored, [1, 2])
    world.store.commit(ops, None)
    doc = world.doc(1)
    assert doc is not None
    assert (doc["title"], doc["attachment_count"]) == ("fresh", 0)
    assert 2 in ops.docs_deleted


@dataclass
class CrashingStore(MemoryStore):
    """Fails its ``crash_at``-th commit, as a worker killed between fan-out steps."""

    crash_at: int = 0
    commits: int = 0

    def commit(self, *args: Any, **kwargs: Any) -> None:
        self.commits += 1
        if self.commits == self.crash_at:
            raise ConnectionError("killed between fan-out steps")
        super().commit(*args, **kwargs)


def _fan_out_world(step_tickets: int) -> Harness:
    h = Harness(step_tickets=step_tickets)
    h.apply(
        insert(DEPARTMENTS, f.department(1, "Support")),
        insert(DEPARTMENTS, f.department(2, "Billing")),
        insert(STATUSES, f.status(1, "open")),
        insert(USERS, f.user(1, "req@example.com")),
        insert(USERS, f.user(2, "agent@example.com")),
        insert(TAGS, f.tag(1, "vip")),
    )
    tickets = [f.ticket(n, department_id=1 + n % 2, assignee_id=2) for n in range(1, 31)]
    h.apply(*(insert(TICKETS, t) for t in tickets))
    h.apply(*(insert(TICKET_TAGS, f.ticket_tag(n, 1)) for n in range(1, 31, 3)))
    return h


FAN_OUT_BATCH = (
    update(DEPARTMENTS, f.department(1, "Support"), f.department(1, "Helpdesk")),
    update(USERS, f.user(1, "req@example.com"), {**f.user(1, "x"), "email": None}),  # bad row
    delete(TAGS, f.tag(1, "vip")),  # cascades to ticket_tags
    delete(USERS, f.user(2, "agent@example.com")),  # assignee SET NULL on every ticket
    update(TICKETS, f.ticket(7, department_id=2), f.ticket(7, title="moved", department_id=1)),
)


def _model(h: Harness) -> tuple[Any, ...]:
    s = h.store
    return (s.documents, s.states, s.links, s.index, s.checkpoint, s.dead_letters)


def test_a_fan_out_applied_in_small_steps_ends_exactly_as_in_one() -> None:
    whole, stepped = _fan_out_world(2_000), _fan_out_world(4)
    whole.apply(*FAN_OUT_BATCH)
    stepped.apply(*FAN_OUT_BATCH)
    assert _model(stepped) == _model(whole)
    assert len(stepped.store.dead_letters) == 1  # the bad row, reported once
    docs = [stepped.doc(n) for n in range(1, 31)]
    assert {d["department_name"] for d in docs if d and d["department_id"] == 1} == {"Helpdesk"}
    assert all(d and d["assignee_id"] is None and d["tags"] == [] for d in docs)


def _crashed_fan_out(
    batch: tuple[RowChange, ...], crash_at: int
) -> tuple[Harness, Harness, CrashingStore]:
    """The batch applied in one step, and in steps of 4 tickets crashing at commit
    ``crash_at`` (the checkpoint did not move: the batch, or part of it, comes again)."""
    whole, stepped = _fan_out_world(2_000), _fan_out_world(4)
    whole.apply(*batch)
    state = {f.name: getattr(stepped.store, f.name) for f in fields(MemoryStore)}
    crashing = CrashingStore(**state, crash_at=crash_at)
    stepped.store = crashing
    with pytest.raises(ConnectionError):
        stepped.apply(*batch)
    return whole, stepped, crashing


@pytest.mark.parametrize("crash_at", [1, 2, 5])
def test_a_crash_between_fan_out_steps_replays_to_the_same_model(crash_at: int) -> None:
    whole, stepped, crashing = _crashed_fan_out(FAN_OUT_BATCH, crash_at)
    assert 1 in crashing.refs["tag"]  # stored references never run ahead of the checkpoint
    stepped.refs = crashing.load_refs(0)  # the worker reloads its references after a failure
    stepped.apply(*FAN_OUT_BATCH)
    assert _model(stepped)[:5] == _model(whole)[:5]


@pytest.mark.parametrize("crash_at", [2, 3, 4])
def test_after_a_crash_between_steps_a_shorter_replay_never_sees_a_ticket_from_later(
    crash_at: int,
) -> None:
    """The reader may hand the replay over in other batches than the crashed one: nothing a
    crashed batch's early steps stored may meet references older than its own changes."""
    batch = (
        update(DEPARTMENTS, f.department(1, "Support"), f.department(1, "Helpdesk")),
        insert(USERS, f.user(3, "new@example.com")),
        update(TICKETS, f.ticket(7, department_id=2), f.ticket(7, department_id=1, assignee_id=3)),
        insert(TICKETS, f.ticket(31, department_id=1, requester_id=3)),
    )
    whole, stepped, crashing = _crashed_fan_out(batch, crash_at)
    stepped.refs = crashing.load_refs(0)
    stepped.apply(batch[0])  # the first transaction alone, then the rest
    stepped.apply(*batch[1:])
    assert crashing.dead_letters == []
    assert _model(stepped)[:4] == _model(whole)[:4]

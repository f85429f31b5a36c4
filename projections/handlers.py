"""Per-table handlers: how one row change alters the references and the ticket states.

Each handler parses the images first, so a bad row changes nothing before it is reported.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from projections import rows
from projections.changes import (
    ATTACHMENTS,
    COMMENTS,
    DEPARTMENTS,
    STATUSES,
    TAGS,
    TICKET_TABLES,
    TICKET_TAGS,
    TICKETS,
    USERS,
    Row,
    RowChange,
)
from projections.collation import fold
from projections.state import (
    DEPARTMENT,
    STATUS,
    TAG,
    TAG_NAME,
    USER,
    USER_EMAIL,
    LinkKey,
    Refs,
    TicketState,
)
from projections.values import as_int


class Workspace:
    """The references and ticket states one batch works on, with what it changed."""

    def __init__(
        self,
        refs: Refs,
        states: Mapping[int, TicketState | None],
        linked_ids: set[int],
        in_scope: Callable[[int], bool] | None = None,
        link_sets: Mapping[LinkKey, set[int]] | None = None,
    ) -> None:
        self.in_scope = in_scope
        self.original = states
        self.refs = refs
        self.linked_ids = linked_ids
        self.forced: set[int] = set()
        self.current: dict[int, TicketState | None] = {}
        self.changed_refs: set[LinkKey] = set()
        self.ref_writes: dict[LinkKey, bool] = {}
        self.lookup_writes: dict[tuple[str, str], int | None] = {}
        self._link_sets = link_sets

    def note_lookup(self, kind: str, old: Any, new: Any, ref_id: int | None) -> None:
        """Keep the email -> user and name -> tag lookups of the read API in step."""
        lookup = LOOKUPS.get(kind)
        if lookup is None:
            return
        name, key_of = lookup
        if old is not None and (new is None or key_of(old) != key_of(new)):
            self.lookup_writes[(name, key_of(old))] = None
        if new is not None:
            self.lookup_writes[(name, key_of(new))] = ref_id

    def peek(self, ticket_id: int) -> TicketState | None:
        """The ticket's state as of now, read-only."""
        if ticket_id in self.current:
            return self.current[ticket_id]
        return self.original.get(ticket_id)

    def ticket(self, ticket_id: int) -> TicketState:
        """The ticket's state, to change; it must have been loaded (see ``plan_reads``).

        Out of scope (a resync's tickets not copied yet), a scratch state that is dropped.
        """
        if self.in_scope is not None and not self.in_scope(ticket_id):
            return TicketState(ticket_id)
        if ticket_id not in self.current and ticket_id not in self.original:
            raise LookupError(f"ticket {ticket_id} was not loaded for this batch")
        state = self.peek(ticket_id)
        if ticket_id in self.current and state is not None:
            return state
        fresh = state.copy() if state is not None else TicketState(ticket_id)
        self.current[ticket_id] = fresh
        return fresh

    def drop_ticket(self, ticket_id: int) -> None:
        """The ticket and, by ON DELETE CASCADE, all its children are gone."""
        if self.in_scope is not None and not self.in_scope(ticket_id):
            return
        self.ticket(ticket_id)
        self.current[ticket_id] = None

    def replace(self, ticket_id: int) -> None:
        """Start the ticket afresh (targeted repair): its document is rewritten whatever."""
        self.current[ticket_id] = TicketState(ticket_id)
        self.forced.add(ticket_id)

    def loaded_ids(self) -> set[int]:
        """Every ticket id this batch loaded or touched."""
        return set(self.original) | set(self.current)

    def tickets_linked(self, key: LinkKey) -> set[int]:
        """Tickets whose state refers to ``key`` as of now."""
        current, original, linked = self.current, self.original, self.linked_ids
        candidates = None if self._link_sets is None else self._link_sets.get(key)
        if candidates is None:  # not given: every linked ticket may refer to it
            candidates = linked
        found = {
            t
            for t in candidates
            if t in linked
            and t not in current
            and (s := original.get(t)) is not None
            and s.links_to(key)
        }
        found.update(t for t, s in current.items() if s is not None and s.links_to(key))
        return found


def ticket_ids_of(change: RowChange) -> list[int]:
    """The tickets whose state a change to a ticket table touches."""
    if change.table not in TICKET_TABLES:
        return []
    column = "id" if change.table == TICKETS else "ticket_id"
    return [as_int(image[column]) for image in (change.before, change.after) if image]


# Keyed by the folded text: the API finds a user or tag the way the database's collation
# would (``WHERE email = ?``); the unique keys of both columns use that collation too.
LOOKUPS: dict[str, tuple[str, Callable[[Any], str]]] = {
    USER: (USER_EMAIL, lambda person: fold(str(person.email))),
    TAG: (TAG_NAME, lambda name: fold(str(name))),
}

REF_KINDS_BY_TABLE: dict[str, tuple[str, Callable[[Row], Any]]] = {
    DEPARTMENTS: (DEPARTMENT, rows.name_ref),
    STATUSES: (STATUS, rows.status_ref),
    USERS: (USER, rows.person_ref),
    TAGS: (TAG, rows.name_ref),
}


def ref_link_changes(change: RowChange) -> list[LinkKey]:
    """The references whose documents must be rebuilt because of this change."""
    if change.table not in REF_KINDS_BY_TABLE:
        return []
    kind, parse = REF_KINDS_BY_TABLE[change.table]
    before, after = change.before, change.after
    if before is not None and after is not None:
        same_id = as_int(before["id"]) == as_int(after["id"])
        if same_id and parse(before) == parse(after):
            return []
    return [(kind, as_int(image["id"])) for image in (before, after) if image is not None]


def _reference(change: RowChange, ws: Workspace) -> None:
    kind, parse = REF_KINDS_BY_TABLE[change.table]
    value = parse(change.after) if change.after is not None else None
    after_id = as_int(change.after["id"]) if change.after is not None else None
    ws.changed_refs.update(ref_link_changes(change))
    table = ws.refs.table(kind)
    if change.before is not None:
        before_id = as_int(change.before["id"])
        if before_id != after_id:
            ws.note_lookup(kind, table.pop(before_id, None), None, None)
            ws.ref_writes[(kind, before_id)] = False
            if change.foreign_key_checks:
                _cascade_reference_delete(kind, before_id, ws)
    if after_id is not None and table.get(after_id) != value:
        ws.note_lookup(kind, table.get(after_id), value, after_id)
        table[after_id] = value
        ws.ref_writes[(kind, after_id)] = True


def _cascade_reference_delete(kind: str, ref_id: int, ws: Workspace) -> None:
    """InnoDB's ON DELETE actions, which the binlog does not show."""
    if kind == TAG:  # ticket_tags.tag_id ON DELETE CASCADE
        for ticket_id in ws.tickets_linked((TAG, ref_id)):
            ws.ticket(ticket_id).tag_ids.discard(ref_id)
    elif kind == USER:  # tickets.assignee_id ON DELETE SET NULL
        for ticket_id in ws.tickets_linked((USER, ref_id)):
            state = ws.ticket(ticket_id)
            if state.row is not None and state.row["assignee_id"] == ref_id:
                state.row["assignee_id"] = None


def _tickets(change: RowChange, ws: Workspace) -> None:
    row = rows.ticket_row(change.after) if change.after is not None else None
    after_id = as_int(change.after["id"]) if change.after is not None else None
    if change.before is not None:
        before_id = as_int(change.before["id"])
        if before_id != after_id:
            if change.foreign_key_checks:
                ws.drop_ticket(before_id)
            else:
                ws.ticket(before_id).row = None
    if after_id is not None:
        ws.ticket(after_id).row = row


def _attachments(change: RowChange, ws: Workspace) -> None:
    info = rows.attachment_info(change.after) if change.after is not None else None
    if change.before is not None:
        before = change.before
        ws.ticket(as_int(before["ticket_id"])).attachments.pop(as_int(before["id"]), None)
    if change.after is not None and info is not None:
        after = change.after
        ws.ticket(as_int(after["ticket_id"])).attachments[as_int(after["id"])] = info


def _ticket_tags(change: RowChange, ws: Workspace) -> None:
    if change.before is not None:
        before = change.before
        ws.ticket(as_int(before["ticket_id"])).tag_ids.discard(as_int(before["tag_id"]))
    if change.after is not None:
        after = change.after
        ws.ticket(as_int(after["ticket_id"])).tag_ids.add(as_int(after["tag_id"]))


def _comments(change: RowChange, ws: Workspace) -> None:
    created_at = rows.comment_time(change.after) if change.after is not None else None
    if change.before is not None:
        before = change.before
        ws.ticket(as_int(before["ticket_id"])).comments.pop(as_int(before["id"]), None)
    if change.after is not None and created_at is not None:
        after = change.after
        ws.ticket(as_int(after["ticket_id"])).comments[as_int(after["id"])] = created_at


HANDLERS: dict[str, Callable[[RowChange, Workspace], None]] = {
    DEPARTMENTS: _reference,
    STATUSES: _reference,
    USERS: _reference,
    TAGS: _reference,
    TICKETS: _tickets,
    ATTACHMENTS: _attachments,
    TICKET_TAGS: _ticket_tags,
    COMMENTS: _comments,
}

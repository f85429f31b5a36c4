"""The normalized state the projector keeps beside the read model.

Reference tables (departments, users, statuses, tags) are small and live in memory; each
ticket's own row and children live in one ``TicketState`` per ticket, persisted as compact
JSON so that a document can be rebuilt without asking MySQL.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple

import orjson

DEPARTMENT = "department"
STATUS = "status"
USER = "user"
TAG = "tag"
REF_KINDS = (DEPARTMENT, STATUS, USER, TAG)

LinkKey = tuple[str, int]
_LINK_COLUMNS = {DEPARTMENT: "department_id", STATUS: "status_id"}
IndexKey = tuple[str, int]
USER_EMAIL = "user-email"
TAG_NAME = "tag-name"


class Status(NamedTuple):
    """What a document shows of a ticket status."""

    name: str
    is_closed: bool


class Person(NamedTuple):
    """What a document shows of a user."""

    email: str
    full_name: str


class AttachmentInfo(NamedTuple):
    """What a document shows of an attachment."""

    filename: str
    content_type: str
    size_bytes: int


@dataclass(slots=True)
class Refs:
    """The reference tables, keyed by id."""

    departments: dict[int, str] = field(default_factory=dict)
    statuses: dict[int, Status] = field(default_factory=dict)
    users: dict[int, Person] = field(default_factory=dict)
    tags: dict[int, str] = field(default_factory=dict)

    def table(self, kind: str) -> dict[int, Any]:
        """The dict holding one kind of reference."""
        tables: dict[str, dict[int, Any]] = {
            DEPARTMENT: self.departments,
            STATUS: self.statuses,
            USER: self.users,
            TAG: self.tags,
        }
        return tables[kind]


@dataclass(slots=True)
class TicketState:
    """One ticket's row (None until the ticket row is known) and its children."""

    id: int
    row: dict[str, Any] | None = None
    attachments: dict[int, AttachmentInfo] = field(default_factory=dict)
    tag_ids: set[int] = field(default_factory=set)
    comments: dict[int, str] = field(default_factory=dict)
    # The document's parts that depend on this state alone (``documents.render_document``),
    # kept once rendered: a renamed department or status re-renders thousands of unchanged
    # tickets. A state is not changed once rendered: the projector's workspace changes
    # copies, and ``copy`` leaves this behind.
    rendered: Any = field(default=None, compare=False, repr=False)

    def is_empty(self) -> bool:
        """True when nothing is known about the ticket any more."""
        return self.row is None and not (self.attachments or self.tag_ids or self.comments)

    def links(self) -> set[LinkKey]:
        """The references this ticket's document depends on, for fan-out and cascades."""
        keys: set[LinkKey] = {(TAG, tag_id) for tag_id in self.tag_ids}
        if self.row is not None:
            keys.add((DEPARTMENT, self.row["department_id"]))
            keys.add((STATUS, self.row["status_id"]))
            keys.add((USER, self.row["requester_id"]))
            if self.row["assignee_id"] is not None:
                keys.add((USER, self.row["assignee_id"]))
        return keys

    def links_to(self, key: LinkKey) -> bool:
        """``key in self.links()``, without building the set."""
        kind, ref_id = key
        if kind == TAG:
            return ref_id in self.tag_ids
        row = self.row
        if row is None:
            return False
        if kind == USER:
            return ref_id in (row["requester_id"], row["assignee_id"])
        return bool(row[_LINK_COLUMNS[kind]] == ref_id)

    def index_keys(self) -> set[IndexKey]:
        """The read API's filter indexes this ticket belongs to (live tickets only)."""
        row = self.row
        if row is None or row["is_deleted"]:
            return set()
        keys: set[IndexKey] = {(TAG, tag_id) for tag_id in self.tag_ids}
        keys |= {
            ("all", 0),
            (STATUS, row["status_id"]),
            (DEPARTMENT, row["department_id"]),
            ("requester", row["requester_id"]),
            ("assignee", row["assignee_id"] or 0),
        }
        return keys

    def copy(self) -> TicketState:
        """A deep enough copy to mutate without touching the original."""
        return TicketState(
            self.id,
            dict(self.row) if self.row is not None else None,
            dict(self.attachments),
            set(self.tag_ids),
            dict(self.comments),
        )


def encode_state(state: TicketState) -> bytes:
    """Compact JSON for Redis; lists instead of int-keyed maps."""
    return orjson.dumps(
        {
            "r": state.row,
            "a": [
                [i, a.filename, a.content_type, a.size_bytes]
                for i, a in sorted(state.attachments.items())
            ],
            "t": sorted(state.tag_ids),
            "c": sorted(state.comments.items()),
        }
    )


def decode_state(ticket_id: int, raw: bytes | str) -> TicketState:
    """Inverse of ``encode_state``."""
    data = orjson.loads(raw)
    return TicketState(
        ticket_id,
        data["r"],
        {a[0]: AttachmentInfo(a[1], a[2], a[3]) for a in data["a"]},
        set(data["t"]),
        {c[0]: c[1] for c in data["c"]},
    )


def encode_ref(kind: str, value: Any) -> bytes:
    """One reference entry as stored in Redis."""
    if kind == STATUS:
        return orjson.dumps([value.name, value.is_closed])
    if kind == USER:
        return orjson.dumps([value.email, value.full_name])
    return orjson.dumps(value)


def decode_ref(kind: str, raw: bytes | str) -> Any:
    """Inverse of ``encode_ref``."""
    data = orjson.loads(raw)
    if kind == STATUS:
        return Status(data[0], bool(data[1]))
    if kind == USER:
        return Person(data[0], data[1])
    return data

"""Row changes as the core sees them: table, operation, before and after images."""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Any, NamedTuple

Row = Mapping[str, Any]

DEPARTMENTS = "departments"
USERS = "users"
STATUSES = "ticket_statuses"
TICKETS = "tickets"
ATTACHMENTS = "attachments"
TAGS = "tags"
TICKET_TAGS = "ticket_tags"
COMMENTS = "comments"

REFERENCE_TABLES = (DEPARTMENTS, USERS, STATUSES, TAGS)
TICKET_TABLES = (TICKETS, ATTACHMENTS, TICKET_TAGS, COMMENTS)
TRACKED_TABLES = REFERENCE_TABLES + TICKET_TABLES

# The columns of an update's before-image the projector reads, where it needs fewer than all
# (a ticket's state in the read model holds the rest). The binlog source decodes only these.
UPDATE_BEFORE_COLUMNS: dict[str, tuple[str, ...]] = {
    TICKETS: ("id",),
    ATTACHMENTS: ("id", "ticket_id"),
    TICKET_TAGS: ("ticket_id", "tag_id"),
    COMMENTS: ("id", "ticket_id"),
}


class Op(StrEnum):
    """What happened to a row."""

    INSERT = "insert"
    UPDATE = "update"
    DELETE = "delete"


class RowChange(NamedTuple):
    """One row change (a named tuple: a CDC stream builds and pickles millions of them).

    ``position`` is an opaque source position used to report bad rows.
    ``foreign_key_checks`` is False for rows written under FOREIGN_KEY_CHECKS=0, when InnoDB
    applies no ON DELETE action either.
    """

    table: str
    op: Op
    before: Row | None
    after: Row | None
    position: str = ""
    foreign_key_checks: bool = True

    @property
    def image(self) -> Row:
        """The newest image: after for inserts and updates, before for deletes."""
        image = self.after if self.after is not None else self.before
        if image is None:
            raise ValueError(f"{self.table} {self.op} change carries no row image")
        return image

    def identity(self) -> str:
        """A short, stable description of the row, for logs and the dead-letter stream."""
        image = self.after if self.after is not None else self.before
        if image is None:
            return f"{self.table}:?"
        if self.table == TICKET_TAGS:
            return f"{self.table}:{image.get('ticket_id')}/{image.get('tag_id')}"
        return f"{self.table}:{image.get('id')}"


def insert(table: str, row: Row, position: str = "") -> RowChange:
    """An insert change, as snapshots and tests produce them."""
    return RowChange(table, Op.INSERT, None, row, position)


def update(table: str, before: Row, after: Row, position: str = "") -> RowChange:
    """An update change."""
    return RowChange(table, Op.UPDATE, before, after, position)


def delete(table: str, row: Row, position: str = "") -> RowChange:
    """A delete change."""
    return RowChange(table, Op.DELETE, row, None, position)

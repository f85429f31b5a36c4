"""Turning raw row images into the normalized values the state keeps."""

from __future__ import annotations

from typing import Any

from projections.changes import Row
from projections.state import AttachmentInfo, Person, Status
from projections.values import (
    as_bool,
    as_int,
    as_text,
    format_ts,
    optional_int,
    optional_text,
)


def ticket_row(row: Row) -> dict[str, Any]:
    """The ticket columns a document needs, normalized; extra columns are ignored."""
    return {
        "title": as_text(row["title"]),
        "description": optional_text(row["description"]),
        "status_id": as_int(row["status_id"]),
        "priority": as_text(row["priority"]),
        "department_id": as_int(row["department_id"]),
        "requester_id": as_int(row["requester_id"]),
        "assignee_id": optional_int(row["assignee_id"]),
        "is_deleted": as_bool(row["is_deleted"]),
        "created_at": format_ts(row["created_at"]),
        "updated_at": format_ts(row["updated_at"]),
    }


def attachment_info(row: Row) -> AttachmentInfo:
    """What a document shows of an attachment row."""
    return AttachmentInfo(
        as_text(row["filename"]), as_text(row["content_type"]), as_int(row["size_bytes"])
    )


def status_ref(row: Row) -> Status:
    """What a document shows of a status row."""
    return Status(as_text(row["name"]), as_bool(row["is_closed"]))


def person_ref(row: Row) -> Person:
    """What a document shows of a user row."""
    return Person(as_text(row["email"]), as_text(row["full_name"]))


def name_ref(row: Row) -> str:
    """Departments and tags are shown by name."""
    return as_text(row["name"])


def comment_time(row: Row) -> str:
    """A comment's creation time, as documents show it."""
    return format_ts(row["created_at"])

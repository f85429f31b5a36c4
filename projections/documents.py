"""Building the read-model document of one ticket from its state and the references."""

from __future__ import annotations

from typing import Any

import orjson

from projections.state import Person, Refs, Status, TicketState


def build_document(state: TicketState, refs: Refs) -> tuple[dict[str, Any] | None, list[str]]:
    """The ticket's document (None when it must be absent) and any missing references.

    A missing reference (possible when rows were written with FOREIGN_KEY_CHECKS=0) leaves
    the matching names null, exactly as a LEFT JOIN over the database would show them.
    """
    row = state.row
    if row is None or row["is_deleted"]:
        return None, []
    problems: list[str] = []
    status_id, department_id = row["status_id"], row["department_id"]
    requester_id, assignee_id = row["requester_id"], row["assignee_id"]
    status = refs.statuses.get(status_id)
    department = refs.departments.get(department_id)
    requester = refs.users.get(requester_id)
    assignee = None if assignee_id is None else refs.users.get(assignee_id)
    if status is None or department is None or requester is None:
        _missing(status_id, status, department_id, department, requester_id, requester, problems)
    if assignee is None and assignee_id is not None:
        problems.append(f"unknown assignee_id {assignee_id}")
    attachments = [
        {"id": i, "filename": a[0], "content_type": a[1], "size_bytes": a[2]}
        for i, a in sorted(state.attachments.items())
    ]
    return {
        "id": state.id,
        "title": row["title"],
        "description": row["description"],
        "priority": row["priority"],
        "status_id": status_id,
        "status_name": status.name if status else None,
        "is_closed": status.is_closed if status else False,
        "department_id": department_id,
        "department_name": department,
        "requester_id": requester_id,
        "requester_email": requester.email if requester else None,
        "requester_name": requester.full_name if requester else None,
        "assignee_id": assignee_id,
        "assignee_email": assignee.email if assignee else None,
        "assignee_name": assignee.full_name if assignee else None,
        "tags": _tag_names(state, refs, problems) if state.tag_ids else [],
        "attachments": attachments,
        "attachment_count": len(attachments),
        "comment_count": len(state.comments),
        "last_comment_at": max(state.comments.values(), default=None),
        "created_at": row["created_at"],
        "updated_at": row["updated_at"],
    }, problems


def encode_document(doc: dict[str, Any]) -> bytes:
    """Compact UTF-8 JSON, the form stored in the ``tickets`` hash."""
    return orjson.dumps(doc)


def _missing(
    status_id: int,
    status: Status | None,
    department_id: int,
    department: str | None,
    requester_id: int,
    requester: Person | None,
    problems: list[str],
) -> None:
    if status is None:
        problems.append(f"unknown status_id {status_id}")
    if department is None:
        problems.append(f"unknown department_id {department_id}")
    if requester is None:
        problems.append(f"unknown requester_id {requester_id}")


def _tag_names(state: TicketState, refs: Refs, problems: list[str]) -> list[str]:
    names = refs.tags
    missing_tags = sorted(t for t in state.tag_ids if t not in names)
    if missing_tags:
        problems.append(f"unknown tag_id {missing_tags}")
    return sorted(names[t] for t in state.tag_ids if t in names)

"""Building the read-model document of one ticket from its state and the references."""

from __future__ import annotations

from typing import Any

import orjson

from projections.state import Person, Refs, TicketState


def build_document(state: TicketState, refs: Refs) -> tuple[dict[str, Any] | None, list[str]]:
    """The ticket's document (None when it must be absent) and any missing references.

    A missing reference (possible when rows were written with FOREIGN_KEY_CHECKS=0) leaves
    the matching names null, exactly as a LEFT JOIN over the database would show them.
    """
    row = state.row
    if row is None or row["is_deleted"]:
        return None, []
    problems: list[str] = []
    doc: dict[str, Any] = {
        "id": state.id,
        "title": row["title"],
        "description": row["description"],
        "priority": row["priority"],
    }
    doc.update(_status_fields(row["status_id"], refs, problems))
    doc.update(_department_fields(row["department_id"], refs, problems))
    doc.update(_person_fields("requester", row["requester_id"], refs, problems))
    doc.update(_person_fields("assignee", row["assignee_id"], refs, problems))
    doc.update(_children_fields(state, refs, problems))
    doc["created_at"] = row["created_at"]
    doc["updated_at"] = row["updated_at"]
    return doc, problems


def encode_document(doc: dict[str, Any]) -> bytes:
    """Compact UTF-8 JSON, the form stored in the ``tickets`` hash."""
    return orjson.dumps(doc)


def _status_fields(status_id: int, refs: Refs, problems: list[str]) -> dict[str, Any]:
    status = refs.statuses.get(status_id)
    if status is None:
        problems.append(f"unknown status_id {status_id}")
        return {"status_id": status_id, "status_name": None, "is_closed": False}
    return {"status_id": status_id, "status_name": status.name, "is_closed": status.is_closed}


def _department_fields(department_id: int, refs: Refs, problems: list[str]) -> dict[str, Any]:
    name = refs.departments.get(department_id)
    if name is None:
        problems.append(f"unknown department_id {department_id}")
    return {"department_id": department_id, "department_name": name}


def _person_fields(
    role: str, user_id: int | None, refs: Refs, problems: list[str]
) -> dict[str, Any]:
    person: Person | None = None
    if user_id is not None:
        person = refs.users.get(user_id)
        if person is None:
            problems.append(f"unknown {role}_id {user_id}")
    return {
        f"{role}_id": user_id,
        f"{role}_email": person.email if person else None,
        f"{role}_name": person.full_name if person else None,
    }


def _children_fields(state: TicketState, refs: Refs, problems: list[str]) -> dict[str, Any]:
    tags = sorted(refs.tags[t] for t in state.tag_ids if t in refs.tags)
    missing_tags = sorted(t for t in state.tag_ids if t not in refs.tags)
    if missing_tags:
        problems.append(f"unknown tag_id {missing_tags}")
    attachments = [
        {
            "id": i,
            "filename": a.filename,
            "content_type": a.content_type,
            "size_bytes": a.size_bytes,
        }
        for i, a in sorted(state.attachments.items())
    ]
    return {
        "tags": tags,
        "attachments": attachments,
        "attachment_count": len(attachments),
        "comment_count": len(state.comments),
        "last_comment_at": max(state.comments.values(), default=None),
    }

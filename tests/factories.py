"""Row factories: binlog-shaped row images with sensible defaults, overridable per test."""

from __future__ import annotations

import datetime as dt
from typing import Any

T0 = dt.datetime(2026, 11, 22, 9, 5, 3, 120)


def department(id: int, name: str | None = None, **kw: Any) -> dict[str, Any]:
    return {"id": id, "name": name or f"Dept {id}", "created_at": T0, **kw}


def user(id: int, email: str | None = None, **kw: Any) -> dict[str, Any]:
    row = {
        "id": id,
        "email": email or f"user{id}@example.com",
        "full_name": f"User {id}",
        "department_id": None,
        "is_active": 1,
        "created_at": T0,
    }
    return {**row, **kw}


def status(id: int, name: str | None = None, is_closed: int = 0) -> dict[str, Any]:
    return {"id": id, "name": name or f"status-{id}", "is_closed": is_closed}


def tag(id: int, name: str | None = None) -> dict[str, Any]:
    return {"id": id, "name": name or f"tag-{id}"}


def ticket(id: int, **kw: Any) -> dict[str, Any]:
    row = {
        "id": id,
        "title": f"Ticket {id}",
        "description": None,
        "status_id": 1,
        "priority": "normal",
        "department_id": 1,
        "requester_id": 1,
        "assignee_id": None,
        "is_deleted": 0,
        "created_at": T0,
        "updated_at": T0,
    }
    return {**row, **kw}


def attachment(id: int, ticket_id: int, **kw: Any) -> dict[str, Any]:
    row = {
        "id": id,
        "ticket_id": ticket_id,
        "filename": f"file{id}.png",
        "content_type": "image/png",
        "size_bytes": 100 * id,
        "created_at": T0,
    }
    return {**row, **kw}


def ticket_tag(ticket_id: int, tag_id: int) -> dict[str, Any]:
    return {"ticket_id": ticket_id, "tag_id": tag_id}


def comment(id: int, ticket_id: int, created_at: dt.datetime = T0, **kw: Any) -> dict[str, Any]:
    row = {"id": id, "ticket_id": ticket_id, "author_id": 1, "body": "hi", "created_at": created_at}
    return {**row, **kw}

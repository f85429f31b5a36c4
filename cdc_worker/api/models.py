"""Response models of the read API: they document the OpenAPI schema (documents are served as
stored, without re-serialization, so these models describe them rather than build them)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

EXAMPLE_DOCUMENT: dict[str, Any] = {
    "id": 1,
    "title": "Printer on fire 🔥",
    "description": None,
    "priority": "urgent",
    "status_id": 1,
    "status_name": "open",
    "is_closed": False,
    "department_id": 2,
    "department_name": "Billing",
    "requester_id": 7,
    "requester_email": "rita@example.com",
    "requester_name": "Rita R.",
    "assignee_id": None,
    "assignee_email": None,
    "assignee_name": None,
    "tags": ["bug", "vip"],
    "attachments": [
        {"id": 3, "filename": "log.txt", "content_type": "text/plain", "size_bytes": 120}
    ],
    "attachment_count": 1,
    "comment_count": 2,
    "last_comment_at": "2026-11-22T09:05:03.000120Z",
    "created_at": "2026-11-20T08:00:00.000000Z",
    "updated_at": "2026-11-22T09:05:03.000120Z",
}


class Attachment(BaseModel):
    """An attachment as a document shows it."""

    id: int
    filename: str
    content_type: str
    size_bytes: int


class TicketDocument(BaseModel):
    """One ticket's read-model document. Names are null only when the referenced row is
    missing (written with FOREIGN_KEY_CHECKS=0); such rows are also dead-lettered."""

    model_config = ConfigDict(json_schema_extra={"example": EXAMPLE_DOCUMENT})

    id: int
    title: str
    description: str | None
    priority: Literal["low", "normal", "high", "urgent"] | str
    status_id: int
    status_name: str | None
    is_closed: bool
    department_id: int
    department_name: str | None
    requester_id: int
    requester_email: str | None
    requester_name: str | None
    assignee_id: int | None
    assignee_email: str | None
    assignee_name: str | None
    tags: list[str]
    attachments: list[Attachment]
    attachment_count: int
    comment_count: int
    last_comment_at: str | None = Field(description="UTC, e.g. 2026-11-22T09:05:03.000120Z")
    created_at: str
    updated_at: str


class TicketBatch(BaseModel):
    """Documents asked for by id, in the order asked; ids with no document in ``missing``."""

    tickets: list[TicketDocument]
    missing: list[int]


class TicketPage(BaseModel):
    """One page of a filtered listing, in ticket id order."""

    tickets: list[TicketDocument]
    next_cursor: str | None = Field(description="Pass as ?cursor= for the next page; null: done")


class Problem(BaseModel):
    """An error."""

    detail: str


class Readiness(BaseModel):
    """The readiness verdict."""

    ready: bool
    reasons: list[str]
    lag_s: float | None = None
    position: str | None = Field(
        default=None, description="The worker's applied binlog position (its last heartbeat)"
    )
    gtid: str | None = Field(default=None, description="Its GTID position (MariaDB), if any")
    active_worker: str | None = Field(
        default=None, description="host:pid of the active worker, from its heartbeat"
    )
    replica_lag_s: float | None = Field(
        default=None,
        description="CDC_API_READ_FROM=replica: how much older the heartbeat the replica "
        "holds is than the primary's",
    )
    source: str | None = Field(
        default=None, description="The source server the worker reads (host:port)."
    )

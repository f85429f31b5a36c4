"""Building the read-model document of one ticket from its state and the references."""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

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
    status, department, requester, assignee = _references(row, refs, problems)
    attachments = _attachment_list(state)
    return {
        "id": state.id,
        "title": row["title"],
        "description": row["description"],
        "priority": row["priority"],
        "status_id": row["status_id"],
        "status_name": status.name if status else None,
        "is_closed": status.is_closed if status else False,
        "department_id": row["department_id"],
        "department_name": department,
        "requester_id": row["requester_id"],
        "requester_email": requester.email if requester else None,
        "requester_name": requester.full_name if requester else None,
        "assignee_id": row["assignee_id"],
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


class _OwnParts(NamedTuple):
    """A document's JSON around the reference fields, from the ticket's state alone."""

    head: bytes  # {"id":..,"title":..,"description":..,"priority":..,"status_id":..,"status_name":
    department: bytes  # ,"department_id":..,"department_name":
    requester: bytes  # ,"requester_id":..,"requester_email":
    assignee: bytes  # ,"assignee_id":..,"assignee_email":
    tail: bytes  # ,"attachments":[..],..,"updated_at":..}


_NO_DOCUMENT = _OwnParts(b"", b"", b"", b"", b"")  # a deleted ticket, or no ticket row yet
_NULL_STATUS = b'null,"is_closed":false'
_NULL_REQUESTER = b'null,"requester_name":null'
_NULL_ASSIGNEE = b'null,"assignee_name":null'
_NO_TAGS = b',"tags":[]'


def render_document(state: TicketState, refs: Refs) -> tuple[bytes | None, list[str]]:
    """``encode_document(build_document(state, refs))``, byte for byte, without the dict.

    The parts that depend on the state alone are rendered once per state and kept on it
    (``TicketState.rendered``); each call renders only the referenced names. A department or
    status rename re-renders every ticket showing it, and most of them are otherwise
    unchanged: their own parts are reused.
    """
    own: _OwnParts | None = state.rendered
    if own is None:
        own = state.rendered = _own_parts(state)
    if own is _NO_DOCUMENT:
        return None, []
    row: dict[str, Any] = state.row  # type: ignore[assignment]  # a document has a row
    problems: list[str] = []
    status, department, requester, assignee = _references(row, refs, problems)
    tags = _tags_json(state, refs, problems) if state.tag_ids else _NO_TAGS
    return b"".join(
        (
            own.head,
            _NULL_STATUS if status is None else _status_json(status),
            own.department,
            _NULL if department is None else _name_json(department),
            own.requester,
            _NULL_REQUESTER if requester is None else _person_json(requester, b"requester"),
            own.assignee,
            _NULL_ASSIGNEE if assignee is None else _person_json(assignee, b"assignee"),
            tags,
            own.tail,
        )
    ), problems


_dumps = orjson.dumps
_NULL = b"null"
# The JSON of each referenced value, by value: a rename fan-out renders the same few names
# thousands of times. Bounded; a pure function's memo, so never stale.
_memo = functools.lru_cache(maxsize=65_536)


def _tags_json(state: TicketState, refs: Refs, problems: list[str]) -> bytes:
    names = refs.tags
    try:
        found = [names[t] for t in state.tag_ids]
    except KeyError:  # a missing tag: say which
        found = _tag_names(state, refs, problems)
    found.sort()
    return b',"tags":' + _dumps(found)


@_memo
def _name_json(name: str) -> bytes:
    return _dumps(name)


@_memo
def _status_json(status: Status) -> bytes:
    return _dumps(status.name) + (
        b',"is_closed":true' if status.is_closed else b',"is_closed":false'
    )


@_memo
def _person_json(person: Person, role: bytes) -> bytes:
    return b'%s,"%s_name":%s' % (_dumps(person.email), role, _dumps(person.full_name))


def _attachment_list(state: TicketState) -> list[dict[str, Any]]:
    return [
        {"id": i, "filename": a[0], "content_type": a[1], "size_bytes": a[2]}
        for i, a in sorted(state.attachments.items())
    ]


def _own_parts(state: TicketState) -> _OwnParts:
    row = state.row
    if row is None or row["is_deleted"]:
        return _NO_DOCUMENT
    head = _dumps(
        {
            "id": state.id,
            "title": row["title"],
            "description": row["description"],
            "priority": row["priority"],
            "status_id": row["status_id"],
        }
    )
    tail = _dumps(
        {
            "attachments": _attachment_list(state),
            "attachment_count": len(state.attachments),
            "comment_count": len(state.comments),
            "last_comment_at": max(state.comments.values(), default=None),
            "created_at": row["created_at"],
            "updated_at": row["updated_at"],
        }
    )
    return _OwnParts(
        head[:-1] + b',"status_name":',
        b',"department_id":%s,"department_name":' % _dumps(row["department_id"]),
        b',"requester_id":%s,"requester_email":' % _dumps(row["requester_id"]),
        b',"assignee_id":%s,"assignee_email":' % _dumps(row["assignee_id"]),
        b"," + tail[1:],
    )


def _references(
    row: dict[str, Any], refs: Refs, problems: list[str]
) -> tuple[Status | None, str | None, Person | None, Person | None]:
    """The status, department, requester and assignee the ticket shows; each missing one
    (None) is said in ``problems``."""
    status = refs.statuses.get(row["status_id"])
    department = refs.departments.get(row["department_id"])
    requester = refs.users.get(row["requester_id"])
    assignee_id = row["assignee_id"]
    assignee = None if assignee_id is None else refs.users.get(assignee_id)
    if status is None:
        problems.append(f"unknown status_id {row['status_id']}")
    if department is None:
        problems.append(f"unknown department_id {row['department_id']}")
    if requester is None:
        problems.append(f"unknown requester_id {row['requester_id']}")
    if assignee is None and assignee_id is not None:
        problems.append(f"unknown assignee_id {assignee_id}")
    return status, department, requester, assignee


def _tag_names(state: TicketState, refs: Refs, problems: list[str]) -> list[str]:
    names = refs.tags
    missing_tags = sorted(t for t in state.tag_ids if t not in names)
    if missing_tags:
        problems.append(f"unknown tag_id {missing_tags}")
    return sorted(names[t] for t in state.tag_ids if t in names)

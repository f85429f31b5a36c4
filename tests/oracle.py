"""What every read-model document must be, computed independently from the source tables.

The worker builds documents from binlog row images; this computes them with a handful of
set-based SQL queries (formatting timestamps in SQL too), so the two share no code. Tests
compare the Redis read model against ``expected_documents`` with ``diff_documents``.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from sqlalchemy import Connection, Engine, text

# DATE_FORMAT's %f is always 6 digits: "2026-11-22T09:05:03.000120Z".
ISO = "'%Y-%m-%dT%H:%i:%s.%fZ'"

TICKETS_SQL = f"""
SELECT t.id, t.title, t.description, CAST(t.priority AS CHAR) AS priority,
       t.status_id, s.name AS status_name, COALESCE(s.is_closed, 0) AS is_closed,
       t.department_id, d.name AS department_name,
       t.requester_id, r.email AS requester_email, r.full_name AS requester_name,
       t.assignee_id, a.email AS assignee_email, a.full_name AS assignee_name,
       DATE_FORMAT(t.created_at, {ISO}) AS created_at,
       DATE_FORMAT(t.updated_at, {ISO}) AS updated_at
FROM tickets t
LEFT JOIN ticket_statuses s ON s.id = t.status_id
LEFT JOIN departments d ON d.id = t.department_id
LEFT JOIN users r ON r.id = t.requester_id
LEFT JOIN users a ON a.id = t.assignee_id
WHERE t.is_deleted = 0
"""
TAGS_SQL = """
SELECT tt.ticket_id, g.name
FROM ticket_tags tt
JOIN tags g ON g.id = tt.tag_id
JOIN tickets t ON t.id = tt.ticket_id AND t.is_deleted = 0
"""
ATTACHMENTS_SQL = """
SELECT a.ticket_id, a.id, a.filename, a.content_type, a.size_bytes
FROM attachments a
JOIN tickets t ON t.id = a.ticket_id AND t.is_deleted = 0
ORDER BY a.ticket_id, a.id
"""
COMMENTS_SQL = f"""
SELECT c.ticket_id, COUNT(*) AS comment_count,
       DATE_FORMAT(MAX(c.created_at), {ISO}) AS last_comment_at
FROM comments c
JOIN tickets t ON t.id = c.ticket_id AND t.is_deleted = 0
GROUP BY c.ticket_id
"""
DIFF_LINES_MAX = 50


def expected_documents(engine: Engine) -> dict[str, dict[str, object]]:
    """Every live ticket's document, keyed by its id as a decimal string."""
    # One transaction in REPEATABLE READ: the four queries see one consistent snapshot.
    repeatable = engine.execution_options(isolation_level="REPEATABLE READ")
    with repeatable.connect() as conn, conn.begin():
        tickets = conn.execute(text(TICKETS_SQL)).mappings().all()
        tags = _tags_by_ticket(conn)
        attachments = _attachments_by_ticket(conn)
        comments = {row.ticket_id: row for row in conn.execute(text(COMMENTS_SQL))}
    documents = {}
    for row in tickets:
        ticket_id = int(row["id"])
        comment = comments.get(ticket_id)
        documents[str(ticket_id)] = _document(
            row,
            tags=sorted(tags[ticket_id]),
            attachments=attachments[ticket_id],
            comment_count=int(comment.comment_count) if comment else 0,
            last_comment_at=comment.last_comment_at if comment else None,
        )
    return documents


def _tags_by_ticket(conn: Connection) -> defaultdict[int, list[str]]:
    tags: defaultdict[int, list[str]] = defaultdict(list)
    for ticket_id, name in conn.execute(text(TAGS_SQL)):
        tags[int(ticket_id)].append(name)
    return tags


def _attachments_by_ticket(conn: Connection) -> defaultdict[int, list[dict[str, object]]]:
    attachments: defaultdict[int, list[dict[str, object]]] = defaultdict(list)
    for row in conn.execute(text(ATTACHMENTS_SQL)):
        attachments[int(row.ticket_id)].append(
            {
                "id": int(row.id),
                "filename": row.filename,
                "content_type": row.content_type,
                "size_bytes": int(row.size_bytes),
            }
        )
    return attachments


def _document(row: Any, **children: Any) -> dict[str, object]:
    assignee_id = row["assignee_id"]
    return {
        "id": int(row["id"]),
        "title": row["title"],
        "description": row["description"],
        "priority": row["priority"],
        "status_id": int(row["status_id"]),
        "status_name": row["status_name"],
        "is_closed": bool(row["is_closed"]),
        "department_id": int(row["department_id"]),
        "department_name": row["department_name"],
        "requester_id": int(row["requester_id"]),
        "requester_email": row["requester_email"],
        "requester_name": row["requester_name"],
        "assignee_id": None if assignee_id is None else int(assignee_id),
        "assignee_email": row["assignee_email"],
        "assignee_name": row["assignee_name"],
        "tags": children["tags"],
        "attachments": children["attachments"],
        "attachment_count": len(children["attachments"]),
        "comment_count": children["comment_count"],
        "last_comment_at": children["last_comment_at"],
        "created_at": row["created_at"],
        "updated_at": row["updated_at"],
    }


def diff_documents(
    expected: dict[str, dict[str, object]], actual: dict[str, dict[str, object]]
) -> list[str]:
    """Readable differences (missing ids, extra ids, differing fields), at most about 50 lines."""
    lines = [f"missing ticket {key}" for key in _ordered(expected.keys() - actual.keys())]
    lines += [f"extra ticket {key}" for key in _ordered(actual.keys() - expected.keys())]
    for key in _ordered(expected.keys() & actual.keys()):
        lines += _field_differences(key, expected[key], actual[key])
    return capped(lines, DIFF_LINES_MAX)


def capped(lines: list[str], max_lines: int) -> list[str]:
    """The first ``max_lines`` lines, and how many more there were."""
    if len(lines) <= max_lines:
        return lines
    return [*lines[:max_lines], f"... and {len(lines) - max_lines} more differences"]


def _ordered(keys: set[str]) -> list[str]:
    # Decimal ids in numeric order; anything else after them, alphabetically.
    return sorted(keys, key=lambda key: (not key.isdigit(), len(key), key))


def _field_differences(
    key: str, expected: dict[str, object], actual: dict[str, object]
) -> list[str]:
    lines = []
    for name in sorted(expected.keys() | actual.keys()):
        if name not in actual:
            lines.append(f"ticket {key}: field {name!r} missing (expected {expected[name]!r})")
        elif name not in expected:
            lines.append(f"ticket {key}: unexpected field {name!r} = {actual[name]!r}")
        elif not _same(expected[name], actual[name]):
            lines.append(f"ticket {key}: {name} expected {expected[name]!r}, got {actual[name]!r}")
    return lines


def _same(expected: object, actual: object) -> bool:
    # Type-strict, so True never passes for 1 nor 1.0 for 1.
    return type(expected) is type(actual) and expected == actual

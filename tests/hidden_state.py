"""What the worker's hidden state must be: references and ticket states, computed from SQL.

Documents show only part of what the worker keeps: a reference no document shows right now,
or the state of a soft-deleted ticket, can be wrong for a long time before a later change
builds a wrong document from it. Comparing them with the source at a quiet moment catches
that as soon as it happens. Computed with plain SQL, sharing no code with the worker (the
stored JSON is compared as JSON).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import orjson
import redis
from sqlalchemy import Engine, text

from cdc_worker import keys

_ISO = "'%Y-%m-%dT%H:%i:%s.%fZ'"
REFERENCES_SQL = {
    "department": "SELECT id, name FROM departments",
    "status": "SELECT id, name, is_closed FROM ticket_statuses",
    "user": "SELECT id, email, full_name FROM users",
    "tag": "SELECT id, name FROM tags",
}
TICKETS_SQL = f"""
SELECT id, title, description, status_id, CAST(priority AS CHAR) AS priority, department_id,
       requester_id, assignee_id, is_deleted,
       DATE_FORMAT(created_at, {_ISO}) AS created_at, DATE_FORMAT(updated_at, {_ISO}) AS updated_at
FROM tickets
"""
CHILDREN_SQL = {
    "a": "SELECT ticket_id, id, filename, content_type, size_bytes FROM attachments",
    "t": "SELECT ticket_id, tag_id FROM ticket_tags",
    "c": f"SELECT ticket_id, id, DATE_FORMAT(created_at, {_ISO}) FROM comments",
}
DIFF_LINES_MAX = 30


def expected_hidden_state(engine: Engine) -> tuple[dict[str, dict[int, Any]], dict[int, Any]]:
    """References by kind and id, and ticket states by id, as the worker stores them (JSON)."""
    repeatable = engine.execution_options(isolation_level="REPEATABLE READ")
    with repeatable.connect() as conn, conn.begin():
        refs = {
            kind: _reference_rows(kind, conn.execute(text(sql)))
            for kind, sql in REFERENCES_SQL.items()
        }
        states: dict[int, dict[str, Any]] = defaultdict(
            lambda: {"r": None, "a": [], "t": [], "c": []}
        )
        for row in conn.execute(text(TICKETS_SQL)).mappings():
            states[int(row["id"])]["r"] = _ticket_row(row)
        for part, sql in CHILDREN_SQL.items():
            for ticket_id, *rest in conn.execute(text(sql)):
                states[int(ticket_id)][part].append(rest[0] if part == "t" else list(rest))
    for state in states.values():
        for part in ("a", "t", "c"):
            state[part].sort()
    return refs, dict(states)


def _reference_rows(kind: str, rows: Any) -> dict[int, Any]:
    if kind == "status":
        return {int(i): [name, bool(closed)] for i, name, closed in rows}
    if kind == "user":
        return {int(i): [email, name] for i, email, name in rows}
    return {int(i): name for i, name in rows}


def _ticket_row(row: Any) -> dict[str, Any]:
    return {
        "title": row["title"],
        "description": row["description"],
        "status_id": row["status_id"],
        "priority": row["priority"],
        "department_id": row["department_id"],
        "requester_id": row["requester_id"],
        "assignee_id": row["assignee_id"],
        "is_deleted": bool(row["is_deleted"]),
        "created_at": row["created_at"],
        "updated_at": row["updated_at"],
    }


def stored_hidden_state(client: redis.Redis) -> tuple[dict[str, dict[int, Any]], dict[int, Any]]:
    """The live generation's references and ticket states, decoded as JSON."""
    raw = client.get(keys.CHECKPOINT)
    if raw is None:
        return {}, {}
    generation = int(orjson.loads(raw)["generation"])
    refs = {
        kind: {
            int(k): orjson.loads(v) for k, v in client.hgetall(keys.refs(generation, kind)).items()
        }
        for kind in REFERENCES_SQL
    }
    states = {int(k): orjson.loads(v) for k, v in client.hgetall(keys.states(generation)).items()}
    return refs, states


def diff_hidden_state(
    expected: tuple[dict[str, dict[int, Any]], dict[int, Any]],
    stored: tuple[dict[str, dict[int, Any]], dict[int, Any]],
) -> list[str]:
    """Readable differences between the expected and the stored references and states."""
    (expected_refs, expected_states), (stored_refs, stored_states) = expected, stored
    lines = []
    for kind, want in expected_refs.items():
        have = stored_refs.get(kind, {})
        lines += [
            f"{kind} {i}: expected {want.get(i)!r}, stored {have.get(i)!r}"
            for i in sorted(want.keys() | have.keys())
            if want.get(i) != have.get(i)
        ]
    for ticket_id in sorted(expected_states.keys() | stored_states.keys()):
        want, have = expected_states.get(ticket_id), stored_states.get(ticket_id)
        if want != have:
            lines.append(f"state of ticket {ticket_id}: expected {want!r}, stored {have!r}")
    if len(lines) > DIFF_LINES_MAX:
        lines = [*lines[:DIFF_LINES_MAX], f"... and {len(lines) - DIFF_LINES_MAX} more differences"]
    return lines

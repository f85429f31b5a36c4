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

from cdc_worker.store import keys
from tests.oracle import ISO, capped

REFERENCES_SQL = {
    "department": "SELECT id, name FROM departments",
    "status": "SELECT id, name, is_closed FROM ticket_statuses",
    "user": "SELECT id, email, full_name FROM users",
    "tag": "SELECT id, name FROM tags",
}
TICKETS_SQL = f"""
SELECT id, title, description, status_id, CAST(priority AS CHAR) AS priority, department_id,
       requester_id, assignee_id, is_deleted,
       DATE_FORMAT(created_at, {ISO}) AS created_at, DATE_FORMAT(updated_at, {ISO}) AS updated_at
FROM tickets
"""
CHILDREN_SQL = {
    "a": "SELECT ticket_id, id, filename, content_type, size_bytes FROM attachments",
    "t": "SELECT ticket_id, tag_id FROM ticket_tags",
    "c": f"SELECT ticket_id, id, DATE_FORMAT(created_at, {ISO}) FROM comments",
}
DIFF_LINES_MAX = 30


HiddenState = tuple[dict[str, dict[int, Any]], dict[int, Any], dict[str, set[int]]]


def expected_hidden_state(engine: Engine) -> HiddenState:
    """References by kind and id, ticket states by id (as the worker stores them, JSON), and
    the members of every link set and filter index (by key suffix: ``link:user:3``)."""
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
    return refs, dict(states), _expected_sets(states)


def _expected_sets(states: dict[int, dict[str, Any]]) -> dict[str, set[int]]:
    """Links: every ticket with a state, by what its document shows. Indexes: live tickets."""
    sets: dict[str, set[int]] = defaultdict(set)
    for ticket_id, state in states.items():
        for tag in state["t"]:
            sets[f"link:tag:{tag}"].add(ticket_id)
        row = state["r"]
        if row is None:
            continue
        users = {row["requester_id"], row["assignee_id"]} - {None}
        shown = [f"department:{row['department_id']}", f"status:{row['status_id']}"]
        for key in shown + [f"user:{u}" for u in users]:
            sets[f"link:{key}"].add(ticket_id)
        if row["is_deleted"]:
            continue
        indexed = [
            "all:0",
            f"status:{row['status_id']}",
            f"department:{row['department_id']}",
            f"requester:{row['requester_id']}",
            f"assignee:{row['assignee_id'] or 0}",
            *(f"tag:{tag}" for tag in state["t"]),
        ]
        for key in indexed:
            sets[f"idx:{key}"].add(ticket_id)
    return dict(sets)


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


def stored_hidden_state(client: redis.Redis) -> HiddenState:
    """The live generation's references, ticket states, link sets and indexes."""
    raw = client.get(keys.CHECKPOINT)
    if raw is None:
        return {}, {}, {}
    generation = int(orjson.loads(raw)["generation"])
    refs = {
        kind: {
            int(k): orjson.loads(v) for k, v in client.hgetall(keys.refs(generation, kind)).items()
        }
        for kind in REFERENCES_SQL
    }
    states = {int(k): orjson.loads(v) for k, v in client.hgetall(keys.states(generation)).items()}
    return refs, states, _stored_sets(client, generation)


def _stored_sets(client: redis.Redis, generation: int) -> dict[str, set[int]]:
    prefix = keys.generation_prefix(generation)
    names = [
        name.decode()
        for pattern in ("link:*", "idx:*")
        for name in client.scan_iter(match=prefix + pattern, count=1000)
    ]
    pipe = client.pipeline(transaction=False)
    for name in names:
        if ":link:" in name:
            pipe.smembers(name)
        else:
            pipe.zrange(name, 0, -1)
    members = pipe.execute()
    return {
        name.removeprefix(prefix): {int(m) for m in found}
        for name, found in zip(names, members, strict=True)
        if found
    }


def diff_hidden_state(expected: HiddenState, stored: HiddenState) -> list[str]:
    """Readable differences between the expected and the stored references, states, link
    sets and indexes."""
    (expected_refs, expected_states, expected_sets) = expected
    (stored_refs, stored_states, stored_sets) = stored
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
    for name in sorted(expected_sets.keys() | stored_sets.keys()):
        want_ids, have_ids = expected_sets.get(name, set()), stored_sets.get(name, set())
        if want_ids != have_ids:
            missing, extra = sorted(want_ids - have_ids)[:10], sorted(have_ids - want_ids)[:10]
            lines.append(f"{name}: missing tickets {missing}, extra tickets {extra}")
    return capped(lines, DIFF_LINES_MAX)

"""The projector most teams write first (PGSync works this way): for every changed row, find
the affected tickets and re-read each one from MySQL with a join, then HSET it."""

from __future__ import annotations

import time
from typing import Any

import orjson
import pymysql
import redis

from bench.bare_loop import backlog_stream
from cdc_worker.checkpoint import Checkpoint

NAIVE_KEY = "naive:tickets"
TICKET_SQL = """
SELECT t.id, t.title, t.description, t.priority, t.status_id, s.name, s.is_closed,
       t.department_id, d.name, t.requester_id, r.email, r.full_name, t.assignee_id, a.email,
       a.full_name, t.is_deleted, t.created_at, t.updated_at
FROM tickets t LEFT JOIN ticket_statuses s ON s.id = t.status_id
LEFT JOIN departments d ON d.id = t.department_id LEFT JOIN users r ON r.id = t.requester_id
LEFT JOIN users a ON a.id = t.assignee_id WHERE t.id = %s
"""
CHILD_SQL = (
    "SELECT id, filename, content_type, size_bytes FROM attachments WHERE ticket_id = %s "
    "ORDER BY id",
    "SELECT g.name FROM ticket_tags tt JOIN tags g ON g.id = tt.tag_id WHERE tt.ticket_id = %s",
    "SELECT COUNT(*), MAX(created_at) FROM comments WHERE ticket_id = %s",
)
FAN_OUT_SQL = {
    "departments": "SELECT id FROM tickets WHERE department_id = %s",
    "ticket_statuses": "SELECT id FROM tickets WHERE status_id = %s",
    "users": "SELECT id FROM tickets WHERE requester_id = %s OR assignee_id = %s",
    "tags": "SELECT ticket_id FROM ticket_tags WHERE tag_id = %s",
}


def affected(cur: Any, table: str, row: dict[str, Any]) -> list[int]:
    """Ticket ids a changed row touches; references need a query (fan-out)."""
    if table == "tickets":
        return [row["id"]]
    if table in FAN_OUT_SQL:
        cur.execute(FAN_OUT_SQL[table], (row["id"],) * FAN_OUT_SQL[table].count("%s"))
        return [r[0] for r in cur.fetchall()]
    return [row["ticket_id"]]


def document(cur: Any, ticket_id: int) -> bytes | None:
    """One join for the ticket and its references, one query per child table."""
    cur.execute(TICKET_SQL, (ticket_id,))
    found = cur.fetchone()
    if found is None or found[15]:
        return None
    children = []
    for sql in CHILD_SQL:
        cur.execute(sql, (ticket_id,))
        children.append(cur.fetchall())
    keys = (
        "id",
        "title",
        "description",
        "priority",
        "status_id",
        "status_name",
        "is_closed",
        "department_id",
        "department_name",
        "requester_id",
        "requester_email",
        "requester_name",
        "assignee_id",
        "assignee_email",
        "assignee_name",
    )
    doc: dict[str, Any] = dict(zip(keys, found[:15], strict=True))
    doc["attachments"] = [
        dict(zip(("id", "filename", "content_type", "size_bytes"), a, strict=True))
        for a in children[0]
    ]
    doc["tags"] = sorted(t[0] for t in children[1])
    doc["comment_count"], doc["last_comment_at"] = children[2][0]
    doc["created_at"], doc["updated_at"] = found[16], found[17]
    return orjson.dumps(doc, default=str)


def naive_catchup(
    port: int, database: str, start: Checkpoint, redis_url: str, max_rows: int | None = None
) -> tuple[int, float]:
    """Rows the naive projector applies from ``start`` (all, or the first ``max_rows``: it is
    slow) and the seconds it takes."""
    stream = backlog_stream(port, database, start.position.log_file, start.position.log_pos)
    conn = pymysql.connect(
        host="127.0.0.1", port=port, user="root", database=database, autocommit=True
    )
    client = redis.Redis.from_url(redis_url)
    rows, started = 0, time.perf_counter()
    with conn.cursor() as cur:
        for event in stream:
            if max_rows is not None and rows >= max_rows:
                break
            for row in event.rows:
                rows += 1
                image = row.get("after_values") or row.get("values")
                for ticket_id in affected(cur, event.table, image):
                    doc = document(cur, ticket_id)
                    if doc is None:
                        client.hdel(NAIVE_KEY, ticket_id)
                    else:
                        client.hset(NAIVE_KEY, ticket_id, doc)
    elapsed = time.perf_counter() - started
    stream.close()
    conn.close()
    client.close()
    return rows, elapsed

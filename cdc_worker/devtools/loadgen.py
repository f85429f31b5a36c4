"""A realistic, deterministic helpdesk workload: the crash tests and benchmarks drive this.

Needs reference data (``cdc-worker seed`` makes it). Every transaction is one of a weighted
mix of what a helpdesk does all day; the same seed gives the same sequence.
"""

from __future__ import annotations

import datetime as dt
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy import Connection, Engine, text

from cdc_worker.errors import SourceError

BASE_TIME = dt.datetime(2026, 1, 1)


@dataclass
class Ids:
    """What exists, tracked locally so the generator never asks before writing."""

    departments: list[int]
    statuses: list[int]
    users: list[int]
    tags: list[int]
    tickets: list[int] = field(default_factory=list)
    next_ticket: int = 1

    @classmethod
    def load(cls, conn: Connection) -> Ids:
        """Read the existing ids once."""

        def ids(table: str) -> list[int]:
            return [int(r[0]) for r in conn.execute(text(f"SELECT id FROM {table} ORDER BY id"))]

        tickets = ids("tickets")
        return cls(
            ids("departments"),
            ids("ticket_statuses"),
            ids("users"),
            ids("tags"),
            tickets,
            (max(tickets) + 1) if tickets else 1,
        )


def _now(rng: random.Random) -> dt.datetime:
    offset = dt.timedelta(seconds=rng.randrange(0, 30_000_000), microseconds=rng.randrange(10**6))
    moment: dt.datetime = BASE_TIME + offset
    return moment


def new_ticket(c: Connection, rng: random.Random, ids: Ids) -> None:
    """A ticket with attachments, tags and a comment or two."""
    ticket_id, ids.next_ticket = ids.next_ticket, ids.next_ticket + 1
    at = _now(rng)
    c.execute(
        text(
            "INSERT INTO tickets (id, title, description, status_id, priority, department_id, "
            "requester_id, assignee_id, created_at, updated_at) "
            "VALUES (:i, :t, :d, :s, :p, :dep, :r, :a, :at, :at)"
        ),
        {
            "i": ticket_id,
            "t": rng.choice(["Printer jam", "VPN down 🔌", "Refund", "Löschen"]),
            "d": rng.choice([None, "Steps to reproduce…", "x" * rng.randrange(1, 2000)]),
            "s": rng.choice(ids.statuses),
            "p": rng.choice(["low", "normal", "high", "urgent"]),
            "dep": rng.choice(ids.departments),
            "r": rng.choice(ids.users),
            "a": rng.choice([None, *ids.users[:20]]),
            "at": at,
        },
    )
    ids.tickets.append(ticket_id)
    for _ in range(rng.randrange(0, 4)):
        add_attachment(c, rng, ids, ticket_id)
    for tag in rng.sample(ids.tags, k=min(len(ids.tags), rng.randrange(0, 3))):
        c.execute(
            text("INSERT IGNORE INTO ticket_tags VALUES (:t, :g)"), {"t": ticket_id, "g": tag}
        )
    for _ in range(rng.randrange(0, 3)):
        add_comment(c, rng, ids, ticket_id)


def add_attachment(
    c: Connection, rng: random.Random, ids: Ids, ticket_id: int | None = None
) -> None:
    """An attachment on a ticket."""
    c.execute(
        text(
            "INSERT INTO attachments (ticket_id, filename, content_type, size_bytes, created_at) "
            "VALUES (:t, :f, :ct, :s, :at)"
        ),
        {
            "t": ticket_id or rng.choice(ids.tickets),
            "f": f"file-{rng.randrange(10**6)}.pdf",
            "ct": "application/pdf",
            "s": rng.randrange(0, 10**7),
            "at": _now(rng),
        },
    )


def add_comment(c: Connection, rng: random.Random, ids: Ids, ticket_id: int | None = None) -> None:
    """A comment on a ticket."""
    c.execute(
        text(
            "INSERT INTO comments (ticket_id, author_id, body, created_at) "
            "VALUES (:t, :a, 'ok', :at)"
        ),
        {"t": ticket_id or rng.choice(ids.tickets), "a": rng.choice(ids.users), "at": _now(rng)},
    )


def change_status(c: Connection, rng: random.Random, ids: Ids) -> None:
    """Move a ticket along its workflow."""
    c.execute(
        text("UPDATE tickets SET status_id=:s, updated_at=:at WHERE id=:i"),
        {"s": rng.choice(ids.statuses), "at": _now(rng), "i": rng.choice(ids.tickets)},
    )


def reassign(c: Connection, rng: random.Random, ids: Ids) -> None:
    """Give a ticket to someone else, or to nobody, maybe in another department."""
    c.execute(
        text("UPDATE tickets SET assignee_id=:a, department_id=:d WHERE id=:i"),
        {
            "a": rng.choice([None, *ids.users[:20]]),
            "d": rng.choice(ids.departments),
            "i": rng.choice(ids.tickets),
        },
    )


def soft_delete_or_restore(c: Connection, rng: random.Random, ids: Ids) -> None:
    """Flip a ticket's soft-delete flag."""
    c.execute(
        text("UPDATE tickets SET is_deleted = 1 - is_deleted WHERE id=:i"),
        {"i": rng.choice(ids.tickets)},
    )


def delete_child(c: Connection, rng: random.Random, ids: Ids) -> None:
    """Remove one attachment, comment or tag link of a ticket."""
    table = rng.choice(["attachments", "comments", "ticket_tags"])
    c.execute(
        text(f"DELETE FROM {table} WHERE ticket_id=:i LIMIT 1"), {"i": rng.choice(ids.tickets)}
    )


def hard_delete(c: Connection, rng: random.Random, ids: Ids) -> None:
    """Delete a ticket for good (children go by ON DELETE CASCADE)."""
    ticket_id = ids.tickets.pop(rng.randrange(len(ids.tickets)))
    c.execute(text("DELETE FROM tickets WHERE id=:i"), {"i": ticket_id})


def rename(c: Connection, rng: random.Random, ids: Ids) -> None:
    """Rename a department, status or tag, or change a user's email: fan-out."""
    n = rng.randrange(10**9)
    # Users change their email far more often than departments or statuses are renamed.
    table, column, pool = rng.choices(
        [
            ("departments", "name", ids.departments),
            ("ticket_statuses", "name", ids.statuses),
            ("tags", "name", ids.tags),
            ("users", "email", ids.users),
        ],
        weights=[1, 1, 2, 16],
    )[0]
    value = f"{table[:4]}-{n}" + ("@example.com" if table == "users" else "")
    c.execute(
        text(f"UPDATE {table} SET {column}=:v WHERE id=:i"), {"v": value, "i": rng.choice(pool)}
    )


def churn_tags(c: Connection, rng: random.Random, ids: Ids) -> None:
    """Create a tag, or delete one (ticket_tags go by ON DELETE CASCADE)."""
    if len(ids.tags) > 3 and rng.random() < 0.5:
        tag = ids.tags.pop(rng.randrange(len(ids.tags)))
        c.execute(text("DELETE FROM tags WHERE id=:i"), {"i": tag})
        return
    result = c.execute(
        text("INSERT INTO tags (name) VALUES (:n)"), {"n": f"t-{rng.randrange(10**9)}"}
    )
    ids.tags.append(int(result.lastrowid))


def churn_users(c: Connection, rng: random.Random, ids: Ids) -> None:
    """Create a user, or delete one nobody requested (assignments go by ON DELETE SET NULL)."""
    if len(ids.users) > 10 and rng.random() < 0.5:
        user = rng.choice(ids.users[1:20])
        deleted = c.execute(
            text(
                "DELETE FROM users WHERE id=:i "
                "AND NOT EXISTS (SELECT 1 FROM tickets WHERE requester_id=:i) "
                "AND NOT EXISTS (SELECT 1 FROM comments WHERE author_id=:i)"
            ),
            {"i": user},
        )
        if deleted.rowcount:
            ids.users.remove(user)
        return
    result = c.execute(
        text("INSERT INTO users (email, full_name, created_at) VALUES (:e, 'New Agent ✨', :at)"),
        {"e": f"agent-{rng.randrange(10**9)}@example.com", "at": _now(rng)},
    )
    ids.users.insert(1, int(result.lastrowid))


OPERATIONS: list[tuple[Callable[[Connection, random.Random, Ids], None], int]] = [
    (new_ticket, 30),
    (change_status, 15),
    (reassign, 10),
    (add_comment, 15),
    (add_attachment, 8),
    (delete_child, 8),
    (soft_delete_or_restore, 5),
    (hard_delete, 3),
    (rename, 2),
    (churn_tags, 1),
    (churn_users, 1),
]


def run_transaction(conn: Connection, rng: random.Random, ids: Ids) -> None:
    """One to three operations in one transaction."""
    functions, weights = zip(*OPERATIONS, strict=True)
    for _ in range(rng.randrange(1, 4)):
        operation = new_ticket if len(ids.tickets) < 5 else rng.choices(functions, weights)[0]
        operation(conn, rng, ids)


def run_workload(
    engine: Engine, transactions: int, seed: int = 0, stop: Callable[[], bool] | None = None
) -> int:
    """Commit up to ``transactions`` random transactions (fewer if ``stop()`` turns true)."""
    rng = random.Random(seed)
    done = 0
    with engine.connect() as conn:
        ids = Ids.load(conn)
        conn.commit()
        while done < transactions and not (stop and stop()):
            run_transaction(conn, rng, ids)
            conn.commit()
            done += 1
    return done


@dataclass(frozen=True)
class LoadReport:
    """What a paced run achieved."""

    transactions: int
    seconds: float

    @property
    def rate_per_s(self) -> float:
        """Transactions committed per second."""
        return self.transactions / self.seconds if self.seconds > 0 else 0.0


def run_paced(
    engine: Engine,
    rate_per_s: float,
    duration_s: float,
    seed: int = 0,
    stop: Callable[[], bool] | None = None,
) -> LoadReport:
    """Commit the workload's transactions at about ``rate_per_s`` for ``duration_s`` (as fast
    as the database allows, if slower); the report says what was achieved."""
    rng = random.Random(seed)
    done, started = 0, time.monotonic()
    deadline = started + duration_s
    with engine.connect() as conn:
        ids = Ids.load(conn)
        conn.commit()
        if not (ids.departments and ids.statuses and ids.users and ids.tags):
            raise SourceError("no reference data to write against: run `cdc-worker seed` first")
        while (now := time.monotonic()) < deadline and not (stop and stop()):
            due_s = started + done / rate_per_s
            if due_s > now:
                time.sleep(min(due_s - now, deadline - now))
                continue
            run_transaction(conn, rng, ids)
            conn.commit()
            done += 1
    return LoadReport(done, time.monotonic() - started)

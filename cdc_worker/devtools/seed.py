"""Fill the source schema with realistic, varied helpdesk data, fast and deterministically.

Append-only: reference rows (departments, statuses, tags) are reused by name, everything else
gets explicit ids from MAX(id)+1, so seeding twice adds more. Rows go in with batched Core
``executemany`` inserts, about ``batch_rows`` rows per transaction, never a query per ticket.
"""

from __future__ import annotations

import datetime as dt
import math
import random
import sys
import time
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from typing import TextIO

from sqlalchemy import Connection, Engine, Table, func, select

from cdc_worker.schema.models import PRIORITIES, Base

# The vocabulary is data: kept compact by hand rather than one item per line.
# fmt: off
DEPARTMENTS = ("Support", "Billing", "Engineering", "Sales", "Security", "IT Operations",
               "Human Resources", "Facilities")
STATUSES = (("open", False), ("pending", False), ("in_progress", False), ("on_hold", False),
            ("resolved", True), ("closed", True))
STATUS_WEIGHTS = (30, 12, 20, 6, 17, 15)
PRIORITY_WEIGHTS = (20, 50, 22, 8)
TAGS = ("billing", "bug", "feature-request", "vip", "login", "password-reset", "sso", "api",
        "mobile", "ios", "android", "web", "performance", "outage", "data-export", "invoice",
        "refund", "gdpr", "security", "network", "vpn", "email", "printer", "hardware",
        "onboarding", "offboarding", "license", "integration", "slack", "jira", "backup",
        "database", "dns", "ssl", "documentation", "ui", "accessibility", "localization",
        "how-to", "regression")
FIRST_NAMES = ("Ana", "Björn", "Chloé", "Dmitri", "Émile", "Fatima", "Giulia", "Hiroshi",
               "Ingrid", "José", "Kwame", "Léa", "Mateo", "Noémie", "Olga", "Priya", "Quentin",
               "Renée", "Søren", "Tomás", "Uma", "Wei", "Yusuf", "Zoë")
LAST_NAMES = ("Andersson", "Brown", "Çelik", "Dubois", "García", "Hansen", "Ivanova", "Jäger",
              "Kowalski", "Lefèvre", "Müller", "Nakamura", "O'Brien", "Petrović", "Rossi",
              "Smith", "Tanaka", "Van der Berg", "Wójcik", "Zhang")
PRODUCTS = ("the portal", "Outlook", "the VPN", "SAP", "the billing page", "the mobile app",
            "Jira", "the printer on floor 3", "SSO", "the API", "the CSV export", "Slack")
TITLES = ("Cannot log in to {p}", "{p} is very slow since this morning", "Error 500 in {p}",
          "Request access to {p}", "{p} shows the wrong invoice amount", "How do I reset {p}?",
          "{p} crashes on start", "Password reset link for {p} expired",
          "Data missing after update of {p}", "Feature request: dark mode in {p}")
UNICODE_TITLES = ("Störung im Büro: {p} geht nicht", "Problème d'accès à {p} — urgent",
                  "請求書が表示されない ({p})", "Не работает {p}",  # noqa: RUF001
                  "Ошибка в {p} ✓")
EMOJI = ("🔥", "🚨", "🐛", "😡", "🙏", "💸", "🤔", "✅")
SENTENCES = ("It worked fine yesterday.", "I already tried restarting.", "Screenshot attached.",
             "This blocks the whole team.", "Steps: open the page, click save, nothing happens.",
             "Please call me back at extension 4412.", "Same issue as last month.",
             "Customer is waiting — please hurry 🙏.", "Error code: E_TIMEOUT (0x80072EE2).",
             "Tested on Chrome and Firefox.")
# (filename pattern, content type, min bytes, max bytes); {n} is a random number.
ATTACHMENT_KINDS = (
    ("screenshot-{n}.png", "image/png", 20_000, 3_000_000),
    ("IMG_{n}.jpg", "image/jpeg", 50_000, 8_000_000),
    ("invoice-{n}.pdf", "application/pdf", 30_000, 2_000_000),
    ("error.log", "text/plain", 200, 5_000_000),
    ("export_{n}.csv", "text/csv", 100, 50_000_000),
    ("Übersicht {n}.xlsx", "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
     8_000, 4_000_000),
    ("contract {n} final (2).docx",
     "application/vnd.openxmlformats-officedocument.wordprocessingml.document", 10_000, 900_000),
    ("logs-{n}.zip", "application/zip", 1_000, 200_000_000),
    ("screen recording {n}.mp4", "video/mp4", 500_000, 900_000_000),
    ("empty.txt", "text/plain", 0, 0),
)
# fmt: on
# Fixed, so the same seed gives the same rows whenever it runs. Naive UTC wall clock.
ANCHOR = dt.datetime(2026, 1, 1)
HISTORY_US = 730 * 86_400 * 10**6
CHILD_TABLES = ("tickets", "attachments", "ticket_tags", "comments")


@dataclass(frozen=True)
class SeedReport:
    """Rows inserted per table by one ``seed`` call, their total and the wall time."""

    departments: int
    users: int
    ticket_statuses: int
    tags: int
    tickets: int
    attachments: int
    ticket_tags: int
    comments: int
    total_rows: int
    seconds: float

    @property
    def rows_per_s(self) -> float:
        """Inserted rows per second of wall time."""
        return self.total_rows / self.seconds if self.seconds > 0 else 0.0


@dataclass
class _World:
    """What ticket generation draws from, plus the next free id per table."""

    department_ids: list[int]
    status_ids: list[int]
    tag_ids: list[int]
    user_ids: list[int]
    agent_ids: list[int]
    next_id: dict[str, int]
    rows: dict[str, list[dict[str, object]]] = field(default_factory=dict)

    def take_id(self, table: str) -> int:
        value = self.next_id[table]
        self.next_id[table] = value + 1
        return value

    def add(self, table: str, row: dict[str, object]) -> None:
        self.rows.setdefault(table, []).append(row)

    def pending(self) -> int:
        return sum(len(rows) for rows in self.rows.values())


def seed(
    engine: Engine,
    tickets: int,
    *,
    seed: int = 0,
    progress: bool | None = None,
    batch_rows: int = 2000,
) -> SeedReport:
    """Insert ``tickets`` tickets with users, tags, attachments and comments; see the module."""
    started = time.perf_counter()
    rng = random.Random(seed)
    counts: Counter[str] = Counter()
    with engine.begin() as conn:
        world = _reference_world(conn, rng, max(50, tickets // 10), batch_rows, counts)
    show = sys.stderr.isatty() if progress is None else progress
    bar = _Progress(tickets, sys.stderr if show else None)
    for index in range(tickets):
        _make_ticket(rng, world, index)
        if world.pending() >= batch_rows:
            _flush(engine, world, counts)
            bar.update(sum(counts.values()), index + 1)
    _flush(engine, world, counts)
    bar.update(sum(counts.values()), tickets, final=True)
    return _report(counts, time.perf_counter() - started)


def _report(counts: Counter[str], seconds: float) -> SeedReport:
    tables = ("departments", "users", "ticket_statuses", "tags", *CHILD_TABLES)
    per_table = {name: counts[name] for name in tables}
    return SeedReport(**per_table, total_rows=sum(per_table.values()), seconds=seconds)


def _table(name: str) -> Table:
    return Base.metadata.tables[name]


def _insert(
    conn: Connection, table: str, rows: list[dict[str, object]], counts: Counter[str]
) -> None:
    if rows:
        conn.execute(_table(table).insert(), rows)
        counts[table] += len(rows)


def _flush(engine: Engine, world: _World, counts: Counter[str]) -> None:
    with engine.begin() as conn:
        for table in CHILD_TABLES:  # parents first
            _insert(conn, table, world.rows.pop(table, []), counts)


def _reference_world(
    conn: Connection, rng: random.Random, users: int, batch_rows: int, counts: Counter[str]
) -> _World:
    created = {"created_at": ANCHOR - dt.timedelta(days=800)}
    departments = _ensure_named(
        conn, "departments", [{"name": n, **created} for n in DEPARTMENTS], counts
    )
    statuses = _ensure_named(
        conn, "ticket_statuses", [{"name": n, "is_closed": c} for n, c in STATUSES], counts
    )
    tags = _ensure_named(conn, "tags", [{"name": n} for n in TAGS], counts)
    next_id = {t: _max_id(conn, t) + 1 for t in ("users", "tickets", "attachments", "comments")}
    user_ids = list(range(next_id["users"], next_id["users"] + users))
    user_rows = [_make_user(rng, user_id, departments) for user_id in user_ids]
    for start in range(0, len(user_rows), batch_rows):
        _insert(conn, "users", user_rows[start : start + batch_rows], counts)
    agents = [
        i for i, u in zip(user_ids, user_rows, strict=True) if u["department_id"] and u["is_active"]
    ]
    return _World(departments, statuses, tags, user_ids, agents or user_ids[:1], next_id)


def _ensure_named(
    conn: Connection, table: str, rows: list[dict[str, object]], counts: Counter[str]
) -> list[int]:
    """Ids of the named rows in ``rows`` order, inserting those that do not exist yet."""
    names = [str(row["name"]) for row in rows]
    existing = _ids_by_name(conn, table, names)
    missing = [row for row in rows if row["name"] not in existing]
    # Explicit ids, like every other table: the same seed gives the same ids on the same data.
    first_id = _max_id(conn, table) + 1
    _insert(conn, table, [{"id": first_id + i, **row} for i, row in enumerate(missing)], counts)
    by_name = _ids_by_name(conn, table, names)
    return [by_name[name] for name in names]


def _ids_by_name(conn: Connection, table: str, names: list[str]) -> dict[str, int]:
    t = _table(table)
    query = select(t.c.name, t.c.id).where(t.c.name.in_(names))
    return {str(name): int(id_) for name, id_ in conn.execute(query)}


def _max_id(conn: Connection, table: str) -> int:
    return int(conn.execute(select(func.coalesce(func.max(_table(table).c.id), 0))).scalar_one())


def _make_user(rng: random.Random, user_id: int, departments: list[int]) -> dict[str, object]:
    first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
    local = _ascii(f"{first}.{last}").replace(" ", "").replace("'", "")
    return {
        "id": user_id,
        # The id makes the email unique, also against rows from earlier runs (fresh ids).
        "email": f"{local}.{user_id}@{rng.choice(('example.com', 'example.org', 'corp.test'))}",
        "full_name": f"{first} {last}",
        "department_id": None if rng.random() < 0.12 else rng.choice(departments),
        "is_active": rng.random() >= 0.08,
        "created_at": _timestamp(rng),
    }


def _ascii(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return decomposed.lower() or "user"


def _timestamp(rng: random.Random) -> dt.datetime:
    return ANCHOR - dt.timedelta(microseconds=rng.randrange(HISTORY_US))


def _later(rng: random.Random, start: dt.datetime, max_hours: float) -> dt.datetime:
    return start + dt.timedelta(microseconds=rng.randrange(1, int(max_hours * 3.6e9)))


def _make_ticket(rng: random.Random, world: _World, index: int) -> None:
    ticket_id = world.take_id("tickets")
    created = _timestamp(rng)
    requester = rng.choice(world.user_ids)
    assignee = None if rng.random() < 0.25 else rng.choice(world.agent_ids)
    last = _add_comments(rng, world, ticket_id, created, [requester, assignee])
    last = max(last, _add_attachments(rng, world, ticket_id, created))
    for tag_id in rng.sample(world.tag_ids, rng.randint(0, 4)):
        world.add("ticket_tags", {"ticket_id": ticket_id, "tag_id": tag_id})
    world.add(
        "tickets",
        {
            "id": ticket_id,
            "title": _title(rng),
            "description": None if rng.random() < 0.1 else _text(rng, 1, 5),
            "status_id": rng.choices(world.status_ids, STATUS_WEIGHTS)[0],
            "priority": _priority(rng, index),
            "department_id": rng.choice(world.department_ids),
            "requester_id": requester,
            "assignee_id": assignee,
            "is_deleted": rng.random() < 0.03,
            "created_at": created,
            "updated_at": max(last, _later(rng, created, 2)),
        },
    )


def _priority(rng: random.Random, index: int) -> str:
    # The first tickets of each run cover every priority, whatever the count.
    if index < len(PRIORITIES):
        return PRIORITIES[index]
    return rng.choices(PRIORITIES, PRIORITY_WEIGHTS)[0]


def _title(rng: random.Random) -> str:
    roll = rng.random()
    pattern = rng.choice(UNICODE_TITLES if roll < 0.1 else TITLES)
    title = pattern.format(p=rng.choice(PRODUCTS))
    if roll > 0.94:
        title = f"{rng.choice(EMOJI)} {title}" if roll > 0.97 else f"{title} {rng.choice(EMOJI)}"
    return title


def _text(rng: random.Random, low: int, high: int) -> str:
    return " ".join(rng.choices(SENTENCES, k=rng.randint(low, high)))


def _add_comments(
    rng: random.Random, world: _World, ticket_id: int, start: dt.datetime, people: list[int | None]
) -> dt.datetime:
    """Add 0-6 comments in time order; return the last one's time (``start`` when none)."""
    authors = [p for p in people if p is not None]
    at = start
    for _ in range(rng.randint(0, 6)):
        at = _later(rng, at, 30)
        # Mostly the requester and assignee talk; now and then another agent chimes in.
        author = rng.choice(authors) if rng.random() < 0.85 else rng.choice(world.agent_ids)
        world.add(
            "comments",
            {
                "id": world.take_id("comments"),
                "ticket_id": ticket_id,
                "author_id": author,
                "body": _text(rng, 1, 3),
                "created_at": at,
            },
        )
    return at


def _add_attachments(
    rng: random.Random, world: _World, ticket_id: int, start: dt.datetime
) -> dt.datetime:
    """Add 0-5 attachments; return the latest one's time (``start`` when none)."""
    latest = start
    for _ in range(rng.choices(range(6), (45, 25, 14, 8, 5, 3))[0]):
        pattern, content_type, low, high = rng.choice(ATTACHMENT_KINDS)
        at = _later(rng, start, 72)
        latest = max(latest, at)
        world.add(
            "attachments",
            {
                "id": world.take_id("attachments"),
                "ticket_id": ticket_id,
                "filename": pattern.format(n=rng.randint(1, 99_999)),
                "content_type": content_type,
                # Log-uniform: many small files, a few huge ones.
                "size_bytes": int(math.exp(rng.uniform(math.log(low + 1), math.log(high + 1)))) - 1,
                "created_at": at,
            },
        )
    return latest


class _Progress:
    """A one-line ``\\r`` progress bar: tickets, rows, rows/s and ETA; silent without a stream."""

    def __init__(self, total_tickets: int, stream: TextIO | None) -> None:
        self._total = total_tickets
        self._stream = stream
        self._started = self._shown = time.perf_counter()

    def update(self, rows: int, tickets_done: int, *, final: bool = False) -> None:
        now = time.perf_counter()
        if self._stream is None or (now - self._shown < 0.2 and not final):
            return
        self._shown = now
        elapsed = max(now - self._started, 1e-9)
        eta_s = elapsed * (self._total - tickets_done) / max(tickets_done, 1)
        self._stream.write(
            f"\rseed: {tickets_done:,}/{self._total:,} tickets  {rows:,} rows  "
            f"{rows / elapsed:,.0f} rows/s  ETA {eta_s:,.0f}s "
        )
        if final:
            self._stream.write("\n")
        self._stream.flush()

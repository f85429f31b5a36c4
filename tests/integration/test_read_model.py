"""The read model follows every kind of change the source can make, field by field."""

from __future__ import annotations

import datetime as dt

import pytest
import redis
from sqlalchemy import Connection, Engine, text

from cdc_worker.devtools.seed import seed
from cdc_worker.store import keys
from tests.conftest import SourceDatabase
from tests.harness import read_model, wait_streaming, wait_synced, worker_thread

NOW = dt.datetime(2026, 11, 22, 9, 5, 3, 120)


def run(conn: Connection, sql: str, **params: object) -> None:
    conn.execute(text(sql), params)


def seed_references(engine: Engine) -> None:
    with engine.begin() as c:
        run(
            c,
            "INSERT INTO departments (id, name, created_at) "
            "VALUES (1,'Support',:n),(2,'Billing',:n)",
            n=NOW,
        )
        run(
            c,
            "INSERT INTO ticket_statuses (id, name, is_closed) "
            "VALUES (1,'open',0),(2,'resolved',1)",
        )
        for i in range(1, 5):
            run(
                c,
                "INSERT INTO users (id, email, full_name, department_id, created_at) "
                "VALUES (:i, :e, :f, 1, :n)",
                i=i,
                e=f"user{i}@example.com",
                f=f"User {i} ✨",
                n=NOW,
            )
        run(c, "INSERT INTO tags (id, name) VALUES (1,'vip'),(2,'bug'),(3,'printer')")


def add_ticket(c: Connection, ticket_id: int, **columns: object) -> None:
    row = {
        "id": ticket_id,
        "title": f"Ticket {ticket_id}",
        "description": None,
        "status_id": 1,
        "priority": "normal",
        "department_id": 1,
        "requester_id": 1,
        "assignee_id": None,
        "created_at": NOW,
        "updated_at": NOW,
        **columns,
    }
    names = ", ".join(row)
    run(c, f"INSERT INTO tickets ({names}) VALUES ({', '.join(':' + k for k in row)})", **row)


def add_children(c: Connection, ticket_id: int, attachments: int, comments: int) -> None:
    for n in range(attachments):
        run(
            c,
            "INSERT INTO attachments (ticket_id, filename, content_type, size_bytes, created_at) "
            "VALUES (:t, :f, 'text/plain', :s, :n)",
            t=ticket_id,
            f=f"log-{n}.txt",
            s=n * 10,
            n=NOW,
        )
    for n in range(comments):
        run(
            c,
            "INSERT INTO comments (ticket_id, author_id, body, created_at) "
            "VALUES (:t, 2, 'hi', :n)",
            t=ticket_id,
            n=NOW + dt.timedelta(minutes=n, microseconds=n),
        )


def scripted_workload(engine: Engine) -> None:
    """Every table, every operation, fan-out, cascades, soft deletes, rollbacks, big values."""
    with engine.begin() as c:  # one multi-statement transaction
        add_ticket(c, 1, title="Printer on fire 🔥🖨️", assignee_id=2, description="x" * 1_000_000)
        add_ticket(c, 2, priority="urgent", department_id=2, requester_id=3)
        add_ticket(c, 3, priority="low", assignee_id=4)
        add_children(c, 1, attachments=3, comments=2)
        add_children(c, 3, attachments=1, comments=1)
        run(c, "INSERT INTO ticket_tags VALUES (1,1),(1,2),(2,3),(3,1)")
    with engine.begin() as c:  # fan-out renames
        run(c, "UPDATE departments SET name='Customer Care' WHERE id=1")
        run(c, "UPDATE ticket_statuses SET name='done', is_closed=1 WHERE id=2")
        run(c, "UPDATE users SET email='rita@example.com', full_name='Rita R.' WHERE id=1")
        run(c, "UPDATE tags SET name='aaa-first' WHERE id=3")
    with engine.begin() as c:  # moves, status changes, reassignment, NULLs
        run(c, "UPDATE tickets SET department_id=2, status_id=2, assignee_id=NULL WHERE id=1")
        run(c, "UPDATE tickets SET description=NULL, title='' WHERE id=3")
        run(c, "UPDATE attachments SET ticket_id=2 WHERE ticket_id=3")
        run(
            c,
            "UPDATE comments SET created_at=:n WHERE ticket_id=1 ORDER BY id LIMIT 1",
            n=NOW + dt.timedelta(days=3),
        )
    with engine.begin() as c:  # soft delete, then a child change while deleted, then restore
        run(c, "UPDATE tickets SET is_deleted=1 WHERE id=2")
    with engine.begin() as c:
        add_children(c, 2, attachments=1, comments=1)
        run(c, "DELETE FROM ticket_tags WHERE ticket_id=2")
    with engine.begin() as c:
        run(c, "UPDATE tickets SET is_deleted=0 WHERE id=2")
    with engine.connect() as c:  # rolled back: must leave no trace
        run(c, "UPDATE departments SET name='ROLLED BACK' WHERE id=2")
        add_ticket(c, 99)
        c.rollback()
    with engine.begin() as c:  # cascades the binlog does not show
        run(c, "DELETE FROM tags WHERE id=1")  # ticket_tags ON DELETE CASCADE
        run(c, "DELETE FROM users WHERE id=4")  # tickets.assignee_id ON DELETE SET NULL
        add_ticket(c, 4)
        add_children(c, 4, attachments=2, comments=2)
    with engine.begin() as c:
        run(c, "DELETE FROM tickets WHERE id=4")  # attachments/comments/ticket_tags CASCADE
        run(c, "DELETE FROM comments WHERE ticket_id=1 ORDER BY created_at DESC LIMIT 1")


def test_every_change_reaches_the_read_model_field_by_field(
    source_db: SourceDatabase, redis_url: str
) -> None:
    seed_references(source_db.engine)
    with worker_thread(source_db.cdc_url, redis_url):
        wait_synced(source_db.engine, redis_url)
        scripted_workload(source_db.engine)
        wait_synced(source_db.engine, redis_url)
        with redis.Redis.from_url(redis_url) as client:
            docs = read_model(client)
    assert set(docs) == {"1", "2", "3"}
    assert docs["1"]["department_name"] == "Billing"
    assert docs["1"]["requester_email"] == "rita@example.com"
    assert docs["3"]["assignee_id"] is None  # SET NULL cascade of the deleted user 4
    assert docs["3"]["tags"] == []  # tag 1 deleted by cascade
    assert len(docs["1"]["description"]) == 1_000_000


def test_initial_snapshot_builds_the_read_model_from_existing_data(
    source_db: SourceDatabase, redis_url: str
) -> None:
    seed_references(source_db.engine)
    scripted_workload(source_db.engine)
    with worker_thread(source_db.cdc_url, redis_url) as app:
        wait_synced(source_db.engine, redis_url)
        assert app.metrics.snapshots.labels(reason="no_checkpoint")._value.get() == 1
        checkpoint = app.worker.store.load_checkpoint()
    assert checkpoint is not None
    assert checkpoint.generation == 1
    assert checkpoint.position.gtid


def test_an_additive_alter_is_followed_and_other_schemas_are_ignored(
    source_db: SourceDatabase, redis_url: str, mariadb: object
) -> None:
    seed_references(source_db.engine)
    with worker_thread(source_db.cdc_url, redis_url):
        with source_db.engine.begin() as c:
            add_ticket(c, 1)
            run(c, "ALTER TABLE tickets ADD COLUMN external_ref VARCHAR(40) NULL")
            run(c, "CREATE TABLE IF NOT EXISTS unrelated (id INT PRIMARY KEY, v TEXT)")
        with source_db.engine.begin() as c:
            add_ticket(c, 2, external_ref="JIRA-1", title="after the ALTER")
            run(c, "INSERT INTO unrelated VALUES (1, 'x'), (2, 'y')")
            run(c, "UPDATE tickets SET external_ref='JIRA-2', title='still followed' WHERE id=1")
        wait_synced(source_db.engine, redis_url)


def test_a_row_with_a_missing_parent_is_written_and_dead_lettered(
    source_db: SourceDatabase, redis_url: str
) -> None:
    seed_references(source_db.engine)
    with worker_thread(source_db.cdc_url, redis_url) as app:
        wait_streaming(redis_url)
        with source_db.engine.begin() as c:
            run(c, "SET SESSION FOREIGN_KEY_CHECKS=0")
            add_ticket(c, 7, status_id=42)
            run(c, "SET SESSION FOREIGN_KEY_CHECKS=1")
        wait_synced(source_db.engine, redis_url)
        with redis.Redis.from_url(redis_url) as client:
            [(_, fields)] = client.xrange(keys.DEAD_LETTERS)
        assert app.metrics.dead_letter_rows.labels(table="tickets")._value.get() == 1
    assert fields[b"identity"] == b"tickets:7"
    assert b"unknown status_id 42" in fields[b"reason"]
    assert fields[b"position"].startswith(b"mysql-bin.")


@pytest.mark.parametrize("rows", [20_000])
def test_a_transaction_larger_than_a_batch_is_applied_whole(
    source_db: SourceDatabase, redis_url: str, rows: int
) -> None:
    seed_references(source_db.engine)
    with worker_thread(source_db.cdc_url, redis_url, batch_max_rows=1000):
        with source_db.engine.begin() as c:
            run(
                c,
                "INSERT INTO tickets "
                "(title, status_id, department_id, requester_id, created_at, updated_at) "
                "SELECT CONCAT('bulk ', seq), 1, 1 + seq % 2, 1, :n, :n FROM seq_1_to_" + str(rows),
                n=NOW,
            )
        wait_synced(source_db.engine, redis_url, timeout_s=120)


def test_renames_fanning_out_to_many_tickets_are_applied_in_bounded_steps(
    source_db: SourceDatabase, redis_url: str
) -> None:
    seed(source_db.engine, 400)
    with worker_thread(source_db.cdc_url, redis_url, fan_out_step_tickets=25):
        wait_synced(source_db.engine, redis_url)
        with source_db.engine.begin() as c:
            run(c, "UPDATE departments SET name = CONCAT(name, ' (renamed)')")
            run(c, "UPDATE ticket_statuses SET name = UPPER(name)")
            run(c, "DELETE FROM tags WHERE id = 1")
        wait_synced(source_db.engine, redis_url)  # every document equals the SQL oracle
    with redis.Redis.from_url(redis_url) as client:
        docs = read_model(client)
    assert len(docs) > 300  # soft-deleted tickets have no document
    assert all(doc["department_name"].endswith("(renamed)") for doc in docs.values())

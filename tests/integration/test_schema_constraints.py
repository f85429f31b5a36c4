"""The database itself enforces the schema's rules, whatever the writer forgets to check."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import Connection, text
from sqlalchemy.exc import DBAPIError

from cdc_worker.schema.models import Base
from tests import factories as f
from tests.conftest import SourceDatabase

# MariaDB error numbers.
ER_DUP_ENTRY = 1062
ER_ROW_IS_REFERENCED_2 = 1451
ER_NO_REFERENCED_ROW_2 = 1452
WARN_DATA_TRUNCATED = 1265
ER_CONSTRAINT_FAILED = 4025


@pytest.fixture
def conn(source_db: SourceDatabase) -> Iterator[Connection]:
    """A connection (autocommit) to a database holding one ticket with a child of each kind."""
    with source_db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as c:
        _insert(c, "departments", f.department(1), f.department(2))
        _insert(c, "users", f.user(1, department_id=1), f.user(2, department_id=1))
        _insert(c, "ticket_statuses", f.status(1, "open"))
        _insert(c, "tags", f.tag(1))
        _insert(c, "tickets", f.ticket(10, requester_id=1, assignee_id=2))
        _insert(c, "attachments", f.attachment(100, 10))
        _insert(c, "comments", f.comment(200, 10, author_id=1))
        _insert(c, "ticket_tags", f.ticket_tag(10, 1))
        yield c


def _insert(conn: Connection, table: str, *rows: dict[str, Any]) -> None:
    conn.execute(Base.metadata.tables[table].insert(), list(rows))


def _error_number(error: pytest.ExceptionInfo[DBAPIError]) -> int:
    return int(error.value.orig.args[0])  # type: ignore[union-attr]


def _scalar(conn: Connection, sql: str) -> Any:
    return conn.execute(text(sql)).scalar_one()


def test_a_negative_attachment_size_is_refused(conn: Connection) -> None:
    with pytest.raises(DBAPIError) as error:
        _insert(conn, "attachments", f.attachment(101, 10, size_bytes=-1))

    assert _error_number(error) == ER_CONSTRAINT_FAILED


def test_a_duplicate_email_is_refused(conn: Connection) -> None:
    with pytest.raises(DBAPIError) as error:
        _insert(conn, "users", f.user(3, email="user1@example.com"))

    assert _error_number(error) == ER_DUP_ENTRY


def test_the_servers_default_sql_mode_is_strict(conn: Connection) -> None:
    assert "STRICT_TRANS_TABLES" in _scalar(conn, "SELECT @@GLOBAL.sql_mode").split(",")
    assert "STRICT_TRANS_TABLES" in _scalar(conn, "SELECT @@SESSION.sql_mode").split(",")


def _insert_ticket_with_priority(conn: Connection, priority: str) -> None:
    # Plain SQL: the models' Enum would refuse the value before the server sees it.
    conn.execute(
        text(
            "INSERT INTO tickets (id, title, status_id, priority, department_id, requester_id,"
            " created_at, updated_at) VALUES (11, 't', 1, :priority, 1, 1, NOW(6), NOW(6))"
        ),
        {"priority": priority},
    )


def test_an_unknown_priority_is_refused_in_strict_mode(conn: Connection) -> None:
    with pytest.raises(DBAPIError) as error:
        _insert_ticket_with_priority(conn, "critical")

    assert _error_number(error) == WARN_DATA_TRUNCATED


def test_without_strict_mode_an_unknown_priority_is_stored_as_an_empty_string(
    conn: Connection,
) -> None:
    # Why strictness matters to the read model: a lax session writes '' into the binlog.
    conn.execute(text("SET SESSION sql_mode = ''"))
    _insert_ticket_with_priority(conn, "critical")

    assert _scalar(conn, "SELECT priority FROM tickets WHERE id = 11") == ""


@pytest.mark.parametrize(
    ("table", "row"),
    [
        ("tickets", f.ticket(11, status_id=99)),
        ("tickets", f.ticket(11, assignee_id=99)),
        ("attachments", f.attachment(101, 99)),
        ("comments", f.comment(201, 10, author_id=99)),
        ("ticket_tags", f.ticket_tag(10, 99)),
        ("users", f.user(3, department_id=99)),
    ],
)
def test_a_dangling_foreign_key_is_refused(
    conn: Connection, table: str, row: dict[str, Any]
) -> None:
    with pytest.raises(DBAPIError) as error:
        _insert(conn, table, row)

    assert _error_number(error) == ER_NO_REFERENCED_ROW_2


def test_deleting_a_ticket_cascades_to_its_attachments_comments_and_tag_links(
    conn: Connection,
) -> None:
    conn.execute(text("DELETE FROM tickets WHERE id = 10"))

    for table in ("attachments", "comments", "ticket_tags"):
        assert _scalar(conn, f"SELECT COUNT(*) FROM {table}") == 0


def test_deleting_a_tag_cascades_to_its_ticket_links(conn: Connection) -> None:
    conn.execute(text("DELETE FROM tags WHERE id = 1"))

    assert _scalar(conn, "SELECT COUNT(*) FROM ticket_tags") == 0
    assert _scalar(conn, "SELECT COUNT(*) FROM tickets") == 1


def test_deleting_an_assignee_unassigns_their_tickets(conn: Connection) -> None:
    conn.execute(text("DELETE FROM users WHERE id = 2"))

    assert _scalar(conn, "SELECT assignee_id FROM tickets WHERE id = 10") is None


def test_deleting_a_department_detaches_its_users(conn: Connection) -> None:
    conn.execute(text("UPDATE tickets SET department_id = 2 WHERE id = 10"))
    conn.execute(text("DELETE FROM departments WHERE id = 1"))

    assert _scalar(conn, "SELECT COUNT(*) FROM users WHERE department_id IS NOT NULL") == 0


@pytest.mark.parametrize(
    "statement",
    [
        "DELETE FROM ticket_statuses WHERE id = 1",
        "DELETE FROM users WHERE id = 1",  # a requester and a comment author
        "DELETE FROM departments WHERE id = 1",  # a ticket's department
    ],
)
def test_deleting_a_referenced_parent_is_refused(conn: Connection, statement: str) -> None:
    with pytest.raises(DBAPIError) as error:
        conn.execute(text(statement))

    assert _error_number(error) == ER_ROW_IS_REFERENCED_2

"""The seeder fills the schema with varied, realistic rows, deterministically and append-only."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import Engine, text

from cdc_worker.devtools.seed import SeedReport, seed
from cdc_worker.schema.models import PRIORITIES, Base
from tests.conftest import SourceDatabase

TICKETS = 600


def _count(engine: Engine, sql: str) -> int:
    with engine.connect() as connection:
        return int(connection.execute(text(sql)).scalar_one() or 0)


def _table_rows(engine: Engine) -> dict[str, list[Any]]:
    """Every row of every table, in primary-key order."""
    with engine.connect() as connection:
        return {
            name: connection.execute(table.select().order_by(*table.primary_key.columns)).all()
            for name, table in Base.metadata.tables.items()
        }


def _table_counts(engine: Engine) -> dict[str, int]:
    return {name: _count(engine, f"SELECT COUNT(*) FROM {name}") for name in Base.metadata.tables}


def _report_counts(report: SeedReport) -> dict[str, int]:
    return {name: getattr(report, name) for name in Base.metadata.tables}


@pytest.fixture
def seeded(source_db: SourceDatabase) -> tuple[Engine, SeedReport]:
    return source_db.engine, seed(source_db.engine, TICKETS, seed=1)


def test_seeding_inserts_the_counts_it_reports(seeded: tuple[Engine, SeedReport]) -> None:
    engine, report = seeded

    assert _table_counts(engine) == _report_counts(report)
    assert report.total_rows == sum(_report_counts(report).values())
    assert (report.tickets, report.users) == (TICKETS, max(50, TICKETS // 10))
    assert (report.departments, report.ticket_statuses, report.tags) == (8, 6, 40)
    assert report.seconds > 0


def test_seeded_tickets_are_varied(seeded: tuple[Engine, SeedReport]) -> None:
    engine, _ = seeded
    unassigned = _count(engine, "SELECT COUNT(*) FROM tickets WHERE assignee_id IS NULL")
    titles = [row[0] for row in _rows(engine, "SELECT title FROM tickets")]

    assert 0.15 * TICKETS < unassigned < 0.35 * TICKETS
    assert 0 < _count(engine, "SELECT SUM(is_deleted) FROM tickets") < 0.08 * TICKETS
    assert _count(engine, "SELECT COUNT(*) FROM tickets WHERE description IS NULL") > 0
    assert any(max(map(ord, title)) > 0xFFFF for title in titles), "no 4-byte emoji"
    assert any(0x7F < max(map(ord, title)) <= 0xFFFF for title in titles), "no other unicode"
    assert {row[0] for row in _rows(engine, "SELECT DISTINCT priority FROM tickets")} == set(
        PRIORITIES
    )
    assert _count(engine, "SELECT COUNT(*) FROM tickets WHERE MICROSECOND(created_at) > 0") > 0


def test_seeded_children_stay_within_their_ranges(seeded: tuple[Engine, SeedReport]) -> None:
    engine, _ = seeded
    per_ticket = "SELECT MAX(n) FROM (SELECT COUNT(*) AS n FROM {} GROUP BY ticket_id) AS c"

    assert _count(engine, per_ticket.format("attachments")) == 5
    assert _count(engine, per_ticket.format("ticket_tags")) == 4
    assert _count(engine, per_ticket.format("comments")) == 6
    assert _count(engine, "SELECT COUNT(DISTINCT content_type) FROM attachments") > 5
    no_comments = "SELECT COUNT(*) FROM tickets t LEFT JOIN comments c ON c.ticket_id = t.id"
    assert _count(engine, no_comments + " WHERE c.id IS NULL") > 0


def test_seeded_users_include_inactive_ones_and_ones_without_a_department(
    seeded: tuple[Engine, SeedReport],
) -> None:
    engine, _ = seeded

    assert _count(engine, "SELECT COUNT(*) FROM users WHERE department_id IS NULL") > 0
    assert _count(engine, "SELECT COUNT(*) FROM users WHERE is_active = 0") > 0


def _rows(engine: Engine, sql: str) -> list[Any]:
    with engine.connect() as connection:
        return list(connection.execute(text(sql)).all())


def _empty(engine: Engine) -> None:
    with engine.begin() as connection:
        for table in reversed(Base.metadata.sorted_tables):
            connection.execute(table.delete())


def test_seeding_is_deterministic_for_the_same_seed(source_db: SourceDatabase) -> None:
    engine = source_db.engine
    seed(engine, 150, seed=7)
    first = _table_rows(engine)
    _empty(engine)

    seed(engine, 150, seed=7)

    assert _table_rows(engine) == first


def test_seeding_with_another_seed_gives_other_rows(source_db: SourceDatabase) -> None:
    engine = source_db.engine
    seed(engine, 150, seed=7)
    first = _table_rows(engine)
    _empty(engine)

    seed(engine, 150, seed=8)

    assert _table_rows(engine)["tickets"] != first["tickets"]


def test_seeding_twice_appends_fresh_rows(source_db: SourceDatabase) -> None:
    engine = source_db.engine
    first = seed(engine, 100, batch_rows=97)

    second = seed(engine, 100, batch_rows=97)

    assert (second.departments, second.ticket_statuses, second.tags) == (0, 0, 0)
    assert (second.tickets, second.users) == (100, 50)
    assert _table_counts(engine) == {
        name: count + getattr(second, name) for name, count in _report_counts(first).items()
    }
    assert _count(engine, "SELECT MAX(id) FROM tickets") == 200


def test_seeding_draws_a_progress_line_only_when_asked(
    source_db: SourceDatabase, capsys: pytest.CaptureFixture[str]
) -> None:
    seed(source_db.engine, 20)  # stderr is not a terminal under pytest
    assert capsys.readouterr().err == ""

    seed(source_db.engine, 20, progress=True)
    drawn = capsys.readouterr().err

    assert drawn.startswith("\rseed: 20/20 tickets")
    assert "rows/s" in drawn
    assert drawn.endswith("\n")

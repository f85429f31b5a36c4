"""The Alembic migrations build exactly the schema the models declare, and undo it."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, inspect, text

from cdc_worker.devtools.localservers import MariaDBServer
from cdc_worker.schema import migrate
from cdc_worker.schema.models import Base
from tests.conftest import SourceDatabase

MODEL_TABLES = set(Base.metadata.tables)


@pytest.fixture
def empty_db_url(mariadb: MariaDBServer) -> Iterator[str]:
    name = f"m_{uuid.uuid4().hex[:16]}"
    root_url, _cdc_url = mariadb.create_database(name)
    yield root_url
    _execute(root_url, f"DROP DATABASE `{name}`")


def _execute(url: str, *statements: str) -> None:
    engine = create_engine(url)
    try:
        with engine.begin() as connection:
            for statement in statements:
                connection.execute(text(statement))
    finally:
        engine.dispose()


def _table_names(url: str) -> set[str]:
    engine = create_engine(url)
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def _create_statements(url: str) -> dict[str, list[str]]:
    """SHOW CREATE TABLE per model table, lines sorted (index order is not meaningful)."""
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            return {
                table: sorted(
                    connection.execute(text(f"SHOW CREATE TABLE `{table}`")).one()[1].splitlines()
                )
                for table in MODEL_TABLES
            }
    finally:
        engine.dispose()


def test_upgrading_an_empty_database_to_head_leaves_no_drift(empty_db_url: str) -> None:
    migrate.upgrade(empty_db_url)

    assert _table_names(empty_db_url) == MODEL_TABLES | {"alembic_version"}
    assert migrate.drift(empty_db_url) == []


def test_downgrading_to_base_leaves_only_the_version_table_and_upgrading_again_works(
    empty_db_url: str,
) -> None:
    migrate.upgrade(empty_db_url)

    migrate.downgrade(empty_db_url)
    assert _table_names(empty_db_url) == {"alembic_version"}

    migrate.upgrade(empty_db_url, "head")
    assert _table_names(empty_db_url) == MODEL_TABLES | {"alembic_version"}
    assert migrate.drift(empty_db_url) == []


def test_the_migrated_schema_has_the_same_ddl_as_the_models_create_all(
    empty_db_url: str, source_db: SourceDatabase
) -> None:
    # Autogenerate ignores server defaults, CHECK constraints, charset and collation; DDL doesn't.
    migrate.upgrade(empty_db_url)

    assert _create_statements(empty_db_url) == _create_statements(source_db.root_url)


def test_drift_reports_an_index_missing_from_the_database(empty_db_url: str) -> None:
    migrate.upgrade(empty_db_url)
    _execute(empty_db_url, "DROP INDEX ix_tickets_updated_at ON tickets")

    differences = migrate.drift(empty_db_url)

    assert [difference[0] for difference in differences] == ["add_index"]  # type: ignore[index]


def test_the_alembic_project_is_found_from_any_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)

    root = migrate.project_root()

    assert (root / "alembic.ini").is_file()
    assert (root / "migrations" / "versions" / "0001_initial_schema.py").is_file()

"""Run the Alembic migrations programmatically and report drift between models and database.

The Alembic project (``alembic.ini`` + ``migrations/``) lives at the repository root, next to
the ``cdc_worker`` package; the current directory is tried second.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, make_url, pool

from cdc_worker.errors import ConfigurationError
from cdc_worker.schema.models import Base

_PACKAGE_DIR = Path(__file__).resolve().parents[1]  # cdc_worker/


def upgrade(url: str, revision: str = "head") -> None:
    """Migrate the database at ``url`` up to ``revision``."""
    command.upgrade(alembic_config(url), revision)


def downgrade(url: str, revision: str = "base") -> None:
    """Migrate the database at ``url`` down to ``revision`` (``base``: no tables left)."""
    command.downgrade(alembic_config(url), revision)


def current_revision(url: str) -> str | None:
    """The database's Alembic revision; None before the first migration."""
    engine = create_engine(url, poolclass=pool.NullPool)
    try:
        with engine.connect() as connection:
            revision = MigrationContext.configure(connection).get_current_revision()
            return None if revision is None else str(revision)
    finally:
        engine.dispose()


def describe(url: str) -> str:
    """``database helpdesk on 127.0.0.1:3306``, for messages (no credentials)."""
    parsed = make_url(url)
    return f"database {parsed.database} on {parsed.host or '127.0.0.1'}:{parsed.port or 3306}"


def drift(url: str) -> list[object]:
    """Autogenerate's differences between the live database and the models; empty when in sync."""
    engine = create_engine(url, poolclass=pool.NullPool)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            return list(compare_metadata(context, Base.metadata))
    finally:
        engine.dispose()


def alembic_config(url: str) -> Config:
    """An Alembic Config for ``url`` that leaves the host's logging configuration alone."""
    root = project_root()
    config = Config(str(root / "alembic.ini"))
    config.set_main_option("script_location", str(root / "migrations"))
    # ConfigParser interpolation: a percent-encoded password must have its % doubled.
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    config.attributes["configure_logger"] = False
    return config


def project_root() -> Path:
    """The directory holding ``alembic.ini`` and ``migrations/``: the repo root, else the cwd."""
    for candidate in (_PACKAGE_DIR.parent, Path.cwd()):
        if (candidate / "alembic.ini").is_file() and (candidate / "migrations").is_dir():
            return candidate
    raise ConfigurationError(
        "alembic.ini and migrations/ not found next to the cdc_worker package nor in the "
        "current directory; run from the repository root"
    )

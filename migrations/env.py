"""Alembic environment: the URL comes from settings unless a caller hands one over.

Precedence: ``config.attributes["connection"]`` (an open Connection), then a
``sqlalchemy.url`` set programmatically (``cdc_worker.schema.migrate`` does this), then
``load_settings().admin_url`` (``CDC_ADMIN_MYSQL_URL``, else ``CDC_MYSQL_URL``). The URL is
never logged.
"""

from __future__ import annotations

from logging.config import fileConfig

from alembic import context
from sqlalchemy import engine_from_config, pool
from sqlalchemy.engine import Connection

from cdc_worker.schema.models import Base
from cdc_worker.settings import load_settings

config = context.config
target_metadata = Base.metadata

# cdc_worker.schema.migrate sets configure_logger=False so it never rewires the host's logging.
if config.config_file_name is not None and config.attributes.get("configure_logger", True):
    fileConfig(config.config_file_name, disable_existing_loggers=False)


def _url() -> str:
    given = config.get_main_option("sqlalchemy.url")
    if given:
        return given
    return load_settings().admin_url


def run_migrations_offline() -> None:
    """Emit SQL to stdout (``alembic upgrade head --sql``) without connecting."""
    context.configure(
        url=_url(), target_metadata=target_metadata, compare_type=True, literal_binds=True
    )
    with context.begin_transaction():
        context.run_migrations()


def _run_with(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=target_metadata, compare_type=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    """Migrate through the caller's connection, or one made from the URL and then disposed."""
    given = config.attributes.get("connection")
    if given is not None:
        _run_with(given)
        return
    engine = engine_from_config(
        {"sqlalchemy.url": _url()}, prefix="sqlalchemy.", poolclass=pool.NullPool
    )
    try:
        with engine.connect() as connection:
            _run_with(connection)
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()

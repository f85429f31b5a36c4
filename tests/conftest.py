"""Session-wide private servers (MariaDB with a binlog, Redis) and per-test databases.

Fixtures never skip: a missing server binary is a loud failure telling what to install.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import redis
from sqlalchemy import Engine, create_engine, text

import tests.properties  # noqa: F401  (registers the quick Hypothesis profile)
from cdc_worker.devtools.localservers import MariaDBServer, RedisServer, start_mariadb, start_redis
from cdc_worker.schema.models import Base


@dataclass(frozen=True)
class SourceDatabase:
    """A fresh database with the project's schema on the shared MariaDB."""

    name: str
    root_url: str
    cdc_url: str
    engine: Engine


@pytest.fixture(scope="session")
def mariadb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MariaDBServer]:
    server = start_mariadb(tmp_path_factory.mktemp("mariadb"))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = start_redis(tmp_path_factory.mktemp("redis"))
    yield server
    server.stop()


@pytest.fixture
def source_db(mariadb: MariaDBServer) -> Iterator[SourceDatabase]:
    name = f"t_{uuid.uuid4().hex[:16]}"
    root_url, cdc_url = mariadb.create_database(name)
    engine = create_engine(root_url)
    try:
        Base.metadata.create_all(engine)
        yield SourceDatabase(name=name, root_url=root_url, cdc_url=cdc_url, engine=engine)
        with engine.begin() as connection:
            connection.execute(text(f"DROP DATABASE `{name}`"))
    finally:
        engine.dispose()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    with redis.Redis.from_url(redis_server.url) as client:
        client.flushall()
    return redis_server.url


@pytest.fixture
def own_mariadb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MariaDBServer]:
    """A private MariaDB the test may kill or restart; stopped afterwards whatever it did."""
    server = start_mariadb(tmp_path_factory.mktemp("own-mariadb"))
    yield server
    server.stop()


@pytest.fixture
def own_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A private Redis the test may kill or restart; stopped afterwards whatever it did."""
    server = start_redis(tmp_path_factory.mktemp("own-redis"))
    yield server
    server.stop()

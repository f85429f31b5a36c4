"""The bounded chaos run of the default suite: 30+ mixed faults, zero mismatched documents."""

from __future__ import annotations

import os
from pathlib import Path

from sqlalchemy import create_engine

from cdc_worker.devtools.localservers import MariaDBServer, RedisServer
from cdc_worker.devtools.seed import seed
from cdc_worker.schema.models import Base
from tests.chaos import Chaos, Writer

FAULTS = 32


def test_mixed_faults_under_a_live_workload_leave_the_read_model_equal_to_the_database(
    own_mariadb: MariaDBServer, own_redis: RedisServer, tmp_path: Path
) -> None:
    chaos_seed = int(os.environ.get("CHAOS_SEED", "20261122"))
    engine = create_engine(own_mariadb.root_url, pool_pre_ping=True)
    Base.metadata.create_all(engine)
    seed(engine, 300, seed=chaos_seed)
    chaos = Chaos(own_mariadb, own_redis, engine, tmp_path, chaos_seed)
    writer = Writer(engine, chaos_seed)
    chaos.start_worker()
    writer.start()
    try:
        chaos.inject(FAULTS)
    finally:
        writer.stop.set()
        writer.join(60)
    try:
        chaos.settle()
    finally:
        print(chaos.summary(writer))
        chaos.stop_worker()
        engine.dispose()
    assert sum(chaos.faults.values()) >= 30
    assert len(chaos.faults) >= 6
    assert writer.committed > 200

"""Property: after any sequence of helpdesk transactions, the read model equals the database."""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cdc_worker.devtools.loadgen import OPERATIONS, Ids
from cdc_worker.devtools.seed import seed
from tests.conftest import SourceDatabase
from tests.harness import wait_synced, worker_thread


@pytest.fixture
def streaming(source_db: SourceDatabase, redis_url: str) -> Iterator[tuple[SourceDatabase, str]]:
    """A seeded source with the real worker streaming it, shared by all examples."""
    seed(source_db.engine, 30, seed=11)
    with worker_thread(source_db.cdc_url, redis_url):
        yield source_db, redis_url


# Generated names must stay unique across examples, whose drawn seeds repeat.
STEPS = itertools.count()

operation = st.tuples(st.sampled_from(range(len(OPERATIONS))), st.integers(0, 2**32))
transaction = st.tuples(st.lists(operation, min_size=1, max_size=4), st.booleans())


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(transactions=st.lists(transaction, min_size=1, max_size=12))
def test_any_sequence_of_transactions_leaves_the_read_model_equal_to_the_database(
    streaming: tuple[SourceDatabase, str],
    transactions: list[tuple[list[tuple[int, int]], bool]],
) -> None:
    source, redis_url = streaming
    engine = source.engine
    with engine.connect() as conn:
        ids = Ids.load(conn)
        conn.commit()
        for operations, commit in transactions:
            for index, op_seed in operations:
                if len(ids.tickets) < 3:
                    index = 0  # new_ticket: the other operations need tickets
                rng = random.Random(op_seed * 1_000_003 + next(STEPS))
                OPERATIONS[index][0](conn, rng, ids)
            if commit:
                conn.commit()
            else:
                conn.rollback()
                ids = Ids.load(conn)
                conn.commit()
    wait_synced(engine, redis_url)

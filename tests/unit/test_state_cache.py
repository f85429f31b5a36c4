"""The worker's in-memory ticket states: read-through, bounded, learning only from commits."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import pytest

from cdc_worker.checkpoint import Checkpoint, Position
from cdc_worker.pipeline import apply_changes
from cdc_worker.store.interface import MemoryStore
from cdc_worker.store.state_cache import StateCache
from projections.changes import TICKETS, insert, update
from projections.state import Refs, TicketState
from tests import factories as f

START = Checkpoint(0, Position("mysql-bin.000001", 4))


@dataclass
class CountingStore(MemoryStore):
    """Records which ticket states each batch asked the store for."""

    asked: list[list[int]] = field(default_factory=list)

    def load_states(
        self, ids: Iterable[int], generation: int | None = None
    ) -> dict[int, TicketState | None]:
        wanted = sorted(ids)
        self.asked.append(wanted)
        return super().load_states(wanted, generation)


def test_only_states_it_does_not_hold_are_read_from_the_store() -> None:
    store, cache = CountingStore(checkpoint=START), StateCache(100)
    states = cache.load(store, [1, 2])
    assert states == {1: None, 2: None}
    assert store.asked == [[1, 2]]
    cache.committed({1: TicketState(1, f.ticket(1))})
    assert cache.load(store, [1, 2, 3])[1] == TicketState(1, f.ticket(1))
    assert store.asked == [[1, 2], [3]]  # 2 was cached as absent
    assert (cache.hits, cache.misses) == (2, 3)


def test_the_oldest_states_go_first_and_a_commit_makes_a_state_new_again() -> None:
    cache = StateCache(3)
    cache.committed({1: None, 2: None, 3: None})
    cache.committed({1: TicketState(1)})  # 1 is the newest now
    cache.committed({4: None})
    store = CountingStore(checkpoint=START)
    cache.load(store, [1, 2, 3, 4])
    assert store.asked == [[2]]
    assert len(cache) == 3


def test_forgotten_and_cleared_states_are_read_again() -> None:
    cache, store = StateCache(10), CountingStore(checkpoint=START)
    cache.committed({1: None, 2: None, 3: None})
    cache.forget([2])
    cache.load(store, [1, 2, 3])
    cache.clear()
    cache.load(store, [1])
    assert store.asked == [[2], [1]]


def test_a_zero_bound_caches_nothing() -> None:
    cache, store = StateCache(0), CountingStore(checkpoint=START)
    cache.committed({1: None})
    cache.load(store, [1])
    cache.load(store, [1])
    assert store.asked == [[1], [1]]
    assert len(cache) == 0


def test_a_failed_commit_teaches_the_cache_nothing() -> None:
    @dataclass
    class FailingStore(CountingStore):
        def commit(self, *args: object, **kwargs: object) -> None:
            raise ConnectionError("Redis went away mid-commit")

    store, cache, refs = FailingStore(checkpoint=START), StateCache(10), Refs()
    next_checkpoint = Checkpoint(0, Position("mysql-bin.000001", 5))
    with pytest.raises(ConnectionError):
        apply_changes(
            store, refs, [insert(TICKETS, f.ticket(7))], START, next_checkpoint, cache=cache
        )
    assert cache.load(store, [7]) == {7: None}  # what the store holds, not the lost commit


def test_the_pipeline_reads_back_nothing_it_just_committed() -> None:
    store, cache, refs = CountingStore(checkpoint=START), StateCache(10), Refs()
    position = 4
    for change in (
        insert(TICKETS, f.ticket(7, title="one")),
        update(TICKETS, f.ticket(7, title="one"), f.ticket(7, title="two")),
        update(TICKETS, f.ticket(7, title="two"), f.ticket(7, title="three")),
    ):
        new = Checkpoint(0, Position("mysql-bin.000001", position + 1))
        apply_changes(store, refs, [change], store.checkpoint, new, cache=cache)
        position += 1
    assert store.asked == [[7]]  # the first batch only
    state = cache.load(store, [7])[7]
    assert state is not None
    assert state.row is not None
    assert state.row["title"] == "three"

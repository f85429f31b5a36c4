"""Recording what a batch did that operators must see: dead letters, counted and logged."""

from __future__ import annotations

import weakref
from collections import OrderedDict
from collections.abc import Collection
from typing import Any

from cdc_worker.observability.metrics import WorkerMetrics
from projections.projector import StoreOps

REMEMBERED_ROWS = 100_000  # (table, key) pairs; about 15 MB at most


class DeadLetterCounter:
    """Counts a bad row once per (table, primary key, position of the row's own change).

    A document re-rendered by someone else's change (a department renamed) reports its ticket
    again at the rename's position: that is the same bad row, not counted again. Every entry
    still goes to the dead-letter stream and the log.
    """

    def __init__(self, metrics: WorkerMetrics, log: Any) -> None:
        self.metrics = metrics
        self.log = log
        self._counted: OrderedDict[tuple[str, str], str] = OrderedDict()

    def record(self, ops: StoreOps, own: Collection[str] | None = None) -> None:
        """Count and log a batch's dead letters; ``own`` holds the identities (``table:key``)
        the batch changed itself (None: all of them, as in a snapshot)."""
        for letter in ops.dead_letters:
            table, _, key = letter.identity.partition(":")
            if self._new(table, key, letter.position, own is None or letter.identity in own):
                self.metrics.dead_letter_rows.labels(table=table).inc()
            self.log.warning(
                "dead-lettered", row=letter.identity, at=letter.position, reason=letter.reason[:300]
            )

    def _new(self, table: str, key: str, position: str, own_change: bool) -> bool:
        row = (table, key)
        counted_at = self._counted.get(row)
        if counted_at is not None and (counted_at == position or not own_change):
            self._counted.move_to_end(row)
            return False
        self._counted[row] = position
        self._counted.move_to_end(row)
        if len(self._counted) > REMEMBERED_ROWS:
            self._counted.popitem(last=False)
        return True


_COUNTERS: weakref.WeakKeyDictionary[WorkerMetrics, DeadLetterCounter] = weakref.WeakKeyDictionary()


def record_dead_letters(
    ops: StoreOps, metrics: WorkerMetrics, log: Any, own: Collection[str] | None = None
) -> None:
    """Count (once per bad row, per metrics registry) and log every dead letter of a batch
    (the store already holds them). ``own``: see ``DeadLetterCounter.record``."""
    counter = _COUNTERS.get(metrics)
    if counter is None:
        counter = _COUNTERS[metrics] = DeadLetterCounter(metrics, log)
    counter.log = log
    counter.record(ops, own)

"""Recording what a batch did that operators must see: dead letters, counted and logged."""

from __future__ import annotations

from typing import Any

from cdc_worker.observability.metrics import WorkerMetrics
from projections.projector import StoreOps


def record_dead_letters(ops: StoreOps, metrics: WorkerMetrics, log: Any) -> None:
    """Count and log every dead letter of a batch (the store already holds them)."""
    for letter in ops.dead_letters:
        table = letter.identity.split(":", 1)[0]
        metrics.dead_letters.labels(table=table).inc()
        log.warning(
            "dead-lettered", row=letter.identity, at=letter.position, reason=letter.reason[:300]
        )

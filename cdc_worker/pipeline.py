"""One batch through the core: plan the reads, load them, project, apply atomically."""

from __future__ import annotations

from collections.abc import Sequence

from cdc_worker.checkpoint import Checkpoint
from cdc_worker.store import ReadModelStore
from projections.changes import RowChange
from projections.projector import StoreOps, plan_reads, project
from projections.state import Refs


def apply_changes(
    store: ReadModelStore,
    refs: Refs,
    changes: Sequence[RowChange],
    expected: Checkpoint,
    checkpoint: Checkpoint | None,
) -> StoreOps:
    """Apply a run of changes (whole transactions, or part of one) and the new checkpoint.

    A fixed number of reads (link sets, ticket states) and one atomic, fenced write per call,
    whatever the number of changes. ``refs`` is updated in place: reload it if this raises.
    """
    plan = plan_reads(changes)
    with store.batch(expected) as tx:
        linked = tx.linked_ids(plan.link_keys) if plan.link_keys else set()
        states = tx.load_states(plan.ticket_ids | linked)
        ops = project(changes, refs, states, linked)
        tx.commit(ops, checkpoint)
    return ops

"""One batch through the core: plan the reads, load them, project, apply atomically."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from cdc_worker.checkpoint import Checkpoint
from cdc_worker.store import BatchTx, ReadModelStore
from projections.changes import RowChange
from projections.projector import ReadPlan, StoreOps, plan_reads, project
from projections.state import Refs


@dataclass
class Shadow:
    """A full resync in progress: generation N+1, built beside the live one.

    Its references are copied once ``refs_done``; tickets with ``id <= last_id`` are copied.
    Every streamed batch is applied to the copied part too, in the same atomic step.
    """

    generation: int
    refs: Refs
    last_id: int = 0
    refs_done: bool = False

    def covers(self, ticket_id: int) -> bool:
        """True when the ticket is already copied into the new generation."""
        return ticket_id <= self.last_id


def apply_changes(
    store: ReadModelStore,
    refs: Refs,
    changes: Sequence[RowChange],
    expected: Checkpoint,
    checkpoint: Checkpoint | None,
    shadow: Shadow | None = None,
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
        shadow_ops = _project_shadow(tx, shadow, changes, plan) if shadow else None
        tx.commit(ops, checkpoint, shadow_ops)
    return ops


def _project_shadow(
    tx: BatchTx, shadow: Shadow, changes: Sequence[RowChange], plan: ReadPlan
) -> tuple[int, StoreOps] | None:
    if not shadow.refs_done:
        return None  # its references are read later, at a newer position
    g = shadow.generation
    linked = tx.linked_ids(plan.link_keys, g) if plan.link_keys else set()
    ids = {i for i in plan.ticket_ids | linked if shadow.covers(i)}
    ops = project(changes, shadow.refs, tx.load_states(ids, g), linked, shadow.covers)
    ops.dead_letters.clear()  # the live generation reports the same rows
    return g, ops

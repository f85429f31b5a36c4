"""One batch through the core: plan the reads, load them, project, apply atomically.

A fan-out (a renamed department holding 50,000 tickets, several renames in one catch-up batch)
is applied in steps of at most ``FAN_OUT_STEP_TICKETS`` linked tickets, so the worker's memory
stays bounded whatever the fan-out. Like the slices of a large transaction, every step is one
fenced MULTI/EXEC and only the last one moves the checkpoint: a crash in between replays the
batch, idempotently. Readers may see some of the linked documents renamed before the others.
The last step also carries the tickets the batch changes itself and the references, so the
earlier steps store nothing a replay in other batches could meet too early (see
``_fan_out_scopes``).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from cdc_worker.checkpoint import Checkpoint
from cdc_worker.store.interface import BatchTx, ReadModelStore
from cdc_worker.store.state_cache import StateCache
from projections.changes import REFERENCE_TABLES, RowChange
from projections.projector import DeadLetter, ReadPlan, StoreOps, plan_reads, project
from projections.state import LinkKey, Refs

FAN_OUT_STEP_TICKETS = 2_000  # linked tickets loaded and rebuilt per step (~10 KB each)


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


@dataclass
class PhaseTimes:
    """Seconds a batch spent reading Redis, projecting and writing (MULTI/EXEC), all steps."""

    read_s: float = 0.0
    project_s: float = 0.0
    write_s: float = 0.0


def apply_changes(
    store: ReadModelStore,
    refs: Refs,
    changes: Sequence[RowChange],
    expected: Checkpoint,
    checkpoint: Checkpoint | None,
    shadow: Shadow | None = None,
    step_tickets: int = FAN_OUT_STEP_TICKETS,
    cache: StateCache | None = None,
    times: PhaseTimes | None = None,
) -> StoreOps:
    """Apply a run of changes (whole transactions, or part of one) and the new checkpoint.

    A fixed number of reads (link sets, ticket states) and one atomic, fenced write per step;
    one step unless the changes fan out to more than ``step_tickets`` linked tickets. ``refs``
    is updated in place: reload it if this raises. ``cache`` (the live generation's ticket
    states) serves the state reads it holds and learns every committed state. Returns the
    first step's operations, with the dead letters of all steps.
    """
    plan = plan_reads(changes)
    shadow = shadow if shadow is not None and shadow.refs_done else None
    # Steps before the last only rebuild linked tickets the batch does not change itself:
    # replaying the reference changes is enough.
    replay = [change for change in changes if change.table in REFERENCE_TABLES]
    times = times if times is not None else PhaseTimes()
    started = time.perf_counter()
    with store.batch(expected) as tx:
        link_sets = tx.link_sets(plan.link_keys) if plan.link_keys else {}
        shadow_sets = {}
        if shadow is not None and plan.link_keys:
            shadow_sets = tx.link_sets(plan.link_keys, shadow.generation)
        linked, shadow_linked = _union(link_sets), _union(shadow_sets)
        scopes = _fan_out_scopes(plan.ticket_ids, linked | shadow_linked, step_tickets)
        last = len(scopes) == 1
        times.read_s += time.perf_counter() - started
        step = _Step(plan, linked, shadow, shadow_linked, cache, link_sets, shadow_sets, times)
        first = changes if last else replay
        ops = step.apply(tx, first, refs, scopes[0], checkpoint if last else None, last)
    step.reported = ops.dead_letters
    for n, scope in enumerate(scopes[1:], start=2):
        with store.batch(expected) as tx:
            final = n == len(scopes)
            these = changes if final else replay
            done = step.apply(tx, these, refs, scope, checkpoint if final else None, final)
        ops.dead_letters += done.dead_letters
    return ops


def _union(link_sets: dict[LinkKey, set[int]]) -> set[int]:
    return set().union(*link_sets.values())


def _fan_out_scopes(
    direct: frozenset[int], linked: set[int], step_tickets: int
) -> list[frozenset[int] | None]:
    """The tickets of each step; None is no limit. The directly changed tickets go in the
    last step, with the references and the checkpoint: what earlier steps store (linked
    tickets re-rendered, cascades that only drop references) never shows a change from later
    than the stored checkpoint, whatever batches a replay after a crash between steps sees."""
    rest = sorted(linked - direct)
    if len(rest) <= step_tickets:
        return [None]
    slices = [rest[i : i + step_tickets] for i in range(0, len(rest), step_tickets)]
    return [*(frozenset(s) for s in slices[:-1]), direct | frozenset(slices[-1])]


@dataclass
class _Step:
    """Loads, projects and commits the tickets of one scope, live and shadow generations."""

    plan: ReadPlan
    linked: set[int]
    shadow: Shadow | None
    shadow_linked: set[int]
    cache: StateCache | None = None
    link_sets: dict[LinkKey, set[int]] = field(default_factory=dict)
    shadow_sets: dict[LinkKey, set[int]] = field(default_factory=dict)
    times: PhaseTimes = field(default_factory=PhaseTimes)
    reported: list[DeadLetter] = field(default_factory=list)  # by earlier steps: not again
    # References and lookups are written with the checkpoint, in the last step: stored
    # references never run ahead of the checkpoint, so a replay after a crash between steps
    # (or another worker taking over) never builds documents against references from later.
    deferred: StoreOps = field(default_factory=StoreOps)

    def apply(
        self,
        tx: BatchTx,
        changes: Sequence[RowChange],
        refs: Refs,
        scope: frozenset[int] | None,
        checkpoint: Checkpoint | None,
        final: bool,
    ) -> StoreOps:
        linked = self.linked if scope is None else self.linked & scope
        ids = self.plan.ticket_ids | linked if scope is None else scope
        in_scope = None if scope is None else scope.__contains__
        clock = time.perf_counter()
        states = self.cache.load(tx, ids) if self.cache is not None else tx.load_states(ids)
        clock = self._lap("read_s", clock)
        ops = project(changes, refs, states, linked, in_scope, self.link_sets)
        ops.dead_letters = [d for d in ops.dead_letters if d not in self.reported]
        self._defer_references(ops, final)
        clock = self._lap("project_s", clock)
        shadow_ops = self._shadow(tx, changes, scope) if self.shadow else None
        clock = self._lap("project_s", clock)
        tx.commit(ops, checkpoint, shadow_ops)
        self._lap("write_s", clock)
        if self.cache is not None:
            self.cache.committed(ops.states)
        return ops

    def _lap(self, phase: str, since: float) -> float:
        """Add the time since ``since`` to ``phase``; returns now."""
        now = time.perf_counter()
        setattr(self.times, phase, getattr(self.times, phase) + now - since)
        return now

    def _defer_references(self, ops: StoreOps, final: bool) -> None:
        names = ("refs_put", "refs_deleted", "lookups_put", "lookups_deleted")
        for name in names:
            held, fresh = getattr(self.deferred, name), getattr(ops, name)
            if final:
                for kind, entries in held.items():
                    fresh.setdefault(kind, type(entries)()).update(entries)
            else:
                for kind, entries in fresh.items():
                    held.setdefault(kind, type(entries)()).update(entries)
                fresh.clear()

    def _shadow(
        self, tx: BatchTx, changes: Sequence[RowChange], scope: frozenset[int] | None
    ) -> tuple[int, StoreOps]:
        shadow = self.shadow
        assert shadow is not None

        def covered(ticket_id: int) -> bool:
            return shadow.covers(ticket_id) and (scope is None or ticket_id in scope)

        g = shadow.generation
        linked = {i for i in self.shadow_linked if covered(i)}
        ids = {i for i in self.plan.ticket_ids | linked if covered(i)}
        states = tx.load_states(ids, g)
        ops = project(changes, shadow.refs, states, linked, covered, self.shadow_sets)
        ops.dead_letters.clear()  # the live generation reports the same rows
        return g, ops

"""The projector: a batch of row changes in, the store operations that apply it out.

Two steps, so the adapter can fetch exactly the state a batch needs in one round trip:
``plan_reads`` names the ticket states and link sets to load, ``project`` applies the
changes to them and returns ``StoreOps``. Every state change is a pure function of the row
images (set or delete by key), so replaying changes from a checkpoint is idempotent.

``project`` updates ``refs`` in place: when the store rejects the result, the caller must
reload its references from the store (the worker rebuilds everything from the checkpoint).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from projections.changes import RowChange
from projections.documents import render_document
from projections.handlers import HANDLERS, Workspace, ref_link_changes, ticket_ids_of
from projections.state import IndexKey, LinkKey, Refs, TicketState, encode_ref, encode_state
from projections.values import BadValue

# Up to this many references changed in a batch, a loaded ticket is checked against each
# (``links_to``); more, and its set of links is built once.
FEW_CHANGED_REFS = 4


@dataclass(frozen=True, slots=True)
class ReadPlan:
    """The state a batch needs loaded before ``project`` runs."""

    ticket_ids: frozenset[int]
    link_keys: frozenset[LinkKey]


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A row the projector could not place, with enough identity to find it again."""

    identity: str
    position: str
    reason: str


@dataclass(slots=True)
class StoreOps:
    """Everything one atomic store step must write."""

    states_put: dict[int, bytes] = field(default_factory=dict)
    states_deleted: set[int] = field(default_factory=set)
    docs_put: dict[int, bytes] = field(default_factory=dict)
    docs_deleted: set[int] = field(default_factory=set)
    links_added: dict[LinkKey, set[int]] = field(default_factory=dict)
    links_removed: dict[LinkKey, set[int]] = field(default_factory=dict)
    refs_put: dict[str, dict[int, bytes]] = field(default_factory=dict)
    refs_deleted: dict[str, set[int]] = field(default_factory=dict)
    index_added: dict[IndexKey, set[int]] = field(default_factory=dict)
    index_removed: dict[IndexKey, set[int]] = field(default_factory=dict)
    lookups_put: dict[str, dict[str, int]] = field(default_factory=dict)
    lookups_deleted: dict[str, set[str]] = field(default_factory=dict)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    # The states behind states_put and states_deleted (None), for a cache of what the store
    # holds; never written as such.
    states: dict[int, TicketState | None] = field(default_factory=dict)

    def is_empty(self) -> bool:
        """True when the batch changes nothing in the store."""
        return not (
            self.states_put
            or self.states_deleted
            or self.docs_put
            or self.docs_deleted
            or self.links_added
            or self.links_removed
            or self.refs_put
            or self.refs_deleted
            or self.index_added
            or self.index_removed
            or self.lookups_put
            or self.lookups_deleted
            or self.dead_letters
        )


def plan_reads(changes: Iterable[RowChange]) -> ReadPlan:
    """Which ticket states and link sets ``project`` will need for these changes."""
    ticket_ids: set[int] = set()
    link_keys: set[LinkKey] = set()
    for change in changes:
        try:
            ticket_ids.update(ticket_ids_of(change))
            link_keys.update(ref_link_changes(change))
        except (BadValue, KeyError, TypeError, ValueError):
            continue  # project() dead-letters it with the reason
    return ReadPlan(frozenset(ticket_ids), frozenset(link_keys))


def project(
    changes: Sequence[RowChange],
    refs: Refs,
    states: Mapping[int, TicketState | None],
    linked_ids: Iterable[int] = (),
    in_scope: Callable[[int], bool] | None = None,
    link_sets: Mapping[LinkKey, set[int]] | None = None,
) -> StoreOps:
    """Apply ``changes`` to the loaded state and return the store operations.

    ``states`` must hold every id in ``plan_reads(changes).ticket_ids`` and every id in
    ``linked_ids`` (the tickets linked to ``plan_reads(changes).link_keys``), None if unknown.
    With ``in_scope``, changes to tickets outside it are ignored (a resync's shadow copy).
    ``link_sets``, the store's link set of each of those keys, spares a cascading delete
    a walk over every linked ticket.
    """
    ws = Workspace(refs, states, set(linked_ids), in_scope, link_sets)
    return _run(changes, ws)


def replace_tickets(
    changes: Sequence[RowChange],
    refs: Refs,
    states: Mapping[int, TicketState | None],
    ticket_ids: Iterable[int],
) -> StoreOps:
    """Targeted repair: rebuild ``ticket_ids`` from fresh rows (``changes`` are their inserts,
    read from the database), diffing against the stored ``states``; documents are rewritten."""
    ws = Workspace(refs, states, set())
    for ticket_id in ticket_ids:
        ws.replace(ticket_id)
    return _run(changes, ws)


def _run(changes: Sequence[RowChange], ws: Workspace) -> StoreOps:
    ops = StoreOps()
    for change in changes:
        try:
            HANDLERS[change.table](change, ws)
        except (BadValue, KeyError, TypeError, ValueError) as exc:
            reason = f"{type(exc).__name__}: {exc}"
            ops.dead_letters.append(DeadLetter(change.identity(), change.position, reason))
    _collect_refs(ws, ops)
    _collect_tickets(ws, ops, changes[-1].position if changes else "")
    return ops


def _collect_refs(ws: Workspace, ops: StoreOps) -> None:
    for (kind, ref_id), present in ws.ref_writes.items():
        if present:
            value = ws.refs.table(kind)[ref_id]
            ops.refs_put.setdefault(kind, {})[ref_id] = encode_ref(kind, value)
        else:
            ops.refs_deleted.setdefault(kind, set()).add(ref_id)
    for (kind, key), target in ws.lookup_writes.items():
        if target is None:
            ops.lookups_deleted.setdefault(kind, set()).add(key)
        else:
            ops.lookups_put.setdefault(kind, {})[key] = target


def _collect_tickets(ws: Workspace, ops: StoreOps, position: str) -> None:
    changed_refs = ws.changed_refs
    for ticket_id, old in ws.original.items():
        if ticket_id in ws.current or old is None:
            continue
        # Loaded, untouched (a fan-out candidate): only a renamed reference rebuilds it.
        if _shows_changed_ref(old, changed_refs):
            put_document(ticket_id, old, ws.refs, ops, position)
    for ticket_id, new in ws.current.items():
        old = ws.original.get(ticket_id)
        if new != old:
            put_state(ticket_id, new, ops)
            _diff_index(ticket_id, old, new, ops)
            old_links = old.links() if old else set()
            new_links = new.links() if new else set()
            _diff(ticket_id, old_links, new_links, ops.links_added, ops.links_removed)
        elif ticket_id not in ws.forced and not _shows_changed_ref(new, changed_refs):
            continue  # unchanged, and nothing it shows was renamed
        put_document(ticket_id, new, ws.refs, ops, position)


def _shows_changed_ref(state: TicketState | None, changed_refs: set[LinkKey]) -> bool:
    """True when the ticket's document shows a reference the batch changed."""
    if not changed_refs or state is None:
        return False
    if len(changed_refs) <= FEW_CHANGED_REFS:  # the usual batch: no set of links built
        return any(state.links_to(key) for key in changed_refs)
    return not state.links().isdisjoint(changed_refs)


def put_state(ticket_id: int, state: TicketState | None, ops: StoreOps) -> None:
    """Store the ticket's state, or delete it when nothing is known of the ticket any more."""
    if state is None or state.is_empty():
        ops.states_deleted.add(ticket_id)
        ops.states[ticket_id] = None
    else:
        ops.states_put[ticket_id] = encode_state(state)
        ops.states[ticket_id] = state


def _diff_index(
    ticket_id: int, old: TicketState | None, new: TicketState | None, ops: StoreOps
) -> None:
    old_keys = old.index_keys() if old else set()
    new_keys = new.index_keys() if new else set()
    _diff(ticket_id, old_keys, new_keys, ops.index_added, ops.index_removed)


def _diff(
    ticket_id: int,
    old: set[tuple[str, int]],
    new: set[tuple[str, int]],
    added: dict[tuple[str, int], set[int]],
    removed: dict[tuple[str, int], set[int]],
) -> None:
    for key in new - old:
        added.setdefault(key, set()).add(ticket_id)
    for key in old - new:
        removed.setdefault(key, set()).add(ticket_id)


def put_document(
    ticket_id: int, state: TicketState | None, refs: Refs, ops: StoreOps, position: str
) -> None:
    """Write the ticket's document (or delete it), dead-lettering any reference it lacks."""
    doc, problems = render_document(state, refs) if state else (None, [])
    if doc is None:
        ops.docs_deleted.add(ticket_id)
        return
    ops.docs_put[ticket_id] = doc
    if problems:
        reason = "document written with nulls: " + "; ".join(problems)
        ops.dead_letters.append(DeadLetter(f"tickets:{ticket_id}", position, reason))

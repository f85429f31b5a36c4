"""Projecting rows into tickets nobody holds state for yet: a snapshot chunk, in bulk.

A snapshot (or a full resync's chunk) is insert-only, and every ticket it touches starts
without state in the generation being built. ``project_fresh`` gives exactly what ``project``
gives for the same rows as insert changes, with states starting at None, but without the
per-change machinery a stream needs (read planning, copies on first touch, diffs against an
old state): building a read model is the longest job the worker does.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from projections import rows
from projections.changes import ATTACHMENTS, COMMENTS, TICKET_TAGS, TICKETS, Row, insert
from projections.projector import DeadLetter, StoreOps, put_document, put_state
from projections.state import Refs, TicketState
from projections.values import BadValue, as_int

TableRows = tuple[str, Sequence[Row]]
States = dict[int, TicketState]


def project_fresh(parts: Sequence[TableRows], refs: Refs, position: str) -> StoreOps:
    """``project`` of these rows as inserts, in this order, into tickets with no state.

    ``parts`` holds rows of the ticket tables (tickets, attachments, ticket_tags, comments);
    a bad row is dead-lettered with the same reason ``project`` gives and changes nothing.
    """
    ops, states = StoreOps(), States()
    for table, table_rows in parts:
        add = _ADDERS[table]
        for row in table_rows:
            try:
                add(row, states)
            except (BadValue, KeyError, TypeError, ValueError) as exc:
                identity = insert(table, row).identity()
                reason = f"{type(exc).__name__}: {exc}"
                ops.dead_letters.append(DeadLetter(identity, position, reason))
    for ticket_id, state in states.items():
        put_state(ticket_id, state, ops)
        _add_all(ticket_id, state.index_keys(), ops.index_added)
        _add_all(ticket_id, state.links(), ops.links_added)
        put_document(ticket_id, state, refs, ops, position)
    return ops


def _add_all(
    ticket_id: int, keys: set[tuple[str, int]], added: dict[tuple[str, int], set[int]]
) -> None:
    for key in keys:
        if key in added:
            added[key].add(ticket_id)
        else:
            added[key] = {ticket_id}


def _state(ticket_id: int, states: States) -> TicketState:
    state = states.get(ticket_id)
    if state is None:
        state = states[ticket_id] = TicketState(ticket_id)
    return state


def _ticket(row: Row, states: States) -> None:
    ticket_row = rows.ticket_row(row)
    _state(as_int(row["id"]), states).row = ticket_row


def _attachment(row: Row, states: States) -> None:
    info = rows.attachment_info(row)
    _state(as_int(row["ticket_id"]), states).attachments[as_int(row["id"])] = info


def _ticket_tag(row: Row, states: States) -> None:
    _state(as_int(row["ticket_id"]), states).tag_ids.add(as_int(row["tag_id"]))


def _comment(row: Row, states: States) -> None:
    created_at = rows.comment_time(row)
    _state(as_int(row["ticket_id"]), states).comments[as_int(row["id"])] = created_at


_ADDERS: dict[str, Callable[[Row, States], None]] = {
    TICKETS: _ticket,
    ATTACHMENTS: _attachment,
    TICKET_TAGS: _ticket_tag,
    COMMENTS: _comment,
}

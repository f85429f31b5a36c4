"""The ticket states this worker last read from or committed to Redis, kept between batches.

A batch needs the state of every ticket it touches; reading them back from Redis and decoding
them was a quarter of the applier's time during catch-up, mostly for tickets the previous
batches had just written. The cache holds the states of one streaming session's live
generation: the session is the only writer (the checkpoint fence makes every other writer's
batch, or ours after another's, fail and end the session, and with it the cache).

It is updated only after a commit succeeded, and forgets tickets written behind the pipeline's
back (a targeted repair). Cached states are shared with the projector's workspace, which
copies a state before changing it. Bounded: the oldest entries go first.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from itertools import islice
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cdc_worker.store.interface import BatchTx
    from projections.state import TicketState


class StateCache:
    """Ticket states by id (None: no state in the store), at most ``max_tickets`` of them."""

    def __init__(self, max_tickets: int) -> None:
        self.max_tickets = max_tickets
        self._states: dict[int, TicketState | None] = {}
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._states)

    def load(self, tx: BatchTx, ids: Iterable[int]) -> dict[int, TicketState | None]:
        """The states of ``ids``: cached ones from memory, the rest from the store."""
        found: dict[int, TicketState | None] = {}
        missing = []
        cached = self._states
        for ticket_id in ids:
            if ticket_id in cached:
                found[ticket_id] = cached[ticket_id]
            else:
                missing.append(ticket_id)
        self.hits += len(found)
        self.misses += len(missing)
        if missing:
            loaded = tx.load_states(missing)
            found.update(loaded)
            self._remember(loaded)
        return found

    def committed(self, states: Mapping[int, TicketState | None]) -> None:
        """The store now holds ``states`` (a commit succeeded)."""
        self._remember(states)

    def forget(self, ids: Iterable[int]) -> None:
        """These tickets were written by someone else: read them from the store next time."""
        for ticket_id in ids:
            self._states.pop(ticket_id, None)

    def clear(self) -> None:
        """Forget everything (the live generation changed)."""
        self._states.clear()

    def _remember(self, states: Mapping[int, TicketState | None]) -> None:
        if self.max_tickets <= 0:
            return
        cached = self._states
        for ticket_id, state in states.items():
            cached.pop(ticket_id, None)  # re-inserted last: the newest
            cached[ticket_id] = state
        excess = len(cached) - self.max_tickets
        if excess > 0:  # the oldest first: dicts keep insertion order
            for ticket_id in list(islice(cached, excess)):
                del cached[ticket_id]

"""The read-model store interface the pipeline depends on, and an in-memory fake of it.

Every write is fenced by the checkpoint: a batch is applied only if the stored checkpoint is
still the one the writer started from. A flushed or restarted Redis, or a second worker that
moved the checkpoint, makes the batch fail with ``FenceLost`` instead of writing over it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from typing import Protocol

from cdc_worker.checkpoint import Checkpoint
from cdc_worker.errors import StoreError
from cdc_worker.store.feed import entry_fields
from cdc_worker.store.jobs import Job
from projections.projector import DeadLetter, StoreOps
from projections.state import (
    REF_KINDS,
    IndexKey,
    LinkKey,
    Refs,
    TicketState,
    decode_ref,
    decode_state,
)


class FenceLost(StoreError):
    """Raised when the stored checkpoint is not the one a writer expected."""


class ReadModelLost(FenceLost):
    """Raised when the documents vanished but the checkpoint stayed: only a resync helps."""


class BatchTx(Protocol):
    """Reads and the one atomic write of a batch, under the checkpoint fence."""

    def link_sets(
        self, keys: Iterable[LinkKey], generation: int | None = None
    ) -> dict[LinkKey, set[int]]:
        """The ticket ids linked to each of ``keys`` (in the live generation by default)."""

    def load_states(
        self, ids: Iterable[int], generation: int | None = None
    ) -> dict[int, TicketState | None]:
        """Ticket states by id; None for unknown ids."""

    def commit(
        self,
        ops: StoreOps,
        checkpoint: Checkpoint | None,
        shadow: tuple[int, StoreOps] | None = None,
        job: Job | None = None,
    ) -> None:
        """Write ``ops``, a resync's shadow ops, its job state and the checkpoint, atomically."""


class ReadModelStore(Protocol):
    """Where the read model, its state and its checkpoint live."""

    def load_checkpoint(self) -> Checkpoint | None:
        """The stored checkpoint, or None when there is no read model yet."""

    def load_refs(self, generation: int) -> Refs:
        """All reference tables of a generation."""

    def batch(self, expected: Checkpoint) -> AbstractContextManager[BatchTx]:
        """A fenced batch: raises ``FenceLost`` unless the checkpoint is ``expected``."""


@dataclass
class MemoryStore:
    """A dict-backed ``ReadModelStore`` for unit tests: same semantics, no server."""

    documents: dict[str, bytes] = field(default_factory=dict)
    states: dict[int, bytes] = field(default_factory=dict)
    refs: dict[str, dict[int, bytes]] = field(default_factory=lambda: {k: {} for k in REF_KINDS})
    links: dict[LinkKey, set[int]] = field(default_factory=dict)
    index: dict[IndexKey, set[int]] = field(default_factory=dict)
    lookups: dict[str, dict[str, int]] = field(default_factory=dict)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    changes: list[dict[str, str]] = field(default_factory=list)  # the change feed's entries
    checkpoint: Checkpoint | None = None

    def load_checkpoint(self) -> Checkpoint | None:
        return self.checkpoint

    def load_refs(self, generation: int) -> Refs:
        loaded = Refs()
        for kind, entries in self.refs.items():
            table = loaded.table(kind)
            for ref_id, raw in entries.items():
                table[ref_id] = decode_ref(kind, raw)
        return loaded

    @contextmanager
    def batch(self, expected: Checkpoint | None) -> Iterator[MemoryStore]:
        if self.checkpoint != expected:
            raise FenceLost(f"checkpoint is {self.checkpoint}, expected {expected}")
        yield self

    def link_sets(
        self, keys: Iterable[LinkKey], generation: int | None = None
    ) -> dict[LinkKey, set[int]]:
        return {key: set(self.links.get(key, ())) for key in keys}

    def load_states(
        self, ids: Iterable[int], generation: int | None = None
    ) -> dict[int, TicketState | None]:
        return {i: decode_state(i, self.states[i]) if i in self.states else None for i in ids}

    def commit(
        self,
        ops: StoreOps,
        checkpoint: Checkpoint | None,
        shadow: tuple[int, StoreOps] | None = None,
        job: Job | None = None,
    ) -> None:
        if shadow is not None or job is not None:
            raise NotImplementedError("resyncs are exercised against real Redis")
        self.documents.update({str(i): doc for i, doc in ops.docs_put.items()})
        for ticket_id in ops.docs_deleted:
            self.documents.pop(str(ticket_id), None)
        self.states.update(ops.states_put)
        for ticket_id in ops.states_deleted:
            self.states.pop(ticket_id, None)
        for key, ids in ops.links_added.items():
            self.links.setdefault(key, set()).update(ids)
        for key, ids in ops.links_removed.items():
            self.links.get(key, set()).difference_update(ids)
        for kind, entries in ops.refs_put.items():
            self.refs[kind].update(entries)
        for kind, ids in ops.refs_deleted.items():
            for ref_id in ids:
                self.refs[kind].pop(ref_id, None)
        self._commit_indexes(ops)
        self.dead_letters.extend(ops.dead_letters)
        entry = entry_fields(ops, str(checkpoint.position) if checkpoint else "")
        if entry is not None:
            self.changes.append(entry)
        if checkpoint is not None:
            self.checkpoint = checkpoint

    def _commit_indexes(self, ops: StoreOps) -> None:
        for key, ids in ops.index_added.items():
            self.index.setdefault(key, set()).update(ids)
        for key, ids in ops.index_removed.items():
            self.index.get(key, set()).difference_update(ids)
        for kind, entries in ops.lookups_put.items():
            self.lookups.setdefault(kind, {}).update(entries)
        for kind, names in ops.lookups_deleted.items():
            for name in names:
                self.lookups.get(kind, {}).pop(name, None)

"""What one streaming session holds: its binlog reader, the checkpoint it has applied, the
references, a full resync in progress and the targeted repairs the stream has not passed."""

from __future__ import annotations

from dataclasses import dataclass, field

from cdc_worker.checkpoint import Checkpoint, Position
from cdc_worker.snapshots.resyncer import FullResync
from cdc_worker.source.binlog import BinlogReader
from cdc_worker.source.reader_process import ProcessReader
from cdc_worker.source.stream import SourceConfig
from cdc_worker.store.state_cache import StateCache
from projections.changes import RowChange
from projections.handlers import ticket_ids_of
from projections.state import Refs


class ResyncNeeded(Exception):
    """Raised inside a session when only a full snapshot can make the read model right."""


def open_reader(config: SourceConfig, start: Position) -> BinlogReader | ProcessReader:
    """The binlog reader of one session, in a child process or on a thread."""
    if config.reader_mode == "process":
        return ProcessReader(config, start)
    return BinlogReader(config, start)


@dataclass
class Session:
    """What one streaming session holds: the reader, the checkpoint, the references."""

    reader: BinlogReader | ProcessReader
    checkpoint: Checkpoint
    refs: Refs
    pending: Checkpoint | None = None
    pending_since_s: float = 0.0
    resync: FullResync | None = None
    cache: StateCache = field(default_factory=lambda: StateCache(0))
    # Tickets a targeted repair rewrote from a snapshot at a position not yet applied: the
    # stream's changes to them up to that position are older than what Redis now holds.
    repaired: dict[int, Position] = field(default_factory=dict)

    def superseded(self, change: RowChange) -> bool:
        """True for a change every ticket of which a repair already covers."""
        ids = ticket_ids_of(change)
        if not ids or not self.repaired:
            return False
        file, _, pos = change.position.rpartition(":")
        at = Position(file, int(pos or 0))
        return all((r := self.repaired.get(i)) is not None and not r.precedes(at) for i in ids)

    def forget_repairs_before(self, position: Position) -> None:
        """Drop the repairs the applied stream has passed."""
        self.repaired = {i: r for i, r in self.repaired.items() if position.precedes(r)}

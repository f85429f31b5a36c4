"""The checkpoint: where the read model stands in the binlog, always a commit boundary."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import orjson


@dataclass(frozen=True, slots=True)
class Position:
    """A commit boundary in the source's binlog: file and end position, and GTID if any."""

    log_file: str
    log_pos: int
    gtid: str | None = None

    def precedes(self, other: Position) -> bool:
        """True when this position comes before ``other`` in the same server's binlog."""
        return _order(self) < _order(other)

    def __str__(self) -> str:
        base = f"{self.log_file}:{self.log_pos}"
        return f"{base} gtid={self.gtid}" if self.gtid else base


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """The read model's generation and the position its last applied commit ended at."""

    generation: int
    position: Position
    committed_at_s: float = 0.0

    def encode(self) -> bytes:
        """JSON as stored in Redis."""
        return orjson.dumps(asdict(self))

    @classmethod
    def decode(cls, raw: bytes | str) -> Checkpoint:
        """Inverse of ``encode``."""
        data = orjson.loads(raw)
        return cls(data["generation"], Position(**data["position"]), data["committed_at_s"])

    def advanced(self, position: Position, committed_at_s: float) -> Checkpoint:
        """The same generation at a later commit."""
        return replace(self, position=position, committed_at_s=committed_at_s)


def _order(position: Position) -> tuple[str, int, int]:
    """Sort key: the file's base name, its number (``.000999`` before ``.1000000``), offset."""
    base, _, number = position.log_file.rpartition(".")
    if number.isdigit():
        return base, int(number), position.log_pos
    return position.log_file, 0, position.log_pos

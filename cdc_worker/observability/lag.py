"""How far behind the source the worker is, and whether its loop still makes progress.

Both are read by the metrics server's thread at scrape time (``Gauge.set_function``), so
they keep moving while the loop is stuck in a call that never returns.

``cdc_source_behind_seconds`` is the age of the oldest transaction the source committed and
the worker has not applied. While the loop turns, it knows that exactly: the first commit time
of the batch it took (everything before is applied), and 0 once its reader has nothing more.
When the loop did not move between two polls of the source's head (``SHOW BINARY LOGS``), the
poller speaks instead: if the head moved past the applied position, something was committed
after the previous poll and is not applied; the previous poll's time is used (an underestimate
by at most one poll period).
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

from cdc_worker.checkpoint import Position

FILE_NUMBER = re.compile(r"\.(\d+)$")


def binlog_file_number(log_file: str) -> int:
    """``mysql-bin.000042`` -> 42 (0 when the name has no numeric suffix)."""
    match = FILE_NUMBER.search(log_file)
    return int(match[1]) if match else 0


def bytes_behind(applied: Position, files: Sequence[tuple[str, int]]) -> int:
    """Binlog bytes from ``applied`` to the head, the last of ``files`` (name, size), in order.

    Files before the applied one count nothing; a purged applied file counts nothing either
    (its rest is unknown), the files after it count whole.
    """
    applied_number = binlog_file_number(applied.log_file)
    total = 0
    for name, size in files:
        if name == applied.log_file:
            total += max(0, size - applied.log_pos)
        elif binlog_file_number(name) > applied_number:
            total += size
    return total


@dataclass
class LagTracker:
    """The oldest unapplied commit the worker knows of, and the source's head it last saw."""

    oldest_unapplied_s: float | None = None  # unix seconds
    applied: Position | None = None
    behind_bytes: int = 0
    head: tuple[str, int] | None = None
    last_poll_s: float | None = None
    loop_moved: bool = False  # since the last poll

    def took_batch(self, first_commit_s: float | None) -> None:
        """The loop took a batch from its reader, everything before it being applied;
        ``first_commit_s`` is its first commit's time (None for a slice of a large
        transaction that commits later: now is used)."""
        self.oldest_unapplied_s = first_commit_s if first_commit_s else time.time()
        self.loop_moved = True

    def drained(self) -> None:
        """The reader had nothing more: everything it read is applied."""
        self.oldest_unapplied_s = None
        self.loop_moved = True

    def applied_at(self, position: Position) -> None:
        """The loop stored a checkpoint at ``position``."""
        self.applied = position

    def saw_head(self, files: Sequence[tuple[str, int]], now_s: float | None = None) -> None:
        """The poller read the source's binlog files (name, size), the head last."""
        now_s = time.time() if now_s is None else now_s
        if not files or self.applied is None:
            return
        head = files[-1]
        self.behind_bytes = bytes_behind(self.applied, files)
        moved = self.head is not None and head != self.head
        if moved and self.behind_bytes > 0 and not self.loop_moved:
            since_s = self.last_poll_s if self.last_poll_s is not None else now_s
            if self.oldest_unapplied_s is None or since_s < self.oldest_unapplied_s:
                self.oldest_unapplied_s = since_s
        self.head, self.last_poll_s, self.loop_moved = head, now_s, False

    def behind_s(self, now_s: float | None = None) -> float:
        """Age of the oldest unapplied commit; 0 when everything known is applied."""
        oldest = self.oldest_unapplied_s
        if oldest is None:
            return 0.0
        return max(0.0, (time.time() if now_s is None else now_s) - oldest)


class Liveness:
    """When the apply loop last made progress (a batch applied, a heartbeat written, a
    snapshot chunk written), for the worker's /healthz."""

    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self._last_progress = time.monotonic()
        self._lock = threading.Lock()
        self.expected = True  # False while stopping: no progress is due

    def progressed(self) -> None:
        """The loop did something useful just now."""
        with self._lock:
            self._last_progress = time.monotonic()

    def problem(self, now: float | None = None) -> str | None:
        """Why the loop looks stuck, or None when it is alive."""
        with self._lock:
            silent_s = (time.monotonic() if now is None else now) - self._last_progress
        if not self.expected or silent_s <= self.timeout_s:
            return None
        return (
            f"apply loop made no progress (no batch applied, no heartbeat written) for "
            f"{silent_s:.0f} s (CDC_LIVENESS_TIMEOUT_S={self.timeout_s:g})"
        )

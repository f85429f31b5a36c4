"""Progress of a long copy (a snapshot, a full resync): done and total as gauges, a log line
with rate and ETA every few seconds, and a bar instead of the log lines on a terminal.

The total is what the job will copy; when rows appear during a copy made of several
snapshots (a full resync), the total rises with them, so done never passes it.
"""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

from cdc_worker.observability.metrics import WorkerMetrics

LOG_EVERY_S = 2.0
DRAW_EVERY_S = 0.2
BAR_CELLS = 30


def eta_s(done: int, total: int, rate_per_s: float) -> float | None:
    """Seconds left at this rate (None when no rate is known yet)."""
    return max(0, total - done) / rate_per_s if rate_per_s > 0 else None


def bar_line(label: str, done: int, total: int, rate_per_s: float) -> str:
    """``snapshot ▕██████░░░░▏ 45,000/100,000 tickets  12,345/s  ETA 4 s``."""
    total = max(total, done, 1)
    filled = int(BAR_CELLS * done / total)
    left = eta_s(done, total, rate_per_s)
    eta = f"ETA {left:,.0f} s" if left is not None else "ETA ?"
    bar = "█" * filled + "░" * (BAR_CELLS - filled)
    return f"{label} ▕{bar}▏ {done:,}/{total:,} tickets  {rate_per_s:,.0f}/s  {eta}"


class Progress:
    """One job's progress, exported under ``reason``."""

    def __init__(
        self,
        metrics: WorkerMetrics,
        log: Any,
        reason: str,
        total: int,
        done: int = 0,
        terminal: TextIO | None = None,
        label: str = "snapshot",
    ) -> None:
        self.metrics, self.log, self.reason, self.label = metrics, log, reason, label
        self.total, self.done = max(total, done), done
        self.started_done, self.started_s = done, time.monotonic()
        self._last_log_s = self._last_draw_s = 0.0
        stream = sys.stderr if terminal is None else terminal
        self.terminal = stream if stream.isatty() else None
        self._export()

    @property
    def rate_per_s(self) -> float:
        """Tickets per second since this process started following the job."""
        elapsed_s = time.monotonic() - self.started_s
        return (self.done - self.started_done) / elapsed_s if elapsed_s > 0 else 0.0

    def advance(self, tickets: int) -> None:
        """``tickets`` more copied; the total rises if the copy found more than counted."""
        self.done += tickets
        self.total = max(self.total, self.done)
        self._export()
        now = time.monotonic()
        if self.terminal is not None and now - self._last_draw_s >= DRAW_EVERY_S:
            self._last_draw_s = now
            self._draw()
        elif self.terminal is None and now - self._last_log_s >= LOG_EVERY_S:
            self._last_log_s = now
            self._log(f"{self.label} progress")

    def finish(self) -> None:
        """The copy is complete: the total is what was copied."""
        self.total = self.done
        self._export()
        if self.terminal is not None:
            self._draw()
            print(file=self.terminal, flush=True)

    def _export(self) -> None:
        self.metrics.snapshot_tickets_done.labels(reason=self.reason).set(self.done)
        self.metrics.snapshot_tickets_total.labels(reason=self.reason).set(self.total)

    def _draw(self) -> None:
        line = bar_line(f"{self.label} ({self.reason})", self.done, self.total, self.rate_per_s)
        print("\r" + line, end="", file=self.terminal, flush=True)

    def _log(self, event: str) -> None:
        left = eta_s(self.done, self.total, self.rate_per_s)
        self.log.info(
            event,
            reason=self.reason,
            tickets_done=self.done,
            tickets_total=self.total,
            rate_per_s=round(self.rate_per_s),
            eta_s=None if left is None else round(left),
        )

"""What ends a session without stopping the worker, and how long to wait before the next:
the errors the loop recovers from, their metric labels, and the backoff."""

from __future__ import annotations

from typing import Any

import pymysql
import redis
import sqlalchemy.exc

from cdc_worker.errors import StreamInterrupted
from cdc_worker.observability.metrics import WorkerMetrics
from cdc_worker.observability.telemetry import LoopTelemetry
from cdc_worker.source_guard import SourceGuard
from cdc_worker.store.interface import FenceLost

RECOVERABLE = (
    StreamInterrupted,
    FenceLost,
    redis.ConnectionError,
    redis.TimeoutError,
    redis.exceptions.BusyLoadingError,
    # Redis full (maxmemory + noeviction): MULTI/EXEC applied nothing; back off and retry.
    redis.exceptions.OutOfMemoryError,
    redis.exceptions.ExecAbortError,
    sqlalchemy.exc.OperationalError,
    sqlalchemy.exc.InterfaceError,
    pymysql.err.OperationalError,
    pymysql.err.InterfaceError,
    OSError,
)
REDIS_ERRORS = (redis.RedisError,)


def reconnect_reasons() -> list[str]:
    """Every reason a session can end with (``cdc_reconnects_total``'s labels), in advance."""
    return ["fence", *(kind.__name__ for kind in RECOVERABLE if kind is not FenceLost)]


class Recovery:
    """Counts and logs a session that ended with a recoverable error, and says how long to
    back off: doubling from 0.1 s up to ``backoff_max_s``, never past a source failover
    that falls due."""

    def __init__(
        self, metrics: WorkerMetrics, telemetry: LoopTelemetry, backoff_max_s: float, log: Any
    ) -> None:
        self.metrics = metrics
        self.telemetry = telemetry
        self.backoff_max_s = backoff_max_s
        self.log = log

    def pause_s(
        self,
        exc: BaseException,
        failures: int,
        streamed: bool,
        guard: SourceGuard | None,
        switched: bool,
    ) -> float:
        """Record the ``failures``-th failure in a row; the seconds to wait before the next
        session (0 right after a switch to another source server)."""
        reason = "fence" if isinstance(exc, FenceLost) else type(exc).__name__
        self.metrics.reconnects.labels(reason=reason).inc()
        if isinstance(exc, FenceLost):
            self.metrics.fence_conflicts.inc()
        elif isinstance(exc, REDIS_ERRORS):
            self.metrics.redis_write_errors.inc()
        else:  # the source is away: restarting would not help, the loop is not stuck
            self.telemetry.progressed()
        delay_s = min(self.backoff_max_s, 0.1 * 2 ** min(failures - 1, 10))
        if guard is not None:  # back off, but not past a failover that falls due
            delay_s = 0.0 if switched else min(delay_s, guard.seconds_until_due())
        self.log.warning(
            "session ended; resuming from the checkpoint"
            if streamed
            else "cannot start a session; retrying",
            error=str(exc)[:300],
            kind=type(exc).__name__,
            retry_in_s=round(delay_s, 2),
        )
        return float(delay_s)

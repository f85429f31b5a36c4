"""Being the active worker: the lease (a standby waits for it), and what only the active
worker does beside applying, polling the source's head (a standby adds no load to it)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from cdc_worker.observability.metrics import WorkerMetrics
from cdc_worker.observability.telemetry import LoopTelemetry
from cdc_worker.source import head
from cdc_worker.source.stream import SourceConfig
from cdc_worker.store.lease import Lease, wait_for_lease


class Leadership:
    """The lease of the active worker, or None for a worker that is always active (a single
    worker, tests of one part); ``source`` names the server in use now (it may switch)."""

    def __init__(
        self,
        lease: Lease | None,
        metrics: WorkerMetrics,
        telemetry: LoopTelemetry,
        source: Callable[[], SourceConfig],
        head_poll_s: float,
        log: Any,
    ) -> None:
        self.lease = lease
        self.metrics = metrics
        self.telemetry = telemetry
        self.source = source
        self.head_poll_s = head_poll_s
        self.log = log
        self._poller: head.HeadPoller | None = None

    @property
    def name(self) -> str:
        """host:pid of this worker in the lease; empty without one."""
        return self.lease.name if self.lease is not None else ""

    def confirm(self) -> None:
        """Raise LeaseLost if the lease is no longer ours (a worker paused past its lease
        takes no job and beats no more)."""
        if self.lease is not None:
            self.lease.confirm()

    def become_active(self, stopping: threading.Event) -> bool:
        """Hold the lease, waiting as a standby for it; False when asked to stop first."""
        if self.lease is None or self.lease.held:
            self._poll_head(True)
            return True
        self.metrics.worker_active.set(0)
        if not wait_for_lease(self.lease, stopping, self.telemetry.progressed):
            return False  # waiting was a standby's work: /healthz stayed 200 meanwhile
        self.metrics.worker_active.set(1)
        self.metrics.leader_changes.inc()
        self._poll_head(True)
        self.log.info("active: took the lease", worker=self.lease.name)
        return True

    def step_down(self, reason: str) -> None:
        """Release the lease (a standby takes over at once) and become a standby."""
        self._poll_head(False)
        if self.lease is not None and (self.lease.held or self.lease.lost.is_set()):
            self.lease.release()
            self.metrics.worker_active.set(0)
            self.log.warning("standby: gave up the lease", reason=reason[:200])

    def _poll_head(self, active: bool) -> None:
        if active and self._poller is None:
            self._poller = head.HeadPoller(
                lambda: head.connect(self.source()), self.telemetry.lag.saw_head, self.head_poll_s
            )
            self._poller.start()
        elif not active and self._poller is not None:
            self._poller.stop()
            self._poller = None

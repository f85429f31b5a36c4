"""The worker loop's side of source high availability: after a failed session, switch to
another server of the list once the one in use stays unreachable; before streaming, refuse a
checkpoint holding transactions the server never had. Records what it does (metrics, logs)."""

from __future__ import annotations

from typing import Any

import structlog

from cdc_worker.checkpoint import Checkpoint
from cdc_worker.observability.metrics import WorkerMetrics
from cdc_worker.snapshots.resyncer import Resyncer
from cdc_worker.source.failover import SourceList, config_for
from cdc_worker.source.stream import SourceConfig

DIVERGED = "source_diverged"  # the reason of the rebuild, in cdc_snapshots_total{reason}


class SourceGuard:
    """Which source server the worker reads, when it leaves it, and whether it can resume."""

    def __init__(self, sources: SourceList, metrics: WorkerMetrics, resyncer: Resyncer) -> None:
        self.sources = sources
        self.metrics = metrics
        self.resyncer = resyncer
        self.log: Any = structlog.get_logger("cdc_worker")
        self._abandon_resync = False  # set at a switch, done before the next session
        metrics.snapshots.labels(reason=DIVERGED)  # a series at 0 from the start
        self._show()

    @property
    def name(self) -> str:
        """The server in use, ``host:port``."""
        return self.sources.name

    def seconds_until_due(self) -> float:
        """How long the back-off may sleep before a failover falls due."""
        return self.sources.seconds_until_due()

    def after_failure(self, config: SourceConfig) -> SourceConfig | None:
        """The reader's settings for a new server if the worker switched to one, else None."""
        switch = self.sources.after_failure()
        if switch is None:
            return None
        self.metrics.source_switches.inc()
        self._show()
        self.log.warning(
            "source switched",
            old=switch.old,
            new=switch.new,
            unreachable_s=round(switch.unreachable_s, 1),
            replica=switch.info.is_replica,
        )
        self._abandon_resync = True
        return config_for(config, self.sources.url, switch.info)

    def before_session(self) -> None:
        """After a switch: give up a full resync in progress (its chunks' positions would be
        compared with a checkpoint from the other server)."""
        if self._abandon_resync:
            self.resyncer.abandon_full("the source server changed")
            self._abandon_resync = False

    def _show(self) -> None:
        for name in self.sources.names:
            self.metrics.source_in_use.labels(server=name).set(int(name == self.sources.name))
        structlog.contextvars.bind_contextvars(source=self.sources.name)

    def diverged(self, checkpoint: Checkpoint, is_mariadb: bool) -> bool:
        """True when the checkpoint holds transactions the server in use never had (they are
        logged), or cannot be checked against it: only a rebuild is right then."""
        lost = self.sources.lost(checkpoint.position, is_mariadb)
        if lost == []:
            return False
        if lost is None:
            self.log.warning("checkpoint has no GTID and the source changed; rebuilding")
            return True
        self.log.error(
            "source diverged: the read model holds transactions this server never had; "
            "rebuilding from it",
            server=self.sources.name,
            lost_gtids=",".join(lost),
            checkpoint_gtid=checkpoint.position.gtid,
        )
        return True

    def trust_current(self) -> None:
        """A snapshot of the server in use was just swapped in."""
        self.sources.trust_current()

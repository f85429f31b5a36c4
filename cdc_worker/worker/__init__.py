"""The worker: the loop that keeps the read model in step with the source (``loop``), the
state of one streaming session (``session``), being the active worker (``leadership``), the
errors a session ends with and the backoff (``recovery``), and the metrics of each batch
(``recording``).

May import every part below it: the foundation, source, store, observability, the pipeline,
snapshots and source_guard; and projections.
"""

from cdc_worker.worker.loop import Worker
from cdc_worker.worker.recovery import reconnect_reasons

__all__ = ["Worker", "reconnect_reasons"]

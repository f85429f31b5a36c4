"""Resync jobs: asked for by the CLI or the admin API, run by the worker, tracked in Redis.

Only the worker writes the read model; everyone else enqueues a job and watches its state.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import asdict, dataclass, field, replace
from typing import Literal

import orjson
import redis

from cdc_worker.store import keys

JobKind = Literal["full", "tickets", "department"]
JobState = Literal["queued", "running", "done", "failed"]
JOB_TTL_S = 86_400


@dataclass(frozen=True, slots=True)
class Job:
    """One resync: what to rebuild, where it stands."""

    id: str
    kind: JobKind
    targets: tuple[int, ...] = ()
    state: JobState = "queued"
    reason: str = "requested"
    tickets_done: int = 0
    tickets_total: int = 0
    generation: int = 0
    last_id: int = 0
    refs_done: bool = False
    created_at_s: float = field(default_factory=time.time)
    started_at_s: float = 0.0
    finished_at_s: float = 0.0
    error: str = ""
    # A repair's tickets the database does not hold, and those of them Redis held (their
    # documents were removed).
    missing: tuple[int, ...] = ()
    removed: tuple[int, ...] = ()

    def encode(self) -> bytes:
        """JSON as stored."""
        return orjson.dumps(asdict(self))

    @classmethod
    def decode(cls, raw: bytes | str) -> Job:
        """Inverse of ``encode``."""
        data = orjson.loads(raw)
        for name in ("targets", "missing", "removed"):
            data[name] = tuple(data.get(name, ()))
        return cls(**data)

    def with_(self, **changes: object) -> Job:
        """A copy with some fields changed."""
        return replace(self, **changes)  # type: ignore[arg-type]

    def rate_per_s(self) -> float:
        """Tickets per second so far."""
        elapsed = (self.finished_at_s or time.time()) - self.started_at_s
        return self.tickets_done / elapsed if self.started_at_s and elapsed > 0 else 0.0


def new_job(kind: JobKind, targets: tuple[int, ...] = (), reason: str = "requested") -> Job:
    """A queued job with a fresh id."""
    return Job(id=uuid.uuid4().hex[:12], kind=kind, targets=targets, reason=reason)


def enqueue(client: redis.Redis, job: Job) -> Job:
    """Store the job and put it on the worker's queue, atomically."""
    pipe = client.pipeline(transaction=True)
    pipe.set(keys.resync_job(job.id), job.encode(), ex=JOB_TTL_S)
    pipe.rpush(keys.RESYNC_QUEUE, job.id)
    pipe.execute()
    return job


def load(client: redis.Redis, job_id: str) -> Job | None:
    """A job's current state, or None if unknown (or expired)."""
    raw = client.get(keys.resync_job(job_id))
    return None if raw is None else Job.decode(raw)


def save_ops(pipe: object, job: Job) -> None:
    """Queue the job's new state on a pipeline (written with the read model's own writes)."""
    pipe.set(keys.resync_job(job.id), job.encode(), ex=JOB_TTL_S)  # type: ignore[attr-defined]

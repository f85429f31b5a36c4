"""`cdc-worker resync`: ask the running worker for a resync and follow its progress."""

from __future__ import annotations

import sys
import time
from typing import Any

import redis
import structlog

from cdc_worker.store import keys
from cdc_worker.store.jobs import Job, JobKind, enqueue, load, new_job

POLL_S = 0.25
LOG_EVERY_S = 2.0
BAR_CELLS = 30


def request(client: redis.Redis, tickets: list[int], department: int | None) -> Job:
    """Enqueue the job the arguments describe."""
    kind: JobKind = "tickets" if tickets else "department" if department else "full"
    targets = tuple(tickets) if tickets else (department,) if department else ()
    return enqueue(client, new_job(kind, targets))


def progress_line(job: Job) -> str:
    """``resync full ▕██████░░░░▏ 45,000/100,000 tickets  12,345/s  ETA 4 s``."""
    total = max(job.tickets_total, job.tickets_done, 1)
    filled = int(BAR_CELLS * job.tickets_done / total)
    rate = job.rate_per_s()
    eta = f"ETA {(total - job.tickets_done) / rate:,.0f} s" if rate > 0 else "ETA ?"
    bar = "█" * filled + "░" * (BAR_CELLS - filled)
    return f"resync {job.kind} ▕{bar}▏ {job.tickets_done:,}/{total:,} tickets  {rate:,.0f}/s  {eta}"


def outcome_line(job: Job) -> str:
    """``resync 1a2b: done, 2 tickets rebuilt; not in the database: 999999 (its document
    was removed from Redis)``, or the error of a failed job."""
    if job.state != "done":
        return f"resync {job.id}: {job.state} {job.error}".rstrip()
    rebuilt = job.tickets_done - len(job.missing)
    line = f"resync {job.id}: done, {rebuilt:,} ticket{'' if rebuilt == 1 else 's'} rebuilt"
    if job.missing:
        line += "; not in the database: " + _ids(job.missing)
        kept = sorted(set(job.missing) - set(job.removed))
        if job.removed:
            line += f" ({_ids(job.removed)} removed from Redis"
            line += f"; {_ids(kept)} not in Redis either)" if kept else ")"
        else:
            line += " (nor in Redis)"
    return line


def _ids(ids: tuple[int, ...] | list[int]) -> str:
    shown = ", ".join(str(i) for i in sorted(ids)[:10])
    return shown + (f" and {len(ids) - 10:,} more" if len(ids) > 10 else "")


def follow(client: redis.Redis, job: Job, timeout_s: float) -> int:
    """Show progress until the job ends; 0 when done, 1 when it failed or timed out."""
    log: Any = structlog.get_logger("cdc_worker.resync")
    tty, deadline, last_log = sys.stderr.isatty(), time.monotonic() + timeout_s, 0.0
    if not client.exists(keys.HEARTBEAT):
        log.warning("no worker heartbeat: the job waits in the queue until a worker runs")
    while time.monotonic() < deadline:
        current = load(client, job.id) or job
        if tty:
            print("\r" + progress_line(current), end="", file=sys.stderr, flush=True)
        elif time.monotonic() - last_log >= LOG_EVERY_S or current.state in ("done", "failed"):
            last_log = time.monotonic()
            log.info(
                "resync progress",
                job=job.id,
                state=current.state,
                tickets_done=current.tickets_done,
                tickets_total=current.tickets_total,
                rate_per_s=round(current.rate_per_s()),
            )
        if current.state in ("done", "failed"):
            if tty:
                print(file=sys.stderr)
            print(outcome_line(current))
            return 0 if current.state == "done" else 1
        time.sleep(POLL_S)
    print(f"resync {job.id}: not finished after {timeout_s:g} s (it goes on in the worker)")
    return 1

"""Readiness: one verdict, computed purely from what Redis holds, for /readyz and `check`."""

from __future__ import annotations

import time
from dataclasses import dataclass

import orjson


@dataclass(frozen=True, slots=True)
class Verdict:
    """Ready or not, and why not."""

    ready: bool
    reasons: tuple[str, ...]
    lag_s: float | None = None
    position: str | None = None  # the worker's applied position, as in its last heartbeat
    gtid: str | None = None
    active_worker: str | None = None  # host:pid of the worker that wrote the heartbeat
    source: str | None = None  # the source server the worker reads, host:port


def verdict(
    checkpoint: bytes | str | None,
    heartbeat: bytes | str | None,
    now_s: float,
    max_lag_s: float,
    max_heartbeat_age_s: float,
) -> Verdict:
    """Ready when the read model exists, the worker beat recently, has not stopped applying
    (an event it cannot read), and its lag is in bounds."""
    reasons: list[str] = []
    if checkpoint is None:
        reasons.append("no read model yet (no checkpoint in Redis)")
    if heartbeat is None:
        return Verdict(False, (*reasons, "no worker heartbeat (worker stopped?)"))
    beat = orjson.loads(heartbeat)
    if beat.get("halted"):
        reasons.append(f"worker stopped applying: {beat['halted']}")
    age_s = now_s - float(beat["at_s"])
    if age_s > max_heartbeat_age_s:
        reasons.append(f"worker heartbeat is {age_s:.0f} s old (limit {max_heartbeat_age_s:g} s)")
    lag_s = float(beat.get("lag_s", 0.0))
    if lag_s > max_lag_s:
        reasons.append(f"replication lag {lag_s:.1f} s exceeds CDC_MAX_LAG_S={max_lag_s:g}")
    position, gtid = beat.get("position"), beat.get("gtid")
    worker = beat.get("worker")
    return Verdict(not reasons, tuple(reasons), lag_s, position, gtid, worker, beat.get("source"))


@dataclass
class WorkerView:
    """What the API can tell of the worker from Redis alone, remembering the last heartbeat
    it saw (the heartbeat key expires when the worker stops beating)."""

    last_beat_s: float | None = None
    last_behind_s: float = 0.0

    def heartbeat_age_s(self, heartbeat: bytes | str | None, now_s: float) -> float:
        """Seconds since the worker's last heartbeat; +Inf if this API never saw one."""
        if heartbeat is not None:
            beat = orjson.loads(heartbeat)
            self.last_beat_s = float(beat["at_s"])
            self.last_behind_s = float(beat.get("source_behind_s", beat.get("lag_s", 0.0)))
        return float("inf") if self.last_beat_s is None else max(0.0, now_s - self.last_beat_s)

    def source_behind_s(
        self, checkpoint_committed_at_s: float | None, age_s: float, max_age_s: float
    ) -> float:
        """The worker's own figure while it beats; once it is silent, an upper bound that
        grows with the silence (what it was behind, plus how long it has been silent)."""
        if age_s <= max_age_s:
            return self.last_behind_s + age_s if self.last_behind_s > 0 else 0.0
        if self.last_beat_s is not None:
            return self.last_behind_s + age_s
        if checkpoint_committed_at_s:  # never saw a beat: since the last applied commit
            return max(0.0, time.time() - checkpoint_committed_at_s)
        return float("inf")

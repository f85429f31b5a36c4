"""Readiness: one verdict, computed purely from what Redis holds, for /readyz and `check`."""

from __future__ import annotations

from dataclasses import dataclass

import orjson


@dataclass(frozen=True, slots=True)
class Verdict:
    """Ready or not, and why not."""

    ready: bool
    reasons: tuple[str, ...]
    lag_s: float | None = None


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
    return Verdict(not reasons, tuple(reasons), lag_s)

"""The active worker's lease: one token in Redis with a TTL, so one worker streams at a time.

Any number of workers may run against the same source and Redis; the one holding
``keys.LEADER`` streams, the others wait (warm standbys). The holder renews the lease on a
thread of its own, three times per TTL, so a long batch, snapshot chunk or resync step never
lets it lapse; a paused or dead holder stops renewing and a standby takes the key once it
expires. The lease only decides who *should* write: the checkpoint fence (every batch WATCHes
the checkpoint) stays what makes a second writer harmless, and each batch also refuses to
start unless the lease is still this worker's (``RedisStore.batch``).
"""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import redis
import structlog

from cdc_worker.store import keys
from cdc_worker.store.interface import FenceLost

RENEWALS_PER_TTL = 3

# Renew our own lease, or take it again when it vanished (a Redis restarted empty, or a
# failover to a replica that had not received it); refuse when another worker holds it.
RENEW_SCRIPT = """
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if not holder then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
"""
RELEASE_SCRIPT = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


class LeaseLost(FenceLost):
    """Raised when another worker holds the lease this worker was streaming under."""


def worker_name() -> str:
    """``host:pid``: how the heartbeat, /readyz and the logs name a worker."""
    return f"{socket.gethostname()}:{os.getpid()}"


def holder_name(token: bytes | str | None) -> str | None:
    """The ``host:pid`` part of a lease token."""
    if token is None:
        return None
    text = token.decode() if isinstance(token, bytes) else token
    return text.rpartition(":")[0] or text


class Lease:
    """This worker's claim on ``keys.LEADER``: acquire, keep renewed, release."""

    def __init__(self, client: redis.Redis, lease_s: float) -> None:
        self.client = client
        self.lease_s = lease_s
        self.ttl_ms = int(lease_s * 1000)
        self.name = worker_name()
        self.token = f"{self.name}:{uuid.uuid4().hex[:8]}"
        self.lost = threading.Event()
        self._held = False
        self._renewed_at_s = 0.0
        self._stop_renewing = threading.Event()
        self._renewer: threading.Thread | None = None
        self.log: Any = structlog.get_logger("cdc_worker.lease")

    @property
    def held(self) -> bool:
        """True between a successful ``try_acquire`` and ``release`` or a loss."""
        return self._held and not self.lost.is_set()

    def try_acquire(self) -> bool:
        """Take the lease if nobody holds it; start renewing it. One SET NX round trip."""
        if not self.client.set(keys.LEADER, self.token, nx=True, px=self.ttl_ms):
            return False
        self._held, self._renewed_at_s = True, time.monotonic()
        self.lost.clear()
        self._stop_renewing = threading.Event()
        self._renewer = threading.Thread(target=self._renew_loop, name="lease", daemon=True)
        self._renewer.start()
        return True

    def confirm(self) -> None:
        """Raise ``LeaseLost`` unless Redis still names this worker (one GET)."""
        if not self.held:
            raise LeaseLost("the lease lapsed or another worker took it")
        holder = self.client.get(keys.LEADER)
        if holder is not None and holder != self.token.encode():
            self._lose(holder)
            raise LeaseLost(f"worker {holder_name(holder)} holds the lease now")

    def check(self, holder: bytes | str | None) -> None:
        """Raise ``LeaseLost`` unless ``holder`` (the key's value, read by a caller) is ours."""
        if holder != self.token.encode():
            self._lose(holder)
            raise LeaseLost(f"the lease is not ours (held by {holder_name(holder)})")

    def release(self) -> None:
        """Stop renewing and delete the key if it is still ours, so a standby starts at once."""
        self._stop_renewing.set()
        if self._renewer is not None and self._renewer is not threading.current_thread():
            self._renewer.join(2)
        was_held, self._held = self._held, False
        if was_held:
            try:
                self.client.eval(RELEASE_SCRIPT, 1, keys.LEADER, self.token)
            except redis.RedisError as exc:  # it expires on its own within the TTL
                self.log.warning("could not release the lease", error=str(exc)[:200])

    def renew(self) -> bool:
        """Extend the lease (or take it back if it vanished); False if another worker has it."""
        return bool(self.client.eval(RENEW_SCRIPT, 1, keys.LEADER, self.token, self.ttl_ms))

    def _renew_loop(self) -> None:
        stop = self._stop_renewing
        while not stop.wait(self.lease_s / RENEWALS_PER_TTL):
            try:
                if not self.renew():
                    self._lose(self.client.get(keys.LEADER))
                    return
                self._renewed_at_s = time.monotonic()
            except redis.RedisError as exc:
                if time.monotonic() - self._renewed_at_s > self.lease_s:  # it has expired
                    self.log.warning("lease not renewed within its TTL", error=str(exc)[:200])
                    self._lose(None)
                    return

    def _lose(self, holder: bytes | str | None) -> None:
        if not self.lost.is_set():
            self.log.warning("lease lost", holder=holder_name(holder))
        self.lost.set()
        self._held = False
        self._stop_renewing.set()


def wait_for_lease(
    lease: Lease, stopping: threading.Event, alive: Callable[[], None], poll_s: float = 0.05
) -> bool:
    """Wait as a standby until the lease is ours (True) or ``stopping`` is set (False).

    One SET NX every ``poll_s`` is all a standby costs Redis, and nothing the source: it
    checked the source's settings and grants at start-up and connects only once active.
    ``alive`` is called every turn (the worker's /healthz stays 200 on a healthy standby).
    """
    waiting_since_s, logged = time.monotonic(), False
    while not stopping.is_set():
        alive()
        try:
            if lease.try_acquire():
                return True
            if not logged and time.monotonic() - waiting_since_s > poll_s:
                holder = holder_name(lease.client.get(keys.LEADER))
                lease.log.info("standby: another worker is active", active_worker=holder)
                logged = True
        except redis.RedisError as exc:
            lease.log.warning("standby cannot reach Redis", error=str(exc)[:200])
            stopping.wait(min(1.0, 10 * poll_s))
            continue
        stopping.wait(poll_s)
    return False

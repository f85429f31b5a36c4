"""A private Redis primary with replicas and three Sentinels, for tests and benchmarks.

Each Redis has its own directory (a replica writes ``dump.rdb`` there; a Redis sharing the
folder would load it on restart instead of starting empty). Replicas run with
``replica-serve-stale-data no``: one that lost its primary or has not finished its first sync
answers an error instead of old or missing documents. A Sentinel is ``redis-server FILE.conf
--sentinel`` with one writable file each (Sentinel rewrites it).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import redis

from cdc_worker.devtools.localservers import (
    STOP_TIMEOUT_S,
    RedisServer,
    _binary,
    _log_tail,
    _signal_and_wait,
    free_port,
    start_redis,
)
from cdc_worker.errors import LocalServerError

SERVICE = "ticket-sync"
QUORUM = 2
PROMOTION_TIMEOUT_S = 60.0


def start_replica(
    base_dir: Path, primary_port: int, port: int | None = None, priority: int = 100
) -> RedisServer:
    """A Redis replicating ``primary_port``, answering errors until its first sync is done;
    Sentinel never promotes one of ``priority`` 0."""
    args = ("--replicaof", "127.0.0.1", str(primary_port), "--replica-priority", str(priority))
    server = start_redis(base_dir, port=port, extra_args=args)
    try:
        with redis.Redis(port=server.port, socket_timeout=5) as client:  # PING answers first
            client.config_set("replica-serve-stale-data", "no")
    except redis.RedisError:
        server.stop()
        raise
    return server


@dataclass(frozen=True)
class SentinelServer:
    """One Sentinel process watching the group's primary."""

    port: int
    base_dir: Path

    @property
    def pid_file(self) -> Path:
        return self.base_dir / "sentinel.pid"

    def stop(self) -> None:
        """SIGTERM and wait for exit."""
        _signal_and_wait(self.pid_file, signal.SIGTERM, STOP_TIMEOUT_S)


def start_sentinel(
    base_dir: Path, primary_port: int, down_after_ms: int, failover_timeout_ms: int = 10_000
) -> SentinelServer:
    """A daemonized Sentinel monitoring 127.0.0.1:``primary_port`` as ``SERVICE``."""
    base_dir = base_dir.resolve()
    base_dir.mkdir(parents=True, exist_ok=True)
    sentinel = SentinelServer(free_port(), base_dir)
    conf = base_dir / "sentinel.conf"
    conf.write_text(
        f"port {sentinel.port}\nbind 127.0.0.1\ndir {base_dir}\n"
        f"sentinel monitor {SERVICE} 127.0.0.1 {primary_port} {QUORUM}\n"
        f"sentinel down-after-milliseconds {SERVICE} {down_after_ms}\n"
        f"sentinel failover-timeout {SERVICE} {failover_timeout_ms}\n"
        f"sentinel parallel-syncs {SERVICE} 1\n"
    )
    log = base_dir / "sentinel.log"
    command = [_binary("redis-server"), str(conf), "--sentinel", "--daemonize", "yes"]
    command += ["--pidfile", str(sentinel.pid_file), "--logfile", str(log)]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise LocalServerError(f"redis sentinel failed:\n{done.stdout}\n{done.stderr}")
    _wait_answering(sentinel.port, log)
    return sentinel


def _wait_answering(port: int, log: Path) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            with redis.Redis(host="127.0.0.1", port=port, socket_timeout=1) as client:
                client.ping()
                return
        except redis.exceptions.ConnectionError:
            if time.monotonic() > deadline:
                message = f"Sentinel on {port} did not answer:\n{_log_tail(log)}"
                raise LocalServerError(message) from None
            time.sleep(0.02)


@dataclass
class RedisGroup:
    """A primary, its replicas and three Sentinels; the Sentinels decide who is primary."""

    base_dir: Path
    servers: dict[int, RedisServer]
    sentinels: list[SentinelServer]
    failovers: int = 0
    promotion_times_s: list[float] = field(default_factory=list)

    @property
    def sentinel_list(self) -> str:
        """``CDC_REDIS_SENTINELS``."""
        return ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)

    def url(self, db: int = 1) -> str:
        """``CDC_REDIS_URL``: only its database (and credentials) matter with Sentinel."""
        return f"redis://127.0.0.1:{self.primary_port()}/{db}"

    def primary_port(self) -> int:
        """The port the Sentinels name as the primary now."""
        for sentinel in self.sentinels:
            try:
                with redis.Redis(port=sentinel.port, socket_timeout=1) as client:
                    _, port = client.sentinel_get_master_addr_by_name(SERVICE)
                    return int(port)
            except (redis.RedisError, TypeError):
                continue
        raise LocalServerError("no Sentinel answered")

    def primary(self) -> RedisServer:
        return self.servers[self.primary_port()]

    def replicas(self) -> list[RedisServer]:
        port = self.primary_port()
        return [server for p, server in self.servers.items() if p != port]

    def kill_primary(self) -> tuple[int, float]:
        """SIGKILL the primary; returns its port and the monotonic time the signal was sent
        (``kill`` returns once the process is gone, up to a poll later)."""
        victim = self.primary()
        killed_at_s = time.monotonic()
        victim.kill()
        return victim.port, killed_at_s

    def wait_promoted(self, old_port: int, killed_at_s: float) -> float:
        """Wait until every Sentinel names a new primary that answers as one; returns the
        seconds from the kill."""
        deadline = time.monotonic() + PROMOTION_TIMEOUT_S
        while True:
            if self._promoted(old_port):
                took_s = time.monotonic() - killed_at_s
                self.failovers += 1
                self.promotion_times_s.append(took_s)
                return took_s
            if time.monotonic() > deadline:
                raise LocalServerError(f"no promotion {PROMOTION_TIMEOUT_S:.0f} s after the kill")
            time.sleep(0.02)

    def _promoted(self, old_port: int) -> bool:
        try:
            port = self.primary_port()
            if port == old_port:
                return False
            with redis.Redis(port=port, socket_timeout=1) as client:
                return bool(client.info("replication")["role"] == "master")
        except (redis.RedisError, LocalServerError):
            return False

    def wait_converged(self, timeout_s: float = 30) -> None:
        """Wait until every Sentinel names the same primary and every replica follows it:
        until then a client may still be sent to the old address (where a restarted server
        now answers as a replica)."""
        deadline = time.monotonic() + timeout_s
        while not self._converged():
            if time.monotonic() > deadline:
                raise LocalServerError("the Sentinels did not agree on one primary")
            time.sleep(0.05)
        self.wait_replicas_synced(timeout_s)

    def _converged(self) -> bool:
        named = set()
        for sentinel in self.sentinels:
            try:
                with redis.Redis(port=sentinel.port, socket_timeout=1) as client:
                    named.add(int(client.sentinel_get_master_addr_by_name(SERVICE)[1]))
            except (redis.RedisError, TypeError):
                return False
        return len(named) == 1

    def restart_as_replica(self, port: int, priority: int = 0) -> RedisServer:
        """Start a killed server again, empty, as a replica of the current primary; by
        default one Sentinel will not promote: a Sentinel refuses a second failover of the
        same address within twice its failover timeout, so each failover promotes a fresh
        replica (pass 100 when failovers are further apart than that)."""
        old = self.servers[port]
        server = start_replica(old.base_dir, self.primary_port(), port=port, priority=priority)
        self.servers[port] = server
        return server

    def wait_replicas_synced(self, timeout_s: float = 30) -> None:
        """Wait until every replica's link to the primary is up and caught up."""
        deadline = time.monotonic() + timeout_s
        while not self._synced():
            if time.monotonic() > deadline:
                raise LocalServerError("replicas did not sync with the primary")
            time.sleep(0.05)

    def _synced(self) -> bool:
        try:
            with redis.Redis(port=self.primary_port(), socket_timeout=1) as client:
                info = client.info("replication")
            offset = int(info["master_repl_offset"])
            for replica in self.replicas():
                with redis.Redis(port=replica.port, socket_timeout=1) as client:
                    mine = client.info("replication")
                if mine.get("master_link_status") != "up":
                    return False
                if int(mine.get("slave_repl_offset", -1)) < offset:
                    return False
            return True
        except (redis.RedisError, LocalServerError):
            return False

    def stop(self) -> None:
        """Stop every Sentinel and Redis of the group."""
        for sentinel in self.sentinels:
            sentinel.stop()
        for server in self.servers.values():
            server.stop()


def start_redis_group(
    base_dir: Path,
    replicas: int = 2,
    down_after_ms: int = 2000,
    failover_timeout_ms: int = 10_000,
) -> RedisGroup:
    """A primary, ``replicas`` replicas and three Sentinels, each in a folder of its own.

    A failover whose Sentinel election split waits twice ``failover_timeout_ms`` before the
    next attempt (22 s seen with 10 s): tests take 4 s."""
    base_dir = base_dir.resolve()
    primary = start_redis(base_dir / "redis-0")
    servers = {primary.port: primary}
    sentinels: list[SentinelServer] = []
    try:
        for n in range(1, replicas + 1):
            replica = start_replica(base_dir / f"redis-{n}", primary.port)
            servers[replica.port] = replica
        for n in range(3):
            folder = base_dir / f"sentinel-{n}"
            sentinels.append(
                start_sentinel(folder, primary.port, down_after_ms, failover_timeout_ms)
            )
        group = RedisGroup(base_dir, servers, sentinels)
        group.wait_replicas_synced()
        _wait_sentinels_know(group, replicas)
    except BaseException:
        RedisGroup(base_dir, servers, sentinels).stop()
        raise
    return group


def _wait_sentinels_know(group: RedisGroup, replicas: int) -> None:
    """Sentinels learn replicas and each other from INFO and hello messages (seconds)."""
    deadline = time.monotonic() + 30
    for sentinel in group.sentinels:
        with redis.Redis(port=sentinel.port, socket_timeout=1, decode_responses=True) as c:
            while True:
                master = c.sentinel_master(SERVICE)
                known = int(master["num-slaves"]) >= replicas
                if known and int(master["num-other-sentinels"]) >= 2:
                    break
                if time.monotonic() > deadline:
                    raise LocalServerError("the Sentinels did not discover the group")
                time.sleep(0.1)


def sigstop(server: RedisServer) -> int:
    """Pause a Redis (SIGSTOP); returns its pid for ``os.kill(pid, SIGCONT)``."""
    pid = int(server.pid_file.read_text())
    os.kill(pid, signal.SIGSTOP)
    return pid

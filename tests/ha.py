"""High availability under test: a fleet of worker processes sharing one lease, take-over
timing, and an API process read while Redis fails over.

Shared by the integration tests, ``make ha-soak`` (tests/ha_soak.py) and bench/ha.py.
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from cdc_worker.checkpoint import Checkpoint
from cdc_worker.devtools.localservers import free_port
from cdc_worker.settings import load_settings
from cdc_worker.store import keys
from cdc_worker.store.connect import redis_client
from tests.harness import spawn_worker, worker_env

TAKEOVER_TIMEOUT_S = 30.0
POLL_S = 0.01


def leader_pid(client: redis.Redis) -> int | None:
    """The pid in the lease token (``host:pid:random``), or None when nobody holds it."""
    token = client.get(keys.LEADER)
    return None if token is None else int(token.decode().split(":")[-2])


def checkpoint_of(client: redis.Redis) -> Checkpoint | None:
    raw = client.get(keys.CHECKPOINT)
    return None if raw is None else Checkpoint.decode(raw)


@dataclass
class Fleet:
    """Worker processes pointed at the same source and Redis; one holds the lease."""

    mysql_url: str
    redis_url: str
    logs: Path
    extra_env: dict[str, str] = field(default_factory=dict)
    workers: dict[int, subprocess.Popen[bytes]] = field(default_factory=dict)
    http_ports: dict[int, int] = field(default_factory=dict)
    spawned: int = 0

    def spawn(self) -> subprocess.Popen[bytes]:
        port = free_port()
        env = worker_env(self.mysql_url, self.redis_url, CDC_WORKER_HTTP_PORT=str(port))
        env.update(self.extra_env)
        self.spawned += 1
        worker = spawn_worker(env, self.logs / f"worker-{self.spawned}.log")
        self.workers[worker.pid], self.http_ports[worker.pid] = worker, port
        return worker

    def spawn_ready(self, count: int = 1) -> None:
        """Start ``count`` workers and wait until each serves /healthz: a warm standby (or
        the active worker) that has checked the source and connected to Redis."""
        self.wait_ready([self.spawn() for _ in range(count)])

    def wait_ready(self, started: list[subprocess.Popen[bytes]]) -> None:
        """Wait until each of ``started`` serves /healthz."""
        deadline = time.monotonic() + 60
        for worker in started:
            while self._healthz_or_none(worker.pid) != 200:
                assert worker.poll() is None, f"worker {worker.pid} exited"
                assert time.monotonic() < deadline, f"worker {worker.pid} never served /healthz"
                time.sleep(0.05)

    def _healthz_or_none(self, pid: int) -> int | None:
        try:
            return self.healthz(pid)
        except (urllib.error.URLError, ConnectionError):
            return None

    def client(self) -> redis.Redis:
        """A client for the primary: through the Sentinels when the workers use them."""
        sentinels = self.extra_env.get("CDC_REDIS_SENTINELS")
        settings = load_settings(redis_url=self.redis_url, redis_sentinels=sentinels)
        return redis_client(settings, socket_timeout_s=5)

    def wait_leader(self, timeout_s: float = 60) -> int:
        """The pid of the active worker, once one of ours holds the lease."""
        deadline = time.monotonic() + timeout_s
        with self.client() as client:
            while (pid := leader_pid(client)) not in self.workers:
                assert time.monotonic() < deadline, "no worker took the lease"
                time.sleep(POLL_S)
        assert pid is not None
        return pid

    def signal_leader(self, signum: int) -> tuple[int, float]:
        """Send ``signum`` to the active worker; its pid and the monotonic time sent."""
        pid = self.wait_leader()
        self.workers[pid].send_signal(signum)
        return pid, time.monotonic()

    def reap(self, pid: int) -> None:
        worker = self.workers.pop(pid)
        worker.wait(60)

    def stop(self) -> None:
        for worker in self.workers.values():
            if worker.poll() is None:
                worker.send_signal(signal.SIGCONT)
                worker.send_signal(signal.SIGTERM)
        for worker in self.workers.values():
            try:
                worker.wait(60)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait(10)
        self.workers.clear()

    def metric(self, pid: int, name: str) -> float:
        """A worker's metric from its own /metrics."""
        url = f"http://127.0.0.1:{self.http_ports[pid]}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            for line in response.read().decode().splitlines():
                if line.startswith(name + " ") or line.startswith(name + "{"):
                    return float(line.rsplit(" ", 1)[1])
        raise AssertionError(f"{name} not exported by worker {pid}")

    def healthz(self, pid: int) -> int:
        url = f"http://127.0.0.1:{self.http_ports[pid]}/healthz"
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return int(response.status)
        except urllib.error.HTTPError as error:
            return int(error.code)

    def tail(self, lines: int = 12) -> str:
        """The last lines of every worker's log, for an assertion message."""
        parts = []
        for path in sorted(self.logs.glob("worker-*.log")):
            last = path.read_text(errors="replace").splitlines()[-lines:]
            parts.append(f"--- {path.name}\n" + "\n".join(line[:300] for line in last))
        return "\n".join(parts)

    def log_events(self) -> Counter[str]:
        """How many times each log event (``event`` field) appears across every worker."""
        counted: Counter[str] = Counter()
        for path in self.logs.glob("worker-*.log"):
            for line in path.read_text(errors="replace").splitlines():
                if line.startswith("{"):
                    counted[json.loads(line).get("event", "")] += 1
        return counted

    def job_events(self, event: str, job_id: str) -> int:
        """Log lines with ``event`` for one resync job, across every worker."""
        found = 0
        for path in self.logs.glob("worker-*.log"):
            for line in path.read_text(errors="replace").splitlines():
                if line.startswith("{") and f'"{job_id}"' in line:
                    found += json.loads(line).get("event") == event
        return found


def wait_takeover(client: redis.Redis, old_pid: int, since_s: float) -> tuple[int, float]:
    """Wait until another worker holds the lease and has moved the checkpoint (applied a
    transaction); returns its pid and the seconds since ``since_s`` (monotonic)."""
    deadline = since_s + TAKEOVER_TIMEOUT_S
    new_pid, seen = None, None
    while True:
        pid = leader_pid(client)
        if pid not in (None, old_pid) and new_pid != pid:
            new_pid, seen = pid, checkpoint_of(client)
        elif new_pid is not None and checkpoint_of(client) != seen:
            return new_pid, time.monotonic() - since_s
        assert time.monotonic() < deadline, f"no take-over from {old_pid} in time"
        time.sleep(POLL_S)


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))]


@dataclass
class ApiProcess:
    """``cdc-worker api`` as a user runs it, on a port of its own."""

    env: dict[str, str]
    logs: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> ApiProcess:
        log = (self.logs / f"api-{self.port}.log").open("ab")
        command = [sys.executable, "-m", "cdc_worker.cli", "api", "--port", str(self.port)]
        self.process = subprocess.Popen(command, env=self.env, stdout=log, stderr=log)
        log.close()
        deadline = time.monotonic() + 30
        while self.get("/healthz")[0] != 200:
            assert time.monotonic() < deadline, "the API did not start"
            time.sleep(0.05)
        return self

    def get(self, path: str) -> tuple[int, bytes]:
        try:
            url = f"http://127.0.0.1:{self.port}{path}"
            with urllib.request.urlopen(url, timeout=10) as response:
                return int(response.status), response.read()
        except urllib.error.HTTPError as error:
            return int(error.code), error.read()
        except (urllib.error.URLError, ConnectionError):
            return 0, b""

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(30)


class ApiReader(threading.Thread):
    """Reads documents, batches and listings from an API process as fast as it can,
    checking each document it is given; counts statuses."""

    def __init__(self, api: ApiProcess, ids: list[int], check: Any, seed: int = 0) -> None:
        super().__init__(name="api-reader", daemon=True)
        self.api, self.ids, self.check = api, ids, check
        self.rng = random.Random(seed)
        self.stop = threading.Event()
        self.statuses: Counter[int] = Counter()
        self.problems: list[str] = []
        self.unavailable_at_s: list[float] = []

    def run(self) -> None:
        while not self.stop.is_set():
            path = self._path()
            status, body = self.api.get(path)
            self.statuses[status] += 1
            if status == 200:
                self.problems += self.check(path, json.loads(body))
            elif status in (0, 503):
                self.unavailable_at_s.append(time.monotonic())
            elif not (status == 404 and path.startswith("/tickets/")):
                self.problems.append(f"{path}: HTTP {status} {body[:200]!r}")

    def _path(self) -> str:
        roll = self.rng.random()
        if roll < 0.5:
            return f"/tickets/{self.rng.choice(self.ids)}"
        if roll < 0.8:
            return "/tickets?ids=" + ",".join(
                map(str, self.rng.sample(self.ids, min(5, len(self.ids))))
            )
        return "/tickets?limit=50"

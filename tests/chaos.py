"""A reusable chaos harness: a realistic workload on real MariaDB while faults are injected,
then the whole read model is compared with an independent SQL computation.

Faults are chosen and timed from one seed (printed), so a failing run can be replayed.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import redis
from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError

from cdc_worker.devtools.loadgen import Ids, run_transaction
from cdc_worker.devtools.localservers import MariaDBServer, RedisServer
from tests.harness import (
    kill_dump_threads,
    purge_all_but_the_current_binlog,
    spawn_worker,
    wait_synced,
    worker_env,
)


class Writer(threading.Thread):
    """The load generator, tolerant of the database going away under it."""

    def __init__(self, engine: Engine, seed: int) -> None:
        super().__init__(name="chaos-writer", daemon=True)
        self.engine, self.rng = engine, random.Random(seed)
        self.stop, self.committed, self.failed = threading.Event(), 0, 0
        self.errors: list[str] = []  # anything but a database error: a bug in the workload

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                self._write()
            except DBAPIError:
                self.failed += 1  # server restarted, or our ids went stale: reload, go on
                self.engine.dispose()
                time.sleep(0.2)
            except Exception as exc:  # kept for the test's message, then go on
                self.errors.append(repr(exc)[:300])
                self.engine.dispose()
                time.sleep(0.2)

    def describe(self) -> str:
        """One line for an assertion message: how the writer is doing."""
        state = "running" if self.is_alive() else "stopped"
        return f"writer {state}: {self.committed} committed, {self.failed} failed, " + (
            f"errors {self.errors[:3]}"
        )

    def _write(self) -> None:
        with self.engine.connect() as conn:
            ids = Ids.load(conn)
            conn.commit()
            while not self.stop.is_set():
                run_transaction(conn, self.rng, ids)
                conn.commit()
                self.committed += 1
                time.sleep(0.002)


@dataclass
class Chaos:
    """Servers, the worker process and the fault injector of one chaos run."""

    mariadb: MariaDBServer
    redis_server: RedisServer
    engine: Engine
    logs: Path
    seed: int
    rng: random.Random = field(init=False)
    worker: subprocess.Popen[bytes] | None = None
    faults: Counter[str] = field(default_factory=Counter)
    peak_worker_rss_mb: float = 0.0
    peak_rss_by_fault_mb: dict[str, float] = field(default_factory=dict)
    current_fault: str = "start"

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self.env = worker_env(
            self.mariadb.cdc_url,
            self.redis_server.url,
            CDC_STALL_TIMEOUT_S="5",
            CDC_SNAPSHOT_CHUNK_ROWS="100",
        )

    def start_worker(self) -> None:
        self.worker = spawn_worker(self.env, self.logs / "worker.log")

    def stop_worker(self, signum: int = signal.SIGTERM) -> None:
        if self.worker is not None and self.worker.poll() is None:
            self.worker.send_signal(signum)
            self.worker.wait(60)
        self.worker = None

    def inject(self, count: int, pause_s: tuple[float, float] = (0.2, 0.8)) -> None:
        """``count`` faults, chosen from the seed, with pauses between them."""
        for _ in range(count):
            self.sample_memory()
            name, fault = self.rng.choice(sorted(self.fault_kinds().items()))
            self.current_fault = name
            fault()
            self.faults[name] += 1
            time.sleep(self.rng.uniform(*pause_s))

    def fault_kinds(self) -> dict[str, Callable[[], None]]:
        return {
            "sigkill worker": self.kill_worker,
            "sigkill worker right after start": self.kill_worker_early,
            "cut replication connection": lambda: kill_dump_threads(self.mariadb.port),
            "kill and restart mariadb": self.restart_mariadb,
            "kill redis, restart empty": self.restart_redis,
            "redis unreachable (SIGSTOP)": self.pause_redis,
            "redis out of memory": self.redis_oom,
            "rotate and purge binlogs while down": self.purge_while_down,
            "second worker on the same redis": self.second_worker,
        }

    def watch_memory(self, every_s: float = 0.2) -> None:
        """Sample the worker's memory on a thread, so peaks are tied to the fault in progress."""

        def loop() -> None:
            while True:
                self.sample_memory("VmRSS:")
                time.sleep(every_s)

        threading.Thread(target=loop, name="rss-sampler", daemon=True).start()

    def sample_memory(self, field: str = "VmHWM:") -> None:
        """Track the worker's peak resident memory (VmHWM) before it is killed."""
        worker = self.worker
        if worker is None or worker.poll() is not None:
            return
        try:
            status = Path(f"/proc/{worker.pid}/status").read_text()
        except OSError:
            return
        for line in status.splitlines():
            if line.startswith(field):
                rss_mb = int(line.split()[1]) / 1024
                self.peak_worker_rss_mb = max(self.peak_worker_rss_mb, rss_mb)
                by_fault = self.peak_rss_by_fault_mb
                by_fault[self.current_fault] = max(by_fault.get(self.current_fault, 0.0), rss_mb)

    def kill_worker(self) -> None:
        self.stop_worker(signal.SIGKILL)
        self.start_worker()

    def kill_worker_early(self) -> None:
        self.stop_worker(signal.SIGKILL)
        self.start_worker()
        time.sleep(self.rng.uniform(0.5, 1.5))  # inside start-up, a snapshot or a resume
        self.kill_worker()

    def restart_mariadb(self) -> None:
        self.mariadb.kill()
        self.mariadb.restart()

    def restart_redis(self) -> None:
        self.redis_server.kill()
        self.redis_server.restart()

    def pause_redis(self) -> None:
        pid = int(self.redis_server.pid_file.read_text())
        os.kill(pid, signal.SIGSTOP)
        time.sleep(self.rng.uniform(0.5, 2.0))
        os.kill(pid, signal.SIGCONT)

    def redis_oom(self) -> None:
        with redis.Redis.from_url(self.redis_server.url) as client:
            used = int(client.info("memory")["used_memory"])
            client.config_set("maxmemory-policy", "noeviction")
            client.config_set("maxmemory", used + 32 * 1024)
            time.sleep(self.rng.uniform(0.5, 1.5))
            client.config_set("maxmemory", 0)

    def purge_while_down(self) -> None:
        self.stop_worker(signal.SIGKILL)
        time.sleep(0.5)
        purge_all_but_the_current_binlog(self.mariadb)
        self.start_worker()

    def second_worker(self) -> None:
        other = spawn_worker(
            worker_env(self.mariadb.cdc_url, self.redis_server.url), self.logs / "second-worker.log"
        )
        time.sleep(self.rng.uniform(1.0, 2.5))
        other.send_signal(signal.SIGKILL if self.rng.random() < 0.5 else signal.SIGTERM)
        other.wait(60)

    def settle(self, timeout_s: float = 240) -> None:
        """Make sure a worker runs, then wait for the read model to equal the database."""
        if self.worker is None or self.worker.poll() is not None:
            self.start_worker()
        wait_synced(self.engine, self.redis_server.url, timeout_s=timeout_s)

    def recoveries(self) -> Counter[str]:
        """What the workers' logs say they did about the faults."""
        text = "".join(p.read_text() for p in self.logs.glob("*worker.log"))
        return Counter(
            {
                "sessions resumed from the checkpoint": text.count("session ended"),
                "snapshots (first start or recovery)": text.count("snapshot started"),
                "dead-lettered rows": text.count('"dead-lettered"'),
            }
        )

    def summary(self, writer: Writer) -> str:
        """The run in a few lines: seed, workload, faults by kind, recoveries, memory."""
        lines = [
            f"chaos seed {self.seed}: {writer.committed} transactions committed, "
            f"{writer.failed} writer reconnects, {sum(self.faults.values())} faults, "
            f"peak worker RSS {self.peak_worker_rss_mb:.0f} MB"
        ]
        lines += [f"  {count:5d}  fault: {name}" for name, count in sorted(self.faults.items())]
        lines += [f"  {count:5d}  {name}" for name, count in sorted(self.recoveries().items())]
        return "\n".join(lines)

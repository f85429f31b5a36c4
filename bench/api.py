"""Read API throughput and latency vs. a constant-returning FastAPI endpoint, one run, wrk.

.venv/bin/python -m bench.api --tickets 20000 --seconds 10 --repeats 3
"""

from __future__ import annotations

import argparse
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import redis
from sqlalchemy import create_engine

from cdc_worker import migrate
from cdc_worker.localservers import free_port, start_mariadb, start_redis
from cdc_worker.seed import seed
from tests.harness import wait_synced, worker_thread

LUA_RANDOM_ID = """
math.randomseed(os.time())
request = function()
  return wrk.format(nil, "/tickets/" .. math.random(1, {max_id}))
end
"""


def serve(command: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def wait_up(url: str) -> None:
    for _ in range(300):
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"{url} never answered")


def wrk(url: str, seconds: int, script: Path | None) -> tuple[float, float, float]:
    """requests/s, p50 ms, p99 ms."""
    command = ["wrk", "-t2", "-c32", f"-d{seconds}s", "--latency", url]
    if script:
        command[1:1] = ["-s", str(script)]
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    return rate, latency(out, "50%"), latency(out, "99%")


def latency(out: str, percentile: str) -> float:
    value, unit = re.search(rf"{percentile}\s+([\d.]+)(us|ms|s)", out).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tickets", type=int, default=20_000)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if not shutil.which("wrk"):
        raise SystemExit("wrk is needed: apt-get install -y wrk")
    base = Path(tempfile.mkdtemp(prefix="bench-api-"))
    mariadb, redis_server = start_mariadb(base / "mariadb"), start_redis(base / "redis")
    try:
        run(args, base, mariadb, redis_server)
    finally:
        mariadb.stop()
        redis_server.stop()


def run(args: argparse.Namespace, base: Path, mariadb: object, redis_server: object) -> None:
    root_url, cdc_url = mariadb.root_url, mariadb.cdc_url  # type: ignore[attr-defined]
    redis_url = redis_server.url  # type: ignore[attr-defined]
    migrate.upgrade(root_url)
    engine = create_engine(root_url)
    seed(engine, args.tickets, progress=False)
    script = base / "random.lua"
    script.write_text(LUA_RANDOM_ID.replace("{max_id}", str(args.tickets)))
    status_id = int(redis.Redis.from_url(redis_url).hlen("tickets") and 1)
    with worker_thread(cdc_url, redis_url):
        wait_synced(engine, redis_url, timeout_s=600)
        api_port, const_port = free_port(), free_port()
        env = {**os.environ, "CDC_REDIS_URL": redis_url, "CDC_LOG_LEVEL": "warning"}
        api = serve([sys.executable, "-m", "cdc_worker.cli", "api", "--port", str(api_port)], env)
        const = serve(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "bench.constant_app:app",
                "--port",
                str(const_port),
                "--no-access-log",
                "--log-level",
                "warning",
            ],
            env,
        )
        try:
            api_url, const_url = f"http://127.0.0.1:{api_port}", f"http://127.0.0.1:{const_port}"
            wait_up(f"{api_url}/healthz")
            wait_up(f"{const_url}/tickets/1")
            report(args, script, api_url, const_url, status_id)
        finally:
            api.terminate()
            const.terminate()
    engine.dispose()


def report(args: argparse.Namespace, script: Path, api: str, const: str, status_id: int) -> None:
    scenarios = {
        "constant FastAPI endpoint": (f"{const}/tickets/1", script),
        "GET /tickets/{id} (random ids)": (f"{api}/tickets/1", script),
        "GET /tickets?ids= (10 ids)": (
            f"{api}/tickets?ids="
            + ",".join(str(random.randint(1, args.tickets)) for _ in range(10)),
            None,
        ),
        "GET /tickets?status_id=&limit=50": (f"{api}/tickets?status_id={status_id}&limit=50", None),
        "GET /tickets?department_id=&status_id=&limit=50": (
            f"{api}/tickets?department_id=1&status_id={status_id}&limit=50",
            None,
        ),
    }
    results: dict[str, list[tuple[float, float, float]]] = {name: [] for name in scenarios}
    for _ in range(args.repeats):
        for name, (url, lua) in scenarios.items():
            results[name].append(wrk(url, args.seconds, lua))
    baseline = statistics.median(r[0] for r in results["constant FastAPI endpoint"])
    print(f"{'scenario':50} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'vs const':>9}")
    for name, runs in results.items():
        rate = statistics.median(r[0] for r in runs)
        p50, p99 = (statistics.median(r[i] for r in runs) for i in (1, 2))
        spread = f"{min(r[0] for r in runs):.0f}-{max(r[0] for r in runs):.0f}"
        print(f"{name:50} {rate:9.0f} {p50:8.2f} {p99:8.2f} {rate / baseline:9.2f}  ({spread})")


if __name__ == "__main__":
    main()

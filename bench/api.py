"""Read API throughput and latency vs. a constant-returning FastAPI endpoint (wrk) and raw
Redis ``HGET tickets <id>`` (redis-benchmark), in one run, with the same 32 connections.

    .venv/bin/python -m bench.api --tickets 20000 --seconds 10 --repeats 3
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import redis
from sqlalchemy import create_engine

from bench.common import Spread, log, ratio, servers
from bench.profile import start_recording, stop_recording, summarize
from cdc_worker.devtools.localservers import MariaDBServer, RedisServer, free_port
from cdc_worker.devtools.seed import seed
from cdc_worker.schema import migrate
from cdc_worker.store import keys
from tests.harness import wait_synced, worker_thread

CONNECTIONS = 32
CALIBRATION_REQUESTS = 20_000
CONSTANT, SINGLE = "constant FastAPI endpoint", "GET /tickets/{id} (random ids)"
RAW = "raw Redis HGET tickets <id> (redis-benchmark)"
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


def wrk(url: str, seconds: float, script: Path | None) -> tuple[float, float, float]:
    """requests/s, p50 ms, p99 ms."""
    command = ["wrk", "-t2", f"-c{CONNECTIONS}", f"-d{round(seconds)}s", "--latency", url]
    if script:
        command[1:1] = ["-s", str(script)]
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    return rate, latency(out, "50%"), latency(out, "99%")


def latency(out: str, percentile: str) -> float:
    value, unit = re.search(rf"{percentile}\s+([\d.]+)(us|ms|s)", out).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def redis_benchmark(port: int, ticket_id: str, seconds: float) -> tuple[float, float, float]:
    """``HGET tickets <id>`` straight at Redis with redis-benchmark, as many connections as
    wrk uses, for about ``seconds``: requests/s, p50 ms, p99 ms."""

    def run(requests: int) -> list[str]:
        command = ["redis-benchmark", "-p", str(port), "-c", str(CONNECTIONS), "-n"]
        command += [str(requests), "--csv", "HGET", keys.DOCUMENTS, ticket_id]
        out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
        return next(csv.reader(out.strip().splitlines()[-1:]))

    rate = float(run(CALIBRATION_REQUESTS)[1])
    row = run(max(CALIBRATION_REQUESTS, int(rate * seconds)))
    return float(row[1]), float(row[4]), float(row[6])


@dataclass(frozen=True)
class Server:
    """A running HTTP server: its base URL and process id."""

    url: str
    pid: int


@dataclass
class ApiResult:
    """Requests/s and latency of each read, of the baselines, and the ratios."""

    tickets: int
    seconds: float
    repeats: int
    connections: int
    hget_ticket_id: str
    scenarios: dict[str, dict[str, Any]] = field(default_factory=dict)
    ratios: dict[str, float | None] = field(default_factory=dict)
    profile: dict[str, Any] | None = None


def measure(
    mariadb: MariaDBServer,
    redis_server: RedisServer,
    tickets: int,
    seconds: float,
    repeats: int,
    profile_out: Path | None = None,
) -> ApiResult:
    """Seed, let the worker build the read model, then load the API and the baselines."""
    for tool, package in (("wrk", "wrk"), ("redis-benchmark", "redis-tools")):
        if not shutil.which(tool):
            raise SystemExit(f"{tool} is needed: apt-get install -y {package}")
    migrate.upgrade(mariadb.root_url)
    engine = create_engine(mariadb.root_url)
    seed(engine, tickets, progress=False)
    with worker_thread(mariadb.cdc_url, redis_server.url):
        wait_synced(engine, redis_server.url, timeout_s=600)
    engine.dispose()
    client = redis.Redis.from_url(redis_server.url)
    hget_id = client.hrandfield(keys.DOCUMENTS).decode()  # type: ignore[union-attr]
    client.close()
    result = ApiResult(tickets, seconds, repeats, CONNECTIONS, hget_id)
    script = redis_server.base_dir / "random.lua"
    script.write_text(LUA_RANDOM_ID.replace("{max_id}", str(tickets)))
    with api_servers(redis_server.url) as (api, const):
        targets = scenarios(api, const, script, tickets)
        runs = load_all(targets, redis_server.port, hget_id, seconds, repeats)
        if profile_out is not None:
            result.profile = profile_api(api, targets[SINGLE], seconds, profile_out)
    result.scenarios = {name: summarize_runs(r) for name, r in runs.items()}
    for name in result.scenarios:
        if name not in (CONSTANT, SINGLE):
            result.ratios[f"{name} / {CONSTANT}"] = ratio_of(result, name, CONSTANT)
    result.ratios[f"{SINGLE} / {CONSTANT}"] = ratio_of(result, SINGLE, CONSTANT)
    result.ratios[f"{SINGLE} / {RAW}"] = ratio_of(result, SINGLE, RAW)
    return result


def ratio_of(result: ApiResult, top: str, bottom: str) -> float | None:
    return ratio(
        result.scenarios[top]["requests_per_s"], result.scenarios[bottom]["requests_per_s"]
    )


@contextmanager
def api_servers(redis_url: str) -> Iterator[tuple[Server, Server]]:
    """The read API and the constant endpoint, each one uvicorn process."""
    env = {**os.environ, "CDC_REDIS_URL": redis_url, "CDC_LOG_LEVEL": "warning"}
    api_port, const_port = free_port(), free_port()
    api_command = [sys.executable, "-m", "cdc_worker.cli", "api", "--port", str(api_port)]
    const_command = [sys.executable, "-m", "uvicorn", "bench.constant_app:app"]
    const_command += ["--port", str(const_port), "--no-access-log", "--log-level", "warning"]
    api, const = serve(api_command, env), serve(const_command, env)
    try:
        api_url, const_url = f"http://127.0.0.1:{api_port}", f"http://127.0.0.1:{const_port}"
        wait_up(f"{api_url}/healthz")
        wait_up(f"{const_url}/tickets/1")
        yield Server(api_url, api.pid), Server(const_url, const.pid)
    finally:
        api.terminate()
        const.terminate()
        api.wait(30)
        const.wait(30)


def scenarios(
    api: Server, const: Server, script: Path, tickets: int
) -> dict[str, tuple[str, Path | None]]:
    """What wrk loads: name -> (URL, Lua script or None)."""
    ids = ",".join(str(random.randint(1, tickets)) for _ in range(10))
    return {
        CONSTANT: (f"{const.url}/tickets/1", script),
        SINGLE: (f"{api.url}/tickets/1", script),
        "GET /tickets?ids= (10 ids)": (f"{api.url}/tickets?ids={ids}", None),
        "GET /tickets?status_id=&limit=50": (f"{api.url}/tickets?status_id=1&limit=50", None),
        "GET /tickets?department_id=&status_id=&limit=50": (
            f"{api.url}/tickets?department_id=1&status_id=1&limit=50",
            None,
        ),
    }


def load_all(
    targets: dict[str, tuple[str, Path | None]],
    redis_port: int,
    hget_id: str,
    seconds: float,
    repeats: int,
) -> dict[str, list[tuple[float, float, float]]]:
    """Every scenario once per repeat, in turn, raw Redis included."""
    runs: dict[str, list[tuple[float, float, float]]] = {n: [] for n in [RAW, *targets]}
    for index in range(repeats):
        runs[RAW].append(redis_benchmark(redis_port, hget_id, seconds))
        for name, (url, lua) in targets.items():
            runs[name].append(wrk(url, seconds, lua))
        log(f"api repeat {index}: " + ", ".join(f"{n} {r[-1][0]:,.0f}/s" for n, r in runs.items()))
    return runs


def summarize_runs(runs: list[tuple[float, float, float]]) -> dict[str, Any]:
    spreads = [Spread([run[i] for run in runs]) for i in range(3)]
    return {
        name: spread.summary()
        for name, spread in zip(("requests_per_s", "p50_ms", "p99_ms"), spreads, strict=True)
    }


def profile_api(
    api: Server, target: tuple[str, Path | None], seconds: float, out: Path
) -> dict[str, Any]:
    """A py-spy profile of the API process under the single-read load (an extra, unmeasured
    wrk run)."""
    recorder = start_recording(api.pid, out)
    time.sleep(1)  # py-spy attaches
    wrk(target[0], seconds, target[1])
    stop_recording(recorder)
    return summarize(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tickets", type=int, default=20_000)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with servers("api") as (mariadb, redis_server):
        result = measure(mariadb, redis_server, args.tickets, args.seconds, args.repeats)
    print(json.dumps(asdict(result), indent=2))


if __name__ == "__main__":
    main()

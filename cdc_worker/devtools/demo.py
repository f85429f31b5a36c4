"""The demo: private servers, schema, sample data, the worker and the API, until Ctrl-C.

Uses CDC_MYSQL_URL/CDC_REDIS_URL when they are set; otherwise starts private MariaDB and
Redis under the state directory.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from contextlib import ExitStack
from pathlib import Path

import orjson
import redis
from sqlalchemy import create_engine, make_url, text

from cdc_worker.devtools.localservers import free_port, start_mariadb, start_redis
from cdc_worker.devtools.seed import seed
from cdc_worker.schema import migrate
from cdc_worker.settings import Settings, mask_url
from cdc_worker.store import keys

READY_TIMEOUT_S = 120.0


def _servers(settings: Settings, state_dir: Path, stack: ExitStack) -> dict[str, str]:
    """The CDC_ variables for the worker: given ones, or private servers'."""
    given = {"mysql_url", "redis_url"} & settings.model_fields_set
    if given:
        return {
            "CDC_MYSQL_URL": settings.mysql_url.get_secret_value(),
            "CDC_ADMIN_MYSQL_URL": settings.admin_url,
            "CDC_REDIS_URL": settings.redis_url.get_secret_value(),
        }
    shutil.rmtree(state_dir, ignore_errors=True)
    mariadb = start_mariadb(state_dir / "mariadb")
    stack.callback(mariadb.stop)
    redis_server = start_redis(state_dir / "redis")
    stack.callback(redis_server.stop)
    redis.Redis.from_url(redis_server.url).flushdb()
    return {
        "CDC_MYSQL_URL": mariadb.cdc_url,
        "CDC_ADMIN_MYSQL_URL": mariadb.root_url,
        "CDC_REDIS_URL": redis_server.url,
    }


def _prepare_source(admin_url: str, tickets: int) -> int:
    migrate.upgrade(admin_url)
    engine = create_engine(admin_url)
    try:
        report = seed(engine, tickets)
        print(f"seeded {report.total_rows:,} rows in {report.seconds:.1f} s")
        with engine.connect() as conn:
            live = conn.execute(text("SELECT COUNT(*) FROM tickets WHERE is_deleted = 0"))
            return int(live.scalar_one())
    finally:
        engine.dispose()


def _start(command: str, env: dict[str, str], stack: ExitStack) -> subprocess.Popen[bytes]:
    child_env = {**os.environ, **env, "CDC_LOG_FORMAT": "console"}
    child = subprocess.Popen([sys.executable, "-m", "cdc_worker.cli", command], env=child_env)

    def stop() -> None:
        child.send_signal(signal.SIGTERM)
        child.wait(30)

    stack.callback(stop)
    return child


def _wait_for_api(url: str, api: subprocess.Popen[bytes]) -> None:
    started = time.monotonic()
    while True:
        try:
            with urllib.request.urlopen(f"{url}/readyz", timeout=2) as response:  # noqa: S310
                if response.status == 200:
                    return
        except OSError:
            pass
        if api.poll() is not None:
            raise SystemExit(f"the API exited with status {api.returncode}")
        if time.monotonic() - started > READY_TIMEOUT_S:
            raise SystemExit("the API did not become ready in time")
        time.sleep(0.1)


def _wait_for(client: redis.Redis, count: int, worker: subprocess.Popen[bytes]) -> float:
    started = time.monotonic()
    while client.hlen(keys.DOCUMENTS) != count:
        if worker.poll() is not None:
            raise SystemExit(f"the worker exited with status {worker.returncode}")
        if time.monotonic() - started > READY_TIMEOUT_S:
            raise SystemExit("the read model did not fill in time")
        time.sleep(0.05)
    return time.monotonic() - started


def _live_change(admin_url: str, client: redis.Redis) -> float:
    engine = create_engine(admin_url)
    title = f"Printer on fire 🔥 (demo at {time.strftime('%H:%M:%S')})"
    try:
        with engine.begin() as conn:
            ticket_id = conn.execute(text("SELECT MIN(id) FROM tickets WHERE is_deleted = 0"))
            chosen = int(ticket_id.scalar_one())
            conn.execute(
                text("UPDATE tickets SET title = :t WHERE id = :i"), {"t": title, "i": chosen}
            )
        started = time.monotonic()
        while orjson.loads(client.hget(keys.DOCUMENTS, str(chosen)) or b"{}").get("title") != title:
            time.sleep(0.001)
        return time.monotonic() - started
    finally:
        engine.dispose()


def _print_summary(
    env: dict[str, str], api_url: str, count: int, fill_s: float, change_s: float
) -> None:
    print(f"\nread model ready: {count:,} documents in hash '{keys.DOCUMENTS}' in {fill_s:.1f} s")
    print(f"a live UPDATE reached Redis in {change_s * 1000:.1f} ms")
    print(f"  MySQL:  {mask_url(env['CDC_MYSQL_URL'])}")
    print(f"  Redis:  {env['CDC_REDIS_URL']}")
    redis_port = env["CDC_REDIS_URL"].rsplit(":", 1)[-1].split("/")[0]
    print(f"  API:    {api_url}   (OpenAPI docs: {api_url}/docs)")
    print(f"  live board (open it, then change tickets in MySQL): {api_url}/board?department_id=1")
    print(f"  worker metrics: http://127.0.0.1:{env['CDC_WORKER_HTTP_PORT']}/metrics")
    print("try:")
    print(f"  curl -s {api_url}/tickets/1")
    print(f"  curl -s '{api_url}/tickets?ids=1,2,3'")
    print(f"  curl -s '{api_url}/tickets?status_id=1&limit=5'")
    print(f"  curl -s '{api_url}/tickets?requester_email=<an email from a document>'")
    print(f"  curl -s {api_url}/readyz")
    print(f"  curl -sN {api_url}/tickets/events      (live changes, Server-Sent Events)")
    print(f"  redis-cli -p {redis_port} -n 1 HGET tickets 1")
    _print_access(env)
    print("Ctrl-C stops the worker and the servers.")


def mariadb_command(url: str) -> str:
    """The ``mariadb`` client command line that opens the database of a MySQL URL (``-p``
    prompts for the password when the URL has one)."""
    parsed = make_url(url)
    line = f"mariadb -h {parsed.host or '127.0.0.1'} -P {parsed.port or 3306}"
    line += f" -u {shlex.quote(parsed.username or 'root')}"
    return line + (" -p" if parsed.password else "") + f" {shlex.quote(parsed.database or '')}"


def access_lines(env: dict[str, str]) -> list[str]:
    """What another shell needs: the database's command line and the exports with which
    ``cdc-worker check``, ``resync``, ``seed`` and ``loadgen`` are found and reach the demo
    (passwords masked: a private demo server's admin has none)."""
    admin, redis_url = env["CDC_ADMIN_MYSQL_URL"], env["CDC_REDIS_URL"]
    commands_dir = Path(sys.executable).parent  # the virtualenv's bin: cdc-worker is there
    return [
        mariadb_command(admin),
        f'export PATH={shlex.quote(str(commands_dir))}:"$PATH"',
        f"export CDC_ADMIN_MYSQL_URL={shlex.quote(mask_url(admin))}",
        f"export CDC_REDIS_URL={shlex.quote(mask_url(redis_url))}",
    ]


def _print_access(env: dict[str, str]) -> None:
    lines = access_lines(env)
    print("the database, from another shell:")
    print(f"  {lines[0]}")
    print("the CLI against this demo, from another shell (paste these first):")
    for line in lines[1:]:
        print(f"  {line}")
    print("  cdc-worker check; cdc-worker resync --ticket 1; cdc-worker seed --tickets 100")


def run_demo(settings: Settings, args: argparse.Namespace) -> int:
    """Run everything; ``--once`` exits after the live change (used by the e2e test)."""
    try:
        return _run(settings, args)
    except KeyboardInterrupt:  # Ctrl-C during set-up: the ExitStack has stopped everything
        print("\nstopped during set-up")
        return 130


def _run(settings: Settings, args: argparse.Namespace) -> int:
    with ExitStack() as stack:
        env = _servers(settings, Path(args.state_dir), stack)
        count = _prepare_source(env["CDC_ADMIN_MYSQL_URL"], args.tickets)
        env["CDC_WORKER_HTTP_PORT"] = str(free_port())
        env["CDC_API_PORT"] = str(free_port())
        api_url = f"http://127.0.0.1:{env['CDC_API_PORT']}"
        worker = _start("run", env, stack)
        api = _start("api", env, stack)
        client = redis.Redis.from_url(env["CDC_REDIS_URL"])
        stack.callback(client.close)
        fill_s = _wait_for(client, count, worker)
        _wait_for_api(api_url, api)
        change_s = _live_change(env["CDC_ADMIN_MYSQL_URL"], client)
        stop = _stop_on_signals()  # before the summary: it tells the user to press Ctrl-C
        _print_summary(env, api_url, count, fill_s, change_s)
        if not args.once:
            _wait_for_stop(worker, stop)
    return 0


def _stop_on_signals() -> threading.Event:
    """From now on Ctrl-C/SIGTERM set a flag instead of raising KeyboardInterrupt: Ctrl-C also
    reaches the children, and an exception could land anywhere in the clean-up."""
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    return stop


def _wait_for_stop(worker: subprocess.Popen[bytes], stop: threading.Event) -> None:
    """Until Ctrl-C/SIGTERM, or until the worker exits."""
    while not stop.is_set() and worker.poll() is None:
        stop.wait(0.2)
    print("\nstopping...")
